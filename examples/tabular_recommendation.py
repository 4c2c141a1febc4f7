"""Click and conversion prediction from tabular features with MMoE or PLE.

A recommendation-style data set is generated in this script (nothing is downloaded):
each row is an impression with categorical ids (user, item, item category, device) and
numeric features (price, the user's past activity). Two tasks share the model:

- `click`: did the user click (binary, every row has a label);
- `conversion`: did the click lead to a purchase (binary, labelled only for clicked
  rows; `-1` marks the others, and `mask_value=-1` keeps them out of this task's loss
  and metrics).

The categorical features are declared as `("categorical", vocabulary_size)`: each
becomes an int32 input of shape `(1,)` embedded by a `keras.layers.Embedding` named
`{name}_embedding`; numeric ones as `"numeric"`. Prints each task's test AUC.

    python examples/tabular_recommendation.py                  # 10-15 s on 2 CPU cores
    python examples/tabular_recommendation.py --architecture ple --epochs 5
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl import Task  # noqa: E402

VOCABULARIES = {"user": 200, "item": 300, "category": 10, "device": 3}
NUMERIC = ("price", "activity")


def make_data(num_samples, seed):
    """Impressions with a click label and a conversion label observed after clicks only."""
    rng = np.random.default_rng(seed)
    ids = {name: rng.integers(0, size, size=num_samples) for name, size in VOCABULARIES.items()}
    item_category = rng.integers(0, VOCABULARIES["category"], size=VOCABULARIES["item"])
    ids["category"] = item_category[ids["item"]]
    user_taste = rng.normal(size=(VOCABULARIES["user"], VOCABULARIES["category"]))
    item_appeal = rng.normal(size=VOCABULARIES["item"])
    price = rng.lognormal(mean=3.0, sigma=0.5, size=num_samples)
    activity = rng.poisson(5.0, size=num_samples).astype("float64")

    affinity = user_taste[ids["user"], ids["category"]]
    click_logit = -1.0 + 1.2 * affinity + 0.8 * item_appeal[ids["item"]] + 0.1 * activity
    click_logit += np.array([0.3, 0.0, -0.3])[ids["device"]]
    click = rng.random(num_samples) < 1.0 / (1.0 + np.exp(-click_logit))
    # Conversion shares the taste with click but is put off by the price.
    buy_logit = -0.5 + 1.0 * affinity - 1.5 * (np.log(price) - 3.0)
    buy = rng.random(num_samples) < 1.0 / (1.0 + np.exp(-buy_logit))
    conversion = np.where(click, buy, -1)

    x = {name: value.astype("int32")[:, None] for name, value in ids.items()}
    for name, value in (("price", np.log(price)), ("activity", activity)):
        x[name] = ((value - value.mean()) / value.std()).astype("float32")[:, None]
    y = {
        "click": click.astype("float32")[:, None],
        "conversion": conversion.astype("float32")[:, None],
    }
    return x, y


def build_model(architecture):
    inputs = {name: ("categorical", size) for name, size in VOCABULARIES.items()}
    inputs.update({name: "numeric" for name in NUMERIC})
    tasks = [
        Task(
            name,
            head=1,
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[keras.metrics.AUC(from_logits=True, name="auc")],
            mask_value=-1,
        )
        for name in ("click", "conversion")
    ]
    if architecture == "mmoe":
        return kerasmtl.models.mmoe(
            inputs, tasks, num_experts=4, expert_units=(32,), tower_units=(16,), embedding_dim=8
        )
    return kerasmtl.models.ple(
        inputs,
        tasks,
        num_levels=2,
        num_shared_experts=2,
        num_task_experts=1,
        expert_units=(32,),
        tower_units=(16,),
        embedding_dim=8,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=("mmoe", "ple"), default="mmoe")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x, y = make_data(args.samples, args.seed)
    split = int(0.8 * args.samples)
    train = ({k: v[:split] for k, v in x.items()}, {k: v[:split] for k, v in y.items()})
    test = ({k: v[split:] for k, v in x.items()}, {k: v[split:] for k, v in y.items()})
    clicked = float(np.mean(y["click"]))
    print(
        f"{args.samples} impressions, {clicked:.0%} clicked, "
        f"{float(np.mean(y['conversion'][y['click'] == 1])):.0%} of clicks converted"
    )

    keras.utils.set_random_seed(args.seed)
    model = build_model(args.architecture)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    # Inputs by name: the dict keys are the input names (and the serving inputs).
    model.fit(*train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
    logs = model.evaluate(*test, batch_size=1024, verbose=0, return_dict=True)
    print(f"\n{args.architecture} test AUC:")
    for task in model.task_names:
        print(f"  {task}: {logs[f'{task}_auc']:.3f}")


if __name__ == "__main__":
    main()
