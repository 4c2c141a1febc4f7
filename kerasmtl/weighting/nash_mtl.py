"""Nash-MTL: task weights from the Nash bargaining solution."""

import keras
from keras import ops

from kerasmtl.weighting import solvers
from kerasmtl.weighting.base_weighting import Weighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class NashMTL(Weighting):
    """Nash-MTL: the update every task agrees on as a bargaining game.

    Follows Navon et al., "Multi-Task Learning as a Bargaining Game" (ICML
    2022): the update `d = sum_k a_k g_k` maximises `sum_k log <g_k, d>` in a
    ball, which (Section 3 of the paper) means `a > 0` solves `G a = 1 / a`
    elementwise. As in LibMTL and the authors' code, `G` is first divided by its
    Frobenius norm, the solution is used as is (it is not rescaled back), it is
    recomputed every `update_weights_every` steps and reused in between (held in
    a variable), and the final update is clipped to norm `max_norm` (if
    positive).

    Deviations, all documented:

    - Solver: LibMTL runs up to 20 convex-concave iterations, each a cvxpy/ECOS
      problem on the host. Here `G a = 1 / a` is solved in the graph by at
      most `num_iterations` damped Newton steps (fewer once converged) on the
      self-concordant function `0.5 a^T G a - sum log a`, started from the
      better (after optimal rescaling) of the previous weights and
      `a_k = 1 / ||g_k||` (see `kerasmtl.weighting.solvers.nash_bargaining`).
    - Ill-posed inputs: a positive solution exists only when 0 is not in the
      convex hull of the gradients; LibMTL's cvxpy then fails and it keeps the
      previous weights. Here (i) a task whose gradient is numerically zero
      (`||g_k||^2 <= 1e-10 max_j ||g_j||^2`) is left out of the game and gets
      weight 1 (its gradient does not move the shared parameters anyway), (ii) a
      relative ridge is added, `(G + reg_eps diag(G)) a = 1 / a`, so gradients
      that cancel (rank deficiency with 0 in the hull) still give a unique,
      finite solution, with `||g_k|| a_k <= sqrt(K / reg_eps)` (in the units of
      the normalised `G`, up to float32 accuracy), and
      (iii) an all-zero `G` keeps the previous weights. Nothing is ever NaN.
      On well-posed inputs the ridge moves `a_k` by about
      `reg_eps G[k, k] a_k^2` relative (1e-4 for cosine -0.99 between two
      gradients); on ill-posed ones the weights are of order `1 / sqrt(reg_eps)`
      and, in float32, solve the ridged equation only to a few percent.
    - `max_norm` clipping: LibMTL clips the norm of the combined shared-parameter
      gradient after the backward pass; here the coefficients are scaled by
      `min(1, max_norm / (||d|| + 1e-6))` with `||d||^2 = a^T G a` from the
      un-normalised Gram matrix, which also scales the task-specific gradients.

    Args:
        update_weights_every: recompute the weights every this many steps
            (LibMTL's `update_weights_every`, default 1).
        max_norm: clip the norm of the update to this value; 0 disables it
            (default 1.0, as LibMTL).
        reg_eps: relative ridge: `reg_eps * G[k, k]` is added to each diagonal entry.
        num_iterations: the most damped Newton steps per update (the solver
            stops earlier once converged, usually after a few from a warm start).
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = NashMTL(max_norm=0.0)
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> [round(float(a), 3) for a in strategy.compute_weights_from_gram(gram, [1.0, 1.0])]
    [1.189, 1.189]
    """

    requires_gradients = True
    #: Gradients the strategy is designed for: "parameters" (shared parameters).
    preferred_gradients = "parameters"

    def __init__(
        self,
        update_weights_every=1,
        max_norm=1.0,
        reg_eps=1e-6,
        num_iterations=30,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(update_weights_every) < 1:
            raise ValueError(
                "`update_weights_every` must be a positive integer. "
                f"Received: update_weights_every={update_weights_every}"
            )
        if not float(max_norm) >= 0.0:
            raise ValueError(
                f"`max_norm` must be >= 0 (0 disables clipping). Received: max_norm={max_norm}"
            )
        if not float(reg_eps) > 0.0:
            raise ValueError(f"`reg_eps` must be positive. Received: reg_eps={reg_eps}")
        self.update_weights_every = int(update_weights_every)
        self.max_norm = float(max_norm)
        self.reg_eps = float(reg_eps)
        self.num_iterations = int(num_iterations)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.step = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="step"
        )
        self.previous_weights = self.add_weight(
            shape=(self.num_tasks,),
            initializer="ones",
            trainable=False,
            name="previous_weights",
        )

    def solve(self, gram):
        """Returns the Nash weights for a raw Gram matrix (no state change, no clipping)."""
        gram = ops.cast(gram, "float32")
        gram = 0.5 * (gram + ops.transpose(gram))
        norm = ops.sqrt(ops.sum(gram * gram))
        normalized = gram / ops.where(norm > 0.0, norm, 1.0)
        diagonal = ops.diagonal(normalized)
        active = ops.cast(diagonal > solvers.ZERO_NORM_FLOOR * ops.max(diagonal), "float32")
        # Inactive tasks: an identity row, so that a_k = 1 / a_k gives a_k = 1.
        game = normalized * active[:, None] * active[None, :] + ops.diag(1.0 - active)
        previous = ops.convert_to_tensor(self.previous_weights)
        weights = solvers.nash_bargaining(
            game, initial=previous, reg_eps=self.reg_eps, num_iterations=self.num_iterations
        )
        return ops.where(norm > 0.0, weights, previous)

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram = ops.cast(gram, "float32")
        step = ops.convert_to_tensor(self.step)
        update = ops.equal(ops.mod(step, self.update_weights_every), 0)
        weights = ops.where(update, self.solve(gram), self.previous_weights)
        self.previous_weights.assign(weights)
        self.step.assign(step + 1)
        if self.max_norm > 0.0:
            norm = ops.sqrt(ops.maximum(ops.sum(ops.matmul(gram, weights) * weights), 0.0))
            weights = weights * ops.minimum(1.0, self.max_norm / (norm + 1e-6))
        return weights

    def get_config(self):
        return {
            **super().get_config(),
            "update_weights_every": self.update_weights_every,
            "max_norm": self.max_norm,
            "reg_eps": self.reg_eps,
            "num_iterations": self.num_iterations,
        }
