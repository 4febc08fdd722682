"""Optimizers and learning-rate schedules from an `OptimizerConfig`, built on Keras' own classes."""

from __future__ import annotations

import keras

from kpretrain.recipe import OptimizerConfig


def learning_rate_schedule(cfg: OptimizerConfig, steps_per_epoch: int, epochs: float):
    """A float (constant) or a Keras schedule; cosine uses `CosineDecay` with its linear warm-up."""
    if cfg.schedule == "constant":
        return float(cfg.learning_rate)
    total = max(1, int(round(steps_per_epoch * epochs)))
    warmup = min(total - 1, int(round(steps_per_epoch * cfg.warmup_epochs)))
    if warmup > 0:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0, decay_steps=total - warmup, warmup_target=float(cfg.learning_rate),
            warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(initial_learning_rate=float(cfg.learning_rate), decay_steps=total)


def create_optimizer(cfg: OptimizerConfig, steps_per_epoch: int = 1, epochs: float = 1.0,
                     ema_momentum: float | None = None) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer for one stage; with `ema_momentum`, it keeps an exponential moving average of the
    weights (Keras `use_ema`), which replaces them when `fit` ends."""
    lr = learning_rate_schedule(cfg, steps_per_epoch, epochs)
    ema = {"use_ema": True, "ema_momentum": ema_momentum} if ema_momentum is not None else {}
    if cfg.name == "adam":
        return keras.optimizers.Adam(learning_rate=lr, weight_decay=cfg.weight_decay or None, **ema)
    if cfg.name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay or 0.004, **ema)
    if cfg.name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay or None, **ema)
    if cfg.name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay or None,
                                        **ema)
    raise ValueError(f"unknown optimizer {cfg.name}")  # the recipe validates names
