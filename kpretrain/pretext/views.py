"""Two augmented views per image: the augmentation every two-view task shares (SimCLR, SimSiam, Barlow Twins,
VICReg), made by Keras preprocessing layers inside tf.data with stateless seeds."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.pretext.base import OptionError, PretextTask, check_number

VIEW_OPTIONS = ("crop", "translation", "flip", "color", "noise")


class StatelessSeeds(keras.random.SeedGenerator):
    """Feeds seeds derived from one stateless seed to Keras random ops (Keras' augmentation layers take a
    SeedGenerator, whose variable state would make parallel tf.data maps nondeterministic)."""

    def __init__(self, seed: tf.Tensor):  # no variable: deliberately skips SeedGenerator.__init__
        self.name = "stateless_seeds"
        self._seed, self._drawn = seed, 0

    def next(self, ordered=True):
        self._drawn += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._drawn)


class TwoViewTask(PretextTask):
    """Base of the tasks that learn from two augmented views of each image.

    `task(images)` returns `(views [2B,...], partner [2B])`: views i and i+B are two augmentations of image i,
    and `partner[j]` is the index of the other view of j.  Augmentations are Keras preprocessing layers
    (zoom-in crop, translation, horizontal flip, brightness, contrast) plus Gaussian pixel noise, each a pure
    function of (seed, batch number).  Subclasses add their options and `build_model`; the model computes its
    own loss (`compile_kwargs` is empty).

    Args:
        crop: largest zoom-in (fraction of the side cut away), 0 for none.
        translation: largest shift (fraction of the side), 0 for none.
        flip: random horizontal flips.
        color: brightness and contrast jitter strength, 0 for none.
        noise: standard deviation of the Gaussian pixel noise, 0 for none.
        seed: the task's seed.

    Example:

    >>> import numpy as np
    >>> from kpretrain.pretext import create_task
    >>> views, partner = create_task("simsiam", seed=0)(np.zeros((3, 28, 28, 1), np.float32))
    >>> tuple(views.shape), partner.numpy().tolist()
    ((6, 28, 28, 1), [3, 4, 5, 0, 1, 2])
    """

    num_classes = None  # not a classification task: the model computes its own loss
    batch_multiplier = 2

    def __init__(self, crop: float = 0.3, translation: float = 0.1, flip: bool = True, color: float = 0.4,
                 noise: float = 0.05, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.crop = check_number("crop", crop, 0.0, 0.9)
        self.translation = check_number("translation", translation, 0.0, 0.5)
        if not isinstance(flip, bool):
            raise OptionError("flip", flip, "true, false")
        self.flip = flip
        self.color = check_number("color", color, 0.0, 1.0)
        self.noise = check_number("noise", noise, 0.0, 1.0)
        self.augmentations = []
        if self.crop:
            self.augmentations.append(keras.layers.RandomZoom((-self.crop, 0.0), fill_mode="reflect"))
        if self.translation:
            self.augmentations.append(
                keras.layers.RandomTranslation(self.translation, self.translation, fill_mode="reflect"))
        if self.flip:
            self.augmentations.append(keras.layers.RandomFlip("horizontal"))
        if self.color:
            self.augmentations += [keras.layers.RandomBrightness(self.color, value_range=(0.0, 1.0)),
                                   keras.layers.RandomContrast(self.color, value_range=(0.0, 1.0))]

    def get_config(self):
        config = super().get_config()
        config.update({option: getattr(self, option) for option in VIEW_OPTIONS})
        return config

    def augment(self, images, seed, augmentations=None):
        """One random view of each image, a pure function of `seed` (`augmentations`: other layers than the task's)."""
        seeds = StatelessSeeds(seed)
        for layer in self.augmentations if augmentations is None else augmentations:
            transformation = layer.get_random_transformation(images, training=True, seed=seeds)
            images = layer.transform_images(images, transformation, training=True)
        if self.noise:
            images = images + self.noise * tf.random.stateless_normal(tf.shape(images), seed=seeds.next())
        return tf.clip_by_value(images, 0.0, 1.0)

    def transform(self, images, step):
        first_seed, second_seed = self.seeds(step, 2)
        batch = tf.shape(images)[0]
        views = tf.concat([self.augment(images, first_seed), self.augment(images, second_seed)], axis=0)
        partner = tf.concat([tf.range(batch, 2 * batch), tf.range(batch)], axis=0)
        return views, partner

    def describe(self, label: int) -> str:
        return f"pair of view {label}"

    def compile_kwargs(self) -> dict:
        """Nothing beyond the optimizer: the model computes its loss and metrics itself."""
        return {}
