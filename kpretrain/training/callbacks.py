"""Callbacks of the downstream stage."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kpretrain.training.bn_refresh import bn_state, refresh_batch_norm, set_bn_state
from kpretrain.training.stages import accuracy


class RefreshedValidation(keras.callbacks.Callback):
    """Per-epoch validation accuracy with raw and with refreshed BN statistics (logged as
    `val_accuracy_raw` and `val_accuracy_refreshed`; `val_accuracy` is the one the protocol uses).

    The refresh is undone after measuring, so training itself is unaffected.
    """

    def __init__(self, validation: tf.data.Dataset, labels: np.ndarray, refresh_images: tf.data.Dataset | None,
                 refresh_batches: int = 50):
        super().__init__()
        self.validation = validation
        self.labels = labels
        self.refresh_images = refresh_images
        self.refresh_batches = refresh_batches

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        raw, _ = accuracy(self.model, self.validation, self.labels)
        logs["val_accuracy_raw"] = raw
        if self.refresh_images is None:
            logs["val_accuracy"] = raw
            return
        saved = bn_state(self.model)
        refresh_batch_norm(self.model, self.refresh_images, self.refresh_batches)
        refreshed, _ = accuracy(self.model, self.validation, self.labels)
        set_bn_state(self.model, saved)
        logs["val_accuracy_refreshed"] = refreshed
        logs["val_accuracy"] = refreshed


class RefreshedEvaluation(keras.callbacks.Callback):
    """Validation of any compiled model (pretext models included) with raw and refreshed BN statistics.

    Logs every metric of `model.evaluate` as `val_<name>` (BN refreshed on `refresh_data`, when given)
    and `val_<name>_raw`; the refresh is undone after measuring.
    """

    def __init__(self, validation: tf.data.Dataset, refresh_data: tf.data.Dataset | None, refresh_batches: int = 50):
        super().__init__()
        self.validation = validation
        self.refresh_data = refresh_data
        self.refresh_batches = refresh_batches

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        raw = self.model.evaluate(self.validation, verbose=0, return_dict=True)
        refreshed = raw
        if self.refresh_data is not None:
            saved = bn_state(self.model)
            refresh_batch_norm(self.model, self.refresh_data, self.refresh_batches)
            refreshed = self.model.evaluate(self.validation, verbose=0, return_dict=True)
            set_bn_state(self.model, saved)
        for name in raw:
            logs[f"val_{name}_raw"] = float(raw[name])
            logs[f"val_{name}"] = float(refreshed[name])
