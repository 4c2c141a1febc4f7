"""Test helpers for kerasmtl layers and models (no pytest dependency).

- `run_layer_test`, `run_model_test`: the contract of a layer or a model (config
  round trip, symbolic and eager calls, one `fit` step, `.keras` save and load).
- `value_and_gradients`: one gradient call that works on every backend.
- `kerasmtl.testing.references`: NumPy (float64) references shared by test files.
- `kerasmtl.testing.models`: small seeded models and data shared by test files.
"""

from kerasmtl.testing import models, references
from kerasmtl.testing.gradients import value_and_gradients
from kerasmtl.testing.test_case import run_layer_test, run_model_test

__all__ = ["models", "references", "run_layer_test", "run_model_test", "value_and_gradients"]
