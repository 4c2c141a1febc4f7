"""Benchmark: ESMM (and AITM) vs a CVR model trained on clicked impressions only.

The point of Ma et al., "Entire Space Multi-Task Model: An Effective Approach for
Estimating Post-Click Conversion Rate" (SIGIR 2018): a conversion-rate (CVR) model
trained on clicked impressions only (the paper's BASE) is used on every impression,
so it suffers from sample selection bias and data sparsity; ESMM learns pCVR over
the entire impression space through pCTCVR = pCTR * pCVR.

Data: `kerasmtl.data.funnel.make_funnel` (a known funnel; `--selection-bias` sets how
much the click-driving features also raise conversion; `--click-rate` the sparsity of
clicks; `--shared-factor` how much the click and conversion user/item effects are the
same latent factors, i.e. what ESMM's shared embeddings can transfer). Each seed draws a new world
and new impressions (train and test from one call) and new initial weights.
Models, all with the same embedding sizes and towers:

- `naive`: embeddings -> tower -> sigmoid, BCE on the clicked training impressions
  only (the conversion label exists only there), the same number of epochs;
- `esmm`: `kerasmtl.models.esmm.ESMM`, CTR and CTCVR losses over all impressions;
  its `cvr` output is the estimate;
- `aitm`: `kerasmtl.models.aitm.AITM` with steps (click, conversion) over all
  impressions; its CVR estimate is p(conversion) / p(click), clipped to [0, 1].

Evaluated on the held-out impressions, ALL of them (the entire space): the AUC of
the CVR estimate against the potential conversion label (would the impression have
converted if clicked; the generator draws it for every impression), the AUC of the
true CVR against the same labels (the ceiling), the AUC on clicked test impressions
only (where the naive model is trained), and the mean estimate minus the mean true
CVR over all impressions (calibration bias). Prints mean +- 95% confidence interval
(Student t over seeds).

Default run: 40000 training and 40000 test impressions per seed (click rate about
9.5%), towers 32-16, embeddings of 8, 3 epochs of batch 512, Adam 3e-3, seeds 0-9:
about 19 s per seed for the three models, 3-3.5 minutes in all on 2 shared CPU cores
(TensorFlow backend), measured 2026-11-30.

The paper's conditions (sparse clicks, high-cardinality ids whose factors drive both
click and conversion) and their opposite, as reported in benchmarks/README.md, about
2 min 50 s each on 2 shared CPU cores:

    python benchmarks/funnel_esmm.py --seeds $(seq 100 115) --models naive esmm \
        --num-train 300000 --num-test 50000 --num-users 2000 --num-items 1000 \
        --click-rate 0.02 --shared-factor 1.0 --main-effect 1.0 --selection-bias 1.0 \
        --learning-rate 1e-3 --epochs 4 --early-stopping naive
    (the same with --click-rate 0.3 --shared-factor 0.0)

Usage:

    python benchmarks/funnel_esmm.py [--seeds 0 1 ... 9] [--models naive esmm aitm]
        [--num-train 40000] [--num-test 40000] [--epochs 3] [--batch-size 512]
        [--selection-bias 1.0] [--click-bias -3.0 | --click-rate 0.03]
        [--shared-factor 0.0] [--main-effect 0.0] [--early-stopping naive ...]
        [--max-epochs 30] [--patience 2] [--validation-split 0.1] [--num-users 500]
        [--num-items 200] [--item-skew 1.0] [--latent-dim 4] [--conversion-bias -1.0]
        [--conversion-scale 1.0] [--tower-units 32 16] [--embedding-dim 8] [--alpha 0.6]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerasmtl.data.funnel import make_funnel  # noqa: E402
from kerasmtl.layers import Expert  # noqa: E402
from kerasmtl.models.aitm import AITM  # noqa: E402
from kerasmtl.models.esmm import ESMM  # noqa: E402
from kerasmtl.models.tabular_inputs import build_inputs  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from intervals import interval_cell  # noqa: E402

MODELS = ("naive", "esmm", "aitm")


def auc(labels, scores):
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties), float64."""
    labels = np.asarray(labels).ravel() > 0.5
    scores = np.asarray(scores, dtype="float64").ravel()
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype="float64")
    # Average rank (1-based) over each run of tied scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (
        positives * negatives))


def naive_model(features, args):
    inputs, shared = build_inputs(features, args.embedding_dim)
    hidden = Expert(tuple(args.tower_units), name="cvr_tower")(shared)
    output = keras.layers.Dense(1, activation="sigmoid", name="cvr")(hidden)
    return keras.Model(inputs, output, name="naive_cvr")


def estimate_cvr(name, data, train, test, args):
    """Trains model `name` on the training impressions; returns pCVR on the test ones."""
    x_train = {key: value[train] for key, value in data["x"].items()}
    x_test = {key: value[test] for key, value in data["x"].items()}
    click, conversion = data["click"][train], data["conversion"][train]
    optimizer = keras.optimizers.Adam(args.learning_rate)
    fit = dict(epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    if name in args.early_stopping:
        # Up to `--max-epochs`: the model stops when the validation loss
        # (the last `--validation-split` of its training data) of what trains its CVR
        # estimate stops improving: the naive model's BCE, ESMM's CTCVR loss (its CTR
        # loss plateaus earlier), AITM's total loss; the best weights are restored.
        monitor = "val_ctcvr_loss" if name == "esmm" else "val_loss"
        fit.update(epochs=args.max_epochs, validation_split=args.validation_split, callbacks=[
            keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=args.patience,
                                          restore_best_weights=True)])
    if name == "naive":
        model = naive_model(data["features"], args)
        model.compile(optimizer=optimizer, loss="binary_crossentropy")
        clicked = click[:, 0] == 1.0
        model.fit({key: value[clicked] for key, value in x_train.items()},
                  conversion[clicked], **fit)
        return model.predict(x_test, batch_size=4096, verbose=0)[:, 0]
    if name == "esmm":
        model = ESMM(data["features"], tower_units=tuple(args.tower_units),
                     embedding_dim=args.embedding_dim)
        model.compile(optimizer=optimizer)
        model.fit(x_train, model.funnel_labels(click, conversion), **fit)
        return model.predict(x_test, batch_size=4096, verbose=0)["cvr"][:, 0]
    if name == "aitm":
        model = AITM(data["features"], task_names=("click", "conversion"),
                     tower_units=tuple(args.tower_units), embedding_dim=args.embedding_dim,
                     alpha=args.alpha)
        model.compile(optimizer=optimizer)
        model.fit(x_train, model.funnel_labels(click, conversion), **fit)
        predicted = model.predict(x_test, batch_size=4096, verbose=0)
        ratio = predicted["conversion"][:, 0] / np.maximum(predicted["click"][:, 0], 1e-7)
        return np.clip(ratio, 0.0, 1.0)
    raise ValueError(f"Unknown model {name!r}. Use one of {MODELS}.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--num-train", type=int, default=40000)
    parser.add_argument("--num-test", type=int, default=40000)
    parser.add_argument("--selection-bias", type=float, default=1.0)
    parser.add_argument("--click-bias", type=float, default=None,
                        help="click intercept (-3.0 if neither it nor --click-rate is given)")
    parser.add_argument("--click-rate", type=float, default=None,
                        help="mean true CTR; solves the click intercept (sparsity)")
    parser.add_argument("--shared-factor", type=float, default=0.0,
                        help="correlation of the click and conversion user/item effects")
    parser.add_argument("--main-effect", type=float, default=0.0,
                        help="weight of additive per-user/per-item effects in the affinity")
    parser.add_argument("--conversion-bias", type=float, default=-1.0)
    parser.add_argument("--item-skew", type=float, default=1.0)
    parser.add_argument("--latent-dim", type=int, default=4)
    parser.add_argument("--num-users", type=int, default=500)
    parser.add_argument("--num-items", type=int, default=200)
    parser.add_argument("--conversion-scale", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--early-stopping", nargs="*", choices=MODELS, default=[],
                        help="models trained up to --max-epochs with early stopping on a "
                             "validation split (the others: --epochs epochs)")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--validation-split", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--tower-units", type=int, nargs="+", default=[32, 16])
    parser.add_argument("--embedding-dim", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=0.6)
    args = parser.parse_args()

    print(f"settings: {vars(args)}; backend {keras.backend.backend()}", flush=True)
    start = time.perf_counter()
    results = {name: {"all": [], "clicked": [], "bias": [], "seconds": []}
               for name in args.models}
    ceiling, click_rates = [], []
    for seed in args.seeds:
        data = make_funnel(
            args.num_train + args.num_test, num_users=args.num_users, num_items=args.num_items,
            click_bias=args.click_bias, click_rate=args.click_rate,
            shared_factor=args.shared_factor, main_effect=args.main_effect,
            conversion_bias=args.conversion_bias,
            conversion_scale=args.conversion_scale, item_skew=args.item_skew,
            latent_dim=args.latent_dim, selection_bias=args.selection_bias, seed=seed,
        )
        train = slice(0, args.num_train)
        test = slice(args.num_train, None)
        labels = data["potential_conversion"][test][:, 0]
        true_cvr = data["cvr"][test][:, 0]
        clicked = data["click"][test][:, 0] == 1.0
        ceiling.append(auc(labels, true_cvr))
        click_rates.append(float(data["click"][train].mean()))
        for name in args.models:
            keras.utils.set_random_seed(seed)
            began = time.perf_counter()
            estimate = estimate_cvr(name, data, train, test, args)
            results[name]["seconds"].append(time.perf_counter() - began)
            results[name]["all"].append(auc(labels, estimate))
            results[name]["clicked"].append(auc(labels[clicked], estimate[clicked]))
            results[name]["bias"].append(float(estimate.mean() - true_cvr.mean()))
        scores = ", ".join(f"{name} {results[name]['all'][-1]:.3f}" for name in args.models)
        print(f"  seed {seed}: CVR AUC all impressions {scores}, ceiling {ceiling[-1]:.3f} "
              f"({time.perf_counter() - start:.0f}s)", flush=True)

    def cell(values, digits=3):
        return interval_cell(values, digits, separator="+-")

    print()
    print(f"CVR on held-out impressions, mean +- 95% CI over {len(args.seeds)} seeds "
          f"{args.seeds}; train click rate {np.mean(click_rates):.3f}")
    print("| model | CVR AUC, all impressions | CVR AUC, clicked only | "
          "mean pCVR - mean true CVR (all) | fit + predict s |")
    print("|---|---|---|---|---|")
    for name in args.models:
        row = results[name]
        print(f"| {name} | {cell(row['all'])} | {cell(row['clicked'])} | "
              f"{cell(row['bias'])} | {np.mean(row['seconds']):.1f} |")
    print(f"| true CVR (ceiling) | {cell(ceiling)} | | | |")
    if "naive" in results and "esmm" in results:
        gaps = np.array(results["esmm"]["all"]) - np.array(results["naive"]["all"])
        print(f"\nESMM - naive, CVR AUC over all impressions (paired by seed): {cell(gaps)}")
    print(f"total time: {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
