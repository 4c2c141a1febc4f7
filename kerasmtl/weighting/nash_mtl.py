"""Nash-MTL: task weights from the Nash bargaining solution."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import gram_utils, solvers
from kerasmtl.weighting.base_weighting import Weighting, gram_inputs


@keras.saving.register_keras_serializable(package="kerasmtl")
class NashMTL(Weighting):
    """Nash-MTL: the update every task agrees on as a bargaining game.

    Follows Navon et al., "Multi-Task Learning as a Bargaining Game" (ICML
    2022): the update `d = sum_k a_k g_k` maximises `sum_k log <g_k, d>` in a
    ball, which (Section 3 of the paper) means `a > 0` solves `G a = 1 / a`
    elementwise. As in LibMTL and the authors' code, the weights are recomputed
    every `update_weights_every` steps and reused in between (held in a
    variable), and the final update is clipped to norm `max_norm` (if
    positive).

    Gradient scale. The returned `a` solves `G a = 1 / a` for the true Gram
    matrix `G`, so the update `d = sum_k a_k g_k` is the paper's for every
    gradient scale: `G -> s^2 G` (gradients `s g`) gives `a -> a / s` and the
    same `d`, whose norm is always `sqrt(a^T G a) = sqrt(K)`. LibMTL and the
    authors' code divide `G` by its Frobenius norm `||G||_F` and use the
    solution of that problem as is; that `a` is `sqrt(||G||_F)` times the
    paper's, so their update is the paper's direction scaled by
    `sqrt(||G||_F)` (about the gradients' norm): 100x smaller gradients give a
    100x smaller step, and the `max_norm` clip only hides it for large
    gradients. We deviate: we also solve on `G / ||G||_F` (numbers of order
    1) but scale the solution back by `1 / sqrt(||G||_F)`. With the default
    `max_norm=1` and `K >= 2` the update then has norm 1 (it is clipped from
    `sqrt(K)`); the task-specific parameters get the paper's `a_k`.

    Absent tasks (no labelled sample in the batch, or a non-finite loss): the
    game is played by the present tasks only (the Nash-MTL of those tasks);
    the absent tasks get weight 0 and keep their stored previous weight (the
    warm start of their next game).

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
      (`||g_k|| <= 1e-7 max_j ||g_j||`, `gram_utils.ZERO_NORM_RTOL`) is left
      out of the game and gets weight 1 (its gradient does not move the
      shared parameters anyway; it weights its task-specific gradients as
      `Equal` does), (ii) a
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
    [1.0, 1.0]
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
        owner = self.__class__.__name__
        self.update_weights_every = check_number(
            update_weights_every, "update_weights_every", owner, minimum=1, integer=True
        )
        self.max_norm = check_number(max_norm, "max_norm", owner)
        self.reg_eps = check_number(reg_eps, "reg_eps", owner, allow_minimum=False)
        self.num_iterations = check_number(
            num_iterations, "num_iterations", owner, minimum=1, integer=True
        )

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

    def solve(self, gram, present=None):
        """Returns the Nash weights for a raw Gram matrix (no state change, no clipping).

        `a` solves `(G + reg_eps diag(G)) a = 1 / a` for the given (true) `G`
        over the present tasks; zero-gradient tasks get 1, absent tasks their
        previous weight.
        """
        gram, _, present = gram_inputs(gram, ops.zeros((gram.shape[-1],)), present)
        gram = 0.5 * (gram + ops.transpose(gram))
        norm = ops.sqrt(ops.sum(gram * gram))
        safe_norm = ops.where(norm > 0.0, norm, 1.0)
        # Solved on numbers of order 1, then scaled back to the true `G`:
        # `(G / n) b = 1 / b` gives `G (b / sqrt(n)) = 1 / (b / sqrt(n))`.
        normalized = gram / safe_norm
        root = ops.sqrt(safe_norm)
        diagonal = ops.diagonal(normalized)
        active = ops.logical_and(present, gram_utils.nonzero_mask(diagonal))
        active_float = ops.cast(active, "float32")
        # Inactive tasks: an identity row, so that a_k = 1 / a_k gives a_k = 1.
        game = normalized * active_float[:, None] * active_float[None, :] + ops.diag(
            1.0 - active_float
        )
        previous = ops.convert_to_tensor(self.previous_weights)
        initial = ops.where(active, previous * root, 1.0)
        solution = solvers.nash_bargaining(
            game, initial=initial, reg_eps=self.reg_eps, num_iterations=self.num_iterations
        )
        weights = ops.where(active, solution / root, 1.0)
        weights = ops.where(present, weights, previous)
        return ops.where(norm > 0.0, weights, previous)

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, _, present = gram_inputs(gram, losses, present)
        step = ops.convert_to_tensor(self.step)
        previous = ops.convert_to_tensor(self.previous_weights)
        update = ops.equal(ops.mod(step, self.update_weights_every), 0)
        weights = ops.where(update, self.solve(gram, present), previous)
        self.previous_weights.assign(weights)
        self.step.assign(step + 1)
        weights = ops.where(present, weights, 0.0)
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
