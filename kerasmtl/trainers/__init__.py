"""One trainer per backend, chosen once, as `keras.Model` chooses its own.

`MultiTaskModel` mixes in `MultiTaskTrainer`: on TensorFlow, JAX or torch the
class that computes the task gradients of gradient-based strategies with that
backend's autodiff. Loss-based strategies use Keras's own train step on every
backend. What every trainer shares lives in `gradient_math` (in `keras.ops`).
"""

import keras

_BACKEND = keras.backend.backend()

if _BACKEND == "tensorflow":
    from kerasmtl.trainers.tensorflow_trainer import TensorFlowMultiTaskTrainer as MultiTaskTrainer
elif _BACKEND == "jax":
    from kerasmtl.trainers.jax_trainer import JAXMultiTaskTrainer as MultiTaskTrainer
elif _BACKEND == "torch":
    from kerasmtl.trainers.torch_trainer import TorchMultiTaskTrainer as MultiTaskTrainer
else:
    from kerasmtl.trainers.base_trainer import BaseMultiTaskTrainer as MultiTaskTrainer

__all__ = ["MultiTaskTrainer"]
