"""Noise task: was noise added (label > 0) or is the image clean (label 0, untouched)?"""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.pretext.base import OptionError, PretextTask, match_histogram, check_choice, check_number, check_range

NOISE_KINDS = ("gaussian", "salt_pepper", "speckle")


@keras.saving.register_keras_serializable(package="kpretrain")
class NoiseTask(PretextTask):
    """Noisy images get `gaussian` (x + s·N(0,1)), `salt_pepper` (a fraction s of the pixels set to 0 or 1)
    or `speckle` (x + s·x·N(0,1)) noise, clipped to [0, 1], with the strength s drawn from `strength`.

    `levels=N` makes N+1 classes: 0 clean, k the k-th of N strengths evenly spaced from min to max of `strength`.
    `p` is the probability of a noisy image.  Speckle leaves black pixels black, and salt and pepper may hit
    no pixel at very low strengths, so a noisy image can occasionally equal the clean one.  `match` removes
    intensity cues that give noise away (see the shortcut check): `moments` shifts and scales each noisy image to
    its clean image's mean and standard deviation (clipped to [0, 1]), `histogram` gives it exactly the clean
    image's intensity histogram (pixels re-valued rank for rank).
    """

    task_name = "noise"

    def __init__(self, kind: str = "gaussian", strength=(0.1, 0.3), p: float = 0.5, levels: int | None = None,
                 match: str = "none", seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.match = check_choice("match", match, ("none", "moments", "histogram"))
        self.kind = check_choice("kind", kind, NOISE_KINDS)
        self.strength = check_range("strength", strength, 0.0, 1.0, low_open=True)
        self.p = check_number("p", p, 0.0, 1.0)
        if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 1):
            raise OptionError("levels", levels, "null or an integer >= 1")
        self.levels = levels
        self.num_classes = 2 if levels is None else levels + 1

    def get_config(self):
        config = super().get_config()
        config.update({"kind": self.kind, "strength": list(self.strength), "p": self.p, "levels": self.levels,
                       "match": self.match})
        return config

    def transform(self, images, step):
        noisy_seed, level_seed, strength_seed, noise_seed = self.seeds(step, 4)
        batch = tf.shape(images)[0]
        noisy = tf.random.stateless_uniform([batch], seed=noisy_seed) < self.p
        low, high = self.strength
        if self.levels is None:
            labels = tf.cast(noisy, tf.int32)
            strength = tf.random.stateless_uniform([batch], minval=low, maxval=high, seed=strength_seed)
        else:
            level = tf.random.stateless_uniform([batch], minval=1, maxval=self.levels + 1, dtype=tf.int32,
                                                seed=level_seed)
            labels = tf.where(noisy, level, 0)
            spacing = (high - low) / max(self.levels - 1, 1)
            strength = low + spacing * tf.cast(level - 1, tf.float32)
        strength = tf.reshape(strength, [-1, 1, 1, 1])
        corrupted = self._add_noise(images, strength, noise_seed)
        if self.match == "moments":  # the clean image's mean and standard deviation
            mean, var = tf.nn.moments(images, axes=[1, 2, 3], keepdims=True)
            n_mean, n_var = tf.nn.moments(corrupted, axes=[1, 2, 3], keepdims=True)
            corrupted = tf.clip_by_value(mean + (corrupted - n_mean) * tf.sqrt(var / tf.maximum(n_var, 1e-12)), 0.0, 1.0)
        elif self.match == "histogram":
            corrupted = match_histogram(corrupted, images)
        return tf.where(tf.reshape(noisy, [-1, 1, 1, 1]), corrupted, images), labels

    def _add_noise(self, images, strength, seed):
        if self.kind == "salt_pepper":
            pixels = tf.concat([tf.shape(images)[:3], [1]], axis=0)  # same pixels hit in every channel
            u = tf.random.stateless_uniform(pixels, seed=seed)
            salt_or_pepper = tf.cast(u < strength / 2, images.dtype)
            return tf.where(u < strength, salt_or_pepper * tf.ones_like(images), images)
        gauss = tf.random.stateless_normal(tf.shape(images), seed=seed)
        scale = strength * images if self.kind == "speckle" else strength
        return tf.clip_by_value(images + scale * gauss, 0.0, 1.0)

    def describe(self, label: int) -> str:
        if label == 0:
            return "clean"
        return "noisy" if self.levels is None else f"noise level {label}"
