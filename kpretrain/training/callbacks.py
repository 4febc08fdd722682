"""Callbacks of the training stages: validation with raw and with refreshed batch-norm statistics."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kpretrain.training.bn_refresh import bn_state, refresh_batch_norm, statistics_restored
from kpretrain.training.stages import accuracy
from kpretrain.training.timing import Clock, measure


class _Validation(keras.callbacks.Callback):
    """Shared schedule: validate every `every` epochs and always after the last; raw (stale-BN) numbers at every
    validation (`raw="every_epoch"`) or after the last epoch only (`raw="final"`).

    `records` holds one entry per epoch for every logged key (None where not measured).  After the last epoch
    the refreshed statistics stay in the model (`keep_refreshed`) and `raw_bn` holds the statistics training left.
    `measured_bn` holds the statistics the latest validation measured with (refreshed, or None when it used the
    model's own), so that a kept checkpoint can be given back the statistics it was validated with.
    """

    def __init__(self, refresh_data: tf.data.Dataset | None, refresh_batches: int, every: int, raw: str,
                 clock: Clock | None, keep_refreshed: bool):
        super().__init__()
        self.keep_refreshed = keep_refreshed
        self.refresh_data = refresh_data
        self.refresh_batches = refresh_batches
        self.every = every
        self.raw = raw
        self.clock = clock
        self.records: dict[str, list] = {}
        self.raw_bn: list | None = None
        self.measured_bn: list | None = None

    def measure(self) -> dict:
        """{metric name: value} of the model as it is."""
        raise NotImplementedError

    def backup_state(self) -> dict:
        """What a resumed stage needs of the epochs before it (see `StageBackup`)."""
        return {"records": self.records, "raw_bn": self.raw_bn}

    def restore_state(self, state: dict) -> None:
        self.records = {k: list(v) for k, v in state["records"].items()}
        self.raw_bn = [tuple(np.asarray(s, np.float32) for s in pair) for pair in state["raw_bn"] or []] or None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        last = epoch + 1 >= self.params.get("epochs", epoch + 1)
        values = {}
        if last or (epoch + 1) % self.every == 0:
            with measure(self.clock, "evaluation"):
                values = self._validate(last)
        for key in dict.fromkeys([*self.records, *values]):  # in a fixed order (a set's varies per process)
            self.records.setdefault(key, [None] * epoch).append(values.get(key))
        logs.update(values)

    def _validate(self, last: bool) -> dict:
        values = {}
        with_raw = self.raw == "every_epoch" or last or self.refresh_data is None
        if with_raw:
            values.update({f"val_{k}_raw": v for k, v in self.measure().items()})
        if self.refresh_data is None:
            return {**values, **{k.removesuffix("_raw"): v for k, v in values.items()}}
        keep = last and self.keep_refreshed  # the model keeps the refreshed statistics: the next evaluation needs them
        with statistics_restored(self.model, restore=not keep) as saved:
            refresh_batch_norm(self.model, self.refresh_data, self.refresh_batches)
            refreshed = self.measure()
            self.measured_bn = bn_state(self.model)
        if keep:
            self.raw_bn = saved
        return {**values, **{f"val_{k}": v for k, v in refreshed.items()},
                **{f"val_{k}_refreshed": v for k, v in refreshed.items() if k == "accuracy"}}


class RefreshedValidation(_Validation):
    """Validation accuracy of a classifier (logged as `val_accuracy`, `val_accuracy_refreshed`, `val_accuracy_raw`)."""

    def __init__(self, validation: tf.data.Dataset, labels: np.ndarray, refresh_images: tf.data.Dataset | None,
                 refresh_batches: int = 50, *, every: int = 1, raw: str = "final", clock: Clock | None = None):
        super().__init__(refresh_images, refresh_batches, every, raw, clock, keep_refreshed=True)
        self.validation = validation
        self.labels = labels

    def measure(self) -> dict:
        return {"accuracy": accuracy(self.model, self.validation, self.labels)[0]}


class RefreshedEvaluation(_Validation):
    """Validation of any compiled model (pretext models included): every `model.evaluate` metric as `val_<name>`
    (BN refreshed on `refresh_data` when given) and `val_<name>_raw`."""

    def __init__(self, validation: tf.data.Dataset, refresh_data: tf.data.Dataset | None, refresh_batches: int = 50,
                 *, every: int = 1, raw: str = "final", clock: Clock | None = None):
        super().__init__(refresh_data, refresh_batches, every, raw, clock, keep_refreshed=False)
        self.validation = validation

    def measure(self) -> dict:
        return {k: float(v) for k, v in self.model.evaluate(self.validation, verbose=0, return_dict=True).items()}
