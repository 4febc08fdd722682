"""Head registry: small models on top of backbone features, swappable without touching the backbone."""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers

from kpretrain.errors import RecipeError

HEADS: dict[str, Callable[..., keras.Model]] = {}


def register_head(name: str):
    """Decorator adding a head builder to the registry under `name`.

    The builder is called as `fn(feature_dim, num_classes, seed=seed, name=name, **options)` and returns a Keras
    model mapping features `[N, feature_dim]` to logits `[N, num_classes]`; `create_head(name, ...)` builds it.
    (The recipe keys `finetune.head` and `pretrain.head` accept only `linear` and `mlp`.)

    Args:
        name: the head's name; an existing name is replaced.

    Returns:
        The decorator; it returns the builder unchanged.

    Example:

    >>> import keras
    >>> from kpretrain.models.heads import create_head, register_head
    >>> @register_head("normalised_linear")
    ... def normalised_linear(feature_dim, num_classes, *, seed=0, name="head"):
    ...     inputs = keras.Input(shape=(feature_dim,), name=f"{name}_features")
    ...     x = keras.layers.UnitNormalization(name=f"{name}_normalise")(inputs)
    ...     logits = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
    ...                                 name=f"{name}_logits")(x)
    ...     return keras.Model(inputs, logits, name=name)
    >>> head = create_head("normalised_linear", 64, 10, seed=0)
    >>> head.input_shape, head.output_shape
    ((None, 64), (None, 10))
    """

    def wrap(fn):
        HEADS[name] = fn
        return fn

    return wrap


def create_head(kind: str, feature_dim: int, num_classes: int, *, seed: int = 0, name: str = "head",
                **options) -> keras.Model:
    """Build head `kind` mapping `[N, feature_dim]` features to `[N, num_classes]` logits.

    Args:
        kind: a registered head (`linear`, `mlp`, or one added with `register_head`).
        feature_dim: the number of features (the backbone's output width).
        num_classes: the number of logits.
        seed: the seed of the weight initialisers.
        name: the model's name (its layers' names start with it).
        **options: keyword arguments of the builder, e.g. `hidden=128` for `mlp`.

    Returns:
        The head, a Keras functional model.

    Raises:
        RecipeError: `kind` is not registered.
    """
    if kind not in HEADS:
        raise RecipeError(f"head: unknown head {kind!r}; allowed: {', '.join(sorted(HEADS))}")
    return HEADS[kind](feature_dim, num_classes, seed=seed, name=name, **options)


@register_head("linear")
def linear_head(feature_dim, num_classes, *, seed=0, name="head"):
    """One Dense layer producing logits.

    Args:
        feature_dim: the number of features.
        num_classes: the number of logits.
        seed: the seed of the Glorot-uniform kernel initialiser.
        name: the model's name.

    Returns:
        The head, a Keras functional model.
    """
    inputs = keras.Input(shape=(feature_dim,), name=f"{name}_features")
    logits = layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                          name=f"{name}_logits")(inputs)
    return keras.Model(inputs, logits, name=name)


@register_head("mlp")
def mlp_head(feature_dim, num_classes, *, seed=0, name="head", hidden=256, dropout=0.3):
    """Dense - ReLU - Dropout - Dense logits.

    Args:
        feature_dim: the number of features.
        num_classes: the number of logits.
        seed: the seed of the initialisers (`seed + 1` for the logits layer) and of the dropout.
        name: the model's name.
        hidden: the units of the hidden layer.
        dropout: the dropout rate after it.

    Returns:
        The head, a Keras functional model.
    """
    inputs = keras.Input(shape=(feature_dim,), name=f"{name}_features")
    x = layers.Dense(hidden, activation="relu", kernel_initializer=keras.initializers.HeNormal(seed=seed),
                     name=f"{name}_hidden")(inputs)
    x = layers.Dropout(dropout, seed=seed, name=f"{name}_dropout")(x)
    logits = layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
                          name=f"{name}_logits")(x)
    return keras.Model(inputs, logits, name=name)


class HeadedModel(keras.Model):
    """Functional model `images -> head(backbone(images))`; `.backbone` and `.head` are its sub-models, by name."""

    def __init__(self, backbone: keras.Model, head: keras.Model, name: str = "classifier", **kwargs):
        inputs = keras.Input(shape=backbone.input_shape[1:], name="images")
        super().__init__(inputs, head(backbone(inputs)), name=name, **kwargs)
        self.backbone_name, self.head_name = backbone.name, head.name

    @property
    def backbone(self) -> keras.Model:
        """The backbone sub-model (images to features)."""
        return self.get_layer(self.backbone_name)

    @property
    def head(self) -> keras.Model:
        """The head sub-model (features to logits)."""
        return self.get_layer(self.head_name)


def attach_head(backbone: keras.Model, head: keras.Model, name: str = "classifier") -> HeadedModel:
    """`backbone` followed by `head`, as a `HeadedModel`.

    Args:
        backbone: the backbone (images to features).
        head: a head whose input width is the backbone's output width.
        name: the model's name.

    Returns:
        The `HeadedModel` `images -> head(backbone(images))`; its `.backbone` and `.head` are the two models.
    """
    return HeadedModel(backbone, head, name=name)
