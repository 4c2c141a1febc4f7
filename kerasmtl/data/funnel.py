"""A synthetic impression -> click -> conversion funnel with a known truth (NumPy only)."""

import numpy as np


def make_funnel(
    num_samples,
    num_users=500,
    num_items=200,
    num_numeric=4,
    latent_dim=4,
    click_bias=-3.0,
    click_scale=1.5,
    conversion_bias=-1.0,
    conversion_scale=1.0,
    selection_bias=1.0,
    item_skew=1.0,
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

    - click score `s_c = (<U[user], V[item]> / sqrt(latent_dim) +
      x_c . w_c) / sqrt(2)`, from `latent_dim`-d user and item factors
      `U, V ~ N(0, 1)` and the first half `x_c` of the numeric features,
      `w_c ~ N(0, 1 / len(x_c))` (so `s_c` has variance about 1);
    - own conversion score `s_v = (b[user] + d[item] + x_v . w_v) / sqrt(3)`
      from separate user and item effects `b, d ~ N(0, 1)` and the other half
      `x_v` of the numeric features (independent of `s_c`);
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
    higher rates. Popular items (`item_skew > 0`: item `j` is shown with
    probability proportional to `(j + 1) ** -item_skew`) add the data
    sparsity of real logs: many items have few clicks.

    Everything is drawn from one `numpy.random.default_rng(seed)`, in this
    order: `U`, `V`, `b`, `d`, `w_c`, `w_v` (the "world"), then the user ids,
    item ids, numeric features, clicks and potential conversions. Split one
    call into training and test sets, so that they share the world.

    Args:
        num_samples: int, the number of impressions.
        num_users: int, the user vocabulary size.
        num_items: int, the item vocabulary size.
        num_numeric: int >= 2, the number of numeric features (the first half
            drives clicks, the other half conversions).
        latent_dim: int, the size of the user/item click factors.
        click_bias: float, the click logit's intercept (sets the CTR).
        click_scale: float, how strongly the click score moves the click logit.
        conversion_bias: float, the conversion logit's intercept.
        conversion_scale: float, the weight of the own conversion score.
        selection_bias: float, the weight of the click score in the
            conversion logit (see above); `0` for no selection bias.
        item_skew: float >= 0, the exponent of the item popularity law; `0`
            for uniform items.
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
          `p(click | x)`, `p(conversion | click, x)` and their product.

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
    values = {}
    for name, value in (
        ("click_bias", click_bias),
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

    affinity = np.sum(user_factors[users] * item_factors[items], axis=1) / np.sqrt(latent_dim)
    click_score = (affinity + numeric[:, :num_click_numeric] @ click_weights) / np.sqrt(2.0)
    own_score = (
        user_effects[users]
        + item_effects[items]
        + numeric[:, num_click_numeric:] @ conversion_weights
    ) / np.sqrt(3.0)
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
    }


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)
