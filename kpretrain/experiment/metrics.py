"""`metrics.json` of a run, built from the units' typed results; its layout as dataclasses.

`RunMetrics.record()` is what the file holds (the layout `SCHEMA_VERSION` names).  Statistics are computed here,
once (`report.summary.arm_statistics`), and stored under `arms.<arm>.statistics`; report.md, the CSV, the terminal
tables and the Python API read them.

Layout versions: 2 added provenance (recipe and data checksums), `time_split.reused_units` and
`arms.<arm>.statistics` (intervals, paired tests); 0.5.1 added `holm` (the Holm family of the adjusted p-values);
0.9.0 added `environment.intra_op_threads`.
"""

from __future__ import annotations

import dataclasses
import os
import platform

import keras
import numpy as np
import tensorflow as tf

from kpretrain._version import __version__
from kpretrain.data import SCALING
from kpretrain.experiment.preparation import Prepared
from kpretrain.experiment.units import finetune_unit
from kpretrain.protocol.results import PretrainResult, UnitResult
from kpretrain.recipe import Recipe, pretrains
from kpretrain.report.summary import arm_statistics
from kpretrain.rundir import recipe_sha256

SCHEMA_VERSION = 2
EXTRA_UNIT_FIELDS = ("head_init", "unfreeze_schedule", "pretrain_unit", "finetune_learning_rate", "averaging",
                     "test_accuracy_last", "selected_epoch", "selftrain",
                     "finetune_extra_steps")  # per seed, in an arm's entry when any has it


def protocol(arm: Recipe) -> dict:
    """The settings that define an arm, as recorded in metrics.json (`arms.<arm>.protocol`)."""
    pre = pretrains(arm)
    return {
        "task": arm.pretrain.task if pre else "none",
        "pretrain_epochs": arm.pretrain.epochs if pre else 0,
        "pretrain_dataset": (arm.pretrain.dataset or None) if pre else None,
        "backbone": arm.backbone.name,
        "source_backbone": arm.backbone.from_,
        "frozen_depth": arm.transfer.frozen_depth,
        "bn": arm.transfer.bn,
        "init": arm.transfer.init,
        "head_init": arm.transfer.head_init,
        "unfreeze": dataclasses.asdict(arm.transfer.unfreeze) if arm.transfer.unfreeze else None,
        "head": arm.finetune.head,
        "finetune_epochs": arm.finetune.epochs,
        "pretrain_lr": arm.pretrain.optimizer.learning_rate if pre else None,
        "finetune_lr": arm.finetune.optimizer.learning_rate,
        "augment": arm.finetune.augment,
        "selftrain": dataclasses.asdict(arm.selftrain) if arm.selftrain else None,
    }


@dataclasses.dataclass(frozen=True)
class DataRecord:
    """`data`: the downstream data set and the sizes of one seed's splits."""

    dataset: str
    source: str
    image_shape: list
    image_size: list | None
    channels: int | None
    num_classes: int
    class_names: list
    train: int
    test: int
    labelled: int
    validation: int
    unlabelled: int
    scaling: str = SCALING

    @classmethod
    def of(cls, prepared: Prepared) -> "DataRecord":
        d, r, split = prepared.data, prepared.recipe, prepared.first.split
        return cls(d.name, d.source, list(d.image_shape), r.data.image_size, r.data.channels, d.num_classes,
                   list(d.class_names), int(len(d.y_train)), int(len(d.y_test)), int(len(split.labelled)),
                   int(len(split.validation)), int(len(split.unlabelled)))


@dataclasses.dataclass(frozen=True)
class EvaluationRecord:
    """`evaluation`: how test accuracy was measured."""

    bn_refresh: bool
    test_accuracy_is: str  # "refreshed" or "raw"
    raw: str
    validate_every: int
    bn_refresh_batches: int

    @classmethod
    def of(cls, prepared: Prepared) -> "EvaluationRecord":
        ev = prepared.recipe.evaluation
        return cls(ev.bn_refresh, "refreshed" if ev.bn_refresh else "raw", ev.raw, ev.validate_every,
                   prepared.first.bn_batches)


@dataclasses.dataclass(frozen=True)
class Environment:
    """`environment`: the versions and the device the run trained on."""

    tensorflow: str
    keras: str
    python: str
    device: str
    cpu_count: int | None
    intra_op_threads: int  # TensorFlow's intra-op pool (`runtime.threads`; 0: its default, every core)

    @classmethod
    def current(cls) -> "Environment":
        return cls(tf.__version__, keras.__version__, platform.python_version(),
                   "GPU" if tf.config.list_physical_devices("GPU") else "CPU", os.cpu_count(),
                   tf.config.threading.get_intra_op_parallelism_threads())


@dataclasses.dataclass(frozen=True)
class TimeSplit:
    """`time_split` (seconds of this process; units reused from an earlier run are excluded)."""

    wall: float
    training: float
    evaluation: float
    other: float
    reused_units: list

    @classmethod
    def of(cls, wall: float, seconds: list[dict], reused: set[str]) -> "TimeSplit":
        training = sum(s.get("training", 0.0) for s in seconds)
        evaluation = sum(s.get("evaluation", 0.0) for s in seconds)
        return cls(round(wall, 3), round(training, 3), round(evaluation, 3),
                   round(max(0.0, wall - training - evaluation), 3), sorted(reused))


@dataclasses.dataclass(frozen=True)
class ArmEntry:
    """`arms.<arm>`: one value per seed (in `seeds` order), the arm's protocol and its statistics.

    Optional fields that are None are left out of the record (`baseline` for an arm compared with none, the
    refreshed and kNN accuracies when not measured, `extras` that no unit has, `pretext` without pre-training,
    the compute-matched fields without `baselines: [scratch, scratch_compute]`): a pre-training arm's
    `compute_baseline` names its compute-matched scratch, whose entry has `compute_of` (the arms whose pre-training
    steps it adds, `finetune_extra_steps` per seed) and `extends` (the matched scratch it lengthens).
    """

    protocol: dict
    seeds: list
    test_accuracy: list
    test_accuracy_raw: list
    val_accuracy: list
    trainable_params: int | None
    frozen_blocks: list | None
    history: list
    confusion: list
    wall_time_s: list
    seconds: list
    architecture: dict  # the backbone: name, parameters, blocks ([name, layers]); its baseline's is the same
    baseline: str | None = None
    reference: str | None = None
    compute_baseline: str | None = None
    compute_of: list | None = None
    extends: str | None = None
    test_accuracy_refreshed: list | None = None
    knn_accuracy: list | None = None
    extras: dict = dataclasses.field(default_factory=dict)  # EXTRA_UNIT_FIELDS that some unit has
    pretext: list | None = None

    OPTIONAL = ("baseline", "reference", "compute_baseline", "compute_of", "extends", "test_accuracy_refreshed",
                "knn_accuracy", "pretext")

    @classmethod
    def of(cls, prepared: Prepared, name: str, units: list[UnitResult]) -> "ArmEntry":
        arm, ev, match = prepared.arms[name], prepared.recipe.evaluation, prepared.compute.get(name)
        records = [u.record() for u in units]
        extras = {k: [u.get(k) for u in records] for k in EXTRA_UNIT_FIELDS if any(k in u for u in records)}
        return cls(
            protocol(arm), [u.seed for u in units], [u["test_accuracy"] for u in records],
            [u["test_accuracy_raw"] for u in records], [u["val_accuracy"] for u in records],
            records[0]["trainable_params"] if records else None, records[0]["frozen_blocks"] if records else None,
            [{"seed": u["seed"], **u["history"]} for u in records], [u["confusion"] for u in records],
            [u.finetune.wall_time_s + (u.pretrain.wall_time_s if u.pretrain else 0.0) for u in units],
            [u["seconds"] for u in records], prepared.architectures[name], baseline=prepared.pairs.get(name),
            reference=arm.reference or None, compute_baseline=prepared.compute_pairs.get(name),
            compute_of=list(match.arms) if match else None, extends=match.extends if match else None,
            test_accuracy_refreshed=[u["test_accuracy_refreshed"] for u in records] if ev.bn_refresh else None,
            knn_accuracy=[u["knn_accuracy"] for u in records] if ev.knn else None, extras=extras,
            pretext=[{"seed": u.seed, "monitor": u.pretrain.monitor, **u.pretrain.history}
                     for u in units if u.pretrain] or None)

    def record(self) -> dict:
        out = {}
        for field in dataclasses.fields(self):
            if field.name == "extras":
                out.update(self.extras)
            elif field.name not in self.OPTIONAL or getattr(self, field.name) is not None:
                out[field.name] = getattr(self, field.name)
        return out


@dataclasses.dataclass(frozen=True)
class RunMetrics:
    """The whole of a run's `metrics.json` (`record()`), in the order the file lists it."""

    recipe: str
    recipe_sha256: str
    data_files: dict
    data_sha256: dict
    complete: bool
    smoke: bool
    seeds: list
    data: DataRecord
    evaluation: EvaluationRecord
    arms: dict  # arm -> its entry's record (with `statistics`)
    holm: dict  # {family: run | point | sweep, comparisons}
    reference: str | None
    pretraining: list
    shortcut: list
    warnings: list
    environment: Environment
    time_split: TimeSplit
    wall_time_s: float
    budget: dict | None = None  # a --smoke run's caps (epochs, steps per epoch, examples); None: the recipe's
    schema_version: int = SCHEMA_VERSION
    kpretrain_version: str = __version__

    def record(self) -> dict:
        head = {"schema_version": self.schema_version, "kpretrain_version": self.kpretrain_version}
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in head}
        for name in ("data", "evaluation", "environment", "time_split"):
            body[name] = dataclasses.asdict(body[name])
        return {**head, **body}


def run_metrics(prepared: Prepared, results: dict[str, list[UnitResult]], pretrainings: list[PretrainResult], *,
                wall: float, complete: bool, reused: set[str], holm_family: str, shortcuts: list) -> dict:
    """The `metrics.json` of the units finished so far.

    Args:
        prepared: the run's `Prepared`.
        results: arm -> its finished units, in seed order.
        pretrainings: the shared pre-training units finished so far.
        wall: seconds since the run started (this process).
        complete: whether every unit is finished.
        reused: units recorded by an earlier run of the directory (their time is not this process's).
        holm_family: `holm.family`: "run", or "point" for a sweep's point until the sweep adjusts its points.
        shortcuts: (arms, `ShortcutResult`) of each checked pretext task.

    Returns:
        The record (`RunMetrics.record()`).
    """
    r = prepared.recipe
    arms = {name: ArmEntry.of(prepared, name, units).record() for name, units in results.items()}
    warnings = _stale_statistics_warnings(arms, r.evaluation.bn_warn_points)
    if "scratch_compute" in r.baselines and not prepared.compute:
        warnings.append("baselines: scratch_compute matches a pre-training's optimizer steps, and no arm pre-trains: "
                        "there is no compute-matched scratch")
    ran = [u.seconds for units in results.values() for u in units if finetune_unit(u.seed, u.arm) not in reused]
    seconds = ran + [p.seconds for p in pretrainings if p.unit not in reused]
    statistics = arm_statistics({"arms": arms})  # the run's Holm family, computed once
    for name, stats in statistics.items():
        arms[name]["statistics"] = stats
    holm = {"family": holm_family, "comparisons": max(
        (s["vs_baseline"]["comparisons"] for s in statistics.values() if "vs_baseline" in s), default=0)}
    shortcut = []
    for users, check in shortcuts:
        done = [p.final_val_accuracy for p in pretrainings if set(p.arms) & set(users)]
        network = float(np.mean(done)) if done and check.task == prepared.arms[users[0]].pretrain.task else None
        shortcut.append({"arms": users, **check.record(network)})
        if shortcut[-1]["warning"] and complete:
            warnings.append(f"shortcut: {check.line(network)}")
    return RunMetrics(
        r.name, recipe_sha256(r.to_dict()), **prepared.provenance, complete=complete, smoke=prepared.smoke,
        seeds=list(r.seeds), data=DataRecord.of(prepared), evaluation=EvaluationRecord.of(prepared), arms=arms,
        holm=holm, reference=next((n for n, a in prepared.arms.items() if a.reference == "natural"), None),
        pretraining=[p.record() for p in pretrainings], shortcut=shortcut, warnings=warnings,
        environment=Environment.current(), time_split=TimeSplit.of(wall, seconds, reused), wall_time_s=wall,
        budget=dataclasses.asdict(prepared.budget) if prepared.smoke else None,
    ).record()


def _stale_statistics_warnings(arms: dict, points: float) -> list[str]:
    """A warning per seed whose raw test accuracy (stale BN statistics) is more than `points` off the refreshed."""
    warnings = []
    for name, entry in arms.items():
        for seed, raw, ref in zip(entry["seeds"], entry["test_accuracy_raw"],
                                  entry.get("test_accuracy_refreshed", [])):
            if abs(ref - raw) * 100 > points:
                warnings.append(f"{name} seed {seed}: raw test accuracy {raw:.4f} vs {ref:.4f} after BN refresh "
                                f"({(ref - raw) * 100:+.1f} pts): stale batch-norm statistics")
    return warnings
