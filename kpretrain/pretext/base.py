"""Base class of the pretext tasks: a Keras layer that turns a batch of images into (images', labels)."""

from __future__ import annotations

import random

import keras
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.models.heads import attach_head, create_head


class OptionError(RecipeError):
    """A task option has a value that is not allowed; `create_task` prefixes the recipe key."""

    def __init__(self, option: str, value, allowed: str):
        super().__init__(f"{option}: got {value!r}; allowed: {allowed}")
        self.option, self.value, self.allowed = option, value, allowed


def check_range(option: str, value, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> tuple[float, float]:
    """Validate a scalar or `[min, max]` option inside [low, high] (bounds open if asked) as a float pair."""
    pair = (value, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    allowed = (f"a number or [min, max] with {low} {'<' if low_open else '<='} min <= max "
               f"{'<' if high_open else '<='} {high}")
    try:
        lo, hi = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise OptionError(option, value, allowed) from None
    if (lo <= low if low_open else lo < low) or (hi >= high if high_open else hi > high) or lo > hi:
        raise OptionError(option, value, allowed)
    return lo, hi


def check_number(option: str, value, low: float, high: float) -> float:
    """Validate a number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise OptionError(option, value, f"a number in [{low}, {high}]")
    return float(value)


def check_integer(option: str, value, low: int, high: int | None = None) -> int:
    """Validate a whole number in [low, high] (no upper bound if `high` is None)."""
    if (isinstance(value, bool) or not isinstance(value, int) or value < low
            or (high is not None and value > high)):
        raise OptionError(option, value, f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]")
    return int(value)


def check_choice(option: str, value, choices) -> str:
    """Validate that `value` is one of `choices`."""
    if value not in choices:
        raise OptionError(option, value, ", ".join(map(str, choices)))
    return value


def match_histogram(images: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
    """Each image's pixels replaced, rank for rank, by its reference image's pixel values: the same picture
    (ordering of intensities) with exactly the reference's intensity histogram."""
    shape = tf.shape(images)
    flat = tf.reshape(images, [shape[0], -1])
    ranks = tf.argsort(tf.argsort(flat, axis=1, stable=True), axis=1, stable=True)
    values = tf.sort(tf.reshape(reference, [shape[0], -1]), axis=1)
    return tf.reshape(tf.gather(values, ranks, batch_dims=1), shape)


class PretextTask(keras.layers.Layer):
    """A labelling pretext task: `task(images, training=True)` returns `(images_out, int32 labels [batch])`.

    Randomness is stateless: batch number `step` is labelled by `transform(images, step)`, a pure function of
    (seed, step, images).  `make_dataset` numbers the batches of a tf.data pipeline without state; calling the
    layer directly uses and advances an internal batch counter, so the same seed and the same sequence of input
    batches give the same outputs in eager mode, in `tf.function` and in `tf.data`.
    Subclasses set `task_name` and `num_classes` and implement `transform` and `describe`.
    """

    task_name = "pretext"
    num_classes = 2
    batch_multiplier = 1  # output batch size / input batch size
    needs_labels = False  # True: trained on the data set's own labels (`make_dataset` takes (images, labels))
    generates_images = False  # True: draws its own images (synthetic tasks); uses only the shape of those given
    multi_label = False  # True: labels are float32 multi-hot [batch, num_classes], not int32 [batch]

    def __init__(self, seed: int | None = None, **kwargs):
        kwargs.setdefault("trainable", False)
        kwargs.setdefault("name", self.task_name)
        super().__init__(**kwargs)
        self.seed = int(seed) if seed is not None else random.randrange(1, 2**31 - 1)
        self.supports_masking = False
        with tf.init_scope():  # a task may be created inside a traced function (e.g. a tf.data map)
            self._step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config

    def build(self, input_shape):
        """Nothing to build: a task has no weights (its batch counter is not one)."""

    def next_step(self) -> tf.Tensor:
        """The current batch number (int64 scalar); advances the counter."""
        return self._step.assign_add(1) - 1

    def call(self, images, training=True):
        """`training` is accepted for Keras; the task labels in every mode."""
        return self.transform(tf.convert_to_tensor(images, tf.float32), self.next_step())

    def transform(self, images: tf.Tensor, step) -> tuple:
        """The task applied to batch number `step`: `(images_out, labels)`."""
        raise NotImplementedError

    def describe(self, label: int) -> str:
        """Human-readable name of class `label` (for plots)."""
        return f"class {label}"

    def match_labels(self, other: "PretextTask") -> "PretextTask":
        """Make label k mean what it means in `other`, a task of the same kind and options built from another seed
        (the validation task: other images and labels, the same meaning).  Tasks whose label meaning depends on
        the seed (jigsaw's permutation set) copy it; returns `self`."""
        return self

    def check_images(self, shape: tf.TensorShape) -> None:
        """Raise a one-line `RecipeError` if the task cannot label image batches of this shape."""

    def seeds(self, step, count: int) -> list[tf.Tensor]:
        """`count` independent stateless seeds (int32 [2]) for batch number `step`."""
        step = tf.cast(tf.math.floormod(tf.cast(step, tf.int64), 2**31 - 1), tf.int32)
        base = tf.stack([tf.constant(self.seed % (2**31 - 1), tf.int32), step])
        return tf.unstack(tf.random.experimental.stateless_split(base, count))

    # -- integration with kpretrain's training stage -------------------------------------------------
    def make_dataset(self, images: tf.data.Dataset, start: int = 0) -> tf.data.Dataset:
        """Map batched float images (or `(images, ...)` tuples) to what `build_model(...).fit` expects.

        The n-th batch of `images` is labelled as batch number `start + n` (`Dataset.enumerate`, no state): the
        labels are a pure function of (seed, batch number), so a pipeline that starts at batch `start` (e.g. after
        resuming) continues exactly, and op determinism keeps the labelling map parallel.
        """
        if isinstance(images.element_spec, tuple):
            images = images.map(lambda x, *_: x)
        self.check_images(images.element_spec.shape)
        numbered = images.enumerate(start)
        return numbered.map(lambda step, x: self.transform(tf.cast(x, tf.float32), step),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)

    def build_model(self, backbone: keras.Model, *, head: str = "linear", seed: int = 0) -> keras.Model:
        """The pretext model: shared `backbone` plus a fresh pretext head (uncompiled)."""
        pretext_head = create_head(head, backbone.output_shape[-1], self.num_classes, seed=seed,
                                   name=f"pretext_{self.task_name}")
        return attach_head(backbone, pretext_head, name=f"pretext_{self.task_name}_model")

    def compile_kwargs(self) -> dict:
        """Loss and metrics for `model.compile` (the optimizer is added by the training stage)."""
        return {
            "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        }

    @property
    def monitor(self) -> str:
        """History key of the pretext accuracy, plotted next to downstream accuracy."""
        return "accuracy"

