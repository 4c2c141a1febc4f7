"""kerasmtl."""
