"""Test helpers for kerasmtl layers and models (no pytest dependency)."""

from kerasmtl.testing.gradients import value_and_gradients
from kerasmtl.testing.test_case import run_layer_test, run_model_test

__all__ = ["run_layer_test", "run_model_test", "value_and_gradients"]
