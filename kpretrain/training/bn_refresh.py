"""Batch-norm refresh: recompute BN moving statistics as a cumulative average over training batches.

Stale moving statistics make a model look far worse than its weights are (BACKGROUND.md: 0.163 raw vs
0.978 refreshed after one epoch).  This is SWA's `bn_update`: reset the statistics, then run training
batches through the model with momentum (k-1)/k on batch k, so the result is the plain mean over batches.
Only BN layers that normalise with batch statistics during training (trainable ones) are refreshed; a
frozen BN layer ran in inference mode during training, so its statistics are part of the trained model.
"""

from __future__ import annotations

import contextlib
import weakref

import keras
import tensorflow as tf

_COMPILED: "weakref.WeakKeyDictionary[keras.Model, tuple]" = weakref.WeakKeyDictionary()


def batch_norm_layers(model: keras.Model, trainable_only: bool = True) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer in `model`, nested models included."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and (layer.trainable or not trainable_only):
            found.append(layer)
    return found


def refresh_batch_norm(model: keras.Model, images: tf.data.Dataset, max_batches: int = 200) -> int:
    """Recompute the moving mean/variance of `model`'s trainable BN layers on `images`; returns batches used.

    `images` yields image batches or `(images, ...)` tuples.  Weights other than the BN statistics are untouched.
    """
    bns = batch_norm_layers(model)
    if not bns:
        return 0
    saved = [layer.momentum for layer in bns]
    for layer in bns:
        layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
    momentum, forward = _compiled_forward(model)
    for layer in bns:
        layer.momentum = momentum

    used = 0
    try:
        for batch in images.take(max_batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            used += 1
            momentum.assign((used - 1) / used)  # cumulative average: batch k gets weight 1/k
            forward(x)
    finally:
        for layer, value in zip(bns, saved):
            layer.momentum = value
    return used


def _compiled_forward(model: keras.Model):
    """(shared momentum variable, compiled training-mode forward pass), cached per model and per BN trainable set.

    Keras fixes at trace time which BN layers use batch statistics, so a changed `trainable` set needs a new trace."""
    key = tuple(layer.trainable for layer in batch_norm_layers(model, trainable_only=False))
    if model not in _COMPILED:
        _COMPILED[model] = (tf.Variable(0.0, trainable=False, dtype=tf.float32), {})
    momentum, forwards = _COMPILED[model]
    if key not in forwards:

        owner = weakref.ref(model)  # the cache must not keep its key alive

        @tf.function(reduce_retracing=True)
        def forward(x):
            owner()(x, training=True)  # updates only BN moving statistics; no gradients are applied

        forwards[key] = forward
    return momentum, forwards[key]


def bn_state(model: keras.Model) -> list:
    """A copy of every BN layer's moving statistics (to restore or compare)."""
    return [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
            for layer in batch_norm_layers(model, trainable_only=False)]


def set_bn_state(model: keras.Model, state: list) -> None:
    """Restore statistics saved by `bn_state`."""
    for layer, (mean, var) in zip(batch_norm_layers(model, trainable_only=False), state):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)


@contextlib.contextmanager
def statistics_restored(model: keras.Model, *, restore: bool = True):
    """Save `model`'s BN statistics on entering the block and put them back on leaving it, even on an error.

    For "keep the current statistics, change them (a refresh) and measure, then put the old ones back".  The
    block may do anything to the statistics; they are what the block set until it ends.

    Args:
        model: a model with BatchNormalization layers (nested ones included).
        restore: whether to put the saved statistics back when the block ends.  `False` is for a caller that
            decides before entering that the model keeps what the block set (it still gets the saved ones).

    Yields:
        The statistics saved on entering (as `bn_state` gives them), bound by `as`.

    Example:
        with statistics_restored(model):
            refresh_batch_norm(model, images)
            refreshed_accuracy = accuracy(model, validation, labels)[0]
    """
    saved = bn_state(model)
    try:
        yield saved
    finally:
        if restore:
            set_bn_state(model, saved)


@contextlib.contextmanager
def statistics_swapped(model: keras.Model, state: list):
    """Within the block, `model`'s BN layers hold the statistics `state` (from `bn_state`); then their own again.

    Args:
        model: a model with BatchNormalization layers (nested ones included).
        state: statistics saved by `bn_state` of the same model.

    Example:
        with statistics_swapped(model, raw_bn):
            raw_accuracy = accuracy(model, validation, labels)[0]
    """
    with statistics_restored(model):
        set_bn_state(model, state)
        yield
