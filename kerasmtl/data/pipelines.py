"""tf.data pipelines that turn feature dicts into `(inputs, {task: label})`."""

import collections.abc

import numpy as np
import tensorflow as tf


def task_dataset(
    dataset,
    labels,
    inputs,
    *,
    mask_values=None,
    mask_when=None,
    model=None,
    batch_size=32,
    shuffle=None,
    seed=None,
    drop_remainder=False,
    prefetch=True,
):
    """Turns a dataset of feature dicts into `(inputs, {task: label})` elements.

    The output feeds `model.fit` of a multi-task model directly: the label dict
    is keyed by task name, the one name used for heads, outputs, losses and
    metrics. Every key is checked when the pipeline is built, before any element
    is read, so a misspelt feature fails at once with the list of what exists.

    Labels can be masked: a task whose feature is absent from this dataset (given
    a `mask_values` entry) or whose `mask_when` predicate holds gets the mask
    value instead of a label: by default -1 for integer labels, which
    `keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)` skips, and NaN
    for float labels, which a masked loss must skip. To mix datasets that carry
    different tasks, build each with `task_dataset` and pass them to
    `fill_missing_labels` before `tf.data.Dataset.sample_from_datasets`.

    Args:
        dataset: a `tf.data.Dataset` (e.g. from `tfds.load` without
            `as_supervised`) whose elements are dicts of features of single,
            unbatched examples (`task_dataset` does the batching).
        labels: the tasks. A task name or a list of task names whose labels are
            the features of the same names, or a dict mapping each task name to
            a feature key or to a callable `fn(example) -> label` of the feature
            dict.
        inputs: the model inputs: a feature key (one input), a list of feature
            keys (inputs in that order) or a dict mapping input names to feature
            keys.
        mask_values: optional dict mapping task names to mask values. A task
            listed here whose feature is absent from `dataset` gets this
            constant for every example (its dtype and shape follow the value:
            Python ints give int64, floats float32). Also the value used by
            `mask_when`. Defaults to -1 for integer labels and NaN for floats.
        mask_when: optional dict mapping task names to predicates
            `fn(example) -> bool tensor`; where the predicate is true the label
            is replaced by the task's mask value.
        model: optional model (anything with a `task_names` attribute); the
            label dict keys must then equal `model.task_names`.
        batch_size: batch size, or `None` for unbatched elements (e.g. before
            `fill_missing_labels` and `sample_from_datasets`).
        shuffle: optional shuffle buffer size, applied before batching.
        seed: optional seed of the shuffle.
        drop_remainder: whether to drop the last, smaller batch.
        prefetch: whether to end with `prefetch(tf.data.AUTOTUNE)`.

    Returns:
        A `tf.data.Dataset` of `(inputs, {task: label})`.

    Example:

    >>> import tensorflow as tf
    >>> features = tf.data.Dataset.from_tensor_slices(
    ...     {"image": tf.zeros((4, 8, 8, 1)), "left": [1, 2, 3, 4], "right": [0, 0, 1, 1]}
    ... )
    >>> dataset = task_dataset(features, ["left", "right"], inputs="image", batch_size=2)
    >>> sorted(dataset.element_spec[1])
    ['left', 'right']
    """
    feature_spec = _feature_spec(dataset)
    available = sorted(feature_spec)
    label_map = _normalize_labels(labels)
    tasks = list(label_map)
    input_keys = _normalize_inputs(inputs)
    mask_values = _per_task(mask_values, tasks, "mask_values")
    mask_when = _per_task(mask_when, tasks, "mask_when")
    for task, predicate in mask_when.items():
        if not callable(predicate):
            raise TypeError(
                f"`mask_when` values must be callables `fn(example) -> bool`. "
                f"Received: mask_when[{task!r}]={predicate!r}"
            )
    if model is not None:
        check_task_names(tasks, model)

    for key in _flat_keys(input_keys):
        if key not in feature_spec:
            raise ValueError(
                f"Input feature {key!r} is not in the dataset. Available feature "
                f"keys: {available}. Tasks: {tasks}. Received: inputs={inputs!r}"
            )

    getters = {}
    for task, source in label_map.items():
        if callable(source):
            getters[task] = source
        elif source in feature_spec:
            getters[task] = _feature_getter(source)
        elif task in mask_values:
            getters[task] = _constant_getter(mask_values[task])
        else:
            raise ValueError(
                f"Label feature {source!r} of task {task!r} is not in the dataset. "
                f"Available feature keys: {available}. Tasks: {tasks}. Fix `labels`, "
                f"or give the task a `mask_values` entry to fill its labels with a "
                f"mask. Received: labels={labels!r}"
            )

    def to_task_example(example):
        task_labels = {}
        for task, getter in getters.items():
            label = tf.convert_to_tensor(getter(example))
            if task in mask_when:
                if task in mask_values:
                    fill = tf.cast(mask_values[task], label.dtype)
                else:
                    fill = tf.cast(_default_mask_value(label.dtype, task), label.dtype)
                label = tf.where(mask_when[task](example), fill, label)
            task_labels[task] = label
        return _select_inputs(example, input_keys), task_labels

    try:
        dataset = dataset.map(
            to_task_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    except KeyError as error:
        # A callable in `labels` or `mask_when` read a feature that does not exist.
        raise ValueError(
            f"A callable in `labels` or `mask_when` read the feature {error.args[0]!r}, "
            f"which is not in the dataset. Available feature keys: {available}. "
            f"Tasks: {tasks}. Received: labels={labels!r}"
        ) from error
    return _finish(dataset, batch_size, shuffle, seed, drop_remainder, prefetch)


def fill_missing_labels(datasets, mask_values=None):
    """Gives datasets with different tasks the same `{task: label}` structure.

    `tf.data.Dataset.sample_from_datasets` and `concatenate` need identical
    element structures. This adds, to each dataset of `(inputs, {task: label})`,
    the tasks that only other datasets have, filled with a mask value of the
    dtype and shape those datasets use: by default -1 for integer labels
    (skipped by `keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)`) and
    NaN for float labels. An unknown leading dimension of a label (a batch built
    without `drop_remainder`) is taken from the dataset's own inputs, so batched
    and unbatched datasets both work; other unknown dimensions are an error.

    Args:
        datasets: a list, tuple or dict of `tf.data.Dataset`s of
            `(inputs, {task: label})`, e.g. from `task_dataset`.
        mask_values: optional dict mapping task names to mask values, used
            instead of the defaults.

    Returns:
        The datasets, in a container of the same type, each with the union of
        the tasks.

    Example:

    >>> import tensorflow as tf
    >>> digits = tf.data.Dataset.from_tensor_slices((tf.zeros((4, 3)), {"digit": [1, 2, 3, 4]}))
    >>> sizes = tf.data.Dataset.from_tensor_slices((tf.zeros((2, 3)), {"size": [0.5, 1.5]}))
    >>> digits, sizes = fill_missing_labels([digits, sizes])
    >>> mixed = tf.data.Dataset.sample_from_datasets([digits, sizes], seed=0)
    >>> sorted(mixed.element_spec[1])
    ['digit', 'size']
    """
    if isinstance(datasets, collections.abc.Mapping):
        names, members = list(datasets), list(datasets.values())
    elif isinstance(datasets, (list, tuple)):
        names, members = None, list(datasets)
    else:
        raise TypeError(
            "`datasets` must be a list, tuple or dict of `tf.data.Dataset`s. "
            f"Received: datasets={datasets!r}"
        )
    label_specs = [_label_spec(dataset, i) for i, dataset in enumerate(members)]
    templates = {}
    for position, specs in enumerate(label_specs):
        for task, spec in specs.items():
            if task not in templates:
                templates[task] = spec
                continue
            template = templates[task]
            if spec.dtype != template.dtype or spec.shape.rank != template.shape.rank:
                raise ValueError(
                    f"Task {task!r} has labels of different types in different "
                    f"datasets: {template} and {spec} (dataset {position}). Cast them "
                    "to one dtype and rank before mixing."
                )
            templates[task] = tf.TensorSpec(
                template.shape.most_specific_compatible_shape(spec.shape), template.dtype
            )
    mask_values = _per_task(mask_values, list(templates), "mask_values")

    filled = []
    for dataset, specs in zip(members, label_specs):
        missing = {task: templates[task] for task in templates if task not in specs}
        if missing:
            dataset = dataset.map(_label_filler(missing, mask_values))
        filled.append(dataset)
    if names is not None:
        return dict(zip(names, filled))
    return type(datasets)(filled)


def check_task_names(task_names, model):
    """Checks that label dict keys equal a model's task names.

    Args:
        task_names: the label dict keys (an iterable of task names).
        model: anything with a `task_names` attribute.

    Raises:
        ValueError: naming the unknown and the missing tasks and listing
            `model.task_names`.
    """
    if not hasattr(model, "task_names"):
        raise TypeError(
            "`model` must have a `task_names` attribute (e.g. a kerasmtl "
            f"`MultiTaskModel`). Received: model={model!r}"
        )
    expected = list(model.task_names)
    task_names = list(task_names)
    unknown = [task for task in task_names if task not in expected]
    missing = [task for task in expected if task not in task_names]
    if unknown or missing:
        raise ValueError(
            "The label dict keys must be the model's task names. "
            f"Unknown tasks: {unknown}. Missing tasks: {missing}. "
            f"Model task names: {expected}. Received: labels={task_names}"
        )


def _finish(dataset, batch_size, shuffle, seed, drop_remainder, prefetch):
    if shuffle is not None and shuffle is not False:
        if isinstance(shuffle, bool) or not isinstance(shuffle, (int, np.integer)) or shuffle < 1:
            raise ValueError(
                "`shuffle` must be None or a positive shuffle buffer size. "
                f"Received: shuffle={shuffle!r}"
            )
        dataset = dataset.shuffle(int(shuffle), seed=seed, reshuffle_each_iteration=True)
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(
                f"`batch_size` must be a positive int or None. Received: batch_size={batch_size!r}"
            )
        if batch_size < 1:
            raise ValueError(
                f"`batch_size` must be a positive int or None. Received: batch_size={batch_size!r}"
            )
        dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset


def _feature_spec(dataset):
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"`dataset` must be a `tf.data.Dataset`. Received: dataset={dataset!r}")
    spec = dataset.element_spec
    if not isinstance(spec, collections.abc.Mapping):
        raise TypeError(
            "`dataset` elements must be dicts of features (e.g. `tfds.load` without "
            "`as_supervised=True`). Received: dataset.element_spec="
            f"{spec!r}"
        )
    return spec


def _normalize_labels(labels):
    if isinstance(labels, str):
        labels = [labels]
    if isinstance(labels, collections.abc.Mapping):
        label_map = dict(labels)
    elif isinstance(labels, (list, tuple)):
        label_map = {task: task for task in labels}
    else:
        raise TypeError(
            "`labels` must be a task name, a list of task names or a dict mapping "
            f"task names to feature keys or callables. Received: labels={labels!r}"
        )
    if not label_map:
        raise ValueError(f"`labels` must name at least one task. Received: labels={labels!r}")
    for task, source in label_map.items():
        if not isinstance(task, str) or not (isinstance(source, str) or callable(source)):
            raise TypeError(
                "`labels` must map task names (str) to feature keys (str) or "
                f"callables. Received: labels={labels!r}"
            )
    return label_map


def _normalize_inputs(inputs):
    if isinstance(inputs, str):
        return inputs
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(k, str) for k in inputs):
        return list(inputs)
    if (
        isinstance(inputs, collections.abc.Mapping)
        and inputs
        and all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items())
    ):
        return dict(inputs)
    raise TypeError(
        "`inputs` must be a feature key, a non-empty list of feature keys or a dict "
        f"mapping input names to feature keys. Received: inputs={inputs!r}"
    )


def _flat_keys(input_keys):
    if isinstance(input_keys, str):
        return [input_keys]
    if isinstance(input_keys, dict):
        return list(input_keys.values())
    return list(input_keys)


def _select_inputs(example, input_keys):
    if isinstance(input_keys, str):
        return example[input_keys]
    if isinstance(input_keys, dict):
        return {name: example[key] for name, key in input_keys.items()}
    return tuple(example[key] for key in input_keys)


def _per_task(values, tasks, argument):
    if values is None:
        return {}
    if not isinstance(values, collections.abc.Mapping):
        # One value for every task would also silently fill misspelt label keys.
        raise TypeError(
            f"`{argument}` must be a dict keyed by task name. Tasks: {tasks}. "
            f"Received: {argument}={values!r}"
        )
    unknown = [task for task in values if task not in tasks]
    if unknown:
        raise ValueError(
            f"`{argument}` names tasks that are not in `labels`: {unknown}. "
            f"Tasks: {tasks}. Received: {argument}={values!r}"
        )
    return dict(values)


def _feature_getter(key):
    return lambda example: example[key]


def _constant_getter(value):
    constant = _as_mask_constant(value)
    return lambda example: constant


def _as_mask_constant(value):
    if isinstance(value, (tf.Tensor, np.ndarray, np.generic)):
        return tf.constant(value)
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.integer):
        return tf.constant(array, dtype=tf.int64)
    if np.issubdtype(array.dtype, np.floating):
        return tf.constant(array, dtype=tf.float32)
    return tf.constant(array)


def _default_mask_value(dtype, task):
    dtype = tf.as_dtype(dtype)
    if dtype.is_integer and not dtype.is_unsigned:
        return -1
    if dtype.is_floating:
        return float("nan")
    raise ValueError(
        f"Task {task!r} has {dtype.name} labels, which have no default mask value "
        "(-1 for signed integers, NaN for floats). Pass one in `mask_values`. "
        f"Received: dtype={dtype.name}"
    )


def _label_spec(dataset, position):
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            f"Each element of `datasets` must be a `tf.data.Dataset`. Received: "
            f"datasets[{position}]={dataset!r}"
        )
    spec = dataset.element_spec
    if (
        not isinstance(spec, tuple)
        or len(spec) != 2
        or not isinstance(spec[1], collections.abc.Mapping)
    ):
        raise TypeError(
            "Each dataset must have `(inputs, {task: label})` elements, e.g. from "
            f"`task_dataset`. Received: datasets[{position}].element_spec={spec!r}"
        )
    for task, label_spec in spec[1].items():
        if not isinstance(label_spec, tf.TensorSpec):
            raise TypeError(
                f"Labels must be dense tensors. Received: datasets[{position}] "
                f"task {task!r} with spec {label_spec!r}"
            )
    return dict(spec[1])


def _label_filler(missing, mask_values):
    fills = {}
    for task, spec in missing.items():
        dims = spec.shape.as_list()
        if any(dim is None for dim in dims[1:]):
            raise ValueError(
                f"Cannot fill task {task!r}: its labels have the spec {spec} in the "
                "other datasets, and only an unknown leading (batch) dimension can be "
                "inferred. Give the labels a static shape, e.g. with "
                "`drop_remainder=True` or `tf.ensure_shape`."
            )
        if task in mask_values:
            value = mask_values[task]
        else:
            value = _default_mask_value(spec.dtype, task)
        fills[task] = (dims, tf.cast(value, spec.dtype))

    def add_missing_labels(inputs, labels):
        labels = dict(labels)
        reference = tf.nest.flatten(inputs)[0]
        for task, (dims, value) in fills.items():
            if dims and dims[0] is None:
                shape = tf.concat(
                    [tf.shape(reference)[:1], tf.constant(dims[1:], dtype=tf.int32)], axis=0
                )
            else:
                shape = dims
            labels[task] = tf.fill(shape, value)
        return inputs, labels

    return add_missing_labels
