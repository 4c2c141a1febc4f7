"""UPGrad: unconflicting projection of gradients (Jacobian descent)."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import solvers
from kerasmtl.weighting.base_weighting import Weighting, check_number_list, gram_inputs


@keras.saving.register_keras_serializable(package="kerasmtl")
class UPGrad(Weighting):
    """UPGrad: average of the task gradients projected onto their dual cone.

    Follows Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization"
    (arXiv:2406.16232, 2024) and its reference implementation TorchJD
    (`torchjd.aggregation.UPGrad`): each `p_i g_i` is projected onto the dual
    cone `{x : <g_j, x> >= 0 for all j}` of the task gradients, and the update is
    the sum of these projections. By Proposition 1 of the paper, the projection
    of `J^T u` is `J^T v` with `v = argmin_{v >= u} v^T G v`, so with
    `u = p_i e_i` the coefficients are `a = sum_i v_i`. The update therefore has
    a non-negative inner product with every task gradient: no task is hurt, to
    first order. `pref_vector` (`p`, default uniform `1/K`) weighs the tasks.

    As TorchJD, the Gram matrix is first divided by its trace (set to zero when
    the trace is below `norm_eps`, an absolute threshold in the units of the
    gradients, in which case the weights are `p`), and `reg_eps * I` is added,
    which makes the problem strictly convex; the non-conflict guarantee then
    holds up to `reg_eps` (`<g_j, d> >= -reg_eps trace(G) a_j`). Use
    `reg_eps=0.0` for the exact projection.

    Deviations: TorchJD solves the `K` quadratic programs with `quadprog` on the
    host; here they are solved exactly in the graph, by enumerating the active
    sets for up to 5 tasks (3 on PyTorch) and beyond by a primal-dual active-set method (many
    constraints per step, all `K` problems at once) that hands any problem
    where it cycles to a primal active-set method (see
    `kerasmtl.weighting.solvers.lower_bounded_qp`).

    Absent tasks (no labelled sample in the batch, or a non-finite loss): the
    projections use the present tasks' gradients only and the absent tasks get
    0: UPGrad built on the present tasks alone, with their entries of
    `pref_vector` (not renormalised) or, by default, `1 / K_p` each over the
    `K_p` present tasks.

    Args:
        pref_vector: optional list of `K` floats, the preference weights `p`.
        norm_eps: trace threshold below which the Gram matrix is treated as zero.
        reg_eps: ridge added to the trace-normalised Gram matrix.
        num_iterations: the most active-set iterations (more than 5 tasks; 3 on PyTorch);
            the solver stops once every problem is at its optimum.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = UPGrad(reg_eps=0.0)
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[1.0, -0.5], [-0.5, 1.0]])
    >>> [round(float(a), 3) for a in strategy.compute_weights_from_gram(gram, [1.0, 1.0])]
    [0.75, 0.75]
    """

    requires_gradients = True
    #: Gradients the strategy is designed for: "parameters" (shared parameters).
    preferred_gradients = "parameters"

    def __init__(
        self, pref_vector=None, norm_eps=1e-4, reg_eps=1e-4, num_iterations=2000, **kwargs
    ):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        self.pref_vector = check_number_list(pref_vector, "pref_vector", owner)
        self.norm_eps = check_number(norm_eps, "norm_eps", owner)
        self.reg_eps = check_number(reg_eps, "reg_eps", owner)
        self.num_iterations = check_number(
            num_iterations, "num_iterations", owner, minimum=1, integer=True
        )

    def build(self, losses_shape):
        super().build(losses_shape)
        if self.pref_vector is not None and len(self.pref_vector) != self.num_tasks:
            raise ValueError(
                f"`pref_vector` has {len(self.pref_vector)} values but the model has "
                f"{self.num_tasks} tasks. Received: pref_vector={self.pref_vector}"
            )

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, _, present = gram_inputs(gram, losses, present)
        num = gram.shape[-1]
        gram = 0.5 * (gram + ops.transpose(gram))
        trace = ops.trace(gram)
        normalized = ops.where(
            trace >= self.norm_eps, gram / ops.where(trace > 0.0, trace, 1.0), 0.0
        )
        regularized = normalized + self.reg_eps * ops.eye(num, dtype="float32")
        present_float = ops.cast(present, "float32")
        if self.pref_vector is None:
            preferences = present_float / ops.maximum(ops.sum(present_float), 1.0)
        else:
            preferences = ops.convert_to_tensor(self.pref_vector, dtype="float32")
            preferences = preferences * present_float
        projections = solvers.lower_bounded_qp(
            regularized, self._lower_bounds(preferences), num_iterations=self.num_iterations
        )
        # An absent task's coefficient is 0 in every projection (no coupling, bound 0).
        return ops.where(present, ops.sum(projections, axis=0), 0.0)

    def _lower_bounds(self, preferences):
        """The rows `u` of the quadratic programs: `p_i e_i`, one per task."""
        return ops.diag(preferences)

    def get_config(self):
        return {
            **super().get_config(),
            "pref_vector": self.pref_vector,
            "norm_eps": self.norm_eps,
            "reg_eps": self.reg_eps,
            "num_iterations": self.num_iterations,
        }
