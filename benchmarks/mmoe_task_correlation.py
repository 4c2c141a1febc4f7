"""Benchmark: shared-bottom vs MMoE vs PLE as the two tasks become less related.

The synthetic experiment of Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts" (KDD 2018), Sec. 3.2-3.3: two
regression tasks from `kerasmtl.data.synthetic.mmoe_synthetic` whose weight
vectors have cosine `correlation`. For each correlation, model and seed, a fresh
model is trained on freshly generated data (the seed sets the data and the
initialization) and the per-task test MSE is recorded. Prints one row per
(correlation, model): test MSE of each task, mean +- std over seeds, plus the
measured Pearson correlation of the labels and the parameter counts.

Default run (small: about 4-5 minutes on 2 CPU cores): input_dim 100, 20000
training and 5000 test samples, 20 epochs of batch 128, Adam 3e-3; MMoE with 4
experts of 16 units; PLE with 2 levels of 2 shared and 1 task-specific expert of
16 units; shared bottom of 32 units; towers of 8 units; correlations 1.0 0.9 0.5
0.0; seeds 0 1 2. (With far fewer training samples, e.g. 4000, the gated models
overfit the 100-d inputs and the comparison says little.) The paper uses 8
experts and 200 repetitions: use the flags for a bigger run, e.g.

    python benchmarks/mmoe_task_correlation.py --epochs 50 --num-experts 8 \\
        --seeds 0 1 2 3 4 5 6 7 8 9

Usage:

    python benchmarks/mmoe_task_correlation.py [--correlations 1.0 0.9 0.5 0.0]
        [--seeds 0 1 2] [--models shared_bottom mmoe ple] [--num-train 20000]
        [--num-test 5000] [--input-dim 100] [--epochs 20] [--batch-size 128]
        [--learning-rate 3e-3] [--num-experts 4] [--expert-units 16]
        [--bottom-units 32] [--tower-units 8]
"""

import argparse
import time

import keras
import numpy as np

from kerasmtl import Task, models
from kerasmtl.data.synthetic import mmoe_synthetic

TASKS = ("task_1", "task_2")


def build(name, args):
    tasks = [Task(task, head=1, loss="mse") for task in TASKS]
    inputs = {"features": (args.input_dim,)}
    towers = (args.tower_units,)
    if name == "shared_bottom":
        return models.shared_bottom(
            inputs, tasks, bottom_units=(args.bottom_units,), tower_units=towers
        )
    if name == "mmoe":
        return models.mmoe(
            inputs, tasks, num_experts=args.num_experts, expert_units=(args.expert_units,),
            tower_units=towers,
        )
    if name == "ple":
        return models.ple(
            inputs, tasks, num_levels=2, num_shared_experts=2, num_task_experts=1,
            expert_units=(args.expert_units,), tower_units=towers,
        )
    raise ValueError(f"Unknown model {name!r}. Use shared_bottom, mmoe or ple.")


def run(name, correlation, seed, args):
    x, y = mmoe_synthetic(
        args.num_train + args.num_test, correlation, input_dim=args.input_dim, seed=seed,
        task_names=TASKS,
    )
    train = slice(0, args.num_train)
    test = slice(args.num_train, None)
    keras.utils.set_random_seed(seed)
    model = build(name, args)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    model.fit(
        x[train], {task: y[task][train] for task in TASKS}, epochs=args.epochs,
        batch_size=args.batch_size, verbose=0,
    )
    result = model.evaluate(
        x[test], {task: y[task][test] for task in TASKS}, batch_size=1024, verbose=0,
        return_dict=True,
    )
    label_correlation = np.corrcoef(y[TASKS[0]][:, 0], y[TASKS[1]][:, 0])[0, 1]
    return [result[f"{task}_loss"] for task in TASKS], label_correlation, model.count_params()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--correlations", type=float, nargs="+", default=[1.0, 0.9, 0.5, 0.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["shared_bottom", "mmoe", "ple"])
    parser.add_argument("--num-train", type=int, default=20000)
    parser.add_argument("--num-test", type=int, default=5000)
    parser.add_argument("--input-dim", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--num-experts", type=int, default=4)
    parser.add_argument("--expert-units", type=int, default=16)
    parser.add_argument("--bottom-units", type=int, default=32)
    parser.add_argument("--tower-units", type=int, default=8)
    args = parser.parse_args()

    print(f"settings: {vars(args)}", flush=True)
    start = time.perf_counter()
    rows = []
    for correlation in args.correlations:
        for name in args.models:
            losses, label_correlations = [], []
            for seed in args.seeds:
                task_losses, label_correlation, num_params = run(name, correlation, seed, args)
                losses.append(task_losses)
                label_correlations.append(label_correlation)
            losses = np.array(losses)
            rows.append((correlation, name, num_params, np.mean(label_correlations),
                         losses.mean(axis=0), losses.std(axis=0)))
            print(f"  done: correlation={correlation} model={name} "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)

    header = (f"{'correlation':>11}  {'label corr':>10}  {'model':<13} {'params':>6}  "
              f"{'task_1 test MSE':>17}  {'task_2 test MSE':>17}")
    print()
    print(f"per-task test MSE, mean +- std over seeds {args.seeds}")
    print(header)
    print("-" * len(header))
    for correlation, name, num_params, label_correlation, mean, std in rows:
        print(f"{correlation:>11.2f}  {label_correlation:>10.3f}  {name:<13} {num_params:>6}  "
              f"{mean[0]:>8.3f} +- {std[0]:<5.3f}  {mean[1]:>8.3f} +- {std[1]:<5.3f}")
    print(f"\ntotal time: {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
