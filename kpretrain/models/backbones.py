"""Backbone registry: `create_backbone(name, input_shape, seed=...)` returns a Keras functional model.

A backbone maps float32 images `[N,H,W,C]` in [0, 1] to a feature vector `[N,D]`.  Its layers are named
`block<i>_...` (i = 1..depth); a block is the unit of depth for freezing (`kpretrain.models.freezing`).
Only built-in Keras layers are used, so `backbone.keras` loads in Keras safe mode with no custom objects.
"""

from __future__ import annotations

import re
from typing import Callable

import keras
from keras import layers

from kpretrain.errors import RecipeError

BACKBONES: dict[str, Callable[..., keras.Model]] = {}
_BLOCK = re.compile(r"^block(\d+)_")


def register_backbone(name: str):
    """Decorator adding a builder `fn(input_shape, seed, **options) -> keras.Model` to the registry."""

    def wrap(fn):
        BACKBONES[name] = fn
        return fn

    return wrap


def create_backbone(name: str, input_shape, seed: int = 0, **options) -> keras.Model:
    """Build backbone `name` for `input_shape` (H, W, C); weights are a deterministic function of `seed`."""
    if name not in BACKBONES:
        raise RecipeError(f"backbone.name: unknown backbone {name!r}; allowed: {', '.join(sorted(BACKBONES))}")
    try:
        return BACKBONES[name](tuple(input_shape), seed=seed, **options)
    except TypeError as exc:
        raise RecipeError(f"backbone.options: {exc}") from None


def block_names(backbone: keras.Model) -> list[str]:
    """Block names in input-to-output order, e.g. ['block1', 'block2', 'block3']."""
    seen: dict[int, None] = {}
    for layer in backbone.layers:
        m = _BLOCK.match(layer.name)
        if m:
            seen.setdefault(int(m.group(1)), None)
    return [f"block{i}" for i in sorted(seen)]


def block_layers(backbone: keras.Model, block: str) -> list[keras.layers.Layer]:
    """Layers that belong to `block` (by name prefix)."""
    return [layer for layer in backbone.layers if layer.name.startswith(block + "_")]


def _init(seed: int, offset: int):
    return keras.initializers.HeNormal(seed=seed * 1000 + offset)


@register_backbone("small_cnn")
def small_cnn(input_shape, seed: int = 0, widths=(32, 64, 128), name: str = "small_cnn") -> keras.Model:
    """Conv blocks (conv3x3 - BN - ReLU - conv3x3 - BN - ReLU - pool); global average pooling gives the features."""
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, width in enumerate(widths, start=1):
        for j in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=_init(seed, 10 * i + j),
                              name=f"block{i}_conv{j}")(x)
            x = layers.BatchNormalization(name=f"block{i}_bn{j}")(x)
            x = layers.ReLU(name=f"block{i}_relu{j}")(x)
        if i < len(widths):
            x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, x, name=name)


@register_backbone("resnet_small")
def resnet_small(input_shape, seed: int = 0, widths=(32, 64, 128), name: str = "resnet_small") -> keras.Model:
    """A stem block then one pre-activation-free residual stage per width (stride 2 from the second on)."""
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, kernel_initializer=_init(seed, 1),
                      name="block1_conv")(inputs)
    x = layers.BatchNormalization(name="block1_bn")(x)
    x = layers.ReLU(name="block1_relu")(x)
    for i, width in enumerate(widths, start=2):
        stride = 1 if i == 2 else 2
        shortcut = x
        y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                          kernel_initializer=_init(seed, 10 * i + 1), name=f"block{i}_conv1")(x)
        y = layers.BatchNormalization(name=f"block{i}_bn1")(y)
        y = layers.ReLU(name=f"block{i}_relu1")(y)
        y = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=_init(seed, 10 * i + 2),
                          name=f"block{i}_conv2")(y)
        y = layers.BatchNormalization(name=f"block{i}_bn2")(y)
        if stride != 1 or shortcut.shape[-1] != width:
            shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False,
                                     kernel_initializer=_init(seed, 10 * i + 3), name=f"block{i}_proj")(shortcut)
            shortcut = layers.BatchNormalization(name=f"block{i}_proj_bn")(shortcut)
        x = layers.Add(name=f"block{i}_add")([y, shortcut])
        x = layers.ReLU(name=f"block{i}_out")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, x, name=name)


@register_backbone("mlp")
def mlp(input_shape, seed: int = 0, widths=(512, 256), name: str = "mlp") -> keras.Model:
    """Flatten, then Dense - BN - ReLU blocks."""
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Flatten(name="flatten")(inputs)
    for i, width in enumerate(widths, start=1):
        x = layers.Dense(width, use_bias=False, kernel_initializer=_init(seed, i), name=f"block{i}_dense")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
    x = layers.Identity(name="features")(x)
    return keras.Model(inputs, x, name=name)
