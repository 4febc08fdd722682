"""Resuming a training stage after an interruption: Keras `BackupAndRestore`, made atomic, plus the stage's records."""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from kpretrain import io


class EpochLog(keras.callbacks.Callback):
    """Every epoch's logs, as Keras' `History` keeps them, but restorable from a backup (History is not)."""

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))

    def backup_state(self):
        return self.history

    def restore_state(self, state):
        self.history = {k: list(v) for k, v in state.items()}


class StageBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` (weights, optimizer, epoch) whose backup is one directory replaced atomically at every
    epoch end, holding also the state of the stage's callbacks that have `backup_state()` / `restore_state()`.

    Keras writes its weights and its epoch number as two files in place: a kill between them, or inside the first,
    leaves a backup that resumes from the wrong epoch or cannot be read.  Here a kill leaves the previous backup
    or the new one, whole.  Put it last among the callbacks, so that it saves what the others did in the epoch.
    """

    def __init__(self, backup_dir: str, callbacks=()):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=True)
        self.stateful = {type(cb).__name__: cb for cb in callbacks if hasattr(cb, "backup_state")}
        self.latest = os.path.join(backup_dir, "latest")
        self._weights_path = os.path.join(self.latest, "latest.weights.h5")
        self._training_metadata_path = os.path.join(self.latest, "training_metadata.json")
        self._state_path = os.path.join(self.latest, "callbacks.json")
        self.resumed_from = 0

    def resume_epoch(self) -> int:
        """The epoch training will resume from (0 without a backup); read before `fit` to position the data."""
        io.recover(self.latest)
        try:
            with open(self._training_metadata_path) as fh:
                return int(json.load(fh)["epoch"])
        except (OSError, ValueError, KeyError):
            return 0

    def on_train_begin(self, logs=None):
        io.recover(self.latest)
        super().on_train_begin(logs)
        self.resumed_from = int(self.model._initial_epoch or 0) if os.path.isdir(self.latest) else 0
        if self.resumed_from and os.path.exists(self._state_path):
            with open(self._state_path) as fh:
                states = json.load(fh)
            for name, callback in self.stateful.items():
                if name in states:
                    callback.restore_state(states[name])

    def _save_model(self):
        with io.atomic_path(self.latest) as tmp:
            os.makedirs(tmp)
            self.model.save_weights(os.path.join(tmp, "latest.weights.h5"))
            with open(os.path.join(tmp, "training_metadata.json"), "w") as fh:
                json.dump({"epoch": self._current_epoch, "batch": 0}, fh)
            with open(os.path.join(tmp, "callbacks.json"), "w") as fh:
                json.dump({name: cb.backup_state() for name, cb in self.stateful.items()}, fh, default=_plain)


def _plain(value):
    """JSON for numpy values in callback states."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot back up {type(value).__name__}")
