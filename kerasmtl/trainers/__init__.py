"""Backend-specific train steps for gradient-based weighting strategies."""
