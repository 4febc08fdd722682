"""Head registry: small models on top of backbone features, swappable without touching the backbone."""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers

from kpretrain.errors import RecipeError

HEADS: dict[str, Callable[..., keras.Model]] = {}


def register_head(name: str):
    """Decorator adding a builder `fn(feature_dim, num_classes, seed, name, **options) -> keras.Model`."""

    def wrap(fn):
        HEADS[name] = fn
        return fn

    return wrap


def create_head(kind: str, feature_dim: int, num_classes: int, *, seed: int = 0, name: str = "head",
                **options) -> keras.Model:
    """Build head `kind` mapping `[N, feature_dim]` features to `[N, num_classes]` logits."""
    if kind not in HEADS:
        raise RecipeError(f"head: unknown head {kind!r}; allowed: {', '.join(sorted(HEADS))}")
    return HEADS[kind](feature_dim, num_classes, seed=seed, name=name, **options)


@register_head("linear")
def linear_head(feature_dim, num_classes, *, seed=0, name="head"):
    """One Dense layer producing logits."""
    inputs = keras.Input(shape=(feature_dim,), name=f"{name}_features")
    logits = layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                          name=f"{name}_logits")(inputs)
    return keras.Model(inputs, logits, name=name)


@register_head("mlp")
def mlp_head(feature_dim, num_classes, *, seed=0, name="head", hidden=256, dropout=0.3):
    """Dense - ReLU - Dropout - Dense logits."""
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
        return self.get_layer(self.backbone_name)

    @property
    def head(self) -> keras.Model:
        return self.get_layer(self.head_name)


def attach_head(backbone: keras.Model, head: keras.Model, name: str = "classifier") -> HeadedModel:
    """`backbone` followed by `head`, as a `HeadedModel`."""
    return HeadedModel(backbone, head, name=name)
