"""The GradNorm toy experiment (Chen et al., ICML 2018, Sec. 4), full size.

Ten regression tasks `sigma_i * tanh((B + eps_i) x)` share a 4-layer ReLU trunk of
100 units; their scales `sigma_i` span two orders of magnitude, so equal weighting
lets the large-scale tasks dominate. GradNorm learns weights that order inversely to
`sigma_i`. Prints each task's scale, learned weight, and the test loss relative to
`sigma_i^2` for GradNorm and for equal weighting.

    python examples/gradnorm_toy.py [--epochs 20] [--tasks 10]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl.data.gradnorm_toy import gradnorm_toy  # noqa: E402


def build(num_outputs, input_dim, names, seed):
    keras.utils.set_random_seed(seed)
    trunk = keras.Sequential(
        [keras.layers.Dense(100, activation="relu") for _ in range(4)], name="trunk"
    )
    tasks = [kerasmtl.Task(name, head=num_outputs, loss="mse") for name in names]
    return kerasmtl.hard_sharing({"x": (input_dim,)}, trunk, tasks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.12)
    parser.add_argument("--learning-rate", type=float, default=0.025)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sigmas = np.geomspace(1.0, 100.0, args.tasks)
    x, y = gradnorm_toy(6000, sigmas, seed=args.seed)
    names = list(y)
    split = 5000
    train_y = {name: value[:split] for name, value in y.items()}
    test_y = {name: value[split:] for name, value in y.items()}

    results = {}
    for label, weighting in (
        (
            "GradNorm",
            kerasmtl.weighting.GradNorm(alpha=args.alpha, learning_rate=args.learning_rate),
        ),
        ("equal", "equal"),
    ):
        model = build(y[names[0]].shape[1], x.shape[1], names, args.seed)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=weighting)
        history = model.fit(x[:split], train_y, epochs=args.epochs, batch_size=100, verbose=0)
        logs = model.evaluate(x[split:], test_y, verbose=0, return_dict=True)
        results[label] = {
            "weights": [history.history[f"{name}_weight"][-1] for name in names],
            "relative_loss": [logs[f"{name}_loss"] / s**2 for name, s in zip(names, sigmas)],
        }
        print(f"{label}: trained {args.epochs} epochs")

    print("\n| task | sigma | GradNorm weight | test loss / sigma^2 (GradNorm) | (equal) |")
    print("|---|---|---|---|---|")
    for index, name in enumerate(names):
        print(
            f"| {name} | {sigmas[index]:.1f} | {results['GradNorm']['weights'][index]:.3f} | "
            f"{results['GradNorm']['relative_loss'][index]:.4f} | "
            f"{results['equal']['relative_loss'][index]:.4f} |"
        )
    weights = np.array(results["GradNorm"]["weights"])
    rank = np.corrcoef(np.argsort(np.argsort(weights)), np.argsort(np.argsort(sigmas)))[0, 1]
    print(f"Spearman rank correlation of weight and sigma: {rank:+.3f} (inverse order: -1)")
    for label in results:
        print(f"mean test loss / sigma^2, {label}: {np.mean(results[label]['relative_loss']):.4f}")


if __name__ == "__main__":
    main()
