"""Stages of a run: for every seed and every arm, pretrain -> transfer -> fine-tune -> evaluate; then artifacts.

Arms are compared in pairs: for a given seed every arm sees the same labelled subset, validation split,
initial backbone weights, head initialisation and data order.  Nothing is chosen on the test split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import datetime as dt
import json
import math
import os
import platform
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
import yaml

import kpretrain
from kpretrain.data import SCALING, DatasetArrays, Splits, image_batches, labelled_batches, load_dataset, make_splits
from kpretrain.errors import RecipeError
from kpretrain.models.backbones import block_names, create_backbone
from kpretrain.models.freezing import freeze_to_depth, resolve_depth
from kpretrain.models.heads import attach_head, create_head
from kpretrain.pretext import create_task
from kpretrain.models.initialisation import reinitialise_from_statistics, reinitialise_random
from kpretrain.models.loading import load_backbone
from kpretrain.recipe import Recipe, pretrains, transfers
from kpretrain.training.head_init import logistic_regression_head
from kpretrain.training.runtime import configure_runtime, describe_device, distribution_strategy
from kpretrain.training.knn import backbone_features, knn_accuracy
from kpretrain.training.unfreezing import GradualUnfreezing
from kpretrain.report import io
from kpretrain.training.bn_refresh import bn_state, refresh_batch_norm, set_bn_state
from kpretrain.training.callbacks import RefreshedEvaluation, RefreshedValidation
from kpretrain.training.stages import accuracy, fit_stage


@dataclasses.dataclass(frozen=True)
class Budget:
    """Caps that `--smoke` applies: tiny data and a few batches per stage, every arm and seed kept."""

    train_examples: int | None = None
    test_examples: int | None = None
    validation: int | None = None
    labels_per_class: int | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None
    bn_batches: int | None = None

    def cap(self, value, limit):
        return value if limit is None or value is None else min(value, limit)


PRETEXT_CURVE_POINTS = 4  # a short pre-training stage is validated at least this often
FULL = Budget()
SMOKE = Budget(train_examples=600, test_examples=200, validation=100, labels_per_class=10, steps_per_epoch=3,
               epochs=1, bn_batches=2)


def default_out_dir(recipe: Recipe) -> str:
    """`runs/<name>/<UTC timestamp>/`."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return os.path.join("runs", recipe.name, stamp)


class Experiment:
    """One recipe, prepared (validated, data loaded) then run into a run directory."""

    def __init__(self, recipe: Recipe, *, smoke: bool = False, log: Callable[[str], None] = print):
        self.recipe = recipe
        self.arms = recipe.arm_recipes()
        self.budget = SMOKE if smoke else FULL
        self.smoke = smoke
        self.log = log
        self.data: DatasetArrays | None = None
        self.splits: dict[int, Splits] = {}
        self.pretrain_data: dict[str, DatasetArrays] = {}
        self._sources: dict[str, dict] = {}

    # ---- preparation: everything that can be checked without training -------------------------------
    def prepare(self) -> list[str]:
        """Validate arms against data and models, load data, make splits; return the plan as lines."""
        r = self.recipe
        self.data = self._shrink(load_dataset(r.data.dataset, r.data.path))
        validation = self.budget.cap(r.data.validation, self.budget.validation)
        labels_per_class = r.data.labels_per_class
        if self.smoke:
            labels_per_class = min(labels_per_class or self.budget.labels_per_class, self.budget.labels_per_class)
        for seed in r.seeds:
            self.splits[seed] = make_splits(self.data.y_train, num_classes=self.data.num_classes,
                                            validation=validation, labels_per_class=labels_per_class, seed=seed)
        for name, arm in self.arms.items():
            backbone = self.initial_backbone(arm, seed=0)
            self._check_transfer(name, arm, backbone)
            if pretrains(arm):
                if arm.pretrain.task == "supervised":
                    if (arm.pretrain.dataset or r.data.dataset) == r.data.dataset:
                        raise RecipeError(
                            f"recipe key 'arms.{name}.pretrain.dataset': supervised pre-training needs another data "
                            f"set than data.dataset ({r.data.dataset}), or it would use labels beyond "
                            f"data.labels_per_class; e.g. pretrain.dataset: mnist")
                else:
                    create_task(arm.pretrain.task, arm.pretrain.options, seed=0)
                dataset = arm.pretrain.dataset or r.data.dataset
                if dataset != r.data.dataset and dataset not in self.pretrain_data:
                    other = self._shrink(load_dataset(dataset, None))
                    if other.image_shape != self.data.image_shape:
                        raise RecipeError(
                            f"recipe key 'arms.{name}.pretrain.dataset': {dataset} images are {other.image_shape}, "
                            f"{r.data.dataset} images are {self.data.image_shape}; use data sets of the same shape")
                    self.pretrain_data[dataset] = other
        return self.plan_lines()

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

    def _new_backbone(self, arm: Recipe, seed: int) -> keras.Model:
        return create_backbone(arm.backbone.name, self.data.image_shape, seed=seed, **arm.backbone.options)

    def plan_lines(self) -> list[str]:
        """Human-readable plan: data, splits, arms with their stages, seeds."""
        r, d = self.recipe, self.data
        split = self.splits[r.seeds[0]]
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
            backbone = self.initial_backbone(arm, 0)
            blocks = block_names(backbone)
            depth = resolve_depth(backbone, arm.transfer.frozen_depth) if blocks else arm.transfer.frozen_depth
            stages = [f"load {arm.backbone.from_}"] if arm.backbone.from_ else []
            if pretrains(arm):
                source = arm.pretrain.dataset or r.data.dataset
                n = len(split.labelled) + len(split.unlabelled) if source == r.data.dataset else len(
                    self.pretrain_data[source].y_train)
                epochs = self.budget.cap(arm.pretrain.epochs, self.budget.epochs)
                labels = "with its labels" if arm.pretrain.task == "supervised" else "labels unused"
                stages.append(f"pretrain {arm.pretrain.task} on {source} ({n} images, {labels}) "
                              f"for {epochs:g} epochs")
            if not transfers(arm):
                stages.append("random init")
            t = arm.transfer
            stages.append(f"transfer: init {t.init}, freeze {depth}/{len(blocks) or '?'} blocks, bn {t.bn}"
                          + (f", unfreeze every {t.unfreeze.every} (backbone lr x{t.unfreeze.backbone_lr_factor:g})"
                             if t.unfreeze else "")
                          + (f", head init {t.head_init}" if t.head_init != "none" else ""))
            stages.append(f"fine-tune {arm.finetune.head} head for "
                          f"{self.budget.cap(arm.finetune.epochs, self.budget.epochs)} epochs on {len(split.labelled)} labelled")
            lines.append(f"  arm {name}: {arm.backbone.name} [{', '.join(blocks)}] -> " + " -> ".join(stages))
        lines.append("evaluation: " + ("BN statistics refreshed on training batches, raw and refreshed recorded"
                                       if r.evaluation.bn_refresh else "BN refresh off"))
        return lines

    # ---- the run ----------------------------------------------------------------------------------
    def run(self, out_dir: str) -> dict:
        """Train every seed x arm, write every artifact into `out_dir`, return metrics."""
        if self.data is None:
            self.prepare()
        r = self.recipe
        os.makedirs(os.path.join(out_dir, "units"), exist_ok=True)
        io.write_text(os.path.join(out_dir, "recipe.yaml"), yaml.safe_dump(r.to_dict(), sort_keys=False))
        configure_runtime(r.runtime)
        self.log(describe_device(self.strategy, r.runtime.distribute))
        started = time.perf_counter()
        results: dict[str, list[dict]] = {name: [] for name in self.arms}
        export_source = None
        for seed in r.seeds:
            for name, arm in self.arms.items():
                unit = self._run_unit(out_dir, seed, name, arm)
                results[name].append(unit)
                if export_source is None and unit.get("pretrain_weights"):
                    export_source = (seed, name, arm, unit["pretrain_weights"])
                metrics = self._metrics(results, time.perf_counter() - started, complete=False)
                io.write_json(os.path.join(out_dir, "metrics.json"), metrics)
        metrics = self._metrics(results, time.perf_counter() - started, complete=True)
        if export_source is not None:
            metrics["backbone"] = self._export_backbone(out_dir, *export_source)
        from kpretrain.report import write_run_report

        write_run_report(out_dir, metrics, self.data.class_names)
        io.write_json(os.path.join(out_dir, "metrics.json"), metrics)
        return metrics

    @functools.cached_property
    def strategy(self) -> tf.distribute.Strategy | None:
        """One distribution strategy for the whole run (`runtime.distribute`), or None."""
        return distribution_strategy(self.recipe.runtime.distribute)

    def _scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def _run_unit(self, out_dir: str, seed: int, name: str, arm: Recipe) -> dict:
        """Pretrain (if the arm does), transfer, fine-tune and evaluate one arm for one seed."""
        r = self.recipe
        unit: dict = {"seed": seed, "arm": name}
        keras.utils.set_random_seed(seed)
        with self._scope():
            backbone = self.initial_backbone(arm, seed)
            if pretrains(arm):
                unit["pretrain"] = self.pretrain(backbone, arm, seed)
                weights = os.path.join(out_dir, "units", f"seed{seed}.{name}.pretrain.weights.h5")
                with io.atomic_path(weights) as tmp:
                    backbone.save_weights(tmp)
                unit["pretrain_weights"] = os.path.relpath(weights, out_dir)
                io.write_json(os.path.join(out_dir, "units", f"seed{seed}.{name}.pretrain.json"), unit["pretrain"])
                self.log(f"seed {seed} | {name}: pretrain {arm.pretrain.task} {arm.pretrain.epochs:g} ep, "
                         f"pretext val acc {unit['pretrain']['final_val_accuracy']:.3f} "
                         f"({unit['pretrain']['wall_time_s']:.0f}s)")
            model = self.downstream_model(backbone, arm, seed)
            unit.update(self.transfer(model, arm, seed))
            unit["trainable_params"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
            if r.evaluation.knn:
                unit["knn_accuracy"] = self.knn_test_accuracy(backbone, seed)
            callbacks = []
            if arm.transfer.unfreeze is not None:
                unfreezing = GradualUnfreezing(backbone, arm.transfer.frozen_depth, every=arm.transfer.unfreeze.every,
                                               bn=arm.transfer.bn,
                                               backbone_lr_factor=arm.transfer.unfreeze.backbone_lr_factor)
                callbacks.append(unfreezing)
            finetuned, raw_bn = self.finetune(model, arm, seed, callbacks=callbacks)
            unit.update(finetuned)
            if arm.transfer.unfreeze is not None:
                unit["unfreeze_schedule"] = [[int(e), list(b)] for e, b in unfreezing.schedule]
            unit.update(self.evaluate_test(model, seed, raw_bn))
        io.write_json(os.path.join(out_dir, "units", f"seed{seed}.{name}.finetune.json"),
                      {k: v for k, v in unit.items() if k != "pretrain"})
        warn = ""
        if "test_accuracy_refreshed" in unit:
            gap = abs(unit["test_accuracy_refreshed"] - unit["test_accuracy_raw"]) * 100
            warn = f", raw {unit['test_accuracy_raw']:.4f}" + (" (stale BN!)" if gap > r.evaluation.bn_warn_points else "")
        self.log(f"seed {seed} | {name}: test acc {unit['test_accuracy']:.4f}{warn} "
                 f"({unit['finetune_wall_time_s']:.0f}s)")
        return unit

    def _steps(self, n: int, batch: int, drop_remainder: bool = False) -> int:
        steps = n // batch if drop_remainder else math.ceil(n / batch)
        return max(1, self.budget.cap(steps, self.budget.steps_per_epoch))

    # ---- the stages, usable one by one (the tuner calls them) ---------------------------------------
    def initial_backbone(self, arm: Recipe, seed: int) -> keras.Model:
        """The arm's backbone before pre-training: loaded from `backbone.from`, or random weights of the seed."""
        if arm.backbone.from_:
            backbone, info = load_backbone(arm.backbone.from_, self.data.image_shape)
            self._sources[arm.backbone.from_] = info
            return backbone
        return self._new_backbone(arm, seed)

    def pretrain(self, backbone: keras.Model, arm: Recipe, seed: int, epochs: float | None = None) -> dict:
        """Train `backbone` with the arm's pretext task on unlabelled images (never validation or test)."""
        r, split = self.recipe, self.splits[seed]
        batch = r.data.batch_size
        source = arm.pretrain.dataset or r.data.dataset
        if source == r.data.dataset:
            pool = np.sort(np.concatenate([split.labelled, split.unlabelled]))
            x_pre, x_val = self.data.x_train[pool], self.data.x_train[split.validation]
        else:
            other = self.pretrain_data[source]
            held = np.random.default_rng(seed).permutation(len(other.y_train))
            n_val = min(1000, len(held) // 10)
            x_pre, x_val = other.x_train[np.sort(held[n_val:])], other.x_train[np.sort(held[:n_val])]
        if arm.pretrain.task == "supervised":
            other = self.pretrain_data[source]
            y_pre, y_val = other.y_train[np.sort(held[n_val:])], other.y_train[np.sort(held[:n_val])]
            head = create_head(arm.pretrain.head or "linear", backbone.output_shape[-1], other.num_classes, seed=seed,
                               name="pretext_supervised")
            model = attach_head(backbone, head, name="pretext_supervised_model")
            train = labelled_batches(x_pre, y_pre, batch, shuffle=True, seed=seed, drop_remainder=True)
            validation = labelled_batches(x_val, y_val, batch, shuffle=False, seed=seed)
            compile_kwargs, monitor = _classification_compile_kwargs(), "accuracy"
        else:
            task = create_task(arm.pretrain.task, arm.pretrain.options, seed=seed)
            head = {"head": arm.pretrain.head} if arm.pretrain.head else {}
            model = task.build_model(backbone, seed=seed, **head)
            train = task.make_dataset(image_batches(x_pre, batch, shuffle=True, seed=seed, drop_remainder=True))
            val_task = create_task(arm.pretrain.task, arm.pretrain.options, seed=seed + 10_000)
            validation = val_task.make_dataset(image_batches(x_val, batch, shuffle=False, seed=seed,
                                                             drop_remainder=len(x_val) >= batch)).cache()
            compile_kwargs, monitor = task.compile_kwargs(), task.monitor
        epochs = self.budget.cap(arm.pretrain.epochs if epochs is None else epochs, self.budget.epochs)
        bn_batches = self.budget.cap(r.evaluation.bn_refresh_batches, self.budget.bn_batches)
        evaluation = RefreshedEvaluation(validation, train if r.evaluation.bn_refresh else None, bn_batches)
        result = fit_stage(model, train, epochs=epochs, steps_per_epoch=self._steps(len(x_pre), batch, True),
                           optimizer=arm.pretrain.optimizer, compile_kwargs=compile_kwargs,
                           callbacks=[evaluation], jit_compile=r.runtime.jit_compile, verbose=r.runtime.verbose,
                           min_points=PRETEXT_CURVE_POINTS)
        return {
            "task": arm.pretrain.task, "dataset": source, "images": int(len(x_pre)), "epochs": epochs,
            "steps_per_epoch": result.steps_per_epoch, "monitor": monitor,
            "history": {"epoch": result.data_epochs, **result.history},
            "final_val_accuracy": result.history.get(f"val_{monitor}", [float("nan")])[-1],
            "wall_time_s": result.wall_time_s,
        }

    def downstream_model(self, backbone: keras.Model, arm: Recipe, seed: int) -> keras.Model:
        """`backbone` with a fresh downstream head (the same initial head in every arm); `transfer` comes next."""
        keras.utils.set_random_seed(seed)
        head = create_head(arm.finetune.head, backbone.output_shape[-1], self.data.num_classes, seed=seed,
                           name="downstream_head")
        return attach_head(backbone, head)

    def transfer(self, model: keras.Model, arm: Recipe, seed: int) -> dict:
        """Apply the transfer protocol to a `downstream_model` whose backbone is pre-trained (or not): re-initialise
        (transfer.init), freeze, warm-start the head (transfer.head_init).  Returns the unit's record of it."""
        t = arm.transfer
        backbone, head = model.layers[1], model.layers[2]  # attach_head: images -> backbone -> head
        if t.init == "statistics":
            reinitialise_from_statistics(backbone, seed, t.init_pooling)
        elif t.init == "random":
            source = (self._sources[arm.backbone.from_].get("metadata") or {}) if arm.backbone.from_ else {}
            reinitialise_random(backbone, source.get("backbone", arm.backbone.name),
                                source.get("options", arm.backbone.options), seed)
        record: dict = {"frozen_blocks": freeze_to_depth(backbone, t.frozen_depth, t.bn)}
        if t.head_init == "logistic_regression":
            refresh_images, validation, y_val, bn_batches = self._eval_sets(seed)
            if self.recipe.evaluation.bn_refresh:  # features as the model will see them in training mode
                refresh_batch_norm(model, refresh_images, bn_batches)
            split = self.splits[seed]
            labelled = image_batches(self.data.x_train[split.labelled], self.recipe.data.batch_size, shuffle=False,
                                     seed=seed)
            record["head_init"] = logistic_regression_head(backbone, head, labelled,
                                                           self.data.y_train[split.labelled], self.data.num_classes)
            record["head_init"]["val_accuracy_before_finetune"] = accuracy(model, validation, y_val)[0]
        keras.utils.set_random_seed(seed)  # same data order and dropout in fine-tuning, whatever the protocol
        return record

    def knn_test_accuracy(self, backbone: keras.Model, seed: int, k: int = 20) -> float:
        """kNN (k=20, cosine) test accuracy of the transferred backbone's features, labelled subset as memory."""
        d, split, batch = self.data, self.splits[seed], self.recipe.data.batch_size
        memory = backbone_features(backbone, image_batches(d.x_train[split.labelled], batch, shuffle=False, seed=0))
        queries = backbone_features(backbone, image_batches(d.x_test, batch, shuffle=False, seed=0))
        return knn_accuracy(memory, d.y_train[split.labelled], queries, d.y_test, num_classes=d.num_classes,
                            k=min(k, len(split.labelled)))

    def _eval_sets(self, seed: int):
        r, d, split = self.recipe, self.data, self.splits[seed]
        batch = r.data.batch_size
        x_lab = d.x_train[split.labelled]
        y_val = d.y_train[split.validation]
        refresh_images = image_batches(x_lab, batch, shuffle=True, seed=seed)
        validation = labelled_batches(d.x_train[split.validation], y_val, batch, shuffle=False, seed=seed)
        bn_batches = self.budget.cap(r.evaluation.bn_refresh_batches, self.budget.bn_batches)
        return refresh_images, validation, y_val, bn_batches

    def finetune(self, model: keras.Model, arm: Recipe, seed: int, callbacks=(),
                 epochs: int | None = None) -> tuple[dict, list]:
        """Fit the downstream model on the labelled subset; validation (raw and BN-refreshed) every epoch.

        Returns (record, BN statistics as training left them).  Ends with the BN statistics refreshed (when
        `evaluation.bn_refresh`); the test split is not touched.
        """
        r, d, split = self.recipe, self.data, self.splits[seed]
        batch = r.data.batch_size
        x_lab, y_lab = d.x_train[split.labelled], d.y_train[split.labelled]
        refresh_images, validation, y_val, bn_batches = self._eval_sets(seed)
        train = labelled_batches(x_lab, y_lab, batch, shuffle=True, seed=seed)
        callback = RefreshedValidation(validation, y_val, refresh_images if r.evaluation.bn_refresh else None,
                                       bn_batches)
        epochs = self.budget.cap(arm.finetune.epochs if epochs is None else epochs, self.budget.epochs)
        result = fit_stage(model, train, epochs=epochs, steps_per_epoch=self._steps(len(y_lab), batch),
                           optimizer=arm.finetune.optimizer,
                           compile_kwargs=_classification_compile_kwargs(),
                           callbacks=[callback, *callbacks], jit_compile=r.runtime.jit_compile,
                           verbose=r.runtime.verbose)
        out = {"history": result.history, "finetune_epochs": epochs, "finetune_wall_time_s": result.wall_time_s}
        out["val_accuracy_raw"] = accuracy(model, validation, y_val)[0]
        raw_bn = bn_state(model)
        if r.evaluation.bn_refresh:
            refresh_batch_norm(model, refresh_images, bn_batches)
            out["val_accuracy_refreshed"] = accuracy(model, validation, y_val)[0]
            out["val_accuracy"] = out["val_accuracy_refreshed"]
        else:
            out["val_accuracy"] = out["val_accuracy_raw"]
        return out, raw_bn

    def evaluate_test(self, model: keras.Model, seed: int, raw_bn: list) -> dict:
        """Test accuracy once, at the end: refreshed BN statistics (as `finetune` left them), then the raw ones
        training produced (`raw_bn`); confusion matrix of the former."""
        r, d = self.recipe, self.data
        test = labelled_batches(d.x_test, d.y_test, r.data.batch_size, shuffle=False, seed=seed)
        out = {}
        if r.evaluation.bn_refresh:
            refreshed_bn = bn_state(model)
            out["test_accuracy_refreshed"], predicted = accuracy(model, test, d.y_test)
            set_bn_state(model, raw_bn)
            out["test_accuracy_raw"] = accuracy(model, test, d.y_test)[0]
            set_bn_state(model, refreshed_bn)
            out["test_accuracy"] = out["test_accuracy_refreshed"]
        else:
            out["test_accuracy_raw"], predicted = accuracy(model, test, d.y_test)
            out["test_accuracy"] = out["test_accuracy_raw"]
        out["confusion"] = confusion_matrix(d.y_test, predicted, d.num_classes).tolist()
        return out

    # ---- artifacts --------------------------------------------------------------------------------
    def _metrics(self, results: dict[str, list[dict]], wall: float, complete: bool) -> dict:
        r, d = self.recipe, self.data
        split = self.splits[r.seeds[0]]
        arms = {}
        for name, units in results.items():
            arm = self.arms[name]
            entry = {
                "protocol": protocol(arm),
                "seeds": [u["seed"] for u in units],
                "test_accuracy": [u["test_accuracy"] for u in units],
                "test_accuracy_raw": [u["test_accuracy_raw"] for u in units],
                "val_accuracy": [u["val_accuracy"] for u in units],
                "trainable_params": units[0]["trainable_params"] if units else None,
                "frozen_blocks": units[0]["frozen_blocks"] if units else None,
                "history": [{"seed": u["seed"], **u["history"]} for u in units],
                "confusion": [u["confusion"] for u in units],
                "wall_time_s": [u["finetune_wall_time_s"] + u.get("pretrain", {}).get("wall_time_s", 0.0)
                                for u in units],
            }
            if r.evaluation.bn_refresh:
                entry["test_accuracy_refreshed"] = [u["test_accuracy_refreshed"] for u in units]
            if r.evaluation.knn:
                entry["knn_accuracy"] = [u["knn_accuracy"] for u in units]
            for extra in ("head_init", "unfreeze_schedule"):
                if any(extra in u for u in units):
                    entry[extra] = [u.get(extra) for u in units]
            if any("pretrain" in u for u in units):
                entry["pretext"] = [{"seed": u["seed"], "monitor": u["pretrain"]["monitor"], **u["pretrain"]["history"]}
                                    for u in units if "pretrain" in u]
            arms[name] = entry
        warnings = []
        for name, entry in arms.items():
            for seed, raw, ref in zip(entry["seeds"], entry["test_accuracy_raw"],
                                      entry.get("test_accuracy_refreshed", [])):
                if abs(ref - raw) * 100 > r.evaluation.bn_warn_points:
                    warnings.append(f"{name} seed {seed}: raw test accuracy {raw:.4f} vs {ref:.4f} after BN refresh "
                                    f"({(ref - raw) * 100:+.1f} pts): stale batch-norm statistics")
        return {
            "kpretrain_version": kpretrain.__version__,
            "recipe": r.name,
            "complete": complete,
            "smoke": self.smoke,
            "seeds": list(r.seeds),
            "data": {"dataset": d.name, "source": d.source, "image_shape": list(d.image_shape),
                     "num_classes": d.num_classes, "class_names": list(d.class_names),
                     "train": int(len(d.y_train)), "test": int(len(d.y_test)),
                     "labelled": int(len(split.labelled)), "validation": int(len(split.validation)),
                     "unlabelled": int(len(split.unlabelled)), "scaling": SCALING},
            "evaluation": {"bn_refresh": r.evaluation.bn_refresh,
                           "test_accuracy_is": "refreshed" if r.evaluation.bn_refresh else "raw"},
            "arms": arms,
            "warnings": warnings,
            "environment": {"tensorflow": tf.__version__, "keras": keras.__version__,
                            "python": platform.python_version(),
                            "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
                            "cpu_count": os.cpu_count()},
            "wall_time_s": wall,
        }

    def _export_backbone(self, out_dir: str, seed: int, name: str, arm: Recipe, weights: str) -> dict:
        """Write the pre-trained backbone as `backbone.keras` and as a SavedModel in `backbone/`."""
        backbone = self.initial_backbone(arm, seed)
        backbone.load_weights(os.path.join(out_dir, weights))
        backbone.trainable = True
        info = {
            "arm": name, "seed": seed, "backbone": arm.backbone.name, "options": arm.backbone.options,
            "blocks": block_names(backbone),
            "input_shape": [None, *self.data.image_shape], "input_dtype": "float32", "scaling": SCALING,
            "feature_dim": int(backbone.output_shape[-1]), "endpoint": "serve",
            "pretrain": {"task": arm.pretrain.task, "options": arm.pretrain.options, "epochs": arm.pretrain.epochs,
                         "dataset": arm.pretrain.dataset or self.recipe.data.dataset},
            "data": {"dataset": self.data.name, "source": self.data.source},
            "recipe": self.recipe.to_dict(), "kpretrain_version": kpretrain.__version__,
        }
        with io.atomic_path(os.path.join(out_dir, "backbone.keras")) as tmp:
            backbone.save(tmp)
        with io.atomic_path(os.path.join(out_dir, "backbone")) as tmp:
            backbone.export(tmp, format="tf_saved_model", verbose=False)
            with open(os.path.join(tmp, "kpretrain.json"), "w") as fh:
                json.dump(info, fh, indent=2)
        return {"arm": name, "seed": seed, "keras": "backbone.keras", "saved_model": "backbone/"}


def _classification_compile_kwargs() -> dict:
    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


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
    }


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    return np.bincount(labels.astype(np.int64) * num_classes + predicted.astype(np.int64),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)
