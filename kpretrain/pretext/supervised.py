"""Supervised pre-training as a task: the labels are the pre-training data set's own classes."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.pretext.base import OptionError, PretextTask


@keras.saving.register_keras_serializable(package="kpretrain")
class SupervisedTask(PretextTask):
    """Passes `(images, labels)` batches through unchanged; `num_classes` is the pre-training data set's."""

    task_name = "supervised"
    needs_labels = True

    def __init__(self, num_classes: int | None = None, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 2):
            raise OptionError("num_classes", num_classes, "an integer >= 2")
        self.num_classes = num_classes

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}

    def call(self, images, labels=None, training=True):
        """`(images, labels)` unchanged: the data set supplies the labels."""
        return tf.convert_to_tensor(images, tf.float32), tf.cast(labels, tf.int32)

    def transform(self, images, step):
        raise TypeError("supervised pre-training takes its labels from the data set; use make_dataset on "
                        "(images, labels) batches")

    def make_dataset(self, batches: tf.data.Dataset, start: int = 0) -> tf.data.Dataset:
        """`(images, labels)` batches as they are (the labels are the data set's)."""
        return batches.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int32))).prefetch(tf.data.AUTOTUNE)

    def describe(self, label: int) -> str:
        return f"class {label}"
