"""Gradual unfreezing of a frozen backbone during fine-tuning, and a lower learning rate for the backbone.

Keras 3 needs two things when `trainable` changes inside `fit`: the train function is rebuilt
(`make_train_function(force=True)`, as `Layer.trainable` documents), and the optimizer must already know every
variable it will ever update (it refuses variables it was not built with).  So `GradualUnfreezing`, at the start
of training, swaps the compiled optimizer for a fresh copy of itself built on all variables that will become
trainable; it must therefore see a fresh optimizer (compile just before `fit`, as `fit_stage` does).  A stage
resumed from a backup is no exception: `StageBackup`, after this callback, restores the optimizer's state into the
rebuilt optimizer, and the depth of the first resumed epoch follows from its number.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.models.blocks import find_blocks
from kpretrain.models.freezing import freeze_to_depth, resolve_depth


class ScaledUpdates:
    """Optimizer mixin: the update of each variable in `scaled_variables` is multiplied by `factor`.

    Scaling the update (new = old + factor * (proposed - old)) equals a per-variable learning rate
    `factor * lr` for SGD, momentum, Adam(W) and RMSprop, weight decay included; scaling gradients would not
    (Adam is invariant to gradient scale).  The scaling comes before the optimizer's EMA of the weights
    (`use_ema`) is updated, so the average follows the scaled weights: with `factor` 0 the scaled variables and
    their averages never move.
    """

    scaled_variables: frozenset = frozenset()
    factor: float = 1.0

    def _backend_apply_gradients(self, grads, trainable_variables):
        scaled = [v for v in trainable_variables if id(v) in self.scaled_variables]
        before = [tf.identity(v) for v in scaled]
        use_ema, self.use_ema = self.use_ema, False  # read at trace time: the average is updated below
        try:
            super()._backend_apply_gradients(grads, trainable_variables)
        finally:
            self.use_ema = use_ema
        for variable, old in zip(scaled, before):
            variable.assign(old + self.factor * (tf.convert_to_tensor(variable) - old))
        if use_ema:
            self._update_model_variables_moving_average(self._trainable_variables)
            if self.factor == 0.0:  # the average of a constant is that constant, to the bit (no rounding drift)
                for variable in scaled:
                    self._model_variables_moving_average[self._get_variable_index(variable)].assign(variable)


def rebuilt_optimizer(optimizer: keras.optimizers.Optimizer, variables: list, scaled_variables: list = (),
                      factor: float = 1.0) -> keras.optimizers.Optimizer:
    """A fresh copy of `optimizer` (same config), built on `variables`, scaling updates of `scaled_variables`."""
    cls = type(optimizer)
    if factor != 1.0:
        cls = type(f"BackboneScaled{cls.__name__}", (ScaledUpdates, cls), {})
    copy = cls.from_config(optimizer.get_config())
    if factor != 1.0:
        copy.scaled_variables = frozenset(id(v) for v in scaled_variables)
        copy.factor = float(factor)
    copy.build(list(variables))
    return copy


def trainable_blocks(backbone: keras.Model) -> list[str]:
    """Blocks of `backbone` with at least one trainable weight."""
    if not backbone.trainable:
        return []
    return [block.name for block in find_blocks(backbone)
            if any(w.trainable for layer in block.layers if layer.trainable for w in layer.weights)]


class GradualUnfreezing(keras.callbacks.Callback):
    """From `frozen_depth`, unfreeze one more backbone block (output side first) every `every` epochs.

    `every=None` keeps the depth fixed (only `backbone_lr_factor` acts).  The BN policy `bn` is that of
    `freeze_to_depth`.  `backbone_lr_factor` multiplies the learning rate of every backbone weight.
    `schedule` records `(epoch, trainable block names)` at the start of every epoch.
    """

    def __init__(self, backbone: keras.Model, frozen_depth, every: int | None = 1, bn: str = "frozen",
                 backbone_lr_factor: float = 1.0):
        super().__init__()
        if every is not None and every < 1:
            raise ValueError(f"every must be >= 1 or None, got {every}")
        self.backbone = backbone
        self.frozen_depth = frozen_depth
        self.start_depth = resolve_depth(backbone, frozen_depth)
        self.every = every
        self.bn = bn
        self.backbone_lr_factor = float(backbone_lr_factor)
        self.schedule: list[tuple[int, list[str]]] = []
        self._depth = None

    def depth_at(self, epoch: int) -> int:
        """Number of frozen blocks during `epoch` (0-based)."""
        if self.every is None:
            return self.start_depth
        return max(0, self.start_depth - epoch // self.every)

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        if int(optimizer.iterations.numpy()) != 0:
            raise ValueError("GradualUnfreezing needs a freshly compiled model (its optimizer has taken steps)")
        final_depth = self.depth_at(max(0, self.params.get("epochs", 1 << 30) - 1))
        freeze_to_depth(self.backbone, final_depth, self.bn)
        variables = self.model.trainable_variables
        backbone_ids = {id(v) for v in self.backbone.weights}
        scaled = [v for v in variables if id(v) in backbone_ids]
        self.model.optimizer = rebuilt_optimizer(optimizer, variables, scaled, self.backbone_lr_factor)
        self._set_depth(self.frozen_depth)
        self._depth = self.start_depth

    def on_epoch_begin(self, epoch, logs=None):
        depth = self.depth_at(epoch)
        if depth != self._depth:
            self._set_depth(depth)
            self._depth = depth
        self.schedule.append((epoch, trainable_blocks(self.backbone)))

    def backup_state(self) -> list:
        return self.schedule

    def restore_state(self, state: list) -> None:
        self.schedule = [(int(epoch), list(blocks)) for epoch, blocks in state]

    def _set_depth(self, depth) -> None:
        freeze_to_depth(self.backbone, depth, self.bn)
        self.model.make_train_function(force=True)
