"""DB-MTL: dual balancing of loss scales and gradient magnitudes."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import gram_utils
from kerasmtl.weighting.base_weighting import Weighting, gram_inputs


@keras.saving.register_keras_serializable(package="kerasmtl")
class DBMTL(Weighting):
    """DB-MTL: log losses for the loss scales, then equal gradient magnitudes.

    From Lin et al., "Dual-Balancing for Multi-Task Learning", arXiv:2308.12029,
    2023, following LibMTL's `DB_MTL` (the authors' code). Two balancing steps:

    1. Loss scale: each task is trained on `log(L_k + eps)`, whose gradient is
       `h_k = g_k / (L_k + eps)`.
    2. Gradient magnitude: LibMTL keeps an EMA of the vectors,
       `h_bar_k <- beta_t h_bar_k + (1 - beta_t) h_k` with
       `beta_t = beta / t^beta_sigma` (`t` the 1-based step, `h_bar = 0` at the
       start), and moves along `sum_k (max_j ||h_bar_j|| / ||h_bar_k||) h_bar_k`:
       every task contributes with the largest norm.

    Deviation (only the Gram matrix is available, never the vectors): we keep the
    same EMA of the *norms*, `n_k <- beta_t n_k + (1 - beta_t) ||h_k||`, with
    `||h_k|| = sqrt(G_kk) / (L_k + eps)`, and return

        a_k = (M / ||h_k||) / (L_k + eps) = M / ||g_k||,    M = max_j n_j,

    so that `sum_k a_k g_k = M sum_k h_k / ||h_k||`: each task's *current*
    log-loss gradient, rescaled to the common magnitude `M`. This equals LibMTL's
    direction exactly when the direction of each task's `h_k` does not change
    over the steps (only its magnitude): then `h_bar_k = n_k h_k / ||h_k||`.
    Otherwise `n_k >= ||h_bar_k||` (triangle inequality; an EMA of the squared
    norms, i.e. of the Gram diagonal, would be larger still), so `M` is an upper
    estimate of LibMTL's scale, and the direction is the current one, not the
    EMA's (no momentum across steps).

    Other details:

    - Defaults `beta=0.9`, `beta_sigma=0.0` are LibMTL's (`DB_beta`,
      `DB_beta_sigma`); `epsilon=1e-8` is LibMTL's `log(L + 1e-8)`.
    - Losses `<= 0`: `log(L + eps)` is undefined for `L + eps <= 0` (LibMTL gives
      NaN); we use `|L_k| + eps` in place of `L_k + eps`, which is LibMTL's value
      for `L_k >= 0` and keeps the coefficients positive otherwise.
    - A zero gradient (norm below `1e-7` times the largest) cannot be rescaled:
      it keeps the magnitude factor 1 (`a_k = 1 / (|L_k| + eps)`, plain log-loss
      balancing). Its task-specific parameters still get that weight.
    - A step with a non-finite loss or Gram matrix leaves the state (EMA, step
      counter) unchanged.
    - LibMTL refuses representation gradients for DB-MTL; here any Gram matrix
      the trainer gives works.
    - Absent tasks (no labelled sample in the batch, or a non-finite loss): the
      common magnitude `M` is the largest EMA among the present tasks, an
      absent task's EMA does not move and it gets 0; the step counter `t`
      counts the steps with a present task. This is DB-MTL built on the present
      tasks alone.

    Args:
        beta: EMA factor of the gradient norms.
        beta_sigma: decay exponent of the EMA factor (`beta / t^beta_sigma`).
        epsilon: added to the losses inside the log.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = DBMTL()
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[4.0, 0.0], [0.0, 1.0]])
    >>> losses = keras.ops.convert_to_tensor([2.0, 0.5])
    >>> weights = strategy.compute_weights_from_gram(gram, losses)
    >>> [round(float(w), 3) for w in weights]  # ||h|| = (1, 2), M = 0.1 * 2
    [0.1, 0.2]
    """

    requires_gradients = True

    def __init__(self, beta=0.9, beta_sigma=0.0, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        beta = check_number(beta, "beta", owner)
        if not beta < 1.0:
            raise ValueError(f"{owner}: `beta` must be in [0, 1). Received: beta={beta}")
        self.beta = beta
        self.beta_sigma = check_number(beta_sigma, "beta_sigma", owner)
        self.epsilon = check_number(epsilon, "epsilon", owner, allow_minimum=False)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.norm_averages = self.add_weight(
            shape=(self.num_tasks,),
            initializer="zeros",
            trainable=False,
            name="norm_averages",
        )
        self.iterations = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="iterations"
        )

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, losses, present = gram_inputs(gram, losses, present)
        gram = gram_utils.symmetric_gram(gram)
        iterations = ops.convert_to_tensor(self.iterations)
        step = ops.cast(iterations + 1, "float32")
        decay = self.beta / ops.power(step, self.beta_sigma)
        scales = ops.abs(losses) + self.epsilon
        sq_norms = gram_utils.squared_norms(gram)
        nonzero = ops.logical_and(gram_utils.nonzero_mask(sq_norms), present)
        log_norms = ops.sqrt(sq_norms) / scales
        old_averages = ops.convert_to_tensor(self.norm_averages)
        averages = ops.where(
            present, decay * old_averages + (1.0 - decay) * log_norms, old_averages
        )
        largest = ops.max(ops.where(present, averages, 0.0))
        magnitude = gram_utils.safe_divide(largest, log_norms, nonzero)
        magnitude = ops.where(nonzero, magnitude, 1.0)
        # A non-finite step (NaN loss or gradient) leaves the state unchanged.
        finite = gram_utils.all_finite(gram, losses)
        self.norm_averages.assign(ops.where(finite, averages, old_averages))
        counted = ops.logical_and(finite, ops.any(present))
        self.iterations.assign(iterations + ops.cast(counted, "int32"))
        return ops.where(present, magnitude / scales, 0.0)

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "beta_sigma": self.beta_sigma,
            "epsilon": self.epsilon,
        }
