"""IMTL-G: impartial multi-task learning, gradient part."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import gram_utils
from kerasmtl.weighting.base_weighting import Weighting, gram_inputs
from kerasmtl.weighting.solvers import normalize_gram


@keras.saving.register_keras_serializable(package="kerasmtl")
class IMTLG(Weighting):
    """IMTL-G: the combination of the task gradients with equal projections on every task.

    The gradient part of Liu et al., "Towards Impartial Multi-task Learning",
    ICLR 2021 (Section 3.1). IMTL-G finds coefficients `a` with `sum_k a_k = 1`
    such that `d = sum_k a_k g_k` has the same projection on every unit task
    gradient `u_k = g_k / ||g_k||`. The paper's closed form, with
    `D = [g_1 - g_2, ..., g_1 - g_K]` and `U = [u_1 - u_2, ..., u_1 - u_K]`
    (rows), is

        a_{2:K} = g_1 U^T (D U^T)^{-1},    a_1 = 1 - sum_{k>=2} a_k.

    We solve the same conditions from the Gram matrix in a scale-free form:
    with `b_k = a_k ||g_k||` (so `d = sum_k b_k u_k`) and the cosine matrix
    `C[m, k] = <u_m, u_k>`, the unknowns `(b, c)` satisfy

        sum_m C[m, k] b_m = c  (every task k),    sum_k b_k / ||g_k|| = 1,

    a `(K + 1) x (K + 1)` linear system (the normalisation row is scaled by the
    smallest norm). When the paper's `D U^T` is invertible the system has the
    same unique solution as the closed form; the cosine form keeps it well
    conditioned when the gradient norms differ by orders of magnitude.

    Details and deviations:

    - Rank deficiency: the system is solved with a pseudo-inverse (SVD,
      singular values below `rcond` times the largest treated as zero), which
      returns the minimum-norm solution when the paper's `(D U^T)^{-1}` does not
      exist (e.g. duplicated gradients, where any split between the duplicates
      gives the same `d`). If there are more tasks than the rank of the
      gradients, the conditions can force `d = 0` (then `c = 0`): that is the
      paper's closed form too, not a failure.
    - A zero gradient (norm below `1e-7` times the largest) has no direction
      `u_k`: it is left out of the equal-projection conditions and gets
      `a_k = 0` (it adds nothing to `d`); the others still sum to 1. If every
      gradient is zero, `a = 1 / K`.
    - This is the gradient part alone; `kerasmtl.weighting.IMTL` (registry
      name `"imtl"`, LibMTL's `IMTL`) combines it with the paper's IMTL-L
      (learned loss scales `e^s L - s`). The paper computes IMTL-G on the gradients of the shared
      representation; we use whichever Gram matrix the trainer gives.

    Absent tasks (no labelled sample in the batch, or a non-finite loss) are
    left out like zero gradients: the equal-projection conditions and the
    normalisation run over the present tasks (IMTL-G built on them alone), and
    the absent tasks get 0. If every present gradient is zero, `a = 1 / K_p` on
    the present tasks.

    Args:
        rcond: relative cutoff of the pseudo-inverse's singular values.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = IMTLG()
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[4.0, 0.0], [0.0, 1.0]])
    >>> weights = strategy.compute_weights_from_gram(gram, keras.ops.ones((2,)))
    >>> [round(float(w), 3) for w in weights]  # ||g_1|| = 2, ||g_2|| = 1
    [0.333, 0.667]
    """

    requires_gradients = True

    def __init__(self, rcond=1e-5, **kwargs):
        super().__init__(**kwargs)
        rcond = check_number(rcond, "rcond", self.__class__.__name__)
        if not rcond < 1.0:
            raise ValueError(
                f"{self.__class__.__name__}: `rcond` must be in [0, 1). Received: rcond={rcond}"
            )
        self.rcond = rcond

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, _, tasks_present = gram_inputs(gram, losses, present)
        num_tasks = self.num_tasks
        gram = normalize_gram(gram)
        sq_norms = gram_utils.squared_norms(gram)
        nonzero = ops.logical_and(gram_utils.nonzero_mask(sq_norms), tasks_present)
        norms = ops.sqrt(sq_norms)
        inverse_norms = gram_utils.safe_divide(1.0, norms, nonzero)
        cosines = gram * inverse_norms[:, None] * inverse_norms[None, :]
        present = ops.cast(nonzero, "float32")
        eye = ops.eye(num_tasks, dtype="float32")
        # Rows of zero-gradient tasks read `b_k = 0`.
        conditions = cosines * present[:, None] + eye * (1.0 - present)[:, None]
        smallest_norm = ops.min(ops.where(nonzero, norms, 1.0))
        normalisation = smallest_norm * inverse_norms
        system = ops.concatenate(
            [
                ops.concatenate([conditions, -present[:, None]], axis=1),
                ops.concatenate([normalisation[None, :], ops.zeros((1, 1))], axis=1),
            ],
            axis=0,
        )
        right_hand_side = ops.concatenate(
            [ops.zeros((num_tasks,)), ops.reshape(smallest_norm, (1,))], axis=0
        )
        solution = ops.matmul(gram_utils.pseudo_inverse(system, self.rcond), right_hand_side)
        weights = solution[:num_tasks] * inverse_norms
        count = ops.cast(tasks_present, "float32")
        uniform = count / ops.maximum(ops.sum(count), 1.0)
        return ops.where(ops.any(nonzero), weights, uniform)

    def get_config(self):
        return {**super().get_config(), "rcond": self.rcond}
