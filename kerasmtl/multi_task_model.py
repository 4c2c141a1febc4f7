"""`MultiTaskModel`: a functional Keras model with one named output per task."""

import keras
from keras import ops

from kerasmtl import label_checks
from kerasmtl import weighting as weighting_module
from kerasmtl.checks import check_number
from kerasmtl.task import Task, check_log_keys, check_tasks
from kerasmtl.task_loss import (
    fit_mask_rank,
    label_mask,
    masked_task_loss,
    resolve_loss,
    validate_labels,
)
from kerasmtl.trainers import MultiTaskTrainer, gradient_math
from kerasmtl.trainers.non_finite_monitor import NonFiniteMonitor


@keras.saving.register_keras_serializable(package="kerasmtl")
class MultiTaskModel(MultiTaskTrainer, keras.Model):
    """A functional model whose outputs are a dict keyed by task name.

    It trains like any Keras model, `model.fit(x, {"task_a": ya, "task_b": yb})`,
    and adds what multi-task training needs:

    - Labels are checked against the tasks before the first step: an unknown or
      missing key, or a label whose shape or dtype cannot match its head, raises
      a `ValueError` that names the key and lists the model's tasks.
    - Each task's loss is the mean over its labelled samples only (see `Task`
      for missing labels), so a batch with no label for a task adds exactly 0.
    - The total loss is `sum_k w_k L_k`, computed by a weighting strategy
      (`kerasmtl.weighting`) whose state lives in variables: weights change
      during `fit` by `assign`, never by recompiling or retracing.
    - Logs hold `{task}_loss` (the unweighted task loss, averaged over the
      labelled samples of the epoch) and `{task}_weight` (the task's mean
      effective weight), next to `loss` and each task's metrics
      (`{task}_{metric}`). Task and metric names that would make two values
      share one log key are rejected at `compile`.
    - A task with no labelled sample so far in the epoch (or in the whole
      `evaluate` run) logs NaN for `{task}_loss` and for each of its metrics: a
      mean over no sample has no value, and the 0.0 that Keras would log reads
      as a real score (0% accuracy, a perfect loss). Its `{task}_weight` is
      logged as usual. The same holds for a task whose loss was not finite in
      every step of the epoch (no step counted for it). Callbacks that read
      these keys should skip NaN (`LossWeightScheduler` keeps the previous
      weights).
    - Class ids given to a sparse categorical loss are checked against the
      head's number of classes before training (all of in-memory labels, the
      first batch of a `tf.data.Dataset`), and a `sample_weight` dict must be
      keyed by task name like the labels.
    - `metrics_names` lists the log keys in the order of the list that
      `evaluate(..., return_dict=False)` returns.

    Build one with an architecture (`kerasmtl.HardSharing`,
    `kerasmtl.SoftSharing`, the classes of `kerasmtl.models`, or their builder
    functions), or directly from a functional graph as below.

    Args:
        inputs: the model inputs: a `keras.Input`, or a list or dict of them.
            Name them (`keras.Input(shape, name="image")`): the names become the
            input names of the exported serving signature.
        outputs: a dict of output tensors keyed by task name.
        tasks: the `Task`s, one per output key; their order is the task order
            of loss vectors and weight vectors.
        representation: the name of the layer whose output is the shared
            representation that every head reads (the trunk), or `None`.
            Needed only to train with gradients with respect to the
            representation (`compile(gradients="representation")`); the
            builders set it.
        **kwargs: `keras.Model` keyword arguments, such as `name`.

    Example:

    >>> inputs = keras.Input((8,), name="features")
    >>> hidden = keras.layers.Dense(16, activation="relu")(inputs)
    >>> tasks = [Task("a", loss="mse"), Task("b", loss="mse")]
    >>> model = MultiTaskModel(
    ...     inputs,
    ...     {"a": keras.layers.Dense(1, name="a")(hidden),
    ...      "b": keras.layers.Dense(1, name="b")(hidden)},
    ...     tasks,
    ... )
    >>> model.compile(optimizer="adam", loss_weights={"a": 1.0, "b": 0.5})
    >>> model.task_names
    ['a', 'b']
    """

    def __init__(self, inputs, outputs, tasks, representation=None, **kwargs):
        # === Config ===
        tasks = [Task.from_config(t) if isinstance(t, dict) else t for t in tasks]
        names = check_tasks(tasks)
        if not isinstance(outputs, dict):
            raise ValueError(
                "`outputs` of a MultiTaskModel must be a dict keyed by task name. "
                f"Tasks: {names}. Received: outputs of type {type(outputs).__name__}"
            )
        if set(outputs) != set(names):
            raise ValueError(
                f"The output keys must be the task names. Tasks: {names}. "
                f"Received: outputs keys={list(outputs)}"
            )

        # === Functional Model ===
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.tasks = tasks
        self._task_names = names
        if representation is not None:
            layer_names = [layer.name for layer in self.layers]
            if representation not in layer_names:
                raise ValueError(
                    f"`representation` must name a layer of the model. Layers: {layer_names}. "
                    f"Received: representation={representation!r}"
                )
        self.representation = representation
        self.gradient_source = None
        self._representation_views = _Untracked(None)
        self._shared_variable_indices = None
        self._task_loss_trackers = [keras.metrics.Mean(name=f"{name}_loss") for name in names]
        self._task_weight_trackers = [keras.metrics.Mean(name=f"{name}_weight") for name in names]
        # Steps in which a task's loss was not finite (read by `fit`, kept out of logs).
        self._non_finite_trackers = [
            keras.metrics.Sum(name=f"{name}{_NON_FINITE_SUFFIX}") for name in names
        ]
        self.weighting = None
        self._task_loss_fns = None

    @property
    def task_names(self):
        """The task names, in task order."""
        return list(self._task_names)

    def _output_shapes(self):
        return {name: tuple(self.output[name].shape) for name in self._task_names}

    # === Training ===

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        loss_weights=None,
        weighting=None,
        gradients=None,
        **kwargs,
    ):
        """Configures the model for training.

        Args:
            optimizer: as in `keras.Model.compile`.
            loss: a dict of losses keyed by task name (overrides each
                `Task.loss`), or one loss for every task, or `None` to use the
                tasks' own losses.
            metrics: a dict of metric lists keyed by task name (overrides each
                `Task.metrics`), or `None` to use the tasks' own metrics. Metrics
                skip samples with missing labels. Task `t`'s metric `m` logs
                `t_m`: two values that would share a log key raise a `ValueError`.
            loss_weights: a dict of static weights keyed by task name (overrides
                each `Task.loss_weight`): finite numbers >= 0. Held in a variable
                (strategy `Fixed`), so callbacks can `assign` new values without
                recompiling.
            weighting: a weighting strategy: a name such as `"dwa"`, a config
                dict or a `kerasmtl.weighting.Weighting`. Defaults to `Fixed`
                with the tasks' static weights. Cannot be combined with
                `loss_weights` (give the strategy its own arguments instead).
            gradients: for gradient-based strategies, which task gradients they
                see: `"parameters"` (the shared parameters) or
                `"representation"` (the shared representation: cheaper, one
                full backward pass per step; needs `representation`). Defaults
                to the strategy's `preferred_gradients`, else `"parameters"`.
            **kwargs: other `keras.Model.compile` arguments (`run_eagerly`,
                `jit_compile`, `steps_per_execution`, ...).
        """
        names = self._task_names
        for arg_name, value in (
            ("loss", loss),
            ("metrics", metrics),
            ("loss_weights", loss_weights),
        ):
            if isinstance(value, dict):
                unknown = [key for key in value if key not in names]
                if unknown:
                    raise ValueError(
                        f"Unknown key(s) {unknown} in `{arg_name}`: they match no task. "
                        f"Tasks: {names}. Received: {arg_name} keys={list(value)}"
                    )
        if metrics is not None and not isinstance(metrics, dict):
            raise ValueError(
                "`metrics` of a MultiTaskModel must be a dict keyed by task name, e.g. "
                f"{{'{names[0]}': ['accuracy']}}. Tasks: {names}. Received: metrics={metrics!r}"
            )
        if loss_weights is not None and not isinstance(loss_weights, dict):
            raise ValueError(
                "`loss_weights` of a MultiTaskModel must be a dict keyed by task name. "
                f"Tasks: {names}. Received: loss_weights={loss_weights!r}"
            )
        for key, value in (loss_weights or {}).items():
            check_number(value, f"loss_weights['{key}']", f"Task '{key}'")
        if loss_weights is not None and weighting is not None:
            raise ValueError(
                "Pass either static `loss_weights` or a `weighting` strategy, not both. "
                f"Received: loss_weights={loss_weights}, weighting={weighting!r}"
            )

        task_losses = {}
        for task in self.tasks:
            if isinstance(loss, dict):
                task_losses[task.name] = loss.get(task.name, task.loss)
            elif loss is not None:
                task_losses[task.name] = loss
            else:
                task_losses[task.name] = task.loss
        self._task_loss_fns = [resolve_loss(task_losses[name], name) for name in names]

        task_metrics = {}
        for task in self.tasks:
            chosen = (metrics or {}).get(task.name, task.metrics)
            if chosen:
                chosen = list(chosen) if isinstance(chosen, (list, tuple)) else [chosen]
                # A metric object holds state: each model gets its own copy.
                task_metrics[task.name] = [_fresh_metric(metric) for metric in chosen]
        self._task_log_keys = check_log_keys(
            {name: task_metrics.get(name, []) for name in names}, self._model_log_keys()
        )

        if weighting is None:
            static = {task.name: task.loss_weight for task in self.tasks}
            static.update(loss_weights or {})
            strategy = weighting_module.Fixed([float(static[name]) for name in names])
        else:
            strategy = weighting_module.get(weighting)
        # A strategy that takes task names resolves them here (and fails, listing the tasks).
        strategy.bind_tasks(names)
        if not strategy.built:
            strategy.build((len(names),))
        elif strategy.num_tasks != len(names):
            raise ValueError(
                f"The weighting strategy was built for {strategy.num_tasks} tasks but this "
                f"model has {len(names)}: {names}. Received: weighting={strategy.name}"
            )
        self.weighting = strategy
        self._configure_gradients(strategy, gradients)

        # Metrics go to Keras as weighted metrics: the missing-label mask is
        # their sample weight. The losses are ours (`compute_loss`).
        super().compile(
            optimizer=optimizer,
            loss=None,
            weighted_metrics=task_metrics or None,
            **kwargs,
        )
        for tracker in (
            self._task_loss_trackers + self._task_weight_trackers + self._non_finite_trackers
        ):
            tracker.reset_state()
        self._multitask_compile_config = dict(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            # The strategy holds the static weights: `loss_weights` is not saved twice.
            weighting=strategy,
            gradients=gradients,
            **kwargs,
        )

    def _configure_gradients(self, strategy, gradients):
        self.gradient_source = None
        if not strategy.requires_gradients:
            if gradients is not None:
                raise ValueError(
                    f"`gradients` applies to gradient-based strategies only; "
                    f"'{strategy.name}' uses the losses alone. Received: gradients={gradients!r}"
                )
            return
        backend = keras.backend.backend()
        if backend not in ("tensorflow", "jax", "torch"):
            raise ValueError(
                "Gradient-based weighting strategies train on the 'tensorflow', 'jax' and "
                f"'torch' backends. Received: backend={backend!r}, weighting={strategy.name}"
            )
        source = gradient_math.check_gradient_source(self, strategy, gradients)
        if source == gradient_math.REPRESENTATION:
            if self._representation_views.value is None:
                self._representation_views = _Untracked(gradient_math.RepresentationViews(self))
        else:
            # Decided once from the graph: which variables two or more tasks reach.
            self._shared_variable_indices = gradient_math.shared_variable_indices(self)
        self.gradient_source = source

    def _uses_gradient_step(self):
        return self.weighting is not None and self.weighting.requires_gradients

    @property
    def representation_views(self):
        """Views around the shared representation (`gradient_math.RepresentationViews`)."""
        return self._representation_views.value

    @property
    def representation_model(self):
        """A functional view of this model that returns `(outputs, representation)`."""
        views = self._representation_views.value
        return None if views is None else views.full

    @property
    def shared_variable_indices(self):
        """Indices into `trainable_variables` of the variables two or more tasks reach."""
        if self._shared_variable_indices is None:
            self._shared_variable_indices = gradient_math.shared_variable_indices(self)
        return self._shared_variable_indices

    def get_compile_config(self):
        if self.compiled and getattr(self, "_multitask_compile_config", None):
            return keras.saving.serialize_keras_object(self._multitask_compile_config)
        return {}

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _check_data(self, x, y, sample_weight=None, validation_data=None):
        # Checked before Keras converts the data, so that a bad label dict gets our
        # error rather than one from deep inside the data adapters.
        names = self._task_names
        if y is not None:
            y = self._standardize_labels(y)
            label_checks.check_sample_weight_keys(sample_weight, names)
            self._check_class_ids(y)
        else:
            element_spec = getattr(x, "element_spec", None)
            if isinstance(element_spec, (tuple, list)) and len(element_spec) >= 2:
                labels = self._standardize_labels(element_spec[1])
                if len(element_spec) >= 3:
                    label_checks.check_sample_weight_keys(element_spec[2], names)
                if label_checks.is_dataset(x) and self._sparse_tasks(labels):
                    element = label_checks.first_batch(x)
                    if element is not None:
                        self._check_class_ids(self._standardize_labels(element[1]))
        if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3):
            val_x, val_y, val_weight = keras.utils.unpack_x_y_sample_weight(tuple(validation_data))
            self._check_data(val_x, val_y, val_weight)
        elif validation_data is not None:
            self._check_data(validation_data, None)

    def _task_losses_by_name(self):
        if self._task_loss_fns is None:
            return None
        return dict(zip(self._task_names, self._task_loss_fns))

    def _sparse_tasks(self, y):
        losses, shapes = self._task_losses_by_name(), self._output_shapes()
        if losses is None:
            return []
        return [
            name
            for name in self._task_names
            if getattr(y[name], "shape", None) is not None
            and losses[name].sparse_categorical(tuple(y[name].shape), shapes[name])
        ]

    def _check_class_ids(self, y):
        losses = self._task_losses_by_name()
        if losses is None:
            return
        label_checks.check_class_ids(
            y,
            self._task_names,
            self._output_shapes(),
            losses,
            {task.name: task.mask_value for task in self.tasks},
        )

    def call(self, inputs, training=None, mask=None, **kwargs):
        # Keras turns `{name: x}` for a graph built on one tensor into `[x]`, then warns
        # that `[x]` is not that tensor (keras/src/models/functional.py,
        # `_standardize_inputs`): a dict keyed by the input's name is the input itself.
        if (
            isinstance(inputs, dict)
            and isinstance(self.input, keras.KerasTensor)
            and list(inputs) == [self.input.name]
        ):
            inputs = inputs[self.input.name]
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        arguments = label_checks.bound_arguments(keras.Model.fit, self, x, y, args, kwargs)
        self._check_data(
            x,
            y,
            arguments.get("sample_weight"),
            arguments.get("validation_data"),
        )
        monitor = NonFiniteMonitor(self)
        # Callbacks may come by position, after batch_size, epochs and verbose.
        positional = len(args) > 3
        callbacks = list((args[3] if positional else kwargs.get("callbacks")) or [])
        if self._needs_scheduler(callbacks):
            from kerasmtl.callbacks import LossWeightScheduler

            # The strategy changes once per epoch: without the scheduler it never would.
            # Placed first, so checkpoints saved at an epoch's end include its update.
            callbacks.insert(0, LossWeightScheduler())
        callbacks.append(monitor)
        if self._traces_first_step() and arguments.get("verbose", "auto") != 0:
            from kerasmtl.tracing_notice import TracingNotice

            # Tracing K backward passes can take minutes before the progress bar moves.
            callbacks.insert(0, TracingNotice(self))
        if positional:
            args = (*args[:3], callbacks, *args[4:])
        else:
            kwargs["callbacks"] = callbacks
        # The TensorFlow trainer trains here under MultiWorkerMirroredStrategy.
        history = self._fit_override(x, y, args, kwargs)
        if history is None:
            history = super().fit(x, y, *args, **kwargs)
        monitor.warn()
        return history

    def _traces_first_step(self):
        # The step is traced once per compile (`compile` resets `train_function`); torch
        # runs it eagerly unless it is compiled with `jit_compile=True`.
        return (
            self._uses_gradient_step()
            and self.train_function is None
            and not self.run_eagerly
            and (keras.backend.backend() != "torch" or bool(self.jit_compile))
        )

    def _needs_scheduler(self, callbacks):
        if self.weighting is None or not self.weighting.requires_epoch_update:
            return False
        from kerasmtl.callbacks import LossWeightScheduler

        return not any(isinstance(callback, LossWeightScheduler) for callback in callbacks)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        arguments = label_checks.bound_arguments(keras.Model.evaluate, self, x, y, args, kwargs)
        self._check_data(x, y, arguments.get("sample_weight"))
        if arguments.get("return_dict", False) or not arguments:
            return super().evaluate(x, y, *args, **kwargs)
        # Keras's list form follows `metrics` (with `compile_metrics` as one entry),
        # not the log keys: ask for the dict and order it by `metrics_names`.
        return self._logs_as_list(super().evaluate(**_with_dict_logs(arguments)))

    def train_on_batch(self, x, y=None, *args, **kwargs):
        return self._on_batch(keras.Model.train_on_batch, x, y, args, kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        return self._on_batch(keras.Model.test_on_batch, x, y, args, kwargs)

    def _on_batch(self, method, x, y, args, kwargs):
        """`train_on_batch` / `test_on_batch`: checked data, lists ordered as `metrics_names`."""
        arguments = label_checks.bound_arguments(method, self, x, y, args, kwargs)
        self._check_data(x, y, arguments.get("sample_weight"))
        if arguments.get("return_dict", False) or not arguments:
            return method(self, x, y, *args, **kwargs)
        return self._logs_as_list(method(self, **_with_dict_logs(arguments)))

    def _logs_as_list(self, logs):
        names = self.metrics_names
        if set(names) != set(logs):
            names = list(logs)
        values = [logs[name] for name in names]
        # As Keras: a single value is returned as it is.
        return values[0] if len(values) == 1 else values

    @property
    def metrics_names(self):
        """The log keys, in the order of the list `evaluate` returns without `return_dict`.

        Internal trackers (steps with a non-finite task loss) are not among them.
        """
        compile_metrics = getattr(self, "_compile_metrics", None)
        if compile_metrics is None or compile_metrics.built:
            return list(self.get_metrics_result())
        # Before the first step Keras's compiled metrics have no names yet: the
        # names they will have, in task order.
        names = []
        for metric in self.metrics:
            if metric is compile_metrics:
                names += [
                    key
                    for key in getattr(self, "_task_log_keys", {})
                    if key not in self._tracker_names()
                ]
            elif not self._is_internal_metric(metric):
                names.append(metric.name)
        return names

    def _standardize_labels(self, y):
        if not isinstance(y, dict) and len(self._task_names) == 1 and y is not None:
            y = {self._task_names[0]: y}
        validate_labels(y, self._task_names, self._output_shapes(), self._task_losses_by_name())
        return y

    def _task_sample_weight(self, sample_weight, name):
        if isinstance(sample_weight, dict):
            return sample_weight.get(name)
        return sample_weight

    def compute_task_losses(self, y, y_pred, sample_weight=None):
        """Returns `(losses, counts)`: `(K,)` masked-mean task losses and label counts."""
        losses, counts = self.compute_task_loss_list(y, y_pred, sample_weight)
        return ops.stack(losses), ops.stack(counts)

    def compute_task_loss_list(self, y, y_pred, sample_weight=None):
        """Returns `(losses, counts)` as lists of scalars, in task order.

        Gradient-based training differentiates each task loss on its own: a slice of
        the stacked vector would connect every task's variables to every loss.
        """
        if self._task_loss_fns is None:
            raise RuntimeError("The model must be compiled before computing task losses.")
        y = self._standardize_labels(y)
        losses, counts = [], []
        for task, loss_fn in zip(self.tasks, self._task_loss_fns):
            value, count = masked_task_loss(
                loss_fn,
                y[task.name],
                y_pred[task.name],
                mask_value=task.mask_value,
                sample_weight=self._task_sample_weight(sample_weight, task.name),
            )
            losses.append(value)
            counts.append(count)
        return losses, counts

    def track_task_losses(self, losses, counts, weights, present=None):
        """Updates the `{task}_loss` and `{task}_weight` log entries.

        A task absent from this step (`present` False: no labelled sample, or a
        non-finite loss) adds nothing to its log entries. A labelled step with a
        non-finite loss is counted, and `fit` warns once at its end.
        """
        losses = ops.cast(losses, "float32")
        counts = ops.cast(counts, "float32")
        if present is None:
            present = gradient_math.present_tasks(losses, counts)
        kept = ops.cast(present, "float32")
        non_finite = ops.cast(
            ops.logical_and(counts > 0.0, ops.logical_not(ops.isfinite(losses))), "float32"
        )
        safe = ops.where(present, losses, ops.zeros_like(losses))
        replicas = self._num_replicas()
        for index in range(len(self._task_names)):
            self._task_loss_trackers[index].update_state(
                safe[index], sample_weight=counts[index] * kept[index]
            )
            self._task_weight_trackers[index].update_state(
                weights[index], sample_weight=kept[index]
            )
            # Every replica sees the same global-batch losses: count a step once.
            self._non_finite_trackers[index].update_state(non_finite[index] / replicas)

    def non_finite_step_counts(self):
        """Steps of the current epoch in which each task's loss was not finite.

        Returns:
            A dict `{task: count}`; such steps left the task out (see `fit`).
        """
        return {
            name: int(round(float(tracker.result())))
            for name, tracker in zip(self._task_names, self._non_finite_trackers)
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses, counts = self.compute_task_losses(y, y_pred, sample_weight)
        # Under a distribution strategy: the task losses of the global batch.
        losses, counts = self._global_task_losses(losses, counts)
        present = gradient_math.present_tasks(losses, counts)
        total, weights = self.weighting.combine(losses, training=training, present=present)
        self.track_task_losses(losses, counts, weights, present)
        total = total + self.extra_loss_total()
        replicas = self._num_replicas()
        if replicas > 1:
            # Keras sums the replicas' gradients (and unscales the logged loss):
            # each replica contributes 1/num_replicas of the global total.
            total = total / replicas
        return total

    def extra_loss_total(self, forward_losses=None):
        """The model's own losses: `add_loss` terms and weight regularisers, summed.

        Added to the weighted task losses and never scaled by the weighting
        strategy (soft sharing's penalty is one: `SoftSharing` adds it with
        `add_loss`). Every training route adds it: Keras's step through
        `compute_loss`, the gradient steps of the trainers directly.

        Args:
            forward_losses: the losses a stateless forward pass collected (JAX);
                defaults to `self.losses`.
        """
        total = ops.convert_to_tensor(0.0, "float32")
        losses = self.losses if forward_losses is None else forward_losses
        if losses:
            total = total + ops.sum(ops.stack([ops.cast(value, "float32") for value in losses]))
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        y = self._standardize_labels(y)
        if self._compile_metrics is None:
            return self.get_metrics_result()
        safe_y, masks = {}, {}
        for task in self.tasks:
            label = y[task.name]
            present = label_mask(label, task.mask_value)
            safe_y[task.name] = ops.where(present, label, ops.zeros_like(label))
            rank = max(len(y_pred[task.name].shape) - 1, 1)
            mask = ops.cast(fit_mask_rank(present, rank), "float32")
            task_weight = self._task_sample_weight(sample_weight, task.name)
            if task_weight is not None:
                task_weight = ops.cast(task_weight, "float32")
                while len(task_weight.shape) < len(mask.shape):
                    task_weight = ops.expand_dims(task_weight, -1)
                mask = mask * task_weight
            masks[task.name] = mask
        self._compile_metrics.update_state(safe_y, y_pred, masks)
        return self.get_metrics_result()

    def get_metrics_result(self):
        results = {}
        for metric in self.metrics:
            if self._is_internal_metric(metric):
                continue
            result = metric.result()
            if isinstance(result, dict):
                results.update(result)
            else:
                results[metric.name] = result
        if len(self._task_names) == 1 and self._compile_metrics is not None:
            # Keras drops the output name of a single output's metrics; the task
            # name is the key everywhere, so a one-task model logs `{task}_accuracy` too.
            prefix = f"{self._task_names[0]}_"
            names = {metric.name for metric in self._compile_metrics.metrics}
            results = {
                (prefix + key if key in names and not key.startswith(prefix) else key): value
                for key, value in results.items()
            }
        return self._unlabelled_tasks_as_nan(results)

    def _unlabelled_tasks_as_nan(self, results):
        # The `{task}_loss` tracker's total weight is the task's label count so far
        # (see `track_task_losses`); `ops.where` keeps this traceable (JAX, tf.function).
        labelled = {
            name: ops.greater(ops.convert_to_tensor(tracker.count), 0.0)
            for name, tracker in zip(self._task_names, self._task_loss_trackers)
        }
        for key, name in getattr(self, "_task_log_keys", {}).items():
            if key in results and key != f"{name}_weight":
                value = ops.convert_to_tensor(results[key])
                results[key] = ops.where(labelled[name], value, ops.full_like(value, float("nan")))
        return results

    def _is_internal_metric(self, metric):
        return any(metric is tracker for tracker in self._non_finite_trackers)

    def _tracker_names(self):
        return {tracker.name for tracker in self._task_loss_trackers + self._task_weight_trackers}

    def _model_log_keys(self):
        """The log keys that belong to no task: Keras's `loss` and the model's own metrics."""
        own = [
            getattr(self, "_loss_tracker", None),
            getattr(self, "_compile_metrics", None),
            *self._task_loss_trackers,
            *self._task_weight_trackers,
            *self._non_finite_trackers,
        ]
        keys = ["loss"]
        for metric in self.metrics:
            if not any(metric is other for other in own) and metric.name not in keys:
                keys.append(metric.name)
        return keys

    # === Config ===

    def get_config(self):
        # A plain functional model over the same graph gives the graph config.
        graph = keras.Model(inputs=self.input, outputs=self.output, name=self.name)
        config = graph.get_config()
        config["trainable"] = self.trainable
        config["tasks"] = [task.get_config() for task in self.tasks]
        config["representation"] = self.representation
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        tasks = [Task.from_config(task) for task in config.pop("tasks")]
        representation = config.pop("representation", None)
        # Read before `keras.Model.from_config`, which pops them from the dict.
        name, trainable = config.get("name"), config.get("trainable", True)
        graph = keras.Model.from_config(config, custom_objects=custom_objects)
        return cls(
            inputs=graph.input,
            outputs=graph.output,
            tasks=tasks,
            name=name,
            trainable=trainable,
            representation=representation,
        )


_NON_FINITE_SUFFIX = "_non_finite_steps"


def _fresh_metric(metric):
    if isinstance(metric, keras.metrics.Metric):
        return metric.__class__.from_config(metric.get_config())
    return metric


class _Untracked:
    """Holds a model view without making it a tracked (and saved) sublayer."""

    def __init__(self, value):
        self.value = value


def _with_dict_logs(arguments):
    """Keyword arguments of a bound `*_on_batch` call, asking for the dict of logs."""
    arguments = dict(arguments)
    arguments.pop("self", None)
    return {**arguments.pop("kwargs", {}), **arguments, "return_dict": True}
