"""Which weights a stage ends with: an average (Keras optimizer EMA, or a Polyak average from a given epoch on),
or the best validated epoch (`BestEpoch`, Keras' EarlyStopping).

Either way the averaged weights replace the trained ones when the stage ends (Keras' `finalize_variable_values`
for EMA, `PolyakAverage.on_train_end` for Polyak); `LastWeights` keeps the last trained weights for diagnostics.
Averages cover weights, not batch-norm moving statistics (those keep what training left), so the statistics of an
averaged model must be refreshed afterwards (the stage does).
"""

from __future__ import annotations

import keras
import numpy as np


class LastWeights(keras.callbacks.Callback):
    """Every weight of the model (BN statistics included) at the end of the last epoch, after the callbacks
    before it (validation) ran: what the stage would have ended with without averaging."""

    def __init__(self):
        super().__init__()
        self.weights: list | None = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.params.get("epochs", epoch + 1) or self.model.stop_training:
            self.weights = [np.array(w) for w in self.model.get_weights()]


class PolyakAverage(keras.callbacks.Callback):
    """Uniform average of the model's weights over every step after `start_epoch` passes over the data (0-based,
    fractions allowed: from step `start_epoch x steps_per_pass`); assigned to them when training ends.

    `steps_per_pass` is the number of steps of one pass over the data (a stage cut into more Keras epochs than
    passes has fewer steps per Keras epoch; default: Keras' steps per epoch).  Frozen weights average to
    themselves; batch-norm moving statistics are not averaged (they keep what training left, to be refreshed).
    """

    def __init__(self, start_epoch: float = 0.0, steps_per_pass: int | None = None):
        super().__init__()
        self.start_epoch = start_epoch
        self.steps_per_pass = steps_per_pass
        self.count = 0
        self.average: list | None = None
        self._epoch = 0

    def on_train_begin(self, logs=None):
        """The averaged variables, found once: every weight but the BN moving statistics."""
        statistics = {id(v) for layer in self.model._flatten_layers(include_self=False, recursive=True)
                      if isinstance(layer, keras.layers.BatchNormalization)
                      for v in (layer.moving_mean, layer.moving_variance)}
        self._averaged = [v for v in self.model.weights if id(v) not in statistics]

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch * self.params["steps"] + batch + 1  # steps done so far
        if step <= self.start_epoch * (self.steps_per_pass or self.params["steps"]):
            return
        values = [v.numpy() for v in self._averaged]
        self.count += 1
        if self.average is None:
            self.average = [np.array(v, dtype=np.float64) for v in values]
        else:
            for avg, value in zip(self.average, values):
                avg += (value - avg) / self.count

    def on_train_end(self, logs=None):
        if self.average is None:
            return
        for var, avg in zip(self._averaged, self.average):
            var.assign(avg.astype(var.dtype))

    def backup_state(self) -> dict:
        """The running average so far (see `StageBackup`): a resumed stage goes on averaging from it."""
        return {"count": self.count, "average": None if self.average is None else [a.tolist() for a in self.average]}

    def restore_state(self, state: dict) -> None:
        self.count = state["count"]
        self.average = None if state["average"] is None else [np.asarray(a, np.float64) for a in state["average"]]


class BestEpoch(keras.callbacks.EarlyStopping):
    """Keras `EarlyStopping` that keeps the best validated epoch's weights (restored when training ends), skips
    epochs without a validation quietly, and is saved with the stage's backup (a resumed stage keeps its best).

    `companion`, a function of no arguments, is called at every new best and its value kept as `best_state`:
    what else the caller needs of that epoch (the batch-norm statistics its validation measured with).
    """

    def __init__(self, monitor: str, patience: int | None = None, companion=None):
        super().__init__(monitor=monitor, mode="min" if "loss" in monitor else "max",
                         patience=patience if patience is not None else 10 ** 9, restore_best_weights=True)
        self.companion = companion
        self.best_state = None

    def get_monitor_value(self, logs):
        return (logs or {}).get(self.monitor)  # None on epochs that were not validated: nothing to compare

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.companion is not None and self.best_epoch == epoch and self.best_weights is not None:
            self.best_state = self.companion()

    def backup_state(self) -> dict:
        return {"best": float(self.best) if self.best is not None else None, "best_epoch": self.best_epoch,
                "wait": self.wait, "best_weights": None if self.best_weights is None else
                [np.asarray(w).tolist() for w in self.best_weights],
                "best_state": _listed(self.best_state)}

    def restore_state(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_weights = None if state["best_weights"] is None else [np.asarray(w, np.float32)
                                                                        for w in state["best_weights"]]
        self.best_state = None if state.get("best_state") is None else [
            tuple(np.asarray(s, np.float32) for s in pair) for pair in state["best_state"]]


def _listed(state):
    """A batch-norm state (list of (mean, variance) arrays) as JSON lists."""
    return None if state is None else [[np.asarray(s).tolist() for s in pair] for pair in state]
