"""A run: preparation (validation, data, splits), the seed x arm loop over `protocol.run_unit`, and artifacts.

Arms are compared in pairs: for a given seed every arm sees the same labelled subset, validation split,
initial backbone weights, head initialisation and data order; arms whose pre-training settings are identical
share one pre-trained backbone per seed.  Nothing is chosen on the test split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import math
import os
import platform
import shutil
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from kpretrain._version import __version__
from kpretrain.data import SCALING, DatasetArrays, load_dataset, make_splits
from kpretrain.data.checksums import arrays_sha256
from kpretrain.errors import InputError, RecipeError
from kpretrain.export import save_model
from kpretrain.models.backbones import block_names
from kpretrain.models.freezing import resolve_depth
from kpretrain.pretext import LABELLED_TASKS, SYNTHETIC_TASKS, create_task
from kpretrain.protocol import FULL, SMOKE, SeedData, initial_backbone, pretrain, pretraining_key, run_unit
from kpretrain.pretext.shortcut import ShortcutResult, checkable_tasks, shortcut_check
from kpretrain.protocol.pretrain import pretraining_images, shared
from kpretrain.protocol.results import PretrainResult, UnitResult
from kpretrain.recipe import Recipe, pretrains, transfers
from kpretrain.recipe.values import dump_yaml, format_value
from kpretrain.report import io
from kpretrain.report.progress import Progress, ProgressCallback
from kpretrain.report.tables import arm_statistics, run_report, store_sweep_holm
from kpretrain.rundir import RUN_FILE, recipe_sha256
from kpretrain.training import interruption
from kpretrain.training.runtime import configure_runtime, describe_device, distribution_strategy
from kpretrain.training.timing import Clock


SCHEMA_VERSION = 2  # metrics.json layout; 2: provenance (recipe and data checksums), time_split.reused_units,
# arms.<arm>.statistics (intervals, paired tests)


class Experiment:
    """One recipe, prepared (validated, data loaded) then run into a run directory."""

    def __init__(self, recipe: Recipe, *, smoke: bool = False, log: Callable[[str], None] | None = None,
                 shared_with: dict | None = None, callbacks=None, progress: Progress | None = None):
        self.recipe = recipe
        self.progress = progress if progress is not None else Progress(live=False)
        self.callbacks = stage_callbacks(callbacks)  # the user's own Keras callbacks, per stage
        for stage in STAGES:
            self.callbacks[stage].append(ProgressCallback(self.progress, stage))
        self.counted = False  # whether the progress display already counts this run's units (a sweep counts all)
        # metrics.json's `holm.family`: "point" for a sweep's point until the sweep adjusts all its points together
        self.holm_family = "run"
        # what the points of a sweep share: loaded data sets, and pre-trained weights per seed and setting
        self.shared_with = shared_with if shared_with is not None else {"datasets": {}, "pretrained": {}}
        self.arms = recipe.arm_recipes()
        self.pairs = recipe.baseline_pairs()
        self.shortcuts: list = []  # (arms, ShortcutResult) of each pre-training task, made when the run starts
        self.budget = SMOKE if smoke else FULL
        self.smoke = smoke
        self.log = log if log is not None else self.progress.log
        self.data: DatasetArrays | None = None
        self.pretrain_data: dict[str, DatasetArrays] = {}
        self._seed_data: dict[int, SeedData] = {}
        self._sources: dict[str, dict] = {}  # backbone.from -> what loading it found, shared by every seed
        self._initial: dict[str, keras.Model] = {}  # arm -> its first seed's initial backbone, for the plan
        self._reused: set[str] = set()  # units recorded by an earlier, interrupted run of the directory

    # ---- preparation: everything that can be checked without training -------------------------------
    def seed_data(self, seed: int) -> SeedData:
        """The data every arm of `seed` reads (splits made in `prepare`)."""
        return self._seed_data[seed]

    def prepare(self) -> list[str]:
        """Validate arms against data and models, load data, make splits; return the plan as lines."""
        r = self.recipe
        if r.runtime.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise RecipeError("recipe key 'runtime.tensorboard': the tensorboard package is not installed; "
                              "pip install 'kpretrain[tensorboard]' (or tensorboard), or set runtime.tensorboard=false")
        self.data = self._shrink(self._load(r.data.dataset, r.data.path))
        validation = self.budget.cap(r.data.validation, self.budget.validation)
        labels_per_class = r.data.labels_per_class
        if self.smoke:
            labels_per_class = min(labels_per_class or self.budget.labels_per_class, self.budget.labels_per_class)
        for seed in r.seeds:
            split = make_splits(self.data.y_train, num_classes=self.data.num_classes,
                                validation=validation, labels_per_class=labels_per_class, seed=seed)
            self._seed_data[seed] = SeedData(r, self.data, split, seed, self.budget, self.pretrain_data, self._sources)
        for name, arm in self.arms.items():
            backbone = self._initial[name] = initial_backbone(arm, self.seed_data(r.seeds[0]))
            self._check_transfer(name, arm, backbone)
            if pretrains(arm):
                if arm.pretrain.task in LABELLED_TASKS:
                    if (arm.pretrain.dataset or r.data.dataset) == r.data.dataset:
                        raise RecipeError(
                            f"recipe key 'arms.{name}.pretrain.dataset': {arm.pretrain.task} pre-training needs another "
                            f"data set than data.dataset ({r.data.dataset}), or it would use labels beyond "
                            f"data.labels_per_class; e.g. pretrain.dataset: mnist")
                create_task(arm.pretrain.task, arm.pretrain.options, seed=0, num_classes=self.data.num_classes)
                if arm.pretrain.dataset and arm.pretrain.dataset != r.data.dataset:
                    self._load_other(arm.pretrain.dataset, f"arms.{name}.pretrain.dataset")
            if arm.selftrain is not None:
                self._check_selftrain(name, arm)
        return self.plan_lines()

    def _check_selftrain(self, name: str, arm: Recipe) -> None:
        """Self-training needs an unlabelled pool of the downstream image shape (loaded here when another set)."""
        r = self.recipe
        key = f"arms.{name}.selftrain" if self.recipe.arms and name in self.recipe.arms else "selftrain"
        dataset = arm.selftrain.unlabelled
        if dataset and dataset != r.data.dataset:
            self._load_other(dataset, f"{key}.unlabelled")
        elif not len(self.seed_data(r.seeds[0]).split.unlabelled):
            raise RecipeError(f"recipe key '{key}.unlabelled': the unlabelled pool is empty (data.labels_per_class "
                              f"is null: every train image is labelled); set data.labels_per_class, or "
                              f"{key}.unlabelled to another data set")

    def _load_other(self, dataset: str, key: str) -> None:
        """Another data set (pre-training's, self-training's pool) into `pretrain_data`, once; its images must have
        the downstream shape (`key`: the recipe key that names it)."""
        if dataset in self.pretrain_data:
            return
        other = self._shrink(self._load(dataset, None))
        if other.image_shape != self.data.image_shape:
            raise RecipeError(f"recipe key '{key}': {dataset} images are {other.image_shape}, {self.recipe.data.dataset} "
                              f"images are {self.data.image_shape}; use data sets of the same shape")
        self.pretrain_data[dataset] = other

    def _load(self, name: str, path) -> DatasetArrays:
        """`load_dataset`, once per data set for all the points of a sweep."""
        cache, d = self.shared_with["datasets"], self.recipe.data
        key = (name, path, tuple(d.image_size or ()), d.channels, d.data_dir, json.dumps(d.split, sort_keys=True))
        if key not in cache:
            cache[key] = load_dataset(name, path, d.image_size, d.channels, tfds_dir=d.data_dir, split=d.split)
        return cache[key]

    def _check_transfer(self, name: str, arm: Recipe, backbone: keras.Model) -> None:
        """Transfer settings that depend on the backbone: depth in range, SavedModel limits."""
        key = f"arms.{name}.transfer" if self.recipe.arms and name in self.recipe.arms else "transfer"
        info = self._sources.get(arm.backbone.from_) if arm.backbone.from_ else None
        if info is not None and info["format"] == "saved_model":
            if arm.transfer.frozen_depth not in info["depth_choices"]:
                raise RecipeError(f"recipe key '{key}.frozen_depth': {arm.transfer.frozen_depth!r} is not possible "
                                  f"with a SavedModel backbone.from; allowed: 0 or all (use backbone.keras for depth control)")
            if arm.transfer.init != "weights":
                raise RecipeError(f"recipe key '{key}.init': {arm.transfer.init} needs a backbone.keras source, "
                                  f"not a SavedModel; allowed here: weights")
        try:
            resolve_depth(backbone, arm.transfer.frozen_depth)
        except RecipeError as exc:
            raise RecipeError(str(exc).replace("'transfer.", f"'{key}.", 1)) from None
        if arm.transfer.unfreeze is not None and arm.transfer.frozen_depth == 0 and arm.transfer.unfreeze.every:
            raise RecipeError(f"recipe key '{key}.unfreeze': nothing to unfreeze with frozen_depth 0; "
                              f"set transfer.frozen_depth or unfreeze.every: null")
        if arm.transfer.head_init != "none" and arm.finetune.head != "linear":
            raise RecipeError(f"recipe key '{key}.head_init': logistic_regression needs finetune.head: linear, "
                              f"got {arm.finetune.head}")

    def _shrink(self, data: DatasetArrays) -> DatasetArrays:
        if not self.smoke:
            return data
        rng = np.random.default_rng(12345)
        train = np.sort(rng.permutation(len(data.y_train))[: self.budget.train_examples])
        test = np.sort(rng.permutation(len(data.y_test))[: self.budget.test_examples])
        return dataclasses.replace(data, x_train=data.x_train[train], y_train=data.y_train[train],
                                   x_test=data.x_test[test], y_test=data.y_test[test])

    def plan_lines(self) -> list[str]:
        """Human-readable plan: data, splits, arms with their stages, seeds."""
        r, d = self.recipe, self.data
        split = self.seed_data(r.seeds[0]).split
        lines = [
            f"recipe {r.name}: {len(self.arms)} arms x {len(r.seeds)} seeds {r.seeds}"
            + (f" [smoke: at most {self.budget.steps_per_epoch} batches x {self.budget.epochs} epoch per stage]"
               if self.smoke else ""),
            f"data {d.name} from {d.source}: train {len(d.y_train)}, test {len(d.y_test)}, image {d.image_shape}, "
            f"{d.num_classes} classes",
            f"split per seed: labelled {len(split.labelled)}, validation {len(split.validation)}, "
            f"unlabelled pool {len(split.unlabelled)}",
        ]
        for name, arm in self.arms.items():
            backbone = self._initial[name]
            blocks = block_names(backbone)
            depth = resolve_depth(backbone, arm.transfer.frozen_depth) if blocks else arm.transfer.frozen_depth
            stages = [f"load {arm.backbone.from_}"] if arm.backbone.from_ else []
            if pretrains(arm):
                source = arm.pretrain.dataset or r.data.dataset
                n = len(split.labelled) + len(split.unlabelled) if source == r.data.dataset else len(
                    self.pretrain_data[source].y_train)
                epochs = self.budget.cap(arm.pretrain.epochs, self.budget.epochs)
                labels = "with its labels" if arm.pretrain.task in LABELLED_TASKS else "labels unused"
                images = f"{source} ({n} images, {labels})"
                if arm.pretrain.task in SYNTHETIC_TASKS:
                    per_epoch = arm.pretrain.options.get("images_per_epoch") or n
                    images = f"generated images ({per_epoch} per epoch, no data read)"
                first = self.sharing_pretraining(arm)[0]
                stages.append(f"pretrain {arm.pretrain.task} on {images} for {epochs:g} epochs"
                              if first == name else f"pre-trained weights shared with {first}")
            if not transfers(arm):
                stages.append("random init")
            t = arm.transfer
            stages.append(f"transfer: init {t.init}, freeze {depth}/{len(blocks) or '?'} blocks, bn {t.bn}"
                          + (f", unfreeze every {t.unfreeze.every} (backbone lr x{t.unfreeze.backbone_lr_factor:g})"
                             if t.unfreeze else "")
                          + (f", head init {t.head_init}" if t.head_init != "none" else ""))
            augment = f", {arm.finetune.augment} augmentation" if arm.finetune.augment != "none" else ""
            stages.append(f"fine-tune {arm.finetune.head} head for "
                          f"{self.budget.cap(arm.finetune.epochs, self.budget.epochs)} epochs on {len(split.labelled)} "
                          f"labelled{augment}")
            if arm.selftrain is not None:
                st = arm.selftrain
                stages.append(f"self-train {st.rounds} round{'s' * (st.rounds > 1)}: the {'fine-tuned model' if st.teacher_init == 'pretrained' else 'same from scratch'} "
                              f"labels the pool ({st.unlabelled or 'unlabelled rest of train'}; {st.labels}, "
                              f"threshold {st.threshold:g}{', balanced' if st.balance else ''}), a student from "
                              f"{st.student_init} learns labelled + {st.ratio:g}x pseudo-labelled per batch"
                              + (f", {st.student_augment} augmentation" if st.student_augment else ""))
            pair = f" (compared with {self.pairs[name]})" if name in self.pairs else ""
            lines.append(f"  arm {name}: {arm.backbone.name} [{', '.join(blocks)}] -> " + " -> ".join(stages) + pair)
        rt = r.runtime
        lines.append("runtime: op determinism on (reruns identical)" if rt.op_determinism else
                     "runtime: op determinism off" + (" because runtime.jit_compile is on (XLA is off under op "
                                                       "determinism)" if rt.deterministic is None else "")
                     + ": reruns may differ slightly")
        ev = r.evaluation
        every = "every epoch" if ev.validate_every == 1 else f"every {ev.validate_every} epochs and the last"
        lines.append(f"evaluation: validation {every}, " + (
            f"BN statistics refreshed on training batches; raw (stale BN) accuracy "
            f"{'at every validation' if ev.raw == 'every_epoch' else 'at the last epoch'} and on test"
            if ev.bn_refresh else "BN refresh off"))
        return lines

    def sharing_pretraining(self, arm: Recipe) -> list[str]:
        """The arms, in run order, that pre-train as `arm` does (and so share its pre-trained weights per seed)."""
        key = pretraining_key(arm, self.recipe)
        return [name for name, other in self.arms.items()
                if pretrains(other) and pretraining_key(other, self.recipe) == key]

    # ---- the run ----------------------------------------------------------------------------------
    @functools.cached_property
    def strategy(self) -> tf.distribute.Strategy | None:
        """One distribution strategy for the whole run (`runtime.distribute`), or None."""
        return distribution_strategy(self.recipe.runtime.distribute)

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def run(self, out_dir: str) -> dict:
        """Train every seed x arm, write every artifact into `out_dir`, return metrics.

        Units recorded in `out_dir/units/` by an earlier, interrupted run of the same recipe are reused, not run
        again, and a stage interrupted in the middle resumes from its last backed-up epoch.
        """
        if self.data is None:
            self.prepare()
        r = self.recipe
        units = os.path.join(out_dir, "units")
        os.makedirs(units, exist_ok=True)
        io.write_text(os.path.join(out_dir, "recipe.yaml"), dump_yaml(r.to_dict()))
        io.write_json(os.path.join(out_dir, RUN_FILE), {"smoke": self.smoke})
        configure_runtime(r.runtime)
        self.log(describe_device(self.strategy, r.runtime.distribute))
        started = time.perf_counter()
        self.shortcuts = self.shortcut_checks()
        results: dict[str, list[UnitResult]] = {name: [] for name in self.arms}
        pretrainings: list[PretrainResult] = []
        if not self.counted:
            self.progress.add_units(self.unit_count())
            self.counted = True
        for seed in r.seeds:
            inputs = self.seed_data(seed)
            shared_weights: dict[str, PretrainResult] = {}
            for name, arm in self.arms.items():
                pretrained = None
                if pretrains(arm):
                    key = pretraining_key(arm, self.recipe)
                    if key not in shared_weights:
                        self.progress.unit(seed, ", ".join(self.sharing_pretraining(arm)), "pretrain")
                        shared_weights[key] = self._pretrain_unit(out_dir, inputs, name, arm)
                        pretrainings.append(shared_weights[key])
                        self.progress.unit_done()
                    pretrained = shared_weights[key]
                self.progress.unit(seed, name, "finetune")
                unit = self._recorded_unit(out_dir, seed, name, pretrained)
                if unit is None:
                    interruption.check()
                    self.progress.phase("transfer, kNN of the transferred features")
                    unit = run_unit(arm, inputs, name=name, pretrained=pretrained, scope=self.scope,
                                    callbacks=self.callbacks["finetune"],
                                    pretrain_callbacks=self.callbacks["pretrain"],
                                    backup=os.path.join(units, f"seed{seed}.{name}"),
                                    tensorboard=self._tensorboard(out_dir, seed, name))
                    unit = self._record_unit(out_dir, unit)
                self.progress.unit_done()
                results[name].append(unit)
                io.write_json(os.path.join(out_dir, "metrics.json"),
                              self.metrics(results, pretrainings, time.perf_counter() - started, complete=False))
        metrics = self.metrics(results, pretrainings, time.perf_counter() - started, complete=True)
        exported = next((p for p in pretrainings if p.weights), None)
        if exported is not None:
            self.progress.phase("exporting the backbone")
            metrics["backbone"] = self._export_backbone(out_dir, exported.unit, exported.arms[0], exported)
        from kpretrain.report import write_run_report

        write_run_report(out_dir, metrics, self.data.class_names)
        io.write_json(os.path.join(out_dir, "metrics.json"), metrics)
        split = metrics["time_split"]
        self.log(f"time: {split['wall']:.0f}s wall = training {split['training']:.0f}s "
                 f"({100 * split['training'] / max(split['wall'], 1e-9):.0f} %) + evaluation {split['evaluation']:.0f}s "
                 f"+ other {split['other']:.0f}s")
        return metrics

    def unit_count(self) -> int:
        """Units this run trains or reuses: each seed x arm, and each seed's shared pre-trainings."""
        shared = len({pretraining_key(arm, self.recipe) for arm in self.arms.values() if pretrains(arm)})
        return len(self.recipe.seeds) * (len(self.arms) + shared)

    def shortcut_checks(self) -> list[tuple[list[str], ShortcutResult]]:
        """The pretext shortcut check of every pretext task the arms pre-train with (each task of a mixed one), on
        pretext examples of the first seed's pre-training images: ([arms with that task and options], result)."""
        inputs = self.seed_data(self.recipe.seeds[0])
        tasks: dict[str, list[str]] = {}  # the check depends on the task, its options and the images only
        for name, arm in self.arms.items():
            if pretrains(arm):
                p = arm.pretrain
                tasks.setdefault(json.dumps([p.task, p.options, p.dataset], sort_keys=True), []).append(name)
        checks = []
        for users in tasks.values():
            arm = self.arms[users[0]]
            found = pretraining_images(arm, inputs)
            task = create_task(arm.pretrain.task, arm.pretrain.options, seed=inputs.seed, num_classes=found[5])
            for sub in checkable_tasks(task):
                result = shortcut_check(sub, found[0], seed=inputs.seed)
                checks.append((users, result))
                self.log(f"shortcut check | {result.line()} (arms {', '.join(users)})")
        return checks

    def _pretrain_unit(self, out_dir: str, inputs: SeedData, name: str, arm: Recipe) -> PretrainResult:
        """Pre-train once for every arm of this seed with these pre-training settings; record it as its own unit
        (or reuse the record of an earlier run of this directory, or of an earlier point of the sweep)."""
        users = self.sharing_pretraining(arm)
        unit = f"seed{inputs.seed}.{name}.pretrain"
        record_path = os.path.join(out_dir, "units", f"{unit}.json")
        weights = os.path.join(out_dir, "units", f"{unit}.weights.h5")
        source = self._pretraining_source(arm, inputs.seed)
        copied = self._copy_pretraining(source, out_dir, unit, users)
        if copied:
            self.log(f"seed {inputs.seed} | pretrain for {', '.join(users)}: the same pre-training as {copied}, reused")
        with self.scope():
            backbone = initial_backbone(arm, inputs)
            if os.path.exists(record_path) and os.path.exists(weights):
                backbone.load_weights(weights)
                result = PretrainResult.from_record(io.read_json(record_path), backbone.get_weights())
                self._reused.add(unit)
                if not copied:
                    self.log(f"seed {inputs.seed} | pretrain for {', '.join(users)}: recorded in {record_path}, reused")
                self.shared_with["pretrained"].setdefault(source, (record_path, weights))
                return result
            interruption.check()
            board = self._tensorboard(out_dir, inputs.seed, name)
            result = shared(pretrain(backbone, arm, inputs, clock=Clock(), callbacks=self.callbacks["pretrain"],
                                     backup=os.path.join(out_dir, "units", f"{unit}.backup"),
                                     tensorboard=os.path.join(board, "pretrain") if board else None), unit, users)
            with io.atomic_path(weights) as tmp:
                backbone.save_weights(tmp)
        io.write_json(record_path, result.record())
        self.shared_with["pretrained"][source] = (record_path, weights)
        self.log(f"seed {inputs.seed} | pretrain {arm.pretrain.task} {arm.pretrain.epochs:g} ep for "
                 f"{', '.join(users)}: pretext val acc {result.final_val_accuracy:.3f} ({_seconds(result.seconds)})"
                 + _resumed("pre-training", result.resumed_from))
        return result

    def _copy_pretraining(self, source: str, out_dir: str, unit: str, users: list[str]) -> str | None:
        """Copy into `units/` the unit that another point of the sweep recorded for `source`, unless this directory
        has its own record; return where it came from (relative to the sweep's directory), or None."""
        record_path = os.path.join(out_dir, "units", f"{unit}.json")
        elsewhere = self.shared_with["pretrained"].get(source)
        if elsewhere is None or os.path.exists(record_path):
            return None
        source_record, source_weights = elsewhere
        with io.atomic_path(os.path.join(out_dir, "units", f"{unit}.weights.h5")) as tmp:
            shutil.copyfile(source_weights, tmp)
        origin = os.path.relpath(source_record, os.path.dirname(os.path.abspath(out_dir)))
        io.write_json(record_path, {**io.read_json(source_record), "unit": unit, "arms": users, "reused_from": origin})
        return origin

    @functools.cached_property
    def provenance(self) -> dict:
        """`data_files` and `data_sha256` of metrics.json: digested once per run, not at every unit."""
        sets = (self.data, *self.pretrain_data.values())
        return {"data_files": {path: digest for d in sets for path, digest in d.files.items()},
                "data_sha256": {d.name: arrays_sha256(d.x_train, d.y_train, d.x_test, d.y_test) for d in sets}}

    def _pretraining_source(self, arm: Recipe, seed: int) -> str:
        """What makes two sweep points' pre-trainings of a seed identical (`pretraining_key`), per seed and budget."""
        return json.dumps([pretraining_key(arm, self.recipe), seed, self.smoke])

    def _tensorboard(self, out_dir: str, seed: int, name: str) -> str | None:
        """`tb/<seed>/<arm>/` when `runtime.tensorboard` (each stage logs in a sub-directory named after it)."""
        return os.path.join(out_dir, "tb", str(seed), name) if self.recipe.runtime.tensorboard else None

    def _recorded_unit(self, out_dir: str, seed: int, name: str, pretrained: PretrainResult | None) -> UnitResult | None:
        """The unit an earlier run of this directory finished and recorded, or None."""
        path = os.path.join(out_dir, "units", f"seed{seed}.{name}.finetune.json")
        if not os.path.exists(path):
            return None
        self.log(f"seed {seed} | {name}: recorded in {path}, reused")
        self._reused.add(f"seed{seed}.{name}.finetune")
        return UnitResult.from_record(io.read_json(path), pretrained)

    def _record_unit(self, out_dir: str, unit: UnitResult) -> UnitResult:
        """Save the unit's classifier weights and its record (the record last: it marks the unit finished)."""
        with io.atomic_path(os.path.join(out_dir, "units", f"seed{unit.seed}.{unit.arm}.finetune.weights.h5")) as tmp:
            unit.model.save_weights(tmp)
        unit = dataclasses.replace(unit, model=None)  # not kept in memory for the rest of the run
        record = unit.record()
        io.write_json(os.path.join(out_dir, "units", f"seed{unit.seed}.{unit.arm}.finetune.json"), record)
        test = unit.test
        warn = ""
        if test.test_accuracy_refreshed is not None:
            gap = abs(test.test_accuracy_refreshed - test.test_accuracy_raw) * 100
            warn = f", raw {test.test_accuracy_raw:.4f}" + (
                " (stale BN!)" if gap > self.recipe.evaluation.bn_warn_points else "")
        self.log(f"seed {unit.seed} | {unit.arm}: test acc {test.test_accuracy:.4f}{warn} ({_seconds(unit.seconds)})"
                 + _resumed("fine-tuning", unit.finetune.resumed_from))
        return unit

    # ---- artifacts --------------------------------------------------------------------------------
    def metrics(self, results: dict[str, list[UnitResult]], pretrainings: list[PretrainResult], wall: float,
                complete: bool) -> dict:
        """`metrics.json` of the units finished so far."""
        r, d = self.recipe, self.data
        split = self.seed_data(r.seeds[0]).split
        arms = {}
        for name, units in results.items():
            records = [u.record() for u in units]
            entry = {
                "protocol": protocol(self.arms[name]),
                "seeds": [u.seed for u in units],
                "test_accuracy": [u["test_accuracy"] for u in records],
                "test_accuracy_raw": [u["test_accuracy_raw"] for u in records],
                "val_accuracy": [u["val_accuracy"] for u in records],
                "trainable_params": records[0]["trainable_params"] if records else None,
                "frozen_blocks": records[0]["frozen_blocks"] if records else None,
                "history": [{"seed": u["seed"], **u["history"]} for u in records],
                "confusion": [u["confusion"] for u in records],
                "wall_time_s": [u.finetune.wall_time_s + (u.pretrain.wall_time_s if u.pretrain else 0.0)
                                for u in units],
                "seconds": [u["seconds"] for u in records],
            }
            if name in self.pairs:
                entry["baseline"] = self.pairs[name]
            if self.arms[name].reference:  # `reference: natural`: the benefit column's denominator
                entry["reference"] = self.arms[name].reference
            if r.evaluation.bn_refresh:
                entry["test_accuracy_refreshed"] = [u["test_accuracy_refreshed"] for u in records]
            if r.evaluation.knn:
                entry["knn_accuracy"] = [u["knn_accuracy"] for u in records]
            for extra in ("head_init", "unfreeze_schedule", "pretrain_unit", "finetune_learning_rate", "averaging",
                          "test_accuracy_last", "selected_epoch", "selftrain"):
                if any(extra in u for u in records):
                    entry[extra] = [u.get(extra) for u in records]
            if any(u.pretrain for u in units):
                entry["pretext"] = [{"seed": u.seed, "monitor": u.pretrain.monitor, **u.pretrain.history}
                                    for u in units if u.pretrain]
            arms[name] = entry
        warnings = []
        for name, entry in arms.items():
            for seed, raw, ref in zip(entry["seeds"], entry["test_accuracy_raw"],
                                      entry.get("test_accuracy_refreshed", [])):
                if abs(ref - raw) * 100 > r.evaluation.bn_warn_points:
                    warnings.append(f"{name} seed {seed}: raw test accuracy {raw:.4f} vs {ref:.4f} after BN refresh "
                                    f"({(ref - raw) * 100:+.1f} pts): stale batch-norm statistics")
        ran = [u.seconds for units in results.values() for u in units
               if f"seed{u.seed}.{u.arm}.finetune" not in self._reused]
        seconds = ran + [p.seconds for p in pretrainings if p.unit not in self._reused]
        training = sum(s.get("training", 0.0) for s in seconds)
        evaluation = sum(s.get("evaluation", 0.0) for s in seconds)
        statistics = arm_statistics({"arms": arms})  # the run's Holm family, computed once
        for name, stats in statistics.items():
            arms[name]["statistics"] = stats
        holm = {"family": self.holm_family, "comparisons": max(
            (s["vs_baseline"]["comparisons"] for s in statistics.values() if "vs_baseline" in s), default=0)}
        shortcut = []
        for users, check in self.shortcuts:
            done = [p.final_val_accuracy for p in pretrainings if set(p.arms) & set(users)]
            network = float(np.mean(done)) if done and check.task == self.arms[users[0]].pretrain.task else None
            shortcut.append({"arms": users, **check.record(network)})
            if shortcut[-1]["warning"] and complete:
                warnings.append(f"shortcut: {check.line(network)}")
        return {
            "schema_version": SCHEMA_VERSION,
            "kpretrain_version": __version__,
            "recipe": r.name,
            "recipe_sha256": recipe_sha256(r.to_dict()),
            **self.provenance,
            "complete": complete,
            "smoke": self.smoke,
            "seeds": list(r.seeds),
            "data": {"dataset": d.name, "source": d.source, "image_shape": list(d.image_shape),
                     "image_size": r.data.image_size, "channels": r.data.channels,
                     "num_classes": d.num_classes, "class_names": list(d.class_names),
                     "train": int(len(d.y_train)), "test": int(len(d.y_test)),
                     "labelled": int(len(split.labelled)), "validation": int(len(split.validation)),
                     "unlabelled": int(len(split.unlabelled)), "scaling": SCALING},
            "evaluation": {"bn_refresh": r.evaluation.bn_refresh,
                           "test_accuracy_is": "refreshed" if r.evaluation.bn_refresh else "raw",
                           "raw": r.evaluation.raw, "validate_every": r.evaluation.validate_every,
                           "bn_refresh_batches": self.seed_data(r.seeds[0]).bn_batches},
            "arms": arms,
            "holm": holm,
            "reference": next((n for n, a in self.arms.items() if a.reference == "natural"), None),
            "pretraining": [p.record() for p in pretrainings],
            "shortcut": shortcut,
            "warnings": warnings,
            "environment": {"tensorflow": tf.__version__, "keras": keras.__version__,
                            "python": platform.python_version(),
                            "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
                            "cpu_count": os.cpu_count()},
            "time_split": {"wall": round(wall, 3), "training": round(training, 3), "evaluation": round(evaluation, 3),
                           "other": round(max(0.0, wall - training - evaluation), 3),
                           "reused_units": sorted(self._reused)},  # this process's time only: reused units excluded
            "wall_time_s": wall,
        }

    def _export_backbone(self, out_dir: str, unit: str, name: str, pretrained: PretrainResult) -> dict:
        """Write the pre-trained backbone as `backbone.keras` and as a SavedModel in `backbone/`."""
        arm, seed = self.arms[name], int(unit.split(".")[0].removeprefix("seed"))
        backbone = initial_backbone(arm, self.seed_data(seed))
        backbone.load_weights(os.path.join(out_dir, "units", f"{unit}.weights.h5"))
        backbone.trainable = True
        info = {
            "arm": name, "seed": seed, "backbone": arm.backbone.name, "options": arm.backbone.options,
            "blocks": block_names(backbone),
            "input_shape": [None, *self.data.image_shape], "input_dtype": "float32", "scaling": SCALING,
            "feature_dim": int(backbone.output_shape[-1]), "endpoint": "serve",
            "pretrain": {"task": arm.pretrain.task, "options": arm.pretrain.options, "epochs": arm.pretrain.epochs,
                         "dataset": arm.pretrain.dataset or self.recipe.data.dataset},
            "data": {"dataset": self.data.name, "source": self.data.source, "image_size": self.recipe.data.image_size,
                     "channels": self.recipe.data.channels},
            "recipe": self.recipe.to_dict(), "kpretrain_version": __version__,
        }
        return {"arm": name, "seed": seed, **save_model(backbone, out_dir, "backbone", info)}


STAGES = ("pretrain", "finetune")


def stage_callbacks(callbacks) -> dict[str, list]:
    """The user's Keras callbacks per stage: a list (or one callback) for every stage, or {stage: callbacks}."""
    if callbacks is None:
        return {stage: [] for stage in STAGES}
    if isinstance(callbacks, dict):
        unknown = sorted(set(callbacks) - set(STAGES))
        if unknown:
            raise InputError(f"callbacks: unknown stage {unknown[0]!r}; allowed: {', '.join(STAGES)}")
        return {stage: _callback_list(callbacks.get(stage)) for stage in STAGES}
    return {stage: _callback_list(callbacks) for stage in STAGES}


def _callback_list(callbacks) -> list:
    found = [] if callbacks is None else [callbacks] if isinstance(callbacks, keras.callbacks.Callback) else list(callbacks)
    for cb in found:
        if not isinstance(cb, keras.callbacks.Callback):
            raise InputError(f"callbacks: {cb!r} is not a keras.callbacks.Callback")
    return found


class Sweep:
    """A recipe with `sweep:`: every grid point is an `Experiment` run into its own sub-directory `<key>=<value>/`;
    the points share loaded data and, per seed, identical pre-trainings.  The top-level `metrics.json` lists the
    points (each with a single run's `arms` layout); `report.md` has one table over all of them, with Holm-adjusted
    p-values across every comparison, and `label_efficiency.png` when `data.labels_per_class` is swept."""

    def __init__(self, recipe: Recipe, *, smoke: bool = False, log: Callable[[str], None] | None = None,
                 callbacks=None, progress: Progress | None = None):
        self.progress = progress if progress is not None else Progress(live=False)
        self.recipe, self.smoke, self.log = recipe, smoke, log if log is not None else self.progress.log
        self.sweep = smoke_sweep(recipe.sweep) if smoke else dict(recipe.sweep)
        shared_with: dict = {"datasets": {}, "pretrained": {}}
        swept = dataclasses.replace(recipe, sweep=self.sweep)
        self.points = [(at, point_dir(at), Experiment(point, smoke=smoke, log=log, shared_with=shared_with,
                                                      callbacks=callbacks, progress=self.progress))
                       for at, point in swept.sweep_points()]
        for _, _, experiment in self.points:
            experiment.holm_family = "point"

    @property
    def strategy(self):
        return self.points[0][2].strategy

    def prepare(self) -> list[str]:
        lines = [f"sweep of recipe {self.recipe.name}: {len(self.points)} points over "
                 + ", ".join(f"{k} in {v}" for k, v in self.sweep.items())
                 + (f" (--smoke: scaled down from {self.recipe.sweep})" if self.sweep != self.recipe.sweep else "")]
        for _, name, experiment in self.points:
            lines += [f"point {name}:"] + [f"  {line}" for line in experiment.prepare()]
        return lines

    def run(self, out_dir: str) -> dict:
        """Run every point into `out_dir/<point>/`; write the sweep's metrics, report and plot."""
        os.makedirs(out_dir, exist_ok=True)
        io.write_text(os.path.join(out_dir, "recipe.yaml"), dump_yaml(self.recipe.to_dict()))
        io.write_json(os.path.join(out_dir, RUN_FILE), {"smoke": self.smoke})
        started = time.perf_counter()
        finished = []
        self.progress.add_units(sum(experiment.unit_count() for _, _, experiment in self.points))
        for _, _, experiment in self.points:
            experiment.counted = True
        for at, name, experiment in self.points:
            self.log(f"== point {name}")
            finished.append((at, name, experiment.run(os.path.join(out_dir, name))))
            io.write_json(os.path.join(out_dir, "metrics.json"),
                          self.metrics(finished, time.perf_counter() - started, complete=False))
        holm = self.adjust_points(out_dir, finished)
        metrics = self.metrics(finished, time.perf_counter() - started, complete=True, holm=holm)
        from kpretrain.report import write_sweep_report

        write_sweep_report(out_dir, metrics)
        io.write_json(os.path.join(out_dir, "metrics.json"), metrics)
        return metrics

    def adjust_points(self, out_dir: str, finished: list) -> dict:
        """Holm-adjust every comparison of the sweep as one family, once all points are done, and rewrite each
        point's `metrics.json` and `report.md` with it (each written when its point finished, adjusted over that
        point's comparisons only), so a point's report and the sweep's table give the same adjusted p-values.
        Returns the family's `holm` record.  The sweep's own metrics.json, written after, marks it finished."""
        holm = store_sweep_holm([m for _, _, m in finished])
        for _, name, m in finished:
            io.write_text(os.path.join(out_dir, name, "report.md"), run_report(m))
            io.write_json(os.path.join(out_dir, name, "metrics.json"), m)
        return holm

    def metrics(self, finished: list, wall: float, complete: bool, holm: dict | None = None) -> dict:
        """The sweep's `metrics.json`: its points (each one run's `arms` layout) and, once `adjust_points` stored the
        sweep's Holm family in them, its `holm` record."""
        first = finished[0][2]
        points = [{"values": at, "dir": name, **{k: m[k] for k in ("arms", "pretraining", "data", "warnings")}}
                  for at, name, m in finished]
        reused = sum(1 for p in points for unit in p["pretraining"] if unit.get("reused_from"))
        return {
            "schema_version": SCHEMA_VERSION, "kpretrain_version": __version__, "recipe": self.recipe.name,
            "complete": complete, "smoke": self.smoke, "seeds": list(self.recipe.seeds),
            "recipe_sha256": recipe_sha256(self.recipe.to_dict()), "sweep": self.sweep, "points": points,
            "pretraining_reused": reused,
            "warnings": [f"{p['dir']}: {w}" for p in points for w in p["warnings"]],
            "data_files": {k: v for _, _, m in finished for k, v in m["data_files"].items()},
            "data_sha256": {k: v for _, _, m in finished for k, v in m["data_sha256"].items()},
            "evaluation": first["evaluation"], "environment": first["environment"], "wall_time_s": wall,
            "reference": first.get("reference"),
            **({"holm": holm} if holm else {}),
        }


def point_dir(at: dict) -> str:
    """Sub-directory of a sweep point: `data.labels_per_class=10` (several keys joined by `,`), each value as
    `--set` writes it (`format_value`: `finetune.optimizer.learning_rate=1.0e-05`)."""
    return ",".join(f"{key}={format_value(value)}" for key, value in at.items())


def smoke_sweep(sweep: dict) -> dict:
    """`--smoke` caps labels per class at its budget; swept values are scaled down by rank so the points stay
    distinct (10, 100, 1000 -> 3, 7, 10)."""
    out = dict(sweep)
    values = sweep.get("data.labels_per_class")
    if values:
        cap = SMOKE.labels_per_class
        order = sorted(range(len(values)), key=lambda i: math.inf if values[i] is None else values[i])
        scaled = [0] * len(values)
        for rank, i in enumerate(order):
            scaled[i] = max(1, round(cap * (rank + 1) / len(values)))
        out["data.labels_per_class"] = scaled
    return out


def _resumed(stage: str, epochs: int) -> str:
    return f"; {stage} resumed from its backup after epoch {epochs}" if epochs else ""


def _seconds(split: dict) -> str:
    return f"train {split.get('training', 0):.0f}s, eval {split.get('evaluation', 0):.0f}s, other {split.get('other', 0):.0f}s"


def protocol(arm: Recipe) -> dict:
    """The settings that define an arm, as recorded in metrics.json."""
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




def make_run(recipe: Recipe, *, smoke: bool = False, callbacks=None, progress: Progress | None = None):
    """The run of a recipe: an `Experiment`, or a `Sweep` of them when the recipe has `sweep:`."""
    return (Sweep if recipe.sweep else Experiment)(recipe, smoke=smoke, callbacks=callbacks, progress=progress)
