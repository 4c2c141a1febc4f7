"""FairGrad: task weights from alpha-fair resource allocation."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import gram_utils, solvers
from kerasmtl.weighting.base_weighting import Weighting, gram_inputs


@keras.saving.register_keras_serializable(package="kerasmtl")
class FairGrad(Weighting):
    """FairGrad: the update that maximises the alpha-fair utility of the task loss decreases.

    From Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024.
    Each task's "utility" is the first-order decrease `<g_k, d>` of its loss
    along the update `d`; FairGrad maximises `sum_k u(<g_k, d>)` with the
    alpha-fair utility `u(x) = x^(1 - alpha) / (1 - alpha)` (`log x` for
    `alpha = 1`). With `d = sum_k w_k g_k`, the optimality conditions are

        (G w)_k = w_k^(-1 / alpha)    for every task k,    w > 0,

    with `G` the Gram matrix of the task gradients. `alpha = 0` would be the
    sum of utilities (not allowed here: `w^(-1/alpha)` is undefined), `alpha = 1`
    proportional fairness (the Nash-MTL condition), `alpha -> inf` max-min
    fairness. The update is `sum_k w_k g_k` as in the paper (no normalisation;
    the official code clips the shared gradient norm, which is the optimizer's
    job here: `clipnorm`).

    How we solve it. The conditions are the stationarity conditions of the
    strictly convex `f(w) = 0.5 w^T G w - sum_k phi(w_k)` on `w > 0`, with
    `phi' (w) = w^(-1/alpha)`; we solve them with at most `num_iterations` damped
    Newton steps on `f` (Hessian `G + diag(w^(-1/alpha - 1) / alpha)`, positive
    definite), each step limited so that `w` stays positive. The paper uses
    `scipy.optimize.least_squares` on the residual `G w - w^(-1/alpha)` with
    bounds `w >= 0`, on the host. To work on `O(1)` numbers, we solve with
    `G / c` (`c` the largest diagonal entry) and rescale: `w = c^(-alpha / (1 +
    alpha)) w~` solves the conditions for `G` when `w~` does for `G / c`.

    Deviations, where the equations have no solution:

    - A zero gradient (norm below `1e-7` times the largest) makes its condition
      `0 = w_k^(-1/alpha)` impossible (the paper's solver drives `w_k` up
      without bound, while `w_k g_k` stays 0): it gets `w_k = 0`, the same
      update, and the others solve the conditions among themselves. If every
      gradient is zero the weights are 1.
    - When the gradients conflict so much that `0` is in the interior of their
      convex hull up to a direction (`G z = 0` for some `z >= 0`, e.g. exactly
      opposite gradients), `f` is unbounded below and no solution exists; the
      fixed number of Newton steps then returns a finite, large `w` whose update
      `G w` is small, like the paper's bounded least-squares fit.

    Absent tasks (no labelled sample in the batch, or a non-finite loss) are
    left out like zero gradients: the conditions are solved over the present
    tasks (FairGrad built on them alone) and the absent tasks get 0.

    Args:
        alpha: the fairness parameter `alpha > 0` (the paper's experiments use
            values in `[0.5, 2]`; 1 is proportional fairness).
        num_iterations: the largest number of damped Newton steps (the solve
            stops earlier once Newton's decrement is below `1e-6`).
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = FairGrad(alpha=1.0)
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[4.0, 0.0], [0.0, 1.0]])
    >>> weights = strategy.compute_weights_from_gram(gram, [1.0, 1.0])
    >>> [round(float(w), 3) for w in weights]  # 4 w_1 = 1 / w_1, w_2 = 1 / w_2
    [0.5, 1.0]
    """

    requires_gradients = True

    def __init__(self, alpha=1.0, num_iterations=100, **kwargs):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        self.alpha = check_number(alpha, "alpha", owner, allow_minimum=False)
        self.num_iterations = check_number(
            num_iterations, "num_iterations", owner, minimum=1, integer=True
        )

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, _, present = gram_inputs(gram, losses, present)
        gram = gram_utils.symmetric_gram(gram)
        sq_norms = gram_utils.squared_norms(gram)
        active = ops.logical_and(gram_utils.nonzero_mask(sq_norms), present)
        scale = ops.max(ops.where(active, sq_norms, 0.0))
        scale = ops.where(scale > 0.0, scale, 1.0)
        inside = ops.logical_and(active[:, None], active[None, :])
        eye = ops.eye(self.num_tasks, dtype="float32")
        # Inactive tasks read `w_k = w_k^(-1/alpha)` (solution 1), decoupled from the rest.
        system = ops.where(inside, gram / scale, 0.0) + eye * ops.cast(
            ops.logical_not(active), "float32"
        )
        solution = solve_fair_conditions(system, self.alpha, self.num_iterations)
        weights = solution * ops.power(scale, -self.alpha / (1.0 + self.alpha))
        ones = ops.cast(present, "float32")
        return ops.where(ops.any(active), ops.where(active, weights, 0.0), ones)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "num_iterations": self.num_iterations,
        }


#: Newton's decrement below which the FairGrad solve stops.
_NEWTON_TOLERANCE = 1e-6


def solve_fair_conditions(gram, alpha, num_iterations):
    """Solves `G w = w^(-1/alpha)`, `w > 0`, by damped Newton steps on its convex potential.

    The potential is `f(w) = 0.5 w^T G w - sum_k phi(w_k)`, `phi'(w) = w^(-1/alpha)`.
    Each Newton step `delta` is damped by `1 / (1 + lambda)` (`lambda` the Newton
    decrement, the self-concordant damping that converges globally for
    `alpha = 1`) and further limited to keep 1% of every coordinate positive.
    The loop stops after `num_iterations` steps or once `lambda <= 1e-6` (float32
    rounding alone keeps `lambda` near `1e-7`).
    Starts from the solution of the diagonal part, `w_k = G_kk^(-alpha / (1 + alpha))`.
    """
    gram = ops.cast(gram, "float32")
    num = gram.shape[-1]
    exponent = -1.0 / alpha
    diagonal = ops.maximum(ops.diagonal(gram), 1e-12)
    start = ops.power(diagonal, -alpha / (1.0 + alpha))

    def step(iteration, weights, _):
        target = ops.power(weights, exponent)
        residual = ops.matmul(gram, weights) - target
        hessian = gram + ops.diag(target / (alpha * weights))
        # Jacobi-scaled (unit diagonal) and solved by elimination that never fails:
        # the Hessian is nearly singular when `w` grows large (no solution).
        inverse_scale = 1.0 / ops.sqrt(ops.maximum(ops.diagonal(hessian), 1e-30))
        scaled = hessian * inverse_scale[:, None] * inverse_scale[None, :]
        scaled = scaled + 1e-7 * ops.eye(num, dtype="float32")
        solution = solvers.solve_positive_definite(
            scaled, ops.reshape(residual * inverse_scale, (num, 1))
        )
        delta = -ops.reshape(solution, (num,)) * inverse_scale
        decrement = ops.sqrt(ops.maximum(-ops.sum(residual * delta), 0.0))
        size = 1.0 / (1.0 + decrement)
        # Fraction to the boundary: never below 1% of the current value.
        shrink = ops.where(delta < 0.0, -0.99 * weights / ops.minimum(delta, -1e-30), 1e30)
        size = ops.minimum(size, ops.min(shrink))
        updated = weights + size * delta
        # A non-finite step keeps the current point (and ends the loop).
        finite = ops.all(ops.isfinite(updated))
        return (
            iteration + 1,
            ops.where(finite, updated, weights),
            ops.where(finite, decrement, 0.0),
        )

    def not_converged(iteration, _, decrement):
        # Below the tolerance the last step was a full Newton step, already
        # quadratically convergent: further steps move float32 rounding only.
        return ops.logical_and(iteration < num_iterations, decrement > _NEWTON_TOLERANCE)

    state = (ops.zeros((), "int32"), start, ops.ones((), "float32"))
    _, weights, _ = ops.while_loop(not_converged, step, state)
    return weights
