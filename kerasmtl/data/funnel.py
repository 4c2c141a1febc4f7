"""A synthetic impression -> click -> conversion funnel with a known truth (NumPy only)."""

import numpy as np


def make_funnel(
    num_samples,
    num_users=500,
    num_items=200,
    num_numeric=4,
    latent_dim=4,
    click_bias=None,
    click_scale=1.5,
    conversion_bias=-1.0,
    conversion_scale=1.0,
    selection_bias=1.0,
    item_skew=1.0,
    click_rate=None,
    shared_factor=0.0,
    main_effect=0.0,
    seed=None,
):
    """Generates impressions with clicks and post-click conversions from a known funnel.

    The setting of ESMM (Ma et al., "Entire Space Multi-Task Model: An
    Effective Approach for Estimating Post-Click Conversion Rate", SIGIR
    2018): a conversion is observed only after a click, and a model of the
    conversion rate `CVR = p(conversion | click, x)` is used on *every*
    impression. Each impression has a user id, an item id and `num_numeric`
    standard-normal numeric features. The truth, with `sigma` the logistic
    function:

    - user/item affinity `a = sqrt(1 - m**2) * <U[user], V[item]> /
      sqrt(latent_dim) + m * (U[user, 0] + V[item, 0]) / sqrt(2)`, from
      `latent_dim`-d user and item factors `U, V ~ N(0, 1)`: an interaction
      plus, with weight `m = main_effect`, additive per-user and per-item
      effects (a user's propensity, an item's appeal; their first factor,
      uncorrelated with the interaction), so `a` has variance about 1;
    - click score `s_c = (a + x_c . w_c) / sqrt(2)`, from the affinity and
      the first half `x_c` of the numeric features, `w_c ~ N(0, 1 / len(x_c))`
      (so `s_c` has variance about 1);
    - own conversion score `s_v = (sqrt(1 - rho**2) * (b[user] + d[item]) +
      rho * sqrt(2) * a + x_v . w_v) /
      sqrt(3)` from user and item effects `b, d ~ N(0, 1)` of its own, the
      click factors' affinity weighted by `rho = shared_factor`, and the other
      half `x_v` of the numeric features; at `rho = 0` (the default) it is
      independent of `s_c`;
    - `ctr = sigma(click_bias + click_scale * s_c)`;
    - `cvr = sigma(conversion_bias + conversion_scale * s_v + selection_bias * s_c)`;
    - `click ~ Bernoulli(ctr)`; `potential_conversion ~ Bernoulli(cvr)`
      (whether the impression would convert if clicked, drawn for every
      impression, independently of the click given `x`); `conversion =
      click * potential_conversion`.

    **Sample selection bias.** `selection_bias` sets how much the features
    that drive clicking also shift conversion. At `0` the clicked impressions
    are, as far as conversion is concerned, a random subset of all
    impressions: a CVR model trained on clicks only has less data but no
    bias. Above `0` the clicked impressions over-represent high-CVR
    impressions (clicks select high `s_c`, which raises CVR), and the
    impressions a click-only model rarely sees (low `s_c`, most of the
    impression space) are those with the lowest CVR: its estimates there are
    learned from few samples and pulled towards the clicked impressions'
    higher rates.

    **Data sparsity and shared factors.** The paper's second point: clicks
    are rare (`click_rate` of a few percent), the CVR label exists only on
    them, and the user/item ids have many values (`num_users`, `num_items`),
    so a CVR model trained on clicks only sees each id a few times at most,
    while a model whose embeddings are shared with the CTR task (ESMM) learns
    them from every impression. That transfer can only help if the same
    user/item latent factors drive both clicking and converting:
    `shared_factor` (`rho`) is the correlation between the conversion
    score's user/item part and the click score's user/item affinity (`0`:
    unrelated, `1`: the same factors; the variance of `s_v` does not depend
    on it). An id interaction is hard to learn from few impressions per id;
    additive per-id effects (`main_effect > 0`, as in real logs: some users
    convert more, some items sell better) are what the CTR task can learn
    from all impressions. Note that `selection_bias > 0` also puts the click
    score, user/item affinity included, into the conversion logit. Popular
    items (`item_skew > 0`: item `j` is shown with probability proportional
    to `(j + 1) ** -item_skew`) add the data sparsity of real logs: many
    items have few clicks.

    Everything is drawn from one `numpy.random.default_rng(seed)`, in this
    order: `U`, `V`, `b`, `d`, `w_c`, `w_v` (the "world"), then the user ids,
    item ids, numeric features, clicks and potential conversions (the same
    draws whatever `click_rate` and `shared_factor` are). Split one call into
    training and test sets, so that they share the world.

    Args:
        num_samples: int, the number of impressions.
        num_users: int, the user vocabulary size.
        num_items: int, the item vocabulary size.
        num_numeric: int >= 2, the number of numeric features (the first half
            drives clicks, the other half conversions).
        latent_dim: int, the size of the user/item click factors.
        click_bias: optional float, the click logit's intercept (sets the
            CTR); `-3.0` when neither it nor `click_rate` is given. Give at
            most one of the two.
        click_rate: optional float in (0, 1), the mean true CTR over the
            drawn impressions: `click_bias` is then solved for (bisection on
            the drawn click scores, to 1e-10), which models the sparsity of
            clicks (e.g. `0.03`). Returned as `"click_bias"`.
        click_scale: float, how strongly the click score moves the click logit.
        conversion_bias: float, the conversion logit's intercept.
        conversion_scale: float, the weight of the own conversion score.
        selection_bias: float, the weight of the click score in the
            conversion logit (see above); `0` for no selection bias.
        item_skew: float >= 0, the exponent of the item popularity law; `0`
            for uniform items.
        shared_factor: float in [-1, 1], the correlation `rho` between the
            user/item parts of the conversion and click scores (see above);
            `0` (the default) for unrelated factors.
        main_effect: float in [0, 1], the weight `m` of additive per-user and
            per-item effects in the user/item affinity (see above); `0` (the
            default) for a pure interaction.
        seed: optional int, the seed of the random generator.

    Returns:
        A dict:
        - `"x"`: the model inputs, `{"user": int32 (N, 1), "item": int32 (N, 1),
          "numeric": float32 (N, num_numeric)}`;
        - `"features"`: their specification for `kerasmtl.models` tabular
          builders (`ESMM`, `AITM`, `mmoe`, ...);
        - `"click"`, `"conversion"`, `"potential_conversion"`: float32 (N, 1)
          0/1 labels (`conversion` is 0 wherever `click` is 0);
        - `"ctr"`, `"cvr"`, `"ctcvr"`: float64 (N, 1), the true probabilities
          `p(click | x)`, `p(conversion | click, x)` and their product;
        - `"click_bias"`: float, the click intercept used (given, default or
          solved from `click_rate`).

    Example:

    >>> data = make_funnel(20000, selection_bias=1.0, seed=0)
    >>> sorted(data["x"]), data["click"].shape
    (['item', 'numeric', 'user'], (20000, 1))
    >>> bool(np.all(data["conversion"] <= data["click"]))
    True
    >>> clicked = data["click"][:, 0] == 1
    >>> bool(data["cvr"][clicked].mean() > data["cvr"].mean())  # selection bias
    True
    """
    num_samples = _positive_int(num_samples, "num_samples")
    num_users = _positive_int(num_users, "num_users")
    num_items = _positive_int(num_items, "num_items")
    latent_dim = _positive_int(latent_dim, "latent_dim")
    num_numeric = _positive_int(num_numeric, "num_numeric")
    if num_numeric < 2:
        raise ValueError(
            "`num_numeric` must be at least 2: half of the numeric features drive clicks, "
            f"the other half conversions. Received: num_numeric={num_numeric}"
        )
    if click_bias is not None and click_rate is not None:
        raise ValueError(
            "Give at most one of `click_bias` and `click_rate` (the rate sets the bias). "
            f"Received: click_bias={click_bias!r}, click_rate={click_rate!r}"
        )
    values = {}
    for name, value in (
        ("click_bias", -3.0 if click_bias is None else click_bias),
        ("click_rate", 0.5 if click_rate is None else click_rate),
        ("shared_factor", shared_factor),
        ("main_effect", main_effect),
        ("click_scale", click_scale),
        ("conversion_bias", conversion_bias),
        ("conversion_scale", conversion_scale),
        ("selection_bias", selection_bias),
        ("item_skew", item_skew),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            np.isfinite(value)
        ):
            raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
        values[name] = float(value)
    if values["item_skew"] < 0:
        raise ValueError(f"`item_skew` must be >= 0. Received: item_skew={item_skew!r}")
    if not 0.0 < values["click_rate"] < 1.0:
        raise ValueError(
            f"`click_rate` must be in (0, 1) (or None). Received: click_rate={click_rate!r}"
        )
    if not -1.0 <= values["shared_factor"] <= 1.0:
        raise ValueError(
            f"`shared_factor` must be in [-1, 1]. Received: shared_factor={shared_factor!r}"
        )
    rho = values["shared_factor"]
    if not 0.0 <= values["main_effect"] <= 1.0:
        raise ValueError(
            f"`main_effect` must be in [0, 1]. Received: main_effect={main_effect!r}"
        )
    main = values["main_effect"]

    rng = np.random.default_rng(seed)
    # The world: shared by every impression of this call.
    user_factors = rng.normal(size=(num_users, latent_dim))
    item_factors = rng.normal(size=(num_items, latent_dim))
    user_effects = rng.normal(size=num_users)
    item_effects = rng.normal(size=num_items)
    num_click_numeric = num_numeric // 2
    click_weights = rng.normal(scale=1.0 / np.sqrt(num_click_numeric), size=num_click_numeric)
    num_conversion_numeric = num_numeric - num_click_numeric
    conversion_weights = rng.normal(
        scale=1.0 / np.sqrt(num_conversion_numeric), size=num_conversion_numeric
    )

    # The impressions.
    users = rng.integers(0, num_users, size=num_samples)
    popularity = np.arange(1, num_items + 1, dtype="float64") ** -values["item_skew"]
    items = rng.choice(num_items, size=num_samples, p=popularity / popularity.sum())
    numeric = rng.normal(size=(num_samples, num_numeric))

    interaction = np.sum(user_factors[users] * item_factors[items], axis=1) / np.sqrt(latent_dim)
    main_effects = (user_factors[users, 0] + item_factors[items, 0]) / np.sqrt(2.0)
    affinity = np.sqrt(1.0 - main**2) * interaction + main * main_effects
    click_score = (affinity + numeric[:, :num_click_numeric] @ click_weights) / np.sqrt(2.0)
    own_score = (
        np.sqrt(1.0 - rho**2) * (user_effects[users] + item_effects[items])
        + rho * np.sqrt(2.0) * affinity
        + numeric[:, num_click_numeric:] @ conversion_weights
    ) / np.sqrt(3.0)
    if click_rate is not None:
        values["click_bias"] = _solve_intercept(
            values["click_scale"] * click_score, values["click_rate"]
        )
    ctr = _sigmoid(values["click_bias"] + values["click_scale"] * click_score)
    cvr = _sigmoid(
        values["conversion_bias"]
        + values["conversion_scale"] * own_score
        + values["selection_bias"] * click_score
    )
    click = rng.random(num_samples) < ctr
    potential_conversion = rng.random(num_samples) < cvr
    conversion = click & potential_conversion

    def column(value, dtype):
        return value.astype(dtype)[:, None]

    return {
        "x": {
            "user": column(users, "int32"),
            "item": column(items, "int32"),
            "numeric": numeric.astype("float32"),
        },
        "features": {
            "user": ("categorical", num_users),
            "item": ("categorical", num_items),
            "numeric": ("numeric", num_numeric),
        },
        "click": column(click, "float32"),
        "conversion": column(conversion, "float32"),
        "potential_conversion": column(potential_conversion, "float32"),
        "ctr": column(ctr, "float64"),
        "cvr": column(cvr, "float64"),
        "ctcvr": column(ctr * cvr, "float64"),
        "click_bias": values["click_bias"],
    }


def _solve_intercept(scores, rate):
    """The intercept `c` with `mean(sigma(c + scores)) == rate` (bisection; monotone in `c`)."""
    low = np.log(rate / (1.0 - rate)) - np.max(np.abs(scores)) - 1.0
    high = np.log(rate / (1.0 - rate)) + np.max(np.abs(scores)) + 1.0
    while high - low > 1e-10:
        middle = 0.5 * (low + high)
        if np.mean(_sigmoid(middle + scores)) < rate:
            low = middle
        else:
            high = middle
    return float(0.5 * (low + high))


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)
