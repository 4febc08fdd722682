"""Backbone registry: `create_backbone(name, input_shape, seed=...)` returns a Keras model.

A backbone maps float32 images `[N,H,W,C]` in [0, 1] to a feature vector `[N,D]`.  `name` is a registered
backbone (the built-ins below, or one added with `register_backbone`), or any form `models.architectures` builds
(`keras.applications.<Name>`, a factory `package.module:function`, a `.keras` file).  A block is the unit of depth
for freezing (`kpretrain.models.blocks`): the built-ins name their layers `block<i>_...` (i = 1..depth).  Only
built-in Keras layers are used, so `backbone.keras` loads in Keras safe mode with no custom objects.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers

from kpretrain.errors import RecipeError
from kpretrain.models import architectures
from kpretrain.models.blocks import find_blocks, set_block_spec

BACKBONES: dict[str, Callable[..., keras.Model]] = {}


def register_backbone(name: str):
    """Decorator adding a backbone builder to the registry under `name`.

    The builder is called as `fn(input_shape, seed=seed, **options)` and returns a Keras functional model mapping
    float32 images `[N, H, W, C]` in [0, 1] to features `[N, D]`, with weights a deterministic function of `seed`.
    Its layers are named `block<i>_...` (i = 1..depth): a block is the unit of depth for freezing.  Built-in Keras
    layers only keep `backbone.keras` loadable in safe mode.  Once registered, `create_backbone(name, ...)` builds
    it, so a recipe run in the same Python process can name it in `backbone.name` (`backbone.options` are the
    builder's keyword arguments).

    Args:
        name: the backbone's name; an existing name is replaced.

    Returns:
        The decorator; it returns the builder unchanged.

    Example:

    >>> import keras
    >>> from kpretrain.models.backbones import block_names, create_backbone, register_backbone
    >>> @register_backbone("tiny_mlp")
    ... def tiny_mlp(input_shape, seed=0, width=32, name="tiny_mlp"):
    ...     inputs = keras.Input(shape=input_shape, name="images")
    ...     x = keras.layers.Flatten(name="flatten")(inputs)
    ...     x = keras.layers.Dense(width, kernel_initializer=keras.initializers.HeNormal(seed=seed),
    ...                            name="block1_dense")(x)
    ...     x = keras.layers.ReLU(name="block1_relu")(x)
    ...     return keras.Model(inputs, x, name=name)
    >>> backbone = create_backbone("tiny_mlp", (28, 28, 1), seed=0, width=16)
    >>> backbone.output_shape, block_names(backbone)
    ((None, 16), ['block1'])
    """

    def wrap(fn):
        BACKBONES[name] = fn
        return fn

    return wrap


def create_backbone(name: str, input_shape, seed: int = 0, *, weights: str | None = None, init: str = "random",
                    blocks=None, **options) -> keras.Model:
    """Build backbone `name` for `input_shape` (H, W, C); weights are a deterministic function of `seed`.

    Args:
        name: a registered backbone (`small_cnn`, `resnet_small`, `mlp`, or one added with `register_backbone`),
            `keras.applications.<Name>`, a factory `package.module:function` or a `.keras` file
            (`models.architectures`).
        input_shape: the image shape (H, W, C).
        seed: the seed of the weight initialisers.
        weights: `backbone.weights`, a local weights file of a keras.applications backbone.
        init: `backbone.init`, "file" to keep a `.keras` file's own weights.
        blocks: `backbone.blocks`, the layer-name prefixes (or regular expressions) of its blocks; None: found.
        **options: keyword arguments of the builder (`backbone.options`), e.g. `widths=(16, 32, 64)`.

    Returns:
        A Keras functional model mapping images `[N, H, W, C]` to features `[N, D]`.

    Raises:
        RecipeError: `name` is not registered, or the builder does not take `options` (its TypeError).

    Example:

    >>> from kpretrain.models.backbones import block_names, create_backbone
    >>> backbone = create_backbone("small_cnn", (28, 28, 1), seed=0, widths=(8, 16))
    >>> backbone.output_shape, block_names(backbone)
    ((None, 16), ['block1', 'block2'])
    """
    if name in BACKBONES:
        try:
            model = BACKBONES[name](tuple(input_shape), seed=seed, **options)
        except TypeError as exc:
            raise RecipeError(f"backbone.options: {exc}") from None
    elif architectures.kind(name) == "registered":
        raise RecipeError(f"recipe key 'backbone.name': unknown backbone {name!r}; allowed: "
                          f"{', '.join(sorted(BACKBONES))}, keras.applications.<Name>, package.module:function "
                          f"(a factory) or a .keras file")
    else:
        model = architectures.build(name, input_shape, seed, options, weights=weights, init=init)
    set_block_spec(model, blocks)
    return model


def configured_backbone(settings, input_shape, seed: int = 0) -> keras.Model:
    """`create_backbone` with a recipe's `backbone` section: its name, options, weights, init and blocks.

    Args:
        settings: a `BackboneConfig` (or anything with those attributes).
        input_shape: the image shape (H, W, C).
        seed: the seed of fresh weights.

    Returns:
        The backbone, before any stage (`backbone.from` is not applied here: see `protocol.initial_backbone`).
    """
    return create_backbone(settings.name, input_shape, seed=seed, weights=settings.weights, init=settings.init,
                           blocks=settings.blocks, **settings.options)


def block_names(backbone: keras.Model) -> list[str]:
    """The backbone's block names in input-to-output order, e.g. ['block1', 'block2', 'block3'].

    Args:
        backbone: a backbone (its blocks: `models.blocks.find_blocks`).

    Returns:
        The names of its blocks; empty for a backbone with none (one opaque SavedModel layer).
    """
    return [block.name for block in find_blocks(backbone)]


def block_layers(backbone: keras.Model, block: str) -> list[keras.layers.Layer]:
    """The layers (leaves) that belong to `block`.

    Args:
        backbone: a backbone.
        block: one of its block names, e.g. `block1`.

    Returns:
        Its layers, in the backbone's layer order.
    """
    return next((list(b.layers) for b in find_blocks(backbone) if b.name == block), [])


def _init(seed: int, offset: int):
    return keras.initializers.HeNormal(seed=seed * 1000 + offset)


@register_backbone("small_cnn")
def small_cnn(input_shape, seed: int = 0, widths=(32, 64, 128), name: str = "small_cnn") -> keras.Model:
    """Conv blocks (conv3x3 - BN - ReLU - conv3x3 - BN - ReLU - pool); global average pooling gives the features.

    Args:
        input_shape: the image shape (H, W, C).
        seed: the seed of the weight initialisers.
        widths: the filters of each block, one block per entry (no pooling after the last).
        name: the model's name.

    Returns:
        The functional backbone; its features have `widths[-1]` entries.
    """
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
    """A stem block then one pre-activation-free residual stage per width (stride 2 from the second on).

    Args:
        input_shape: the image shape (H, W, C).
        seed: the seed of the weight initialisers.
        widths: the filters of the stem (`widths[0]`) and of one residual stage per entry; the blocks are the
            stem (`block1`) and the stages (`block2`, ...).
        name: the model's name.

    Returns:
        The functional backbone; its features have `widths[-1]` entries.
    """
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
    """Flatten, then Dense - BN - ReLU blocks.

    Args:
        input_shape: the image shape (H, W, C).
        seed: the seed of the weight initialisers.
        widths: the units of each block, one block per entry.
        name: the model's name.

    Returns:
        The functional backbone; its features have `widths[-1]` entries.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Flatten(name="flatten")(inputs)
    for i, width in enumerate(widths, start=1):
        x = layers.Dense(width, use_bias=False, kernel_initializer=_init(seed, i), name=f"block{i}_dense")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
    x = layers.Identity(name="features")(x)
    return keras.Model(inputs, x, name=name)
