"""Mixed task ("all of the above"): one labelling task per batch, switching between them, one head per task."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.models.heads import create_head
from kpretrain.pretext.base import OptionError, PretextTask, check_choice

SCHEDULES = ("random", "round_robin", "every_n")


@keras.saving.register_keras_serializable(package="kpretrain")
class MixedTask(PretextTask):
    """Batch `step` is labelled by one active task: `round_robin` cycles through the tasks, `every_n` keeps
    each for `every` batches, `random` visits them in a fresh seeded order in every cycle of len(tasks)
    batches (so every task is visited once per cycle).

    `task(images)` returns `(images_out, {name: labels}, {name: sample_weight})`: the inactive tasks get zero
    labels and zero weight, so `fit` trains one head per batch while losses and metrics stay per task
    (`<name>_loss`, `<name>_accuracy`).  Tasks are named by their layer name, which must be unique.
    """

    task_name = "mixed"

    def __init__(self, tasks, schedule: str = "random", every: int = 1, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        allowed = ("a list of at least two labelling tasks on the data's images that keep the batch size and have "
                   "distinct names")
        tasks = list(tasks) if isinstance(tasks, (list, tuple)) else tasks
        if (not isinstance(tasks, list) or len(tasks) < 2
                or any(not isinstance(t, PretextTask) or isinstance(t, MixedTask) or t.num_classes is None
                       or t.batch_multiplier != 1 or getattr(t, "generates_images", False) for t in tasks)
                or len({t.name for t in tasks}) != len(tasks)):
            raise OptionError("tasks", [getattr(t, "name", t) for t in tasks] if isinstance(tasks, list) else tasks,
                              allowed)
        self.tasks = tasks
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise OptionError("every", every, "an integer >= 1")
        self.every = every
        self.task_names = [t.name for t in tasks]
        self.num_classes = {t.name: t.num_classes for t in tasks}

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": [keras.saving.serialize_keras_object(t) for t in self.tasks],
                       "schedule": self.schedule, "every": self.every})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config, tasks=[keras.saving.deserialize_keras_object(t) for t in config["tasks"]])
        return cls(**config)

    def active_task(self, step) -> tf.Tensor:
        """Index of the task labelling batch number `step` (int32 scalar)."""
        count = len(self.tasks)
        step = tf.cast(step, tf.int64)
        if self.schedule == "every_n":
            return tf.cast(tf.math.floormod(step // self.every, count), tf.int32)
        if self.schedule == "round_robin":
            return tf.cast(tf.math.floormod(step, count), tf.int32)
        (order_seed,) = self.seeds(step // count, 1)
        order = tf.argsort(tf.random.stateless_uniform([count], seed=order_seed))
        return tf.gather(order, tf.math.floormod(step, count))

    def match_labels(self, other: "MixedTask") -> "MixedTask":
        """Each sub-task's labels mean what they mean in `other`'s."""
        for mine, theirs in zip(self.tasks, other.tasks):
            mine.match_labels(theirs)
        return self

    def check_images(self, shape):
        for task in self.tasks:
            task.check_images(shape)

    def transform(self, images, step):
        active = self.active_task(step)
        branches = [lambda task=task: task.transform(images, step) for task in self.tasks]
        images_out, labels = tf.switch_case(active, branches)
        images_out = tf.ensure_shape(images_out, images.shape)
        targets, weights = {}, {}
        for i, name in enumerate(self.task_names):
            is_active = tf.equal(active, i)
            targets[name] = tf.where(is_active, labels, tf.zeros_like(labels))
            weights[name] = tf.fill(tf.shape(labels), tf.cast(is_active, tf.float32))
        return images_out, targets, weights

    def describe(self, label) -> str:
        """`label` is `(task index, label)`."""
        index, sub_label = label
        return f"{self.task_names[index]}: {self.tasks[index].describe(sub_label)}"

    def build_model(self, backbone: keras.Model, *, head: str = "linear", seed: int = 0) -> keras.Model:
        """Shared `backbone` with one head per task; outputs `{task name: logits}`."""
        inputs = keras.Input(shape=backbone.input_shape[1:], name="images")
        features = backbone(inputs)
        outputs = {name: create_head(head, backbone.output_shape[-1], task.num_classes, seed=seed + i,
                                     name=f"pretext_{name}")(features)
                   for i, (name, task) in enumerate(zip(self.task_names, self.tasks))}
        return keras.Model(inputs, outputs, name="pretext_mixed_model")

    def compile_kwargs(self) -> dict:
        """Per-task losses; per-task accuracies as weighted metrics, so inactive batches do not count."""
        return {
            "loss": {name: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for name in self.task_names},
            "weighted_metrics": {name: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
                                 for name in self.task_names},
        }

    @property
    def monitor(self) -> str:
        """The first task's accuracy; `monitors` lists them all."""
        return self.monitors[0]

    @property
    def monitors(self) -> list[str]:
        return [f"{name}_accuracy" for name in self.task_names]
