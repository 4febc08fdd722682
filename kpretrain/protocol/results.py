"""Typed results of the stages of a unit (seed x arm); `record()` gives what `units/` and `metrics.json` hold."""

from __future__ import annotations

import dataclasses
from typing import Optional


def _plain(obj) -> dict:
    """The recorded fields (those shown by repr) that hold a value; tuples as lists."""
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.repr}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class PretrainResult:
    """A pre-training stage: its curve, and the backbone weights it produced (shared by every arm that uses it)."""

    task: str
    dataset: str
    images: int
    epochs: float
    steps_per_epoch: int
    monitor: str
    history: dict
    final_val_accuracy: float
    wall_time_s: float
    seconds: dict
    unit: str = ""  # units/<unit>.json: the pre-training unit (named after the first arm that uses it)
    arms: tuple = ()  # every arm of this seed that starts from these weights
    reused_from: Optional[str] = None  # a sweep's earlier point whose identical pre-training this copies
    lr_find: Optional[dict] = None  # the range test that chose the learning rate (`learning_rate: auto`)
    averaging: Optional[dict] = None  # method and pretext validation of the last and the averaged weights
    selected_epoch: Optional[float] = None  # select best: where the kept checkpoint is, in passes over the data
    probe_confusion: Optional[dict] = None  # per probe: validation confusion matrix at its best and last probe point
    weights: tuple = dataclasses.field(default=(), repr=False, compare=False)
    resumed_from: int = dataclasses.field(default=0, repr=False, compare=False)  # epochs restored from a backup

    def record(self) -> dict:
        return _plain(self)

    @classmethod
    def from_record(cls, record: dict, weights=()) -> "PretrainResult":
        """The result a recorded unit holds (resume), with the weights saved beside it."""
        return cls(**{**record, "arms": tuple(record.get("arms", ())), "weights": tuple(weights)})


@dataclasses.dataclass(frozen=True)
class TransferResult:
    """Transfer: which blocks are frozen, and the head warm start (if any)."""

    frozen_blocks: tuple
    head_init: Optional[dict] = None

    def record(self) -> dict:
        return _plain(self)


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """Fine-tuning: per-epoch history (None where not validated) and the final validation accuracy."""

    history: dict
    epochs: int
    val_accuracy: float
    val_accuracy_raw: float
    val_accuracy_refreshed: Optional[float]
    wall_time_s: float
    unfreeze_schedule: Optional[list] = None
    steps_per_epoch: Optional[int] = None  # batches per fine-tuning epoch
    lr_find: Optional[dict] = None  # the range test that chose the learning rate (`learning_rate: auto`)
    averaging: Optional[dict] = None  # method and validation accuracy of the last, averaged raw, averaged weights
    selected_epoch: Optional[int] = None  # select best: the epoch (1-based) whose weights the stage ended with
    extra_steps: Optional[int] = None  # a compute-matched scratch: optimizer steps after `epochs`
    last_weights: Optional[list] = dataclasses.field(default=None, repr=False, compare=False)  # before averaging
    raw_bn: list = dataclasses.field(default_factory=list, repr=False, compare=False)
    resumed_from: int = dataclasses.field(default=0, repr=False, compare=False)  # epochs restored from a backup

    def record(self) -> dict:
        out = {"history": self.history, "finetune_epochs": self.epochs, "finetune_wall_time_s": self.wall_time_s,
               "val_accuracy": self.val_accuracy, "val_accuracy_raw": self.val_accuracy_raw}
        if self.val_accuracy_refreshed is not None:
            out["val_accuracy_refreshed"] = self.val_accuracy_refreshed
        if self.unfreeze_schedule is not None:
            out["unfreeze_schedule"] = self.unfreeze_schedule
        if self.steps_per_epoch is not None:
            out["finetune_steps_per_epoch"] = self.steps_per_epoch
        if self.lr_find is not None:
            out["finetune_learning_rate"] = self.lr_find["suggested_lr"]
            out["finetune_lr_find"] = self.lr_find
        if self.averaging is not None:
            out["averaging"] = self.averaging
        if self.selected_epoch is not None:
            out["selected_epoch"] = self.selected_epoch
        if self.extra_steps is not None:
            out["finetune_extra_steps"] = self.extra_steps
        return out


@dataclasses.dataclass(frozen=True)
class TestResult:
    """Test accuracy (refreshed BN when `evaluation.bn_refresh`, and raw), confusion matrix of the former."""

    test_accuracy: float
    test_accuracy_raw: float
    test_accuracy_refreshed: Optional[float]
    confusion: list
    test_accuracy_last: Optional[float] = None  # with averaging: the last trained weights (BN refreshed), a diagnostic

    def record(self) -> dict:
        return _plain(self)


@dataclasses.dataclass(frozen=True)
class UnitResult:
    """One seed x arm, every stage it ran."""

    seed: int
    arm: str
    transfer: TransferResult
    finetune: FinetuneResult
    trainable_params: int
    seconds: dict
    pretrain: Optional[PretrainResult] = None
    test: Optional[TestResult] = None
    knn_accuracy: Optional[float] = None
    selftrain: Optional[dict] = None  # self-training: the pool and every round (pseudo labels, teacher, student)
    model: object = dataclasses.field(default=None, repr=False, compare=False)  # the trained classifier (in memory)

    def record(self) -> dict:
        """Flat record of the unit (without the pre-training curve, which its own unit records)."""
        out = {"seed": self.seed, "arm": self.arm, "trainable_params": self.trainable_params, "seconds": self.seconds}
        if self.pretrain is not None:
            out["pretrain_unit"] = self.pretrain.unit
        out.update(self.transfer.record())
        out.update(self.finetune.record())
        if self.knn_accuracy is not None:
            out["knn_accuracy"] = self.knn_accuracy
        if self.test is not None:
            out.update(self.test.record())
        if self.selftrain is not None:
            out["selftrain"] = self.selftrain
        return out

    @classmethod
    def from_record(cls, record: dict, pretrain: Optional[PretrainResult] = None) -> "UnitResult":
        """The result a recorded unit holds (resume); inverse of `record()` given its pre-training unit."""
        r = record
        test = TestResult(r["test_accuracy"], r["test_accuracy_raw"], r.get("test_accuracy_refreshed"),
                          r["confusion"], r.get("test_accuracy_last")) if "test_accuracy" in r else None
        finetune = FinetuneResult(r["history"], r["finetune_epochs"], r["val_accuracy"], r["val_accuracy_raw"],
                                  r.get("val_accuracy_refreshed"), r["finetune_wall_time_s"], r.get("unfreeze_schedule"),
                                  r.get("finetune_steps_per_epoch"), r.get("finetune_lr_find"), r.get("averaging"),
                                  r.get("selected_epoch"), r.get("finetune_extra_steps"))
        return cls(seed=r["seed"], arm=r["arm"], transfer=TransferResult(tuple(r["frozen_blocks"]), r.get("head_init")),
                   finetune=finetune, trainable_params=r["trainable_params"], seconds=r["seconds"], pretrain=pretrain,
                   test=test, knn_accuracy=r.get("knn_accuracy"), selftrain=r.get("selftrain"))
