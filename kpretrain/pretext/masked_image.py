"""Masked-image modelling for convolutional backbones (after SimMIM, Xie et al. 2022, and SparK, Tian et al. 2023):
hide a random share of each image's square patches and reconstruct the hidden pixels from the backbone's feature
vector through a small convolutional decoder."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.pretext.base import OptionError, PretextTask, check_integer

HEADS = ("mlp", "linear")
GRID = 8  # the decoder starts from a grid at most this many cells a side, then doubles it per stage
EPSILON = 1e-6  # added to each patch's variance before its square root when targets are normalised (as in MAE)


def patch_normalized(images: tf.Tensor, patch_size: int) -> tf.Tensor:
    """Each `patch_size` square patch of `images` [B, H, W, C] standardised over its p*p*C values (MAE's
    normalised pixels): `(x - mean) / sqrt(var + 1e-6)`.  H and W must be multiples of `patch_size`."""
    shape = tf.shape(images)
    p = patch_size
    patches = tf.reshape(images, [shape[0], shape[1] // p, p, shape[2] // p, p, shape[3]])
    mean, variance = tf.nn.moments(patches, axes=[2, 4, 5], keepdims=True)
    return tf.reshape((patches - mean) / tf.sqrt(variance + EPSILON), shape)


def masked_terms(images, reconstruction, mask, *, normalize_targets: bool = False,
                 patch_size: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """(mean squared error, variance of the targets), both over the masked pixels' values only (all channels of
    every pixel where `mask` is 1, pooled over the batch); the targets are `images`, or their per-patch normalised
    values (`patch_normalized`) if `normalize_targets`."""
    if normalize_targets and not patch_size:
        raise ValueError("normalize_targets needs the patch_size the targets are normalised over")
    images, reconstruction = tf.cast(images, tf.float32), tf.cast(reconstruction, tf.float32)
    targets = patch_normalized(images, patch_size) if normalize_targets else images
    weight = tf.broadcast_to(tf.cast(mask, tf.float32), tf.shape(targets))
    count = tf.maximum(tf.reduce_sum(weight), 1.0)
    mse = tf.reduce_sum(weight * tf.square(reconstruction - targets)) / count
    mean = tf.reduce_sum(weight * targets) / count
    return mse, tf.reduce_sum(weight * tf.square(targets - mean)) / count


def masked_mse(images, reconstruction, mask, *, normalize_targets: bool = False,
               patch_size: int | None = None) -> tf.Tensor:
    """The masked-image modelling loss: the mean squared error of `reconstruction` over the masked pixels only.

    Args:
        images: the original images `[B, H, W, C]`.
        reconstruction: the model's images `[B, H, W, C]`; its visible pixels (mask 0) have no effect.
        mask: `[B, H, W, 1]`, 1 where a pixel was masked, 0 where it was visible.
        normalize_targets: compare with each patch's standardised pixels (`patch_normalized`) instead.
        patch_size: the patch side the targets are normalised over (needed with `normalize_targets`).

    Returns:
        A scalar: the sum of squared errors over every channel of every masked pixel, divided by their number.

    Example:

    >>> import numpy as np
    >>> images = np.zeros((1, 2, 2, 1), np.float32)
    >>> mask = np.array([1, 0, 0, 1], np.float32).reshape(1, 2, 2, 1)
    >>> guess = np.array([0.5, 9.0, -9.0, 1.0], np.float32).reshape(1, 2, 2, 1)
    >>> float(masked_mse(images, guess, mask))  # (0.5 ** 2 + 1 ** 2) / 2: the 9s are visible pixels
    0.625
    """
    return masked_terms(images, reconstruction, mask, normalize_targets=normalize_targets, patch_size=patch_size)[0]


def masked_r2(images, reconstruction, mask, *, normalize_targets: bool = False,
              patch_size: int | None = None) -> tf.Tensor:
    """The task's monitor: `1 - masked_mse / variance of the masked target values` (arguments as `masked_mse`).
    1 is a perfect reconstruction, 0 what predicting the masked pixels' mean scores; higher is better."""
    mse, variance = masked_terms(images, reconstruction, mask, normalize_targets=normalize_targets,
                                 patch_size=patch_size)
    return 1.0 - mse / tf.maximum(variance, 1e-12)


def decoder_plan(height: int, width: int) -> tuple[int, int, int]:
    """(upsampling stages, grid height, grid width): the smallest number of doublings after which a grid of at
    most `GRID` cells a side covers `height` x `width` (the decoder crops the excess)."""
    stages = 0
    while -(-max(height, width) // 2 ** stages) > GRID:
        stages += 1
    return stages, -(-height // 2 ** stages), -(-width // 2 ** stages)


def image_decoder(features: int, image_shape, *, head: str, width: int, seed: int) -> keras.Sequential:
    """Feature vector `[B, features]` -> image `[B, H, W, C]`: (`mlp`: Dense-ReLU as wide as the features), Dense
    to a grid of `width` channels, per stage nearest-neighbour upsampling x2 and a 3x3 Conv2D-ReLU, a 3x3 Conv2D to
    C channels, cropped to H x W; built, with seeded initialisers."""
    height, wide, channels = (int(d) for d in image_shape)
    stages, grid_h, grid_w = decoder_plan(height, wide)
    model = keras.Sequential(name="decoder")
    model.add(keras.Input(shape=(features,)))
    if head == "mlp":
        model.add(keras.layers.Dense(features, activation="relu", name="decoder_hidden",
                                     kernel_initializer=keras.initializers.HeNormal(seed=seed)))
    model.add(keras.layers.Dense(grid_h * grid_w * width, activation="relu", name="decoder_grid",
                                 kernel_initializer=keras.initializers.HeNormal(seed=seed + 1)))
    model.add(keras.layers.Reshape((grid_h, grid_w, width), name="decoder_reshape"))
    for i in range(stages):
        model.add(keras.layers.UpSampling2D(2, name=f"decoder_up{i + 1}"))
        model.add(keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"decoder_conv{i + 1}",
                                      kernel_initializer=keras.initializers.HeNormal(seed=seed + 2 + i)))
    model.add(keras.layers.Conv2D(channels, 3, padding="same", name="decoder_out",
                                  kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2 + stages)))
    extra_h, extra_w = grid_h * 2 ** stages - height, grid_w * 2 ** stages - wide
    if extra_h or extra_w:
        model.add(keras.layers.Cropping2D(((0, extra_h), (0, extra_w)), name="decoder_crop"))
    return model


@keras.saving.register_keras_serializable(package="kpretrain")
class MaskedImageTask(PretextTask):
    """Masked-image modelling: `task(images)` returns `(masked images, labels)`.

    Each image is cut into square patches of `patch_size` pixels; `round(mask_ratio x patches)` of them (at least
    1, at most all but one), chosen at random per image from the batch number's stateless seed, are filled with the
    image's own mean pixel value (per channel), so their intensity gives nothing away.  The labels are what the
    loss needs: the original images and the pixel mask (1 = masked) concatenated on the channel axis,
    `[B, H, W, C + 1]`.  The model (`MaskedImageModel`) decodes the backbone's feature vector back to an image and
    is trained by `masked_mse` on the masked pixels only; its monitor is `masked_r2` (higher is better).
    `pretrain.head` chooses the decoder's entry: `mlp` (default) a hidden Dense first, `linear` none.

    Args:
        patch_size: the patches' side in pixels; it must divide the images' height and width.
        mask_ratio: the share of each image's patches masked, in (0, 1).
        normalize_targets: reconstruct each patch's standardised pixels (MAE's normalised targets).
        decoder_width: the decoder's convolution channels.
        seed: the task's seed.

    Example:

    >>> import numpy as np
    >>> from kpretrain.pretext import create_task
    >>> task = create_task("masked_image", {"patch_size": 7}, seed=0)
    >>> masked, labels = task(np.ones((2, 28, 28, 1), np.float32))
    >>> task.monitor, tuple(masked.shape), tuple(labels.shape), float(labels[0, ..., 1].numpy().mean())
    ('masked_r2', (2, 28, 28, 1), (2, 28, 28, 2), 0.5)
    """

    task_name = "masked_image"
    num_classes = None  # not a classification task: the model computes its own loss

    def __init__(self, patch_size: int = 4, mask_ratio: float = 0.5, normalize_targets: bool = False,
                 decoder_width: int = 32, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.patch_size = check_integer("patch_size", patch_size, 1)
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0 < mask_ratio < 1:
            raise OptionError("mask_ratio", mask_ratio, "a number in (0, 1), both ends excluded")
        self.mask_ratio = float(mask_ratio)
        if not isinstance(normalize_targets, bool):
            raise OptionError("normalize_targets", normalize_targets, "true, false")
        self.normalize_targets = normalize_targets
        self.decoder_width = check_integer("decoder_width", decoder_width, 1, 1024)

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size, "mask_ratio": self.mask_ratio,
                       "normalize_targets": self.normalize_targets, "decoder_width": self.decoder_width})
        return config

    def check_images(self, shape):
        height, width = shape[1], shape[2]
        if height is None or width is None:
            return
        p = self.patch_size
        if height % p or width % p or (height // p) * (width // p) < 2:
            sizes = [d for d in range(1, min(height, width) + 1)
                     if height % d == 0 and width % d == 0 and (height // d) * (width // d) >= 2]
            raise RecipeError(f"pretrain.options.patch_size: {p} does not cut {height}x{width} images into at least "
                              f"2 whole patches; allowed: {', '.join(map(str, sizes))}")

    def patch_mask(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """`[B, H, W, 1]` float: 1 on the pixels of each image's masked patches (an exact count per image)."""
        shape, p = tf.shape(images), self.patch_size
        rows, cols = shape[1] // p, shape[2] // p
        patches = rows * cols
        masked = tf.clip_by_value(tf.cast(tf.round(self.mask_ratio * tf.cast(patches, tf.float32)), tf.int32),
                                  1, patches - 1)
        noise = tf.random.stateless_uniform([shape[0], patches], seed=seed)
        ranks = tf.argsort(tf.argsort(noise, axis=1, stable=True), axis=1, stable=True)
        grid = tf.reshape(tf.cast(ranks < masked, tf.float32), [shape[0], rows, cols, 1])
        return tf.repeat(tf.repeat(grid, p, axis=1), p, axis=2)

    def transform(self, images, step):
        self.check_images(images.shape)
        (mask_seed,) = self.seeds(step, 1)
        mask = self.patch_mask(images, mask_seed)
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        masked = tf.where(mask > 0.5, mean, images)
        return masked, tf.concat([images, mask], axis=-1)

    def describe(self, label) -> str:
        """`label` is one example's `[H, W, C + 1]` label: the share of its pixels masked."""
        return f"masked {100 * float(label[..., -1].mean()):.0f} %"

    def build_model(self, backbone: keras.Model, *, head: str = "mlp", seed: int = 0) -> keras.Model:
        """`MaskedImageModel`: the backbone and an `image_decoder` back to its input's shape, built (as resuming
        from a backup requires)."""
        if head not in HEADS:
            raise RecipeError(f"pretrain.head: got {head!r}; allowed for the {self.task_name} decoder: "
                              f"{', '.join(HEADS)}")
        decoder = image_decoder(backbone.output_shape[-1], backbone.input_shape[1:], head=head,
                                width=self.decoder_width, seed=seed)
        model = MaskedImageModel(backbone, decoder, patch_size=self.patch_size,
                                 normalize_targets=self.normalize_targets, name="pretext_masked_image_model")
        model.build(backbone.input_shape)
        return model

    def compile_kwargs(self) -> dict:
        """Nothing beyond the optimizer: the model computes its loss and metrics itself."""
        return {}

    @property
    def monitor(self) -> str:
        return "masked_r2"


class MaskedImageModel(keras.Model):
    """`decoder(backbone(masked images))`, trained by `masked_mse` against the labels `[B, H, W, C + 1]` (original
    images and pixel mask); logs `masked_r2` beside the loss."""

    def __init__(self, backbone: keras.Model, decoder: keras.Model, *, patch_size: int,
                 normalize_targets: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.decoder = backbone, decoder
        self.patch_size, self.normalize_targets = patch_size, normalize_targets
        self.masked_r2 = keras.metrics.Mean(name="masked_r2")

    def call(self, images, training=None):
        return self.decoder(self.backbone(images, training=training), training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        y = tf.cast(y, tf.float32)
        images, mask = y[..., :-1], y[..., -1:]
        mse, variance = masked_terms(images, y_pred, mask, normalize_targets=self.normalize_targets,
                                     patch_size=self.patch_size)
        self.masked_r2.update_state(1.0 - mse / tf.maximum(variance, 1e-12))
        return mse + tf.add_n(self.losses) if self.losses else mse
