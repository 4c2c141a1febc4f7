"""One worker of a two-worker MultiWorkerMirroredStrategy run (TF_CONFIG set by the caller).

Usage: python multi_worker.py MODE OUTPUT.json [CASE ...]

- MODE "plain_fit": calls Keras's `model.fit` and records whether it raised and
  where (keras-team/keras#20585), as JSON.
- MODE "workaround": trains each case with `kerasmtl.trainers.distributed.fit_multi_worker`;
  the chief (worker 0) then trains the same case on one device, outside the
  strategy, and writes both results.
"""

import json
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

# Created first, before any op runs (it configures the collective ops).
STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()

from common import (  # noqa: E402
    CASES,
    GLOBAL_BATCH,
    build_model,
    callbacks_for,
    make_data,
    result_of,
    write,
)

from kerasmtl.trainers.distributed import fit_multi_worker  # noqa: E402

EPOCHS = 3


def dataset():
    x, y = make_data()
    # Keras's own split: global batches, each worker taking its replicas' share.
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)


def plain_fit(output):
    # Keep Keras's own frames in the traceback: the test checks where it failed.
    keras.config.disable_traceback_filtering()
    with STRATEGY.scope():
        model = build_model(CASES["mgda"])
    record = {"raised": False}
    try:
        # Keras's own fit (MultiTaskModel.fit routes around it under this strategy).
        keras.Model.fit(model, dataset(), epochs=1, shuffle=False, verbose=0)
    except Exception as error:  # recorded and judged by the test
        frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
        record = {
            "raised": True,
            "type": type(error).__name__,
            "message": str(error)[:2000],
            "frames": frames,
        }
    with open(output, "w") as handle:
        json.dump(record, handle)


def workaround(output, names):
    task_index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    results = {}
    for name in names:
        case = CASES[name]
        with STRATEGY.scope():
            model = build_model(case)
        if name == "dwa":  # through MultiTaskModel.fit, which routes to the workaround
            history = model.fit(dataset(), epochs=EPOCHS, callbacks=callbacks_for(case))
        else:
            history = fit_multi_worker(
                model, dataset(), epochs=EPOCHS, callbacks=callbacks_for(case)
            )
        results[name] = {"multi_worker": result_of(model, history.history)}
    if task_index == 0:
        x, y = make_data()
        for name in names:
            case = CASES[name]
            model = build_model(case)
            history = model.fit(
                x,
                y,
                batch_size=GLOBAL_BATCH,
                epochs=EPOCHS,
                shuffle=False,
                verbose=0,
                callbacks=callbacks_for(case),
            )
            results[name]["single"] = result_of(model, history.history)
    write(output, results)


def main():
    mode, output, names = sys.argv[1], sys.argv[2], sys.argv[3:] or list(CASES)
    if mode == "plain_fit":
        plain_fit(output)
    elif mode == "workaround":
        workaround(output, names)
    else:
        raise ValueError(f"MODE must be 'plain_fit' or 'workaround'. Received: {mode!r}")


if __name__ == "__main__":
    main()
