"""Probes during pre-training: every few data epochs, how good a classifier the backbone's frozen features make."""

from __future__ import annotations

import math
from typing import Callable

import keras
import numpy as np

from kpretrain.training.timing import Clock, measure


class ProbeCallback(keras.callbacks.Callback):
    """Calls `probe()` (-> {name: (score, confusion matrix)}) after the Keras epochs that complete another `every`
    data epochs, and after the last one; logs each score as `val_probe_<name>` (so `BestEpoch` can select on it),
    keeps `records`, one entry per Keras epoch (None where no probe ran), and `confusions`, each probe's matrix
    at its best and at its last probe point; both are saved with the stage's backup."""

    def __init__(self, probe: Callable[[], dict], every: float, steps_per_data_epoch: int, clock: Clock | None = None):
        super().__init__()
        self.probe, self.every, self.steps_per_data_epoch, self.clock = probe, every, steps_per_data_epoch, clock
        self.records: dict[str, list] = {}
        self.confusions: dict[str, dict] = {}

    def _position(self, epoch: int) -> float:
        """Data epochs done after Keras epoch `epoch` (0-based)."""
        return (epoch + 1) * self.params["steps"] / self.steps_per_data_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        last = epoch + 1 >= self.params.get("epochs", epoch + 1)
        before = self._position(epoch - 1) if epoch > 0 else 0.0
        due = math.floor(self._position(epoch) / self.every + 1e-9) > math.floor(before / self.every + 1e-9)
        values = {}
        if due or last:
            with measure(self.clock, "evaluation"):
                probed = self.probe()
            values = {f"val_probe_{k}": score for k, (score, _) in probed.items()}
            for name, (score, matrix) in probed.items():
                point = {"epoch": epoch + 1, "data_epoch": self._position(epoch), "score": score, "matrix": matrix}
                kept = self.confusions.setdefault(name, {"best": point})
                if score > kept["best"]["score"]:
                    kept["best"] = point
                kept["last"] = point
        for key in dict.fromkeys([*self.records, *values]):  # in a fixed order (a set's varies per process)
            self.records.setdefault(key, [None] * epoch).append(values.get(key))
        logs.update(values)

    def backup_state(self) -> dict:
        return {"records": self.records, "confusions": self.confusions}

    def restore_state(self, state: dict) -> None:
        self.records = {k: list(v) for k, v in state["records"].items()}
        self.confusions = state.get("confusions", {})


def balanced_subset(labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Indices of the first `per_class` examples of every class, in the given order (all when None)."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]))
