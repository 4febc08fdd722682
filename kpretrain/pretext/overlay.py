"""Overlay task: is this one image (label 0, untouched) or two images of the batch on top of each other (1)?"""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.pretext.base import PretextTask, match_histogram, check_choice, check_number, check_range

OVERLAY_MODES = ("mean", "max")


@keras.saving.register_keras_serializable(package="kpretrain")
class OverlayTask(PretextTask):
    """Label 1 blends an image with a partner from the same batch (never itself): `mean` gives
    `w*a + (1-w)*b` with `w` drawn from `weight_range`, `max` the pixel-wise maximum.

    A batch of one image has no partner, so it is always labelled 0.  `match` removes intensity cues that give a
    blend away (see the shortcut check): `range` rescales it to the intensity range (minimum to maximum) of its
    first image, `histogram` gives it exactly that image's intensity histogram (pixels re-valued rank for rank).
    """

    task_name = "overlay"
    num_classes = 2

    def __init__(self, p: float = 0.5, mode: str = "mean", weight_range=(0.5, 0.5), match: str = "none",
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.match = check_choice("match", match, ("none", "range", "histogram"))
        self.p = check_number("p", p, 0.0, 1.0)
        self.mode = check_choice("mode", mode, OVERLAY_MODES)
        self.weight_range = check_range("weight_range", weight_range, 0.0, 1.0, low_open=True, high_open=True)

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "mode": self.mode, "weight_range": list(self.weight_range),
                       "match": self.match})
        return config

    def transform(self, images, step):
        label_seed, perm_seed, weight_seed = self.seeds(step, 3)
        batch = tf.shape(images)[0]
        overlaid = tf.logical_and(tf.random.stateless_uniform([batch], seed=label_seed) < self.p, batch > 1)
        labels = tf.cast(overlaid, tf.int32)
        partners = tf.gather(images, partner_indices(batch, perm_seed))
        if self.mode == "max":
            blended = tf.maximum(images, partners)
        else:
            w = tf.random.stateless_uniform([batch, 1, 1, 1], minval=self.weight_range[0],
                                            maxval=self.weight_range[1], seed=weight_seed)
            blended = w * images + (1.0 - w) * partners
        if self.match == "range":  # to the first image's intensity range
            low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
            high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
            b_low = tf.reduce_min(blended, axis=[1, 2, 3], keepdims=True)
            b_high = tf.reduce_max(blended, axis=[1, 2, 3], keepdims=True)
            blended = low + (blended - b_low) * (high - low) / tf.maximum(b_high - b_low, 1e-6)
        elif self.match == "histogram":
            blended = match_histogram(blended, images)
        return tf.where(tf.reshape(overlaid, [-1, 1, 1, 1]), blended, images), labels

    def describe(self, label: int) -> str:
        return "overlay" if label else "single"


def partner_indices(batch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A random partner index per example, never the example itself when `batch > 1`.

    Examples are put on a random cycle (a permutation) and each one is paired with its successor on it.
    """
    order = tf.argsort(tf.random.stateless_uniform([batch], seed=seed))
    position = tf.argsort(order)
    return tf.gather(order, tf.math.floormod(position + 1, batch))
