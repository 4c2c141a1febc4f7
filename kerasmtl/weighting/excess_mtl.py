"""ExcessMTL: task weights from estimated excess risks."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import gram_utils
from kerasmtl.weighting.base_weighting import Weighting, gram_inputs


@keras.saving.register_keras_serializable(package="kerasmtl")
class ExcessMTL(Weighting):
    """ExcessMTL: the tasks farthest from their own optimum (largest excess risk) gain weight.

    From He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024
    (Algorithm 1; reference code `yifei-he/ExcessMTL`, also LibMTL's
    `ExcessMTL`). Weighting by excess risk `L_k(theta) - L_k(theta*_k)` rather
    than by loss keeps a task with large irreducible noise from taking all the
    weight. The excess risk is estimated by a second-order expansion around the
    task's optimum, `r_k = g_k^T H_k^{-1} g_k`, with the Hessian approximated by
    the diagonal AdaGrad accumulator `H_k = diag(sqrt(sum_t g_{k,t}^2))`. Each
    step, with `r_k^0` the estimate at the task's first step,

        w_k <- w_k exp(eta r_k / r_k^0),    then w rescaled to sum to K,

    (exponentiated gradient ascent on the simplex, as in the reference code),
    and the update is `sum_k w_k g_k`. The weights start at 1; the first step
    only records `r_k^0`.

    Deviation (approximation): the per-coordinate accumulator
    `sum_t g_{k,t}^2` cannot be formed from the Gram matrix the strategy sees
    (it needs the gradient vectors). We replace it by its mean over the `P`
    coordinates, `S_k / P` with `S_k = sum_t ||g_{k,t}||^2` (an isotropic
    AdaGrad preconditioner), which gives `r_k = ||g_k||^2 sqrt(P / S_k)`. The
    factor `sqrt(P)` cancels in `r_k / r_k^0`, so the strategy needs the
    diagonal of the Gram matrix only. The two agree when the gradients' squared
    coordinates are spread evenly; with a very uneven spread the diagonal form
    weights coordinates differently. `epsilon` is added to `S_k` (the reference
    code adds `1e-7` per coordinate).

    Other details: a task whose gradient is zero at its first steps keeps
    weight updates off (`r_k / r_k^0` counts as 0) until its first non-zero
    gradient, which sets `r_k^0`.

    Absent tasks (no labelled sample in the batch, or a non-finite loss): their
    accumulator, `r_k^0` and weight are unchanged and they get coefficient 0;
    the present tasks' weights are updated and rescaled to share what the
    absent tasks' stored weights leave of `K` (ExcessMTL on the present tasks
    alone while the absent ones hold weight 1).

    Args:
        robust_step_size: the step size `eta` of the weight update (the
            reference code's `robust_step_size`, default 0.01 in LibMTL).
        epsilon: added to the accumulated squared norm.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = ExcessMTL(robust_step_size=0.5)
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> [float(w) for w in strategy.compute_weights_from_gram(gram, [1.0, 1.0])]  # records r^0
    [1.0, 1.0]
    >>> gram = keras.ops.convert_to_tensor([[4.0, 0.0], [0.0, 0.25]])
    >>> [round(float(w), 3) for w in strategy.compute_weights_from_gram(gram, [1.0, 1.0])]
    [1.372, 0.628]
    """

    requires_gradients = True

    def __init__(self, robust_step_size=0.01, epsilon=1e-7, **kwargs):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        self.robust_step_size = check_number(robust_step_size, "robust_step_size", owner)
        self.epsilon = check_number(epsilon, "epsilon", owner, allow_minimum=False)

    def build(self, losses_shape):
        super().build(losses_shape)

        def state(name, initializer="zeros"):
            return self.add_weight(
                shape=(self.num_tasks,), initializer=initializer, trainable=False, name=name
            )

        self.loss_weights = state("loss_weights", "ones")
        self.squared_norm_sums = state("squared_norm_sums")
        self.initial_risks = state("initial_risks")
        self.has_initial_risk = state("has_initial_risk")

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, _, present = gram_inputs(gram, losses, present)
        sq_norms = gram_utils.squared_norms(gram_utils.symmetric_gram(gram))
        nonzero = ops.logical_and(gram_utils.nonzero_mask(sq_norms), present)
        sums = ops.convert_to_tensor(self.squared_norm_sums)
        sums = ops.where(present, sums + sq_norms, sums)
        risks = sq_norms / ops.sqrt(sums + self.epsilon)
        has_initial = ops.convert_to_tensor(self.has_initial_risk) > 0.5
        initial = ops.convert_to_tensor(self.initial_risks)
        # The first step with a non-zero gradient records r^0 and leaves the weight.
        updating = ops.logical_and(present, has_initial)
        recording = ops.logical_and(nonzero, ops.logical_not(has_initial))
        ratios = gram_utils.safe_divide(risks, initial, updating)
        weights = ops.convert_to_tensor(self.loss_weights)
        raised = ops.where(updating, weights * ops.exp(self.robust_step_size * ratios), weights)
        # The present tasks share what the absent tasks' kept weights leave of K.
        share = float(self.num_tasks) - ops.sum(ops.where(present, 0.0, weights))
        total = ops.sum(ops.where(present, raised, 0.0))
        rescaled = gram_utils.safe_divide(raised * share, total, present)
        weights = ops.where(ops.logical_and(present, total > 0.0), rescaled, weights)
        self.squared_norm_sums.assign(sums)
        self.initial_risks.assign(ops.where(recording, risks, initial))
        self.has_initial_risk.assign(ops.where(recording, 1.0, ops.cast(has_initial, "float32")))
        self.loss_weights.assign(weights)
        return ops.where(present, weights, 0.0)

    def get_config(self):
        return {
            **super().get_config(),
            "robust_step_size": self.robust_step_size,
            "epsilon": self.epsilon,
        }
