"""Preparation of a run: everything that can be checked and loaded before anything trains.

`prepare` validates the arms against the data and their backbones, loads the data sets (once per process for the
points of a sweep and the trials of a search, through a shared cache), applies the `--smoke` shrink and makes
each seed's splits.  Its result, `Prepared`, is what the run loop, the plan, `kpretrain tune` and `kpretrain
lr-find` read.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import keras
import numpy as np

from kpretrain.data import DatasetArrays, load_dataset, make_splits
from kpretrain.data.checksums import arrays_sha256
from kpretrain.errors import RecipeError
from kpretrain.models.blocks import describe, signature
from kpretrain.models.freezing import resolve_depth
from kpretrain.pretext import LABELLED_TASKS, create_task
from kpretrain.protocol import FULL, SMOKE, SeedData, initial_backbone, pretraining_key
from kpretrain.protocol.inputs import Budget
from kpretrain.protocol.pretrain import pretraining_steps
from kpretrain.protocol.unit import backbone_source
from kpretrain.recipe import Recipe, pretrains
from kpretrain.recipe.arms import resolve_arms
from kpretrain.training.loggers import check_loggers

SMOKE_SHRINK_SEED = 12345  # which train and test examples `--smoke` keeps (the same in every run)


@dataclasses.dataclass(frozen=True, eq=False)
class Prepared:
    """A validated recipe with its data loaded and each seed's splits made.

    Attributes:
        recipe: the run's recipe.
        smoke: whether the `--smoke` budget applies.
        budget: `SMOKE` or `FULL` (the caps every stage applies).
        data: the downstream data set (shrunk under `--smoke`).
        pretrain_data: other data sets by name (pre-training's or self-training's pool), of the downstream shape.
        arms: each arm's resolved recipe, in run order.
        pairs: arm -> the matched baseline it is compared with.
        initial: arm -> its backbone before any stage for the first seed (the plan's block names).
        architectures: arm -> its backbone's architecture record (`models.blocks.describe`).
        seeds: seed -> the `SeedData` every arm of that seed reads.
        compute: compute-matched scratch -> its `ComputeMatch` (`baselines: [scratch, scratch_compute]`).
    """

    recipe: Recipe
    smoke: bool
    budget: Budget
    data: DatasetArrays
    pretrain_data: dict
    arms: dict
    pairs: dict
    initial: dict
    seeds: dict
    architectures: dict = dataclasses.field(default_factory=dict)
    compute: dict = dataclasses.field(default_factory=dict)

    def seed_data(self, seed: int) -> SeedData:
        """The data every arm of `seed` reads."""
        return self.seeds[seed]

    @property
    def compute_pairs(self) -> dict[str, str]:
        """Pre-training arm -> its compute-matched scratch."""
        return {arm: name for name, match in self.compute.items() for arm in match.arms}

    def extra_steps(self, name: str, seed: int) -> int:
        """The optimizer steps arm `name` adds to its fine-tuning for `seed`: for a compute-matched scratch, its
        arms' pre-training steps (`pretraining_steps`), known before they pre-train; 0 for every other arm."""
        match = self.compute.get(name)
        return 0 if match is None else pretraining_steps(self.arms[match.arms[0]], self.seed_data(seed))

    @property
    def first(self) -> SeedData:
        """The first seed's data (the plan, the shortcut check, tuner trials)."""
        return self.seeds[self.recipe.seeds[0]]

    def sharing_pretraining(self, arm: Recipe) -> list[str]:
        """The arms, in run order, that pre-train as `arm` does (and so share its pre-trained weights per seed)."""
        key = pretraining_key(arm, self.recipe)
        return [name for name, other in self.arms.items()
                if pretrains(other) and pretraining_key(other, self.recipe) == key]

    def pretraining_arm(self, arm: Recipe) -> str:
        """The arm that trains (and names the unit of) the pre-training `arm` shares: the first of them in run order.
        The loop, a worker's unit, the executor's graph and the plan all ask here."""
        return self.sharing_pretraining(arm)[0]

    def arm_key(self, name: str, section: str) -> str:
        """The recipe key that sets `section` of arm `name`: `arms.<name>.<section>`, or `<section>` for an arm
        that takes it from the top level (scratch, the single arm of a recipe without `arms:`)."""
        return f"arms.{name}.{section}" if self.recipe.arms and name in self.recipe.arms else section

    @functools.cached_property
    def provenance(self) -> dict:
        """`data_files` and `data_sha256` of metrics.json: digested once per run, not at every unit."""
        sets = (self.data, *self.pretrain_data.values())
        return {"data_files": {path: digest for d in sets for path, digest in d.files.items()},
                "data_sha256": {d.name: arrays_sha256(d.x_train, d.y_train, d.x_test, d.y_test) for d in sets}}


def prepare(recipe: Recipe, *, smoke: bool = False, datasets: dict | None = None) -> Prepared:
    """Validate `recipe` against its data and backbones, load the data and make every seed's splits.

    Args:
        recipe: a resolved `Recipe`.
        smoke: apply the `--smoke` budget (tiny data, a few batches per stage).
        datasets: a cache of loaded data sets shared by calls (the points of a sweep, the trials of a search);
            None loads afresh.

    Returns:
        A `Prepared`.

    Raises:
        RecipeError: a setting the data or a backbone cannot take, naming its recipe key and the fix.
        DataError: a data set that cannot be loaded.

    Example:
        >>> prepared = prepare(load_recipe("recipes/fashion_overlay.yaml"), smoke=True)
        >>> len(prepared.first.split.labelled)
        100
    """
    check_loggers(recipe.runtime.active_loggers)  # a missing package is refused before any data loads
    budget = SMOKE if smoke else FULL
    load = functools.partial(_load, recipe, smoke, budget, datasets if datasets is not None else {})
    data = load(recipe.data.dataset, recipe.data.path)
    pretrain_data: dict[str, DatasetArrays] = {}  # filled below; every seed's SeedData shares it
    sources: dict[str, dict] = {}  # backbone.from -> what loading it found, shared by every seed
    seeds = {seed: SeedData(recipe, data, _splits(recipe, data, budget, smoke, seed), seed, budget, pretrain_data,
                            sources) for seed in recipe.seeds}
    arms, pairs, compute = resolve_arms(recipe)
    prepared = Prepared(recipe, smoke, budget, data, pretrain_data, arms, pairs, {}, seeds, compute=compute)
    for name, arm in prepared.arms.items():
        backbone = prepared.initial[name] = initial_backbone(arm, prepared.first)
        _check_transfer(prepared, name, arm, backbone)
        if pretrains(arm):
            _check_pretrain(prepared, name, arm, load)
        if arm.selftrain is not None:
            _check_selftrain(prepared, name, arm, load)
        prepared.architectures[name] = describe(backbone, arm.backbone.from_ or arm.backbone.name)
    for name, baseline in [*prepared.pairs.items(), *prepared.compute_pairs.items()]:
        _check_same_architecture(prepared, name, baseline)
    return prepared


def _check_same_architecture(prepared: Prepared, name: str, baseline: str) -> None:
    """An arm is compared with a baseline of its own architecture (re-initialised), never another backbone."""
    arm = prepared.arms[name]
    info = backbone_source(arm, prepared.first)
    if info is not None and info["format"] == "saved_model":  # one opaque layer: its kpretrain.json says what
        source = info.get("metadata") or {}
        other = prepared.arms[baseline].backbone
        if source.get("backbone") in (None, other.name) and source.get("options", other.options) == other.options:
            return
        ours = f"{source.get('backbone')} {source.get('options')}"
    elif signature(prepared.initial[name]) == signature(prepared.initial[baseline]):
        return
    else:
        ours = arm.backbone.from_ or arm.backbone.name
    theirs = prepared.architectures[baseline]
    raise RecipeError(
        f"recipe key '{prepared.arm_key(name, 'backbone.name')}': arm {name!r} ({ours}, "
        f"{prepared.architectures[name]['parameters']:,} parameters) would be compared with {baseline!r} of another "
        f"architecture ({theirs['name']}, {theirs['parameters']:,} parameters); set backbone.name to the "
        f"architecture of backbone.from (e.g. its .keras file, or the registered name it was exported from)")


def _splits(recipe: Recipe, data: DatasetArrays, budget: Budget, smoke: bool, seed: int):
    """The labelled subset, validation split and unlabelled pool of `seed` (capped under `--smoke`)."""
    labels_per_class = recipe.data.labels_per_class
    if smoke:
        labels_per_class = min(labels_per_class or budget.labels_per_class, budget.labels_per_class)
    return make_splits(data.y_train, num_classes=data.num_classes,
                       validation=budget.cap(recipe.data.validation, budget.validation),
                       labels_per_class=labels_per_class, seed=seed)


def _load(recipe: Recipe, smoke: bool, budget: Budget, cache: dict, name: str, path) -> DatasetArrays:
    """`load_dataset` of `name` with the recipe's data settings, once per `cache`, shrunk under `--smoke`."""
    d = recipe.data
    key = (name, path, tuple(d.image_size or ()), d.channels, d.data_dir, json.dumps(d.split, sort_keys=True))
    if key not in cache:
        cache[key] = load_dataset(name, path, d.image_size, d.channels, tfds_dir=d.data_dir, split=d.split)
    return _shrink(cache[key], budget) if smoke else cache[key]


def _shrink(data: DatasetArrays, budget: Budget) -> DatasetArrays:
    """The `--smoke` subset: the same few train and test examples in every run."""
    rng = np.random.default_rng(SMOKE_SHRINK_SEED)
    train = np.sort(rng.permutation(len(data.y_train))[: budget.train_examples])
    test = np.sort(rng.permutation(len(data.y_test))[: budget.test_examples])
    return dataclasses.replace(data, x_train=data.x_train[train], y_train=data.y_train[train],
                               x_test=data.x_test[test], y_test=data.y_test[test])


def _load_other(prepared: Prepared, dataset: str, key: str, load) -> None:
    """Another data set (pre-training's, self-training's pool) into `pretrain_data`, once; its images must have
    the downstream shape (`key`: the recipe key that names it)."""
    if dataset in prepared.pretrain_data:
        return
    other = load(dataset, None)
    if other.image_shape != prepared.data.image_shape:
        raise RecipeError(f"recipe key '{key}': {dataset} images are {other.image_shape}, {prepared.recipe.data.dataset} "
                          f"images are {prepared.data.image_shape}; use data sets of the same shape")
    prepared.pretrain_data[dataset] = other


def _check_pretrain(prepared: Prepared, name: str, arm: Recipe, load) -> None:
    """A labelled pretext task needs another data set; the task's options must build and suit the images (of the
    downstream shape, which another pre-training set must have too); another set is loaded."""
    downstream = prepared.recipe.data.dataset
    if arm.pretrain.task in LABELLED_TASKS and (arm.pretrain.dataset or downstream) == downstream:
        raise RecipeError(
            f"recipe key 'arms.{name}.pretrain.dataset': {arm.pretrain.task} pre-training needs another "
            f"data set than data.dataset ({downstream}), or it would use labels beyond "
            f"data.labels_per_class; e.g. pretrain.dataset: mnist")
    task = create_task(arm.pretrain.task, arm.pretrain.options, seed=0, num_classes=prepared.data.num_classes)
    task.check_images((None, *prepared.data.image_shape))  # e.g. patches or tiles that do not cut the images
    if arm.pretrain.dataset and arm.pretrain.dataset != downstream:
        _load_other(prepared, arm.pretrain.dataset, f"arms.{name}.pretrain.dataset", load)


def _check_selftrain(prepared: Prepared, name: str, arm: Recipe, load) -> None:
    """Self-training needs an unlabelled pool of the downstream image shape (loaded here when another set)."""
    key = prepared.arm_key(name, "selftrain")
    dataset = arm.selftrain.unlabelled
    if dataset and dataset != prepared.recipe.data.dataset:
        _load_other(prepared, dataset, f"{key}.unlabelled", load)
    elif not len(prepared.first.split.unlabelled):
        raise RecipeError(f"recipe key '{key}.unlabelled': the unlabelled pool is empty (data.labels_per_class "
                          f"is null: every train image is labelled); set data.labels_per_class, or "
                          f"{key}.unlabelled to another data set")


def _check_transfer(prepared: Prepared, name: str, arm: Recipe, backbone: keras.Model) -> None:
    """Transfer settings that depend on the backbone: depth in range, SavedModel limits, head_init's head."""
    key = prepared.arm_key(name, "transfer")
    info = backbone_source(arm, prepared.first)
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
