"""Aligned-MTL: aligning the principal components of the task gradients."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import gram_utils
from kerasmtl.weighting.base_weighting import Weighting, check_number_list, gram_inputs
from kerasmtl.weighting.solvers import normalize_gram

_SCALE_MODES = ("min", "median", "rmse")
# float32 machine epsilon, as `torch.finfo().eps` in the official tolerance.
_FLOAT32_EPS = 1.1920929e-07


@keras.saving.register_keras_serializable(package="kerasmtl")
class AlignedMTL(Weighting):
    """Aligned-MTL: makes the task-gradient matrix well conditioned before summing it.

    From Senushkin et al., "Independent Component Alignment for Multi-Task
    Learning", CVPR 2023, following the official code (github.com/SamsungLabs/MTL,
    `ProcrustesSolver`) and LibMTL's `Aligned_MTL`. With the eigendecomposition
    `G = V diag(lambda) V^T` of the Gram matrix (the squared singular values and
    left singular vectors of the gradient matrix), the aligned gradients
    `g_hat = G_mat B` use

        B = sqrt(lambda_scale) V_r diag(lambda_r)^(-1/2) V_r^T,

    restricted to the `r` non-zero eigenvalues, so that every principal
    component has the same singular value `sqrt(lambda_scale)` (the smallest
    non-zero one with `scale_mode="min"`, the paper's choice). The coefficients
    are `a = B w` with the preference vector `w` (ones by default, as the
    official code and LibMTL sum the aligned gradients).

    Details:

    - Rank: as in the official code, eigenvalues `<= rtol * max(lambda)` are
      treated as zero, with `rtol = K * eps(float32)` by default. Their
      directions are dropped, so duplicated gradients, more tasks than
      dimensions or a zero gradient (which then gets `a_k = 0`) give finite
      coefficients. An all-zero Gram matrix gives `a = 0`.
    - `scale_mode="median"` uses the lower median of the non-zero eigenvalues
      (as `torch.median`) and `"rmse"` their mean, as the official code.
    - Scale-free: the eigendecomposition runs on `G / max_k G[k, k]`, which does
      not change `a`.
    - The official code can also scale the decoders' gradients by the same
      weights (`scale_decoder_grad`); here the trainer weights the task losses
      by `a`, which scales the task-specific gradients by `a_k` always.

    Absent tasks (no labelled sample in the batch, or a non-finite loss): their
    zeroed Gram rows give zero eigenvalues, whose directions are dropped, so
    the alignment runs on the present tasks' gradients only, with the default
    `rtol = K_p * eps(float32)` for the `K_p` present tasks and their entries
    of the preference vector: Aligned-MTL built on the present tasks alone.
    The absent tasks get 0.

    Args:
        scale_mode: `"min"` (the paper), `"median"` or `"rmse"`.
        preference_vector: optional list of `K` task preferences `w` (default all
            ones).
        rtol: relative tolerance on the eigenvalues of `G`; `None` uses the
            official `K * eps(float32)`.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = AlignedMTL()
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[4.0, 0.0], [0.0, 1.0]])
    >>> weights = strategy.compute_weights_from_gram(gram, keras.ops.ones((2,)))
    >>> [round(float(w), 3) for w in weights]  # both aligned gradients get norm 1
    [0.5, 1.0]
    """

    requires_gradients = True

    def __init__(self, scale_mode="min", preference_vector=None, rtol=None, **kwargs):
        super().__init__(**kwargs)
        if scale_mode not in _SCALE_MODES:
            raise ValueError(
                f"`scale_mode` must be one of {list(_SCALE_MODES)}. "
                f"Received: scale_mode={scale_mode!r}"
            )
        owner = self.__class__.__name__
        if rtol is not None:
            rtol = check_number(rtol, "rtol", owner)
            if not rtol < 1.0:
                raise ValueError(
                    f"{owner}: `rtol` must be None or in [0, 1). Received: rtol={rtol}"
                )
        self.scale_mode = scale_mode
        self.preference_vector = check_number_list(
            preference_vector, "preference_vector", owner
        )
        self.rtol = rtol

    def build(self, losses_shape):
        super().build(losses_shape)
        if self.preference_vector is not None and len(self.preference_vector) != self.num_tasks:
            raise ValueError(
                f"`preference_vector` has {len(self.preference_vector)} values but there are "
                f"{self.num_tasks} tasks. Received: preference_vector={self.preference_vector}"
            )

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, _, present = gram_inputs(gram, losses, present)
        num_tasks = self.num_tasks
        gram = normalize_gram(gram)
        eigenvalues, eigenvectors = ops.eigh(gram)
        count = ops.sum(ops.cast(present, "float32"))
        rtol = count * _FLOAT32_EPS if self.rtol is None else self.rtol
        kept = eigenvalues > rtol * ops.max(eigenvalues)
        rank = ops.sum(ops.cast(kept, "int32"))
        kept_values = ops.where(kept, eigenvalues, 0.0)
        if self.scale_mode == "min":
            scale = ops.min(ops.where(kept, eigenvalues, float("inf")))
        elif self.scale_mode == "median":
            ascending = ops.sort(ops.where(kept, eigenvalues, float("inf")))
            scale = ops.take(ascending, ops.maximum(rank - 1, 0) // 2)
        else:
            scale = ops.sum(kept_values) / ops.cast(ops.maximum(rank, 1), "float32")
        scale = ops.where(rank > 0, scale, 0.0)
        inverse_roots = gram_utils.safe_divide(1.0, ops.sqrt(kept_values), kept)
        balance = ops.matmul(
            eigenvectors * (ops.sqrt(scale) * inverse_roots)[None, :],
            ops.transpose(eigenvectors),
        )
        if self.preference_vector is None:
            preferences = ops.ones((num_tasks,), dtype="float32")
        else:
            preferences = ops.convert_to_tensor(self.preference_vector, dtype="float32")
        coefficients = ops.matmul(balance, ops.where(present, preferences, 0.0))
        return ops.where(present, coefficients, 0.0)

    def get_config(self):
        return {
            **super().get_config(),
            "scale_mode": self.scale_mode,
            "preference_vector": self.preference_vector,
            "rtol": self.rtol,
        }
