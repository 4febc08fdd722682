"""Re-initialisations of a pre-trained backbone for `transfer.init` (seed 002's control arms)."""

from __future__ import annotations

from collections import defaultdict

import keras
import numpy as np

from kpretrain.models.backbones import create_backbone
from kpretrain.models.blocks import find_blocks

POOLING = ("tensor", "layer", "block")


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std())


def _kernel_group(layer: keras.layers.Layer, variable, pooled: str, blocks: dict):
    """Kernels with the same group share their statistics (`blocks`: id(layer) -> its block's name)."""
    if pooled == "block" and id(layer) in blocks:
        return blocks[id(layer)]
    return id(layer) if pooled in ("layer", "block") else id(variable)


def reinitialise_from_statistics(backbone: keras.Model, seed: int, pooled: str = "tensor") -> None:
    """Redraw every weight tensor from a normal with the mean and std of its pre-trained values (in place).

    Kernels (tensors of rank >= 2) share one mean/std per tensor ('tensor'), per layer ('layer': differs from
    'tensor' only for layers with several kernels) or per block ('block', `models.blocks`); biases and BN gamma/beta always
    use their own.  BN moving mean/variance are reset to 0/1.  A tensor with zero std is filled with its mean.
    """
    if pooled not in POOLING:
        raise ValueError(f"pooled must be one of {POOLING}, got {pooled!r}")
    layers = [layer for layer in backbone._flatten_layers(include_self=False, recursive=True)
              if layer.weights and not list(layer._flatten_layers(include_self=False, recursive=False))]
    blocks = {id(layer): block.name for block in find_blocks(backbone) for layer in block.layers}
    statistics = {}
    kernels = defaultdict(list)
    for layer in layers:
        for variable in layer.weights:
            values = np.asarray(variable.numpy(), dtype=np.float64)
            statistics[id(variable)] = _mean_std(values)
            if variable.ndim >= 2:
                kernels[_kernel_group(layer, variable, pooled, blocks)].append(values.ravel())
    pooled_stats = {key: _mean_std(np.concatenate(parts)) for key, parts in kernels.items()}
    rng = np.random.default_rng(seed)
    for layer in layers:
        bn_statistics = {}
        if isinstance(layer, keras.layers.BatchNormalization):
            bn_statistics = {id(layer.moving_mean): 0.0, id(layer.moving_variance): 1.0}
        for variable in layer.weights:
            if id(variable) in bn_statistics:
                variable.assign(np.full(variable.shape, bn_statistics[id(variable)], variable.dtype))
                continue
            mean, std = (pooled_stats[_kernel_group(layer, variable, pooled, blocks)] if variable.ndim >= 2
                         else statistics[id(variable)])
            values = rng.normal(mean, std, size=variable.shape) if std > 0 else np.full(variable.shape, mean)
            variable.assign(values.astype(variable.dtype))


def reinitialise_random(backbone: keras.Model, name: str, options: dict, seed: int) -> None:
    """Overwrite `backbone`'s weights with those of `create_backbone(name, ..., seed=seed, **options)` (in place).

    With the scratch arm's seed this reproduces the scratch baseline's initial weights exactly.
    """
    fresh = create_backbone(name, backbone.input_shape[1:], seed=seed, **options)
    backbone.set_weights(fresh.get_weights())
