"""Synthetic pre-training (after Wu, Li & Liang 2022): tasks that draw their own labelled images from a seed."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.pretext.base import PretextTask, check_integer

MIN_SIDE = 8  # smallest image side a synthetic task draws on
VALIDATION_START = 2**30  # validation batches are numbered from here on, a batch number training never reaches


class SyntheticTask(PretextTask):
    """A pretext task whose images are generated, never read: `transform(images, step)` keeps only the batch size
    and image shape of `images` and returns `generate(batch, height, width, channels, step)`.

    `generated_batches` makes the batches with no input data at all; the pre-training stage uses it, with
    `images_per_epoch` images an epoch (null: as many as the stage's pool of real images).
    """

    generates_images = True

    def __init__(self, images_per_epoch: int | None = None, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if images_per_epoch is not None:
            check_integer("images_per_epoch", images_per_epoch, 1)
        self.images_per_epoch = images_per_epoch

    def get_config(self):
        return {**super().get_config(), "images_per_epoch": self.images_per_epoch}

    def check_images(self, shape):
        height, width = shape[1], shape[2]
        if (height is not None and height < MIN_SIDE) or (width is not None and width < MIN_SIDE):
            raise RecipeError(f"pretrain.task: {self.task_name} draws images of the data's shape; {height}x{width} is "
                              f"too small; allowed: at least {MIN_SIDE}x{MIN_SIDE}")

    def transform(self, images, step):
        self.check_images(images.shape)
        shape = tf.shape(images)
        out, labels = self.generate(shape[0], shape[1], shape[2], shape[3], step)
        return tf.ensure_shape(out, images.shape), labels

    def generate(self, batch, height, width, channels, step) -> tuple[tf.Tensor, tf.Tensor]:
        """Batch number `step`: `(float32 images [batch, height, width, channels] in [0, 1], labels)`."""
        raise NotImplementedError

    def generated_batches(self, batch_size: int, image_shape, start: int = 0, batches: int | None = None):
        """Batches number `start`, `start + 1`, ... of `batch_size` generated images of `image_shape` (H, W, C) with
        their labels: `batches` of them, or endless batches without `batches`."""
        height, width, channels = (int(v) for v in image_shape)
        self.check_images(tf.TensorShape([batch_size, height, width, channels]))
        stop = np.iinfo(np.int64).max if batches is None else start + batches
        shape = [batch_size, height, width, channels]
        numbers = tf.data.Dataset.range(start, stop)
        return numbers.map(lambda step: _with_shape(self.generate(batch_size, height, width, channels, step), shape),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)

    def validation_batches(self, batch_size: int, image_shape, batches: int):
        """`batches` generated batches of the same classes that no training batch repeats (from `VALIDATION_START`
        on; a task of another seed would draw other classes)."""
        return self.generated_batches(batch_size, image_shape, VALIDATION_START, batches)


def _with_shape(outputs, shape):
    images, labels = outputs
    return tf.ensure_shape(images, shape), labels


def balanced_labels(batch, num_classes: int, seed) -> tf.Tensor:
    """int32 [batch]: the classes in near-equal numbers (each once per `num_classes` examples, from a random class
    on), in a random order."""
    offset, order = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    first = tf.random.stateless_uniform([], seed=offset, maxval=num_classes, dtype=tf.int32)
    labels = tf.math.floormod(tf.range(batch, dtype=tf.int32) + first, num_classes)
    return tf.gather(labels, tf.argsort(tf.random.stateless_uniform([batch], seed=order)))


def random_colours(batch, count, channels, seed, low: float = 0.5) -> tf.Tensor:
    """float32 [batch, count, channels] in [low, 1]: a random brightness (grey) or colour (RGB) per drawn object."""
    return tf.random.stateless_uniform(tf.stack([batch, count, channels]), seed=seed, minval=low, maxval=1.0)
