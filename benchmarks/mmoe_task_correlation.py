"""Benchmark: shared-bottom vs OMoE vs MMoE vs PLE as two tasks become less related.

The synthetic experiment of Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts" (KDD 2018), Sec. 3.2-3.3 and Fig. 4:
two regression tasks from `kerasmtl.data.synthetic.mmoe_synthetic` whose weight
vectors have cosine `correlation`. Models:

- `shared_bottom`: `kerasmtl.models.SharedBottom` (one Dense bottom, then towers);
- `omoe`: the paper's one-gate mixture of experts (the MMoE experts, one softmax
  gate shared by both tasks). `kerasmtl.models.MMoE` always builds one gate per
  task, so OMoE is built here from the kit's pieces without touching the library:
  a `SharedBottom` whose bottom is a small functional model of
  `kerasmtl.layers.Expert` x `num_experts` -> `ExpertStack` -> one `Gate` ->
  `ExpertMixture`; towers and heads are the same as the other models';
- `mmoe`: `kerasmtl.models.MMoE` (one gate per task);
- `ple`: `kerasmtl.models.PLE` (Tang et al., RecSys 2020), 2 levels of
  `--ple-shared-experts` shared + `--ple-task-experts` task experts.

Parameter counts are matched to MMoE's: unless given (`--bottom-units`,
`--ple-expert-units`), the shared-bottom width and PLE's expert width are the
integers whose parameter count is closest to MMoE's. OMoE keeps MMoE's experts
(the paper's definition), so it has one gate fewer. The counts are printed.

For each correlation, model and seed, a freshly initialized model is trained on
freshly generated data (the first model of each architecture is compiled once and
re-initialized for later runs, with a fresh optimizer state: the same results as
a new model, without tracing the train step again; `--fresh-models` builds new
ones). The seed sets the data and the initialization, and the same seed
gives every model the same data; for one seed, the correlations share the inputs,
`u1`, `u2` and the sinusoids (only `w2` changes). So differences between models
(and between correlations) are paired by seed: the script prints, besides each
model's mean test MSE with a 95% t-interval over seeds, the paired differences
(e.g. MMoE - shared-bottom) with their 95% t-intervals, and each model's
degradation MSE(correlation) - MSE(1.0).

`--workers 2` splits the seeds over 2 processes (one thread each) and merges their
results; `--output FILE` saves the per-run results as JSON lines (workers write
`FILE.worker<i>` as they go) and `--merge FILE ...` prints the tables of saved runs
without training (seeds missing a run are left out). On a CPU, JAX runs these small
models about 4x faster per step than TensorFlow (`KERAS_BACKEND=jax`).

Usage:

    python benchmarks/mmoe_task_correlation.py [--correlations 1.0 0.9 0.5 0.0]
        [--num-seeds 3 | --seeds 0 1 2] [--first-seed 0]
        [--models shared_bottom omoe mmoe ple] [--num-train 20000]
        [--num-test 5000] [--input-dim 100] [--epochs 20] [--batch-size 128]
        [--learning-rate 3e-3] [--num-experts 4] [--expert-units 16]
        [--bottom-units N] [--ple-expert-units N] [--ple-shared-experts 2]
        [--ple-task-experts 1] [--tower-units 8] [--workers 1]
        [--output FILE] [--merge FILE ...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

from kerasmtl import Task, models
from kerasmtl.data.synthetic import mmoe_synthetic
from kerasmtl.layers import Expert, ExpertMixture, ExpertStack, Gate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from intervals import interval_cell  # noqa: E402

TASKS = ("task_1", "task_2")
MODELS = ("shared_bottom", "omoe", "mmoe", "ple")
PAIRS = (
    ("mmoe", "shared_bottom"),
    ("omoe", "shared_bottom"),
    ("mmoe", "omoe"),
    ("ple", "mmoe"),
    ("ple", "shared_bottom"),
)


# === Models ===


def _tasks():
    return [Task(task, head=1, loss="mse") for task in TASKS]


def omoe_bottom(input_dim, num_experts, expert_units):
    """The one-gate mixture of experts: `num_experts` experts, one softmax gate for all tasks."""
    features = keras.Input((input_dim,), name="omoe_features")
    experts = [
        Expert((expert_units,), name=f"expert_{index}")(features) for index in range(num_experts)
    ]
    stacked = ExpertStack(name="experts")(experts)
    gates = Gate(num_experts, name="gate")(features)
    mixed = ExpertMixture(name="mixture")(stacked, gates)
    return keras.Model(features, mixed, name="omoe")


def build(name, args, bottom_units, ple_expert_units):
    inputs = {"features": (args.input_dim,)}
    towers = (args.tower_units,)
    if name == "shared_bottom":
        return models.shared_bottom(
            inputs, _tasks(), bottom_units=(bottom_units,), tower_units=towers
        )
    if name == "omoe":
        return models.shared_bottom(
            inputs,
            _tasks(),
            tower_units=towers,
            name="omoe",
            bottom=omoe_bottom(args.input_dim, args.num_experts, args.expert_units),
        )
    if name == "mmoe":
        return models.mmoe(
            inputs,
            _tasks(),
            num_experts=args.num_experts,
            expert_units=(args.expert_units,),
            tower_units=towers,
        )
    if name == "ple":
        return models.ple(
            inputs,
            _tasks(),
            num_levels=2,
            num_shared_experts=args.ple_shared_experts,
            num_task_experts=args.ple_task_experts,
            expert_units=(ple_expert_units,),
            tower_units=towers,
        )
    raise ValueError(f"Unknown model. Expected one of {list(MODELS)}. Received: model={name!r}")


def _count(name, args, bottom_units=16, ple_expert_units=16):
    keras.backend.clear_session()
    return build(name, args, bottom_units, ple_expert_units).count_params()


def _closest_size(count_of, target):
    """The width in [1, 512] whose (increasing) parameter count is closest to `target`."""
    low, high = 1, 512
    while low < high:  # smallest width with count >= target
        middle = (low + high) // 2
        if count_of(middle) >= target:
            high = middle
        else:
            low = middle + 1
    candidates = [size for size in (low - 1, low) if size >= 1]
    return min(candidates, key=lambda size: abs(count_of(size) - target))


def matched_sizes(args):
    """The shared-bottom and PLE widths (given or matched to MMoE's count) and every count."""
    target = _count("mmoe", args)
    bottom_units, ple_expert_units = args.bottom_units, args.ple_expert_units
    if bottom_units is None and "shared_bottom" in args.models:
        bottom_units = _closest_size(
            lambda size: _count("shared_bottom", args, bottom_units=size), target
        )
    if ple_expert_units is None and "ple" in args.models:
        ple_expert_units = _closest_size(
            lambda size: _count("ple", args, ple_expert_units=size), target
        )
    bottom_units, ple_expert_units = bottom_units or 1, ple_expert_units or 1  # unused if absent
    counts = {name: _count(name, args, bottom_units, ple_expert_units) for name in args.models}
    return bottom_units, ple_expert_units, counts


# === Experiment ===


def trained_model(name, seed, args, bottom_units, ple_expert_units, compiled):
    """A model with the initialization of `seed`, compiled, with a fresh optimizer state.

    With `args.fresh_models`, a new model is built and compiled. Otherwise the
    first model of each architecture is kept in `compiled`: later runs copy a
    new model's initial weights into it and restore its optimizer's initial
    state, so its traced train step is reused instead of traced again (about
    1.5-2 s per run, most of a short run's time).
    """
    keras.utils.set_random_seed(seed)
    if args.fresh_models:
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
    fresh = build(name, args, bottom_units, ple_expert_units)
    if args.fresh_models or name not in compiled:
        fresh.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
        fresh.optimizer.build(fresh.trainable_variables)
        initial_state = [keras.ops.copy(v.value) for v in fresh.optimizer.variables]
        if not args.fresh_models:
            compiled[name] = (fresh, initial_state)
        return fresh
    model, initial_state = compiled[name]
    # The compiled model also holds the strategy's constant loss weights (non-trainable).
    for variable, value in zip(model.trainable_weights, fresh.trainable_weights):
        variable.assign(value)
    for variable, value in zip(model.optimizer.variables, initial_state):
        variable.assign(value)
    return model


def run(name, correlation, seed, args, bottom_units, ple_expert_units, compiled):
    x, y = mmoe_synthetic(
        args.num_train + args.num_test,
        correlation,
        input_dim=args.input_dim,
        seed=seed,
        task_names=TASKS,
    )
    train = slice(0, args.num_train)
    test = slice(args.num_train, None)
    start = time.perf_counter()
    model = trained_model(name, seed, args, bottom_units, ple_expert_units, compiled)
    num_params = sum(int(np.prod(variable.shape)) for variable in model.trainable_weights)
    model.fit(
        x[train],
        {task: y[task][train] for task in TASKS},
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0,
    )
    predictions = model(x[test])
    return {
        "model": name,
        "correlation": float(correlation),
        "seed": int(seed),
        "params": num_params,
        "label_correlation": float(np.corrcoef(y[TASKS[0]][:, 0], y[TASKS[1]][:, 0])[0, 1]),
        **{
            task: float(
                np.mean(
                    (
                        keras.ops.convert_to_numpy(predictions[task]).astype("float64")
                        - y[task][test]
                    )
                    ** 2
                )
            )
            for task in TASKS
        },
        "seconds": time.perf_counter() - start,
    }


def run_all(args, output):
    bottom_units, ple_expert_units, counts = matched_sizes(args)
    print(
        f"sizes: bottom_units={bottom_units} ple_expert_units={ple_expert_units} params={counts}",
        flush=True,
    )
    start = time.perf_counter()
    records, compiled = [], {}
    for seed in args.seeds:
        for correlation in args.correlations:
            for name in args.models:
                record = run(
                    name, correlation, seed, args, bottom_units, ple_expert_units, compiled
                )
                records.append(record)
                if output is not None:
                    output.write(json.dumps(record) + "\n")
                    output.flush()
        print(f"  done: seed {seed} ({time.perf_counter() - start:.0f}s)", flush=True)
    return records, bottom_units, ple_expert_units


def run_workers(args):
    """Splits the seeds over `args.workers` child processes of one thread each, merges."""
    args.bottom_units, args.ple_expert_units, _ = matched_sizes(args)  # once, for every worker
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "XLA_FLAGS": (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
            "intra_op_parallelism_threads=1"
        ).strip(),
    }
    # Next to --output when given, so that a stopped run's finished records can be merged.
    directory = None if args.output else tempfile.mkdtemp(prefix="mmoe_task_correlation_")
    processes, paths = [], []
    for worker in range(args.workers):
        seeds = args.seeds[worker :: args.workers]
        if not seeds:
            continue
        path = (
            f"{args.output}.worker{worker}"
            if directory is None
            else os.path.join(directory, f"worker_{worker}.jsonl")
        )
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--workers",
            "1",
            "--output",
            path,
            "--seeds",
            *map(str, seeds),
            *_child_arguments(args),
        ]
        processes.append(subprocess.Popen(command, env=environment))
        paths.append(path)
    codes = [process.wait() for process in processes]
    if any(codes):
        raise RuntimeError(f"A worker failed. Received: exit codes={codes}")
    records = load(paths)
    if args.output:
        with open(args.output, "w") as output:
            output.writelines(json.dumps(record) + "\n" for record in records)
    return records


def _child_arguments(args):
    arguments = ["--correlations", *map(str, args.correlations), "--models", *args.models]
    for key in (
        "num_train",
        "num_test",
        "input_dim",
        "epochs",
        "batch_size",
        "learning_rate",
        "num_experts",
        "expert_units",
        "bottom_units",
        "ple_expert_units",
        "ple_shared_experts",
        "ple_task_experts",
        "tower_units",
    ):
        if getattr(args, key) is not None:
            arguments += ["--" + key.replace("_", "-"), str(getattr(args, key))]
    if args.fresh_models:
        arguments.append("--fresh-models")
    return arguments


def load(paths):
    records = []
    for path in paths:
        with open(path) as lines:
            records += [json.loads(line) for line in lines if line.strip()]
    return records


# === Statistics and tables ===


def _cell(values, digits=4):
    return interval_cell(values, digits)


def _signed(values, digits=4):
    return interval_cell(values, digits, sign="+")


def complete(records):
    """The records of the seeds that ran every (model, correlation) (a stopped run's are not)."""
    cells = {(record["model"], record["correlation"]) for record in records}
    by_seed = {}
    for record in records:
        by_seed.setdefault(record["seed"], []).append(record)
    kept = [
        record
        for runs in by_seed.values()
        if {(r["model"], r["correlation"]) for r in runs} == cells
        for record in runs
    ]
    if len(kept) < len(records):
        dropped = sorted({r["seed"] for r in records} - {r["seed"] for r in kept})
        print(f"left out the incomplete seeds {dropped} ({len(records) - len(kept)} runs)")
    return kept


def print_tables(records):
    records = complete(records)
    table = {}  # (model, correlation) -> {seed: record}
    for record in records:
        table.setdefault((record["model"], record["correlation"]), {})[record["seed"]] = record
    names = [name for name in MODELS if any(key[0] == name for key in table)]
    correlations = sorted({key[1] for key in table}, reverse=True)
    seeds = sorted({record["seed"] for record in records})
    seconds = [record["seconds"] for record in records if "seconds" in record]
    if seconds:
        print(
            f"\nbuild + fit + evaluate: {np.mean(seconds):.2f}s per run on average, "
            f"{np.sum(seconds):.0f}s in all ({len(seconds)} runs)"
        )
    print(
        f"\n{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}); 95% t-intervals over seeds; "
        "'mean' is the mean of the two tasks' test MSE"
    )

    print("\nparameters")
    print("| model | params | vs mmoe |")
    print("|---|---|---|")
    params = {
        name: next(
            r["params"] for (m, _), runs in table.items() if m == name for r in runs.values()
        )
        for name in names
    }
    for name in names:
        ratio = f"{params[name] / params['mmoe']:.3f}" if "mmoe" in params else "-"
        print(f"| {name} | {params[name]} | {ratio} |")

    print("\nper-task test MSE, mean ± 95% CI")
    print("| correlation | label corr | model | params | n | task_1 MSE | task_2 MSE | mean |")
    print("|---|---|---|---|---|---|---|---|")
    for correlation in correlations:
        for name in names:
            runs = list(table.get((name, correlation), {}).values())
            if not runs:
                continue
            label = np.mean([r["label_correlation"] for r in runs])
            columns = [[r[task] for r in runs] for task in TASKS]
            print(
                f"| {correlation:.2f} | {label:.3f} | {name} | {params[name]} | {len(runs)} | "
                f"{_cell(columns[0])} | {_cell(columns[1])} | "
                f"{_cell(np.mean(columns, axis=0))} |"
            )

    def paired(first, second):
        common = sorted(set(first) & set(second))
        return common, [[first[s][task] - second[s][task] for s in common] for task in TASKS]

    print("\npaired differences by seed (negative: the first model is better), mean ± 95% CI")
    print("| correlation | difference | n | task_1 | task_2 | mean |")
    print("|---|---|---|---|---|---|")
    for correlation in correlations:
        for first, second in PAIRS:
            if (first, correlation) not in table or (second, correlation) not in table:
                continue
            common, differences = paired(table[(first, correlation)], table[(second, correlation)])
            if not common:
                continue
            print(
                f"| {correlation:.2f} | {first} - {second} | {len(common)} | "
                f"{_signed(differences[0])} | {_signed(differences[1])} | "
                f"{_signed(np.mean(differences, axis=0))} |"
            )

    if 1.0 in correlations:
        print("\ndegradation: MSE(correlation) - MSE(1.0), paired by seed, mean of the two tasks")
        print("| model | " + " | ".join(f"{c:.2f}" for c in correlations if c != 1.0) + " |")
        print("|---|" + "---|" * (len(correlations) - 1))
        for name in names:
            cells = []
            for correlation in correlations:
                if correlation == 1.0:
                    continue
                if (name, correlation) not in table or (name, 1.0) not in table:
                    cells.append("-")
                    continue
                _, differences = paired(table[(name, correlation)], table[(name, 1.0)])
                cells.append(_signed(np.mean(differences, axis=0)))
            print(f"| {name} | " + " | ".join(cells) + " |")

        print(
            "\ngap change: (A - B)(correlation) - (A - B)(1.0), paired by seed, mean of the "
            "two tasks (negative: A's advantage over B grows as the correlation falls)"
        )
        print("| A - B | " + " | ".join(f"{c:.2f}" for c in correlations if c != 1.0) + " |")
        print("|---|" + "---|" * (len(correlations) - 1))
        for first, second in PAIRS:
            if first not in names or second not in names:
                continue
            _, at_one = paired(table[(first, 1.0)], table[(second, 1.0)])
            cells = []
            for correlation in correlations:
                if correlation == 1.0:
                    continue
                _, gaps = paired(table[(first, correlation)], table[(second, correlation)])
                cells.append(_signed(np.mean(np.subtract(gaps, at_one), axis=0)))
            print(f"| {first} - {second} | " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--correlations", type=float, nargs="+", default=[1.0, 0.9, 0.5, 0.0])
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="explicit seeds; overrides --num-seeds/--first-seed",
    )
    parser.add_argument("--num-seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--num-train", type=int, default=20000)
    parser.add_argument("--num-test", type=int, default=5000)
    parser.add_argument("--input-dim", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--num-experts", type=int, default=4, help="experts of MMoE and OMoE")
    parser.add_argument(
        "--expert-units", type=int, default=16, help="units of each MMoE / OMoE expert"
    )
    parser.add_argument(
        "--bottom-units",
        type=int,
        default=None,
        help="shared-bottom width; default: matched to MMoE's parameter count",
    )
    parser.add_argument(
        "--ple-expert-units",
        type=int,
        default=None,
        help="PLE expert width; default: matched to MMoE's parameter count",
    )
    parser.add_argument("--ple-shared-experts", type=int, default=2)
    parser.add_argument("--ple-task-experts", type=int, default=1)
    parser.add_argument("--tower-units", type=int, default=8)
    parser.add_argument(
        "--fresh-models",
        action="store_true",
        help="build and compile a new model per run instead of re-initializing one per model",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes (one thread each) that split the seeds"
    )
    parser.add_argument("--output", default=None, help="save per-run results (JSON lines)")
    parser.add_argument(
        "--merge", nargs="+", default=None, help="print the tables of saved results, train nothing"
    )
    args = parser.parse_args()
    if args.seeds is None:
        args.seeds = list(range(args.first_seed, args.first_seed + args.num_seeds))
    for key in ("workers", "num_seeds", "num_train", "num_test", "epochs"):
        if getattr(args, key) < 1:
            parser.error(
                f"--{key.replace('_', '-')} must be >= 1. Received: {key}={getattr(args, key)}"
            )

    if args.merge:
        print_tables(load(args.merge))
        return
    print(f"settings: {vars(args)} backend={keras.backend.backend()}", flush=True)
    start = time.perf_counter()
    if args.workers > 1:
        records = run_workers(args)
    else:
        output = open(args.output, "w") if args.output else None
        try:
            records, _, _ = run_all(args, output)
        finally:
            if output is not None:
                output.close()
    print_tables(records)
    print(f"\ntotal time: {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
