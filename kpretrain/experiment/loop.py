"""A run: the seed x arm loop over `protocol.run_unit`, recorded unit by unit, then the report and the export.

Arms are compared in pairs: for a given seed every arm sees the same labelled subset, validation split,
initial backbone weights, head initialisation and data order; arms whose pre-training settings are identical
share one pre-trained backbone per seed.  Nothing is chosen on the test split.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from typing import Callable

import tensorflow as tf

from kpretrain import io
from kpretrain.experiment.callbacks import STAGES, CallbackContext, stage_callbacks, stage_in_context
from kpretrain.experiment.metrics import run_metrics
from kpretrain.experiment.plan import plan_lines
from kpretrain.experiment.preparation import Prepared, prepare
from kpretrain.experiment.progress import Progress, ProgressCallback
from kpretrain.experiment.shortcuts import shortcut_checks
from kpretrain.experiment.units import UnitStore, finetune_unit, pretrain_unit, unit_seed
from kpretrain.export import export_backbone
from kpretrain.protocol import SeedData, initial_backbone, pretrain, pretraining_key, run_unit
from kpretrain.protocol.pretrain import shared
from kpretrain.protocol.results import PretrainResult, UnitResult
from kpretrain.recipe import Recipe, pretrains
from kpretrain.recipe.values import dump_yaml
from kpretrain.rundir import RUN_FILE
from kpretrain.training import interruption
from kpretrain.training.runtime import configure_runtime, describe_device, distribution_strategy
from kpretrain.training.timing import Clock


class Experiment:
    """One recipe, prepared (validated, data loaded), then run into a run directory.

    Args:
        recipe: a resolved `Recipe` (without `sweep:`; see `Sweep`).
        smoke: the `--smoke` budget.
        log: where message lines go (default: the progress display's).
        shared_with: what the points of a sweep share: {"datasets": cache of loaded data sets,
            "pretrained": pre-training source -> (record, weights) of a point that recorded it}.
        callbacks: the user's Keras callbacks (see `stage_callbacks`).
        progress: the progress display (default: plain lines).

    Example:
        >>> experiment = Experiment(load_recipe("recipes/fashion_overlay.yaml"), smoke=True)
        >>> print("\\n".join(experiment.prepare()))
        >>> metrics = experiment.run("runs/smoke")
    """

    def __init__(self, recipe: Recipe, *, smoke: bool = False, log: Callable[[str], None] | None = None,
                 shared_with: dict | None = None, callbacks=None, progress: Progress | None = None):
        self.recipe = recipe
        self.smoke = smoke
        self.progress = progress if progress is not None else Progress(live=False)
        self.callbacks = stage_callbacks(callbacks)  # the user's own Keras callbacks, per stage
        for stage in STAGES:
            self.callbacks[stage].append(ProgressCallback(self.progress, stage))
        self.counted = False  # whether the progress display already counts this run's units (a sweep counts all)
        # metrics.json's `holm.family`: "point" for a sweep's point until the sweep adjusts all its points together
        self.holm_family = "run"
        self.shared_with = shared_with if shared_with is not None else {"datasets": {}, "pretrained": {}}
        self.log = log if log is not None else self.progress.log
        self.prepared: Prepared | None = None
        self.shortcuts: list = []  # (arms, ShortcutResult) of each pre-training task, made when the run starts
        self._reused: set[str] = set()  # units recorded by an earlier, interrupted run of the directory
        self.ran_elsewhere: set[str] = set()  # units the workers of a distributed run recorded (`executor`)
        self.started: float | None = None  # when a distributed run started (`executor.execute`), for the wall time

    # ---- preparation ----------------------------------------------------------------------------------
    def prepare(self) -> list[str]:
        """Validate the arms against data and models, load data, make splits; return the plan as lines."""
        self.prepared = prepare(self.recipe, smoke=self.smoke, datasets=self.shared_with["datasets"])
        return plan_lines(self.prepared)

    def seed_data(self, seed: int) -> SeedData:
        """The data every arm of `seed` reads (after `prepare`)."""
        return self.prepared.seed_data(seed)

    @property
    def arms(self) -> dict[str, Recipe]:
        return self.recipe.arm_recipes() if self.prepared is None else self.prepared.arms

    @property
    def data(self):
        return None if self.prepared is None else self.prepared.data

    @functools.cached_property
    def strategy(self) -> tf.distribute.Strategy | None:
        """One distribution strategy for the whole run (`runtime.distribute`), or None."""
        return distribution_strategy(self.recipe.runtime.distribute)

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def unit_count(self) -> int:
        """Units this run trains or reuses: each seed x arm, and each seed's shared pre-trainings."""
        shared_ = len({pretraining_key(arm, self.recipe) for arm in self.arms.values() if pretrains(arm)})
        return len(self.recipe.seeds) * (len(self.arms) + shared_) - len(self.ran_elsewhere)

    def pretraining_source(self, arm: Recipe, seed: int) -> str:
        """What makes a pre-training the same across the points of a sweep: its settings, the seed, `--smoke`."""
        return json.dumps([pretraining_key(arm, self.recipe), seed, self.smoke])

    def run_one(self, out_dir: str, stage: str, seed: int, name: str, origin: tuple[str, str] | None = None) -> str:
        """One unit into `out_dir/units/`, as `run` would train it (a worker's task in a distributed run).

        Args:
            out_dir: the run directory (its `units/` are read and written).
            stage: "pretrain": the pre-training arm `name` shares for `seed`; "finetune": the unit seed x `name`,
                whose pre-training must be recorded already.
            seed: the seed.
            name: the arm.
            origin: (record, weights) of the same pre-training recorded by an earlier point of a sweep, copied
                instead of trained again.

        Returns:
            The unit's name (`units.pretrain_unit` or `units.finetune_unit`).
        """
        if self.prepared is None:
            self.prepare()
        store, arm, inputs = UnitStore(out_dir), self.arms[name], self.seed_data(seed)
        store.create()
        configure_runtime(self.recipe.runtime)
        if origin is not None:
            self.shared_with["pretrained"][self.pretraining_source(arm, seed)] = origin
        pretrained = self._pretrained(store, seed, arm, {}, [])
        if stage == "pretrain" and pretrained is not None:
            return pretrain_unit(seed, self.prepared.pretraining_arm(arm))
        self._finetune_unit(store, inputs, name, arm, pretrained)
        return finetune_unit(seed, name)

    # ---- the run --------------------------------------------------------------------------------------
    def run(self, out_dir: str) -> dict:
        """Train every seed x arm, write every artifact into `out_dir`, return metrics.

        Units recorded in `out_dir/units/` by an earlier, interrupted run of the same recipe are reused, not run
        again, and a stage interrupted in the middle resumes from its last backed-up epoch.
        """
        if self.prepared is None:
            self.prepare()
        r, store = self.recipe, UnitStore(out_dir)
        store.create()
        io.write_text(os.path.join(out_dir, "recipe.yaml"), dump_yaml(r.to_dict()))
        io.write_json(os.path.join(out_dir, RUN_FILE), {"smoke": self.smoke})
        configure_runtime(r.runtime)
        self.log(describe_device(self.strategy, r.runtime.distribute))
        started = self.started or time.perf_counter()
        self.shortcuts = shortcut_checks(self.prepared, self.log)
        results: dict[str, list[UnitResult]] = {name: [] for name in self.arms}
        pretrainings: list[PretrainResult] = []
        if not self.counted:
            self.progress.add_units(self.unit_count())
            self.counted = True
        for seed in r.seeds:
            shared_weights: dict[str, PretrainResult] = {}
            for name, arm in self.arms.items():
                pretrained = self._pretrained(store, seed, arm, shared_weights, pretrainings)
                with self._counted(finetune_unit(seed, name), seed, name, "finetune"):
                    results[name].append(self._finetune_unit(store, self.seed_data(seed), name, arm, pretrained))
                io.write_json(os.path.join(out_dir, "metrics.json"),
                              self.metrics(results, pretrainings, time.perf_counter() - started, complete=False))
        metrics = self.metrics(results, pretrainings, time.perf_counter() - started, complete=True)
        return self._finish(out_dir, metrics, pretrainings)

    def _pretrained(self, store: UnitStore, seed: int, arm: Recipe, shared_weights: dict[str, PretrainResult],
                    pretrainings: list[PretrainResult]) -> PretrainResult | None:
        """What `arm` fine-tunes from for `seed` (None: no pre-training): this seed's `shared_weights` entry of its
        settings, else that of the arm sharing it first, trained or reused, kept there and in `pretrainings`."""
        if not pretrains(arm):
            return None
        key, first = pretraining_key(arm, self.recipe), self.prepared.pretraining_arm(arm)
        if key not in shared_weights:
            users = ", ".join(self.prepared.sharing_pretraining(arm))
            with self._counted(pretrain_unit(seed, first), seed, users, "pretrain"):
                shared_weights[key] = self._pretrain_unit(store, self.seed_data(seed), first, self.arms[first])
            pretrainings.append(shared_weights[key])
        return shared_weights[key]

    @contextlib.contextmanager
    def _counted(self, unit: str, seed: int, arms: str, stage: str):
        """A unit of the loop on the progress display, unless a worker ran it (the executor counted it)."""
        if unit in self.ran_elsewhere:
            yield
            return
        self.progress.unit(seed, arms, stage)
        yield
        self.progress.unit_done()

    def _finish(self, out_dir: str, metrics: dict, pretrainings: list[PretrainResult]) -> dict:
        """Export the first pre-trained backbone, write report.md and the final metrics.json, log the time."""
        exported = next((p for p in pretrainings if p.weights), None)
        if exported is not None:
            self.progress.phase("exporting the backbone")
            arm, seed = exported.arms[0], unit_seed(exported.unit)
            metrics["backbone"] = {"arm": arm, "seed": seed,
                                   **export_backbone(out_dir, metrics, self.recipe, arm, seed, out_dir)}
        from kpretrain.report import write_run_report

        write_run_report(out_dir, metrics, self.data.class_names)
        io.write_json(os.path.join(out_dir, "metrics.json"), metrics)
        split = metrics["time_split"]
        self.log(f"time: {split['wall']:.0f}s wall = training {split['training']:.0f}s "
                 f"({100 * split['training'] / max(split['wall'], 1e-9):.0f} %) + evaluation {split['evaluation']:.0f}s "
                 f"+ other {split['other']:.0f}s")
        return metrics

    def _finetune_unit(self, store: UnitStore, inputs: SeedData, name: str, arm: Recipe,
                       pretrained: PretrainResult | None) -> UnitResult:
        """One seed x arm: the record of an earlier run of this directory, or trained and recorded now."""
        seed, out_dir = inputs.seed, store.run_dir
        unit = store.finished_unit(seed, name, pretrained)
        if unit is not None and finetune_unit(seed, name) in self.ran_elsewhere:  # by a worker of this run
            self._log_unit(unit)
            return unit
        if unit is not None:
            self.log(f"seed {seed} | {name}: recorded in {store.record(finetune_unit(seed, name))}, reused")
            self._reused.add(finetune_unit(seed, name))
            return unit
        interruption.check()
        self.progress.phase("transfer, kNN of the transferred features")
        context = CallbackContext("finetune", name, seed, out_dir, finetune_unit(seed, name), (name,))
        with self._stage(context, arm) as (callbacks, finish):
            unit = run_unit(arm, inputs, name=name, pretrained=pretrained, scope=self.scope, callbacks=callbacks,
                            backup=store.backup(seed, name), extra_steps=self.prepared.extra_steps(name, seed))
            finish({k: v for k, v in unit.test.record().items() if k.startswith("test_accuracy")})
        unit = store.save_unit(unit)
        self._log_unit(unit)
        return unit

    def _log_unit(self, unit: UnitResult) -> None:
        """`seed <k> | <arm>: test acc ...` of a finished unit."""
        test = unit.test
        raw = ""  # a stale-BN gap is marked here and warned of once, with the run's warnings, when it ends
        if test.test_accuracy_refreshed is not None:
            gap = abs(test.test_accuracy_refreshed - test.test_accuracy_raw) * 100
            raw = f", raw {test.test_accuracy_raw:.4f}" + (
                " (stale BN!)" if gap > self.recipe.evaluation.bn_warn_points else "")
        self.log(f"seed {unit.seed} | {unit.arm}: test acc {test.test_accuracy:.4f}{raw} ({_seconds(unit.seconds)})"
                 + _resumed("fine-tuning", unit.finetune.resumed_from))

    def _pretrain_unit(self, store: UnitStore, inputs: SeedData, name: str, arm: Recipe) -> PretrainResult:
        """Pre-train once for every arm of this seed with these pre-training settings; record it as its own unit
        (or reuse the record of an earlier run of this directory, or of an earlier point of the sweep)."""
        users = self.prepared.sharing_pretraining(arm)
        unit = pretrain_unit(inputs.seed, name)
        source = self.pretraining_source(arm, inputs.seed)
        elsewhere = self.shared_with["pretrained"].get(source)
        copied = store.copy_pretraining(*elsewhere, unit, users) if elsewhere else None
        if copied:
            self.log(f"seed {inputs.seed} | pretrain for {', '.join(users)}: the same pre-training as {copied}, reused")
        with self.scope():
            backbone = initial_backbone(arm, inputs)
            if store.has_pretraining(unit):
                result = store.load_pretraining(unit, backbone)
                self.shared_with["pretrained"].setdefault(source, (store.record(unit), store.weights(unit)))
                if unit in self.ran_elsewhere and not result.reused_from:  # trained by a worker of this run
                    self._log_pretraining(arm, users, result)
                    return result
                self._reused.add(unit)
                if not copied:
                    self.log(f"seed {inputs.seed} | pretrain for {', '.join(users)}: "
                             + (f"the same pre-training as {result.reused_from}, reused" if result.reused_from else
                                f"recorded in {store.record(unit)}, reused"))
                return result
            interruption.check()
            context = CallbackContext("pretrain", name, inputs.seed, store.run_dir, unit, tuple(users))
            with self._stage(context, arm) as (callbacks, finish):
                result = shared(pretrain(backbone, arm, inputs, clock=Clock(), callbacks=callbacks,
                                         backup=store.pretrain_backup(unit)), unit, users)
                finish({"pretext_val_accuracy": result.final_val_accuracy})
            store.save_pretraining_weights(unit, backbone)
        store.save_pretraining_record(result)
        self.shared_with["pretrained"][source] = (store.record(unit), store.weights(unit))
        self._log_pretraining(arm, users, result)
        return result

    def _log_pretraining(self, arm: Recipe, users: list[str], result: PretrainResult) -> None:
        self.log(f"seed {unit_seed(result.unit)} | pretrain {arm.pretrain.task} {arm.pretrain.epochs:g} ep for "
                 f"{', '.join(users)}: pretext val acc {result.final_val_accuracy:.3f} ({_seconds(result.seconds)})"
                 + _resumed("pre-training", result.resumed_from))

    def _stage(self, context: CallbackContext, arm: Recipe):
        """The callbacks of one unit and stage, told their context: the user's, the progress display's and those of
        `runtime.loggers` (closed when the block ends); see `stage_in_context`."""
        settings = {k: v for k, v in arm.to_dict().items() if k not in ("arms", "sweep", "tune")}
        return stage_in_context(context, self.callbacks[context.stage], loggers=self.recipe.runtime.active_loggers,
                                settings=settings)

    # ---- artifacts ------------------------------------------------------------------------------------
    def metrics(self, results: dict[str, list[UnitResult]], pretrainings: list[PretrainResult], wall: float,
                complete: bool) -> dict:
        """`metrics.json` of the units finished so far (see `experiment.metrics.run_metrics`)."""
        return run_metrics(self.prepared, results, pretrainings, wall=wall, complete=complete, reused=self._reused,
                           holm_family=self.holm_family, shortcuts=self.shortcuts)


def _resumed(stage: str, epochs: int) -> str:
    return f"; {stage} resumed from its backup after epoch {epochs}" if epochs else ""


def _seconds(split: dict) -> str:
    return f"train {split.get('training', 0):.0f}s, eval {split.get('evaluation', 0):.0f}s, other {split.get('other', 0):.0f}s"
