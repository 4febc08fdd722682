"""Rotation task (RotNet): predict by how many quarter turns an image was rotated; exact, never interpolated."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.pretext.base import OptionError, PretextTask

ALL_ANGLES = (0, 90, 180, 270)


@keras.saving.register_keras_serializable(package="kpretrain")
class RotationTask(PretextTask):
    """Label k means the image was rotated by `angles[k]` degrees counter-clockwise, i.e.
    `tf.image.rot90(image, angles[k] // 90)`; with the default angles, label k means `rot90(image, k)`.

    90° and 270° would change the shape of a non-square image, so non-square images need `angles=[0, 180]`.
    `all_rotations=True` is the RotNet setting: every image appears once per angle in the same batch, the
    output batch being `[rot(images, angles[0]); rot(images, angles[1]); ...]`.
    """

    task_name = "rotation"

    def __init__(self, angles=ALL_ANGLES, all_rotations: bool = False, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        allowed = "a list of at least two distinct angles out of 0, 90, 180, 270"
        if (not isinstance(angles, (list, tuple)) or len(set(angles)) != len(angles) or len(angles) < 2
                or any(a not in ALL_ANGLES or isinstance(a, bool) for a in angles)):
            raise OptionError("angles", angles, allowed)
        if not isinstance(all_rotations, bool):
            raise OptionError("all_rotations", all_rotations, "true, false")
        self.angles = tuple(int(a) for a in angles)
        self.all_rotations = all_rotations
        self.num_classes = len(self.angles)
        self.batch_multiplier = len(self.angles) if all_rotations else 1

    def get_config(self):
        config = super().get_config()
        config.update({"angles": list(self.angles), "all_rotations": self.all_rotations})
        return config

    def check_images(self, shape):
        height, width = shape[1], shape[2]
        if height != width and any(a % 180 for a in self.angles):
            raise RecipeError(f"pretrain.options.angles: {list(self.angles)} would change the shape of "
                              f"{height}x{width} images; allowed for non-square images: [0, 180]")

    def transform(self, images, step):
        self.check_images(images.shape)
        rotated = [tf.image.rot90(images, a // 90) if a else images for a in self.angles]
        batch = tf.shape(images)[0]
        if self.all_rotations:
            labels = tf.repeat(tf.range(self.num_classes, dtype=tf.int32), batch)
            return tf.concat(rotated, axis=0), labels
        (label_seed,) = self.seeds(step, 1)
        labels = tf.random.stateless_uniform([batch], seed=label_seed, maxval=self.num_classes, dtype=tf.int32)
        return select_per_example(labels, rotated), labels

    def describe(self, label: int) -> str:
        return f"rot {self.angles[label]}°"


def select_per_example(labels: tf.Tensor, candidates: list[tf.Tensor]) -> tf.Tensor:
    """Per example i, `candidates[labels[i]][i]`: a chain of `tf.where`, exact (no arithmetic on pixels)."""
    out = candidates[0]
    for k, candidate in enumerate(candidates[1:], start=1):
        out = tf.where(tf.reshape(tf.equal(labels, k), [-1, 1, 1, 1]), candidate, out)
    return out
