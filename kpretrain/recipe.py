"""Recipe: YAML -> validated, typed config.  `--set key=value` overrides; every error names the key.

A recipe describes one experiment.  The top-level `pretrain` / `transfer` / `finetune` sections are the
default protocol; `arms` lists named protocols that override any key of it, and `baselines` adds the
reference arms (`scratch`: the same model trained from random initialisation with the same budget).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import yaml

from kpretrain.errors import RecipeError
from kpretrain.pretext.registry import TASK_NAMES
from kpretrain.recipe_values import format_value, load_yaml, parse_value

PRETEXT_TASKS = ("none", *TASK_NAMES)
BASELINES = ("scratch",)


def _spec(*, choices=None, minimum=None, maximum=None, doc: str = "", **kw):
    """Field with validation metadata: allowed `choices`, numeric `minimum`/`maximum`."""
    metadata = {"choices": choices, "minimum": minimum, "maximum": maximum, "doc": doc}
    return field(metadata=metadata, **kw)


@dataclass
class DataConfig:
    """Which data, how it is split, how it is batched."""

    dataset: str = _spec(default="fashion_mnist", doc="data set name (mnist, fashion_mnist, kmnist, cifar10) or a local name with path")
    path: Optional[str] = _spec(default=None, doc="explicit IDX folder, image folder or .npz file")
    labels_per_class: Optional[int] = _spec(default=None, minimum=1, doc="null = all labels")
    validation: int = _spec(default=5000, minimum=1, doc="examples held out of train for validation")
    batch_size: int = _spec(default=128, minimum=1, maximum=65536)
    data_dir: Optional[str] = _spec(default=None, doc="TensorFlow Datasets' data directory; null = $TFDS_DATA_DIR or "
                                                      "~/tensorflow_datasets")
    split: Optional[dict] = _spec(default=None, doc="TFDS split names when they are not train/test, e.g. "
                                                    "{test: validation}")
    image_size: Optional[list] = _spec(default=None, doc="[H, W]: resize every image while loading; null = as stored")
    channels: Optional[int] = _spec(default=None, minimum=1, maximum=3, doc="1 (grayscale) or 3 (RGB): convert while "
                                                                            "loading; null = as stored")


@dataclass
class BackboneConfig:
    """Which backbone, and where its weights start from."""

    name: str = _spec(default="small_cnn")
    from_: Optional[str] = _spec(default=None, doc="backbone.keras or SavedModel directory of an earlier run")
    options: dict = _spec(default_factory=dict, doc="keyword arguments of the backbone builder")


@dataclass
class LRFindConfig:
    """The learning-rate range test (`kpretrain lr-find`, and `learning_rate: auto`)."""

    start_lr: float = _spec(default=1e-7, minimum=0.0, doc="first learning rate")
    end_lr: float = _spec(default=10.0, minimum=0.0, doc="last learning rate (the test stops earlier once the loss diverges)")
    steps: int = _spec(default=200, minimum=3, doc="batches, the learning rate growing exponentially")
    suggestion: str = _spec(default="steepest", choices=("steepest", "valley", "minimum"),
                            doc="steepest descent of the smoothed loss | fastai's valley | minimum / 10")
    beta: float = _spec(default=0.98, minimum=0.0, maximum=0.999, doc="smoothing of the loss (bias-corrected EMA)")
    diverge: float = _spec(default=4.0, minimum=1.0, doc="stop once the smoothed loss exceeds this x its minimum")


@dataclass
class OptimizerConfig:
    """Optimizer and learning-rate schedule of one stage."""

    name: str = _spec(default="adam", choices=("adam", "adamw", "sgd", "rmsprop"))
    learning_rate: Union[float, Literal["auto"]] = _spec(default=1e-3, minimum=0.0, maximum=10.0,
                                                         doc="or auto: a range test just before the stage picks it")
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    schedule: str = _spec(default="constant", choices=("constant", "cosine"))
    warmup_epochs: float = _spec(default=0.0, minimum=0.0)
    weight_decay: float = _spec(default=0.0, minimum=0.0)
    momentum: float = _spec(default=0.9, minimum=0.0, maximum=1.0, doc="for sgd and rmsprop")


@dataclass
class AveragingConfig:
    """Weight averaging of a stage, followed by a batch-norm refresh; a bare string is shorthand for `method`."""

    SHORTHAND = "method"
    method: str = _spec(default="none", choices=("none", "ema", "polyak"),
                        doc="ema: Keras optimizer EMA | polyak: uniform average from start_epoch on")
    momentum: float = _spec(default=0.99, minimum=0.0, maximum=1.0, doc="ema only")
    start_epoch: float = _spec(default=0.0, minimum=0.0, doc="polyak only: average from this epoch on (0-based)")


@dataclass
class ProbeConfig:
    """Probes of the backbone during pre-training: a classifier on its frozen, BN-refreshed features of labelled
    images, scored on validation."""

    every: float = _spec(default=1.0, minimum=0.0, doc="data epochs between probes (fractions allowed); the last epoch always")
    method: str = _spec(default="linear", choices=("linear", "knn", "both"),
                        doc="linear: logistic regression | knn: k=20 cosine | both")
    labels_per_class: Optional[int] = _spec(default=None, minimum=1,
                                            doc="a class-balanced part of the labelled subset; null = all of it")


@dataclass
class SelectConfig:
    """Which epoch's weights a stage ends with; a bare string is shorthand for `mode`."""

    SHORTHAND = "mode"
    mode: str = _spec(default="last", choices=("last", "best", "probe"),
                      doc="best: the best validated epoch | probe (pre-training): the best probe score; never test")
    monitor: Optional[str] = _spec(default=None, doc="logged validation metric; null = refreshed validation accuracy "
                                                     "(fine-tuning), the task's validation metric (pre-training)")
    patience: Optional[int] = _spec(default=None, minimum=1, doc="stop after this many validations without a new best")


@dataclass
class PretrainConfig:
    """The pre-training stage: a pretext task trained on the unlabelled images."""

    task: str = _spec(default="none", choices=PRETEXT_TASKS)
    options: dict = _spec(default_factory=dict, doc="options of the pretext task")
    dataset: Optional[str] = _spec(default=None, doc="data set for pre-training; null = data.dataset")
    epochs: float = _spec(default=1.0, minimum=0.0, doc="0 skips the stage; fractions run part of an epoch")
    head: Optional[str] = _spec(default=None, choices=("linear", "mlp"), doc="pretext head; null = the task's default")
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    probe: Optional[ProbeConfig] = _spec(default=None, doc="probes during pre-training; null = none")


@dataclass
class UnfreezeConfig:
    """Gradual unfreezing: one more block every `every` epochs, optionally a lower backbone learning rate."""

    every: Optional[int] = _spec(default=1, minimum=1, doc="epochs between unfreezing steps; null = never")
    backbone_lr_factor: float = _spec(default=1.0, minimum=0.0, maximum=1.0, doc="backbone lr = factor x head lr")


@dataclass
class TransferConfig:
    """How the pre-trained backbone is handed to the downstream task."""

    frozen_depth: Union[int, Literal["all"]] = _spec(default=0, minimum=0, doc="blocks frozen from the input side, or all")
    bn: str = _spec(default="frozen", choices=("frozen", "train"), doc="batch norm of frozen blocks")
    unfreeze: Optional[UnfreezeConfig] = _spec(default=None, doc="gradual unfreezing; null = off")
    init: str = _spec(default="weights", choices=("weights", "statistics", "random"),
                      doc="weights | statistics: redraw each tensor from its mean/std | random")
    init_pooling: str = _spec(default="tensor", choices=("tensor", "layer", "block"), doc="statistics per tensor, layer or block")
    head_init: str = _spec(default="none", choices=("none", "logistic_regression"))


@dataclass
class FinetuneConfig:
    """The downstream stage: a new head on the backbone, trained on the labelled subset."""

    epochs: int = _spec(default=10, minimum=1)
    min_steps_per_epoch: int = _spec(default=1, minimum=1,
                                     doc="at least this many batches per epoch (the labelled subset repeats)")
    head: str = _spec(default="linear", choices=("linear", "mlp"))
    augment: str = _spec(default="none", choices=("none", "weak", "strong"),
                         doc="training batches: weak = flip + translate; strong = weak + Keras RandAugment")
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)
    select: SelectConfig = field(default_factory=SelectConfig)


@dataclass
class SelfTrainConfig:
    """Self-training: a teacher fine-tuned on the labelled subset labels an unlabelled pool; a student learns from
    human plus pseudo labels (and teaches the next round)."""

    rounds: int = _spec(default=1, minimum=1, maximum=10, doc="teacher -> student rounds; each student teaches the next")
    teacher_init: str = _spec(default="pretrained", choices=("pretrained", "scratch"),
                              doc="pretrained: the arm's transferred backbone (random when it does not pre-train)")
    student_init: str = _spec(default="scratch", choices=("pretrained", "scratch"),
                              doc="scratch: random weights | pretrained: the arm's transferred backbone (stacking)")
    labels: str = _spec(default="hard", choices=("hard", "soft"), doc="hard: the teacher's class | soft: its "
                                                                        "probabilities at `temperature`")
    threshold: float = _spec(default=0.0, minimum=0.0, maximum=1.0, doc="keep pool images whose top probability "
                                                                         "is at least this")
    temperature: float = _spec(default=1.0, minimum=0.01, maximum=100.0, doc="softmax temperature of the teacher")
    balance: bool = _spec(default=False, doc="the same number of pseudo labels per class (the most confident; "
                                             "classes with fewer are repeated)")
    weight: float = _spec(default=1.0, minimum=0.0, doc="weight of a pseudo-labelled example in the loss")
    ratio: float = _spec(default=1.0, minimum=0.0, maximum=64.0, doc="pseudo-labelled per human-labelled example "
                                                                      "in each batch")
    student_augment: Optional[str] = _spec(default=None, choices=("none", "weak", "strong"),
                                           doc="the students' augmentation; null = finetune.augment (the teacher's)")
    pool: Optional[int] = _spec(default=None, minimum=1, doc="at most this many unlabelled images (seeded); null = all")
    unlabelled: Optional[str] = _spec(default=None, doc="data set of the unlabelled pool; null = the rest of the "
                                                        "train split (validation and labelled subset excluded)")


@dataclass
class EvaluationConfig:
    """How the final evaluation is made."""

    knn: bool = _spec(default=True, doc="kNN accuracy (k=20, cosine) of the transferred backbone's features")
    bn_refresh: bool = _spec(default=True, doc="recompute BN moving statistics on training batches before the final evaluation")
    bn_refresh_batches: int = _spec(default=50, minimum=1, doc="at most this many training batches for the refresh")
    bn_warn_points: float = _spec(default=2.0, minimum=0.0, doc="warn when raw and refreshed accuracy differ by more (points)")
    raw: str = _spec(default="final", choices=("final", "every_epoch"),
                     doc="stale-BN (raw) accuracy: at the last epoch (validation and test) or at every validation")
    validate_every: int = _spec(default=1, minimum=1, doc="validate every k fine-tuning epochs; the last always")


@dataclass
class RuntimeConfig:
    """How training runs."""

    deterministic: Optional[bool] = _spec(default=None, doc="TensorFlow op determinism; null = on, unless jit_compile")
    mixed_precision: bool = _spec(default=False)
    jit_compile: bool = _spec(default=False)
    distribute: str = _spec(default="none", choices=("none", "mirrored", "multi_worker"))
    verbose: int = _spec(default=0, minimum=0, maximum=2, doc="Keras fit verbosity")
    tensorboard: bool = _spec(default=False, doc="Keras TensorBoard logs per unit and stage under tb/<seed>/<arm>/<stage>")

    @property
    def op_determinism(self) -> bool:
        """Whether reruns are made identical: `deterministic`, by default on unless `jit_compile` (XLA is off
        under op determinism)."""
        return (not self.jit_compile) if self.deterministic is None else self.deterministic


@dataclass
class TuneConfig:
    """What `kpretrain tune` searches (KerasTuner): space over any recipe key, objective on validation."""

    objective: str = _spec(default="val_accuracy", choices=("val_accuracy",), doc="downstream validation metric, maximised")
    space: dict = _spec(default_factory=dict, doc="recipe key -> {int: [lo, hi]} | {float: [lo, hi], sampling: log} | {choice: [...]}")
    tuner: str = _spec(default="random", choices=("random", "bayesian", "hyperband", "grid"),
                       doc="grid: every combination (int and choice dimensions, floats with a step), in order")
    max_trials: int = _spec(default=10, minimum=1)
    arm: Optional[str] = _spec(default=None, doc="arm whose protocol is searched; null = the first non-baseline arm")


@dataclass
class Recipe:
    """A whole experiment: data, backbone, the default protocol, arms, baselines and seeds."""

    name: str = _spec(default="")
    seeds: list = _spec(default_factory=lambda: [0], doc="a list of ints, or a count n meaning [0..n-1]")
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    selftrain: Optional[SelfTrainConfig] = _spec(default=None, doc="self-training after fine-tuning; null = none")
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    baselines: list = _spec(default_factory=lambda: ["scratch"], choices=BASELINES)
    arms: Optional[dict] = _spec(default=None, doc="arm name -> overrides of any protocol key")
    baseline: Optional[str] = _spec(default=None, doc="on an arm: the arm it is compared with (a tuned scratch, "
                                                      "say); null = its matched scratch")
    reference: Optional[str] = _spec(default=None, choices=("natural",),
                                     doc="on an arm: natural = the natural pre-training whose gain over scratch the "
                                         "report's benefit column divides by (at most one arm)")
    tune: TuneConfig = field(default_factory=TuneConfig)
    sweep: Optional[dict] = _spec(default=None, doc="recipe key -> list of values; every point of their grid is run")

    # ---- views ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain dict with the recipe's YAML key names (`backbone.from`)."""
        return _to_plain(self)

    def sweep_points(self) -> list[tuple[dict, "Recipe"]]:
        """({key: value}, the recipe at that point) for every point of the `sweep:` grid, in order (first key
        slowest); a recipe without `sweep` is its own single point `({}, self)`."""
        if not self.sweep:
            return [({}, self)]
        keys = list(self.sweep)
        points = []
        for values in itertools.product(*(self.sweep[k] for k in keys)):
            at = dict(zip(keys, values))
            raw = apply_overrides({k: v for k, v in self.to_dict().items() if k != "sweep"},
                                  [f"{k}={format_value(v)}" for k, v in at.items()])
            try:
                point = recipe_from_dict(raw)
            except RecipeError as exc:
                where = ", ".join(f"{k}={v!r}" for k, v in at.items())
                raise RecipeError(f"{exc} (at sweep point {where})") from None
            points.append((at, point))
        return points

    def arm_recipes(self) -> dict[str, "Recipe"]:
        """Each arm's fully resolved recipe, baselines (matched scratches included) first, in run order."""
        return self._resolve()[0]

    def baseline_pairs(self) -> dict[str, str]:
        """Arm name -> the name of its matched scratch (same backbone, data and fine-tuning), for every non-baseline arm."""
        return self._resolve()[1]

    def _resolve(self) -> tuple[dict[str, "Recipe"], dict[str, str]]:
        arms = self._declared_arms()
        if "scratch" not in self.baselines or "scratch" not in arms:
            return arms, {}
        named = {arm.baseline for arm in arms.values() if arm.baseline}  # baselines chosen by arms.<name>.baseline
        baselines = {name: arm for name, arm in arms.items() if name in self.baselines or name in named}
        signatures = {json.dumps(arms["scratch"].to_dict(), sort_keys=True): "scratch"}
        pairs = {}
        for name, arm in arms.items():
            if name in baselines:
                continue
            if arm.baseline:
                pairs[name] = arm.baseline
                continue
            matched = _baseline("scratch", {k: v for k, v in arm.to_dict().items() if k != "arms"})
            key = json.dumps(matched.to_dict(), sort_keys=True)
            if key not in signatures:
                signatures[key] = f"scratch-{name}"
                if signatures[key] in arms:
                    raise RecipeError(f"recipe key 'arms.{signatures[key]}': the name is taken by the matched scratch of "
                                      f"arm {name!r} (its backbone or fine-tuning differ from the top level); rename the arm")
                baselines[signatures[key]] = matched
            pairs[name] = signatures[key]
        return {**baselines, **{n: a for n, a in arms.items() if n not in baselines}}, pairs

    def _declared_arms(self) -> dict[str, "Recipe"]:
        base = self.to_dict()
        base.pop("arms", None)
        base.pop("sweep", None)
        arms: dict[str, Recipe] = {}
        for name in self.baselines:
            if self.arms and name in self.arms:
                continue
            arms[name] = _baseline(name, base)
        if self.arms:
            for name, overrides in self.arms.items():
                merged = _deep_merge(copy.deepcopy(base), overrides or {}, prefix=f"arms.{name}")
                try:
                    arm = _build(Recipe, merged, "")
                except RecipeError as exc:
                    raise RecipeError(str(exc).replace("recipe key '", f"recipe key 'arms.{name}.", 1)) from None
                arm.arms = None
                arms[name] = arm
        else:
            arm = _build(Recipe, copy.deepcopy(base), "")
            arms[_default_arm_name(arm)] = arm
        return arms


# ---------------------------------------------------------------------------------------------------
def load_recipe(path: str, overrides: list[str] | tuple = ()) -> Recipe:
    """Read `path` with `load_yaml` (a `yaml.SafeLoader`), apply `--set` overrides, validate; raise RecipeError."""
    return recipe_from_dict(load_raw(path, overrides))


def load_raw(path: str, overrides: list[str] | tuple = ()) -> dict:
    """The recipe as a plain dict, `--set` overrides applied and `name` defaulting to the file name."""
    raw = apply_overrides(read_yaml(path), overrides)
    if not raw.get("name"):
        raw["name"] = os.path.splitext(os.path.basename(path))[0]
    return raw


def read_yaml(path: str) -> dict:
    """The recipe file as a dict; every way it can be unreadable is a one-line RecipeError."""
    if not os.path.exists(path):
        raise RecipeError(f"recipe file {path!r} not found; pass the path of a YAML recipe, e.g. recipes/fashion_overlay.yaml")
    if os.path.isdir(path):
        raise RecipeError(f"recipe file {path!r} is a directory; pass the path of a YAML recipe file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"recipe file {path!r} is not UTF-8 text; a recipe is a YAML file") from None
    except OSError as exc:
        raise RecipeError(f"recipe file {path!r} cannot be read ({exc.strerror}); check its permissions") from None
    try:
        raw = load_yaml(text)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"recipe file {path!r}{where}: YAML tags that construct objects are not allowed ({exc.problem})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"recipe file {path!r}: YAML syntax error at{where}: {problem}") from None
    if raw is None:
        raise RecipeError(f"recipe file {path!r} is empty; a recipe needs at least 'name' and 'data.dataset'")
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe file {path!r}: the top level must be a mapping of keys, got a {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply `key.path=value` strings (values read by `parse_value`: YAML, `1e-3` a number) to a raw recipe dict."""
    raw = copy.deepcopy(raw)
    for item in overrides or ():
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set pretrain.epochs=2")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise RecipeError(f"--set {item!r}: the key must be a dotted recipe key, e.g. transfer.frozen_depth")
        try:
            value = parse_value(text)
        except yaml.YAMLError:
            raise RecipeError(f"--set {key}: value {text!r} is not valid YAML; quote it, e.g. --set '{key}=[0,1]'") from None
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"--set {key}: '{'.'.join(parts[:i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def with_defaults(plain: dict) -> dict:
    """A stored recipe dict with every key a newer kpretrain added filled in with its default (as it was before
    the key existed); `plain` unchanged when it no longer validates."""
    extra = {k: plain[k] for k in plain if k not in {_yaml_key(f) for f in dataclasses.fields(Recipe)}}
    try:
        return {**recipe_from_dict({k: v for k, v in plain.items() if k not in extra}).to_dict(), **extra}
    except RecipeError:
        return plain


def recipe_from_dict(raw: dict) -> Recipe:
    """Validate a raw dict into a Recipe (and validate every arm)."""
    recipe = _build(Recipe, raw, "")
    if not recipe.name or not isinstance(recipe.name, str):
        raise RecipeError("recipe key 'name': missing; give the recipe a name, e.g. name: fashion_overlay")
    if recipe.arms is not None:
        if not isinstance(recipe.arms, dict) or not recipe.arms:
            raise RecipeError("recipe key 'arms': expected a mapping of arm name -> overrides, e.g. arms: {overlay: {pretrain: {task: overlay}}}")
        for name, overrides in recipe.arms.items():
            if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
                raise RecipeError(f"recipe key 'arms': arm name {name!r} must be letters, digits, '_' or '-'")
            if overrides is not None and not isinstance(overrides, dict):
                raise RecipeError(f"recipe key 'arms.{name}': expected a mapping of overrides, got {overrides!r}")
            for forbidden in ("name", "seeds", "data", "arms", "baselines", "evaluation", "runtime", "tune", "sweep"):
                if overrides and forbidden in overrides:
                    raise RecipeError(f"recipe key 'arms.{name}.{forbidden}': arms share {forbidden}; set it at the top level")
    size = recipe.data.image_size
    if size is not None and not (len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                        for v in size)):
        raise RecipeError(f"recipe key 'data.image_size': expected [height, width] in pixels, e.g. [32, 32], got {size!r}")
    if recipe.data.split is not None and (set(recipe.data.split) - {"train", "test"} or not all(
            isinstance(v, str) and v for v in recipe.data.split.values())):
        raise RecipeError(f"recipe key 'data.split': expected {{train: <split>, test: <split>}} (TFDS split names, "
                          f"e.g. {{test: validation}}), got {recipe.data.split!r}")
    if recipe.data.channels == 2:
        raise RecipeError("recipe key 'data.channels': 2 is not an image mode; allowed: 1 (grayscale), 3 (RGB) or null")
    if recipe.baseline is not None:
        raise RecipeError("recipe key 'baseline': only an arm names its baseline; set arms.<name>.baseline")
    for name, overrides in (recipe.arms or {}).items():
        target = (overrides or {}).get("baseline")
        others = [*recipe.baselines, *(a for a in recipe.arms if a != name and a not in recipe.baselines
                                         and not (recipe.arms[a] or {}).get("baseline"))]
        if target is not None and target not in others:
            raise RecipeError(f"recipe key 'arms.{name}.baseline': {target!r} is not another arm without a baseline "
                              f"of its own; allowed: {', '.join(others) or 'none'}")
    if recipe.reference is not None:
        raise RecipeError("recipe key 'reference': only an arm is the natural reference; "
                          "set arms.<name>.reference: natural")
    natural = [name for name, overrides in (recipe.arms or {}).items() if (overrides or {}).get("reference") is not None]
    for name in natural:
        _check_choice(recipe.arms[name]["reference"], {"choices": ("natural",)}, f"arms.{name}.reference")
        named = {(o or {}).get("baseline") for o in recipe.arms.values()}
        if name in recipe.baselines or name in named:
            raise RecipeError(f"recipe key 'arms.{name}.reference': {name!r} is a baseline; mark the arm whose "
                              f"pre-training is the natural one")
    if len(natural) > 1:
        raise RecipeError(f"recipe key 'arms.{natural[1]}.reference': only one arm may be the natural reference "
                          f"({natural[0]!r} is already); remove it from all but one of {', '.join(natural)}")
    if recipe.sweep is not None:
        _check_sweep(recipe.sweep)
        recipe.sweep_points()  # validates every point
    if recipe.runtime.deterministic and recipe.runtime.jit_compile:
        raise RecipeError("recipe key 'runtime.jit_compile': XLA is off under op determinism (Keras falls back "
                          "silently); set runtime.deterministic=false or runtime.jit_compile=false")
    for name, arm in recipe.arm_recipes().items():  # validates every arm
        where = f"arms.{name}." if recipe.arms and name in recipe.arms else ""  # the key as the user wrote it
        for stage in ("pretrain", "finetune"):
            averaging = getattr(arm, stage).averaging
            select = getattr(arm, stage).select
            if select.mode == "last" and select.patience is not None:
                raise RecipeError(f"recipe key '{where}{stage}.select.patience': early stopping keeps the best epoch; "
                                  f"set {stage}.select.mode=best, or drop patience")
            if stage == "pretrain" and arm.pretrain.probe is not None and arm.pretrain.probe.every <= 0:
                raise RecipeError(f"recipe key '{where}pretrain.probe.every': must be above 0 (data epochs between "
                                  f"probes), e.g. 1 or 0.5")
            if select.mode == "probe" and (stage == "finetune" or arm.pretrain.probe is None):
                raise RecipeError(f"recipe key '{where}{stage}.select.mode': probe picks the pre-training checkpoint "
                                  f"with the best probe score; it needs pretrain.probe (e.g. pretrain.probe: "
                                  f"{{every: 1}}) and is for pretrain.select only")
            if select.mode != "last" and averaging.method != "none":
                raise RecipeError(f"recipe key '{where}{stage}.select.mode': {select.mode} picks one epoch's weights, "
                                  f"{stage}.averaging ({averaging.method}) replaces them with an average; use one of the two")
            if averaging.method == "ema" and averaging.start_epoch:
                raise RecipeError(f"recipe key '{where}{stage}.averaging.start_epoch': Keras optimizer EMA averages from "
                                  f"the first step; start_epoch is for {stage}.averaging.method polyak (here ema)")
            found = getattr(arm, stage).optimizer.lr_find
            if not 0 < found.start_lr < found.end_lr:
                raise RecipeError(f"recipe key '{where}{stage}.optimizer.lr_find.start_lr': {found.start_lr} must be "
                                  f"above 0 and below end_lr ({found.end_lr})")
    return recipe


# ---------------------------------------------------------------------------------------------------
def _yaml_key(f: dataclasses.Field) -> str:
    return f.name[:-1] if f.name.endswith("_") else f.name


def _build(cls, raw, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe key '{prefix.rstrip('.') or '<top>'}': expected a mapping, got {raw!r}")
    fields = {_yaml_key(f): f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else f"; allowed: {', '.join(fields)}"
            raise RecipeError(f"recipe key '{prefix}{key}': unknown key{hint}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, f in fields.items():
        if key in raw:
            values[f.name] = _coerce(raw[key], hints[f.name], f, prefix + key)
        elif dataclasses.is_dataclass(hints[f.name]):
            values[f.name] = _build(hints[f.name], {}, prefix + key + ".")
    obj = cls(**values)
    if cls is Recipe:
        obj.seeds = _seeds(obj.seeds)
    return obj


def _seeds(value) -> list[int]:
    if isinstance(value, bool):
        raise RecipeError(f"recipe key 'seeds': expected a list of ints or a count, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise RecipeError(f"recipe key 'seeds': a count must be >= 1, got {value}")
        return list(range(value))
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise RecipeError(f"recipe key 'seeds': expected a non-empty list of non-negative ints or a count, got {value!r}")
    if len(set(value)) != len(value):
        raise RecipeError(f"recipe key 'seeds': seeds must be distinct, got {value!r}")
    return list(value)


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping of " + ", ".join(_yaml_key(f) for f in dataclasses.fields(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
            list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value, tp, f: dataclasses.Field, key: str):
    meta = f.metadata or {}
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and hasattr(tp, "SHORTHAND"):  # `averaging: ema` = `averaging: {method: ema}`
            value = {tp.SHORTHAND: value}
        return _build(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if sections and isinstance(value, dict):
            return _build(sections[0], value, key + ".")
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, f, key)
            except RecipeError:
                continue
        parts = [_describe(a) + (_range_text(meta) if a in (int, float) else "") for a in args if a is not type(None)]
        allowed = " or ".join(parts) + (" or null" if type(None) in args else "")
        raise RecipeError(f"recipe key '{key}': expected {allowed}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise RecipeError(f"recipe key '{key}': expected {_describe(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"recipe key '{key}': expected true or false, got {value!r}")
    if tp in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if tp is int:
            ok = ok and float(value).is_integer()
        if not ok:
            raise RecipeError(f"recipe key '{key}': expected {_describe(tp)}{_range_text(meta)}, got {value!r}")
        value = tp(value)
        if meta.get("minimum") is not None and value < meta["minimum"] or (
                meta.get("maximum") is not None and value > meta["maximum"]):
            raise RecipeError(f"recipe key '{key}': {value!r} is out of range; allowed{_range_text(meta)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"recipe key '{key}': expected a string, got {value!r}")
        _check_choice(value, meta, key)
        return value
    if tp is list:
        if key == "seeds":
            return value
        if not isinstance(value, list):
            raise RecipeError(f"recipe key '{key}': expected a list, got {value!r}")
        for item in value:
            _check_choice(item, meta, key)
        return list(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"recipe key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported recipe type {tp} for {key}")  # a bug in the schema, not bad input


def _check_choice(value, meta, key):
    choices = meta.get("choices")
    if choices and value not in choices:
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise RecipeError(f"recipe key '{key}': {value!r} is not allowed; allowed: {', '.join(map(str, choices))}{hint}")


def _range_text(meta) -> str:
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


SWEEP_FIXED = ("name", "seeds", "sweep", "tune", "runtime", "baselines")  # the plan itself, or how (not what) runs


def _check_sweep(sweep) -> None:
    if not isinstance(sweep, dict) or not sweep:
        raise RecipeError("recipe key 'sweep': expected a mapping of recipe key -> list of values, "
                          "e.g. sweep: {data.labels_per_class: [10, 100, 1000]}")
    for key, values in sweep.items():
        if not isinstance(key, str) or not all(key.split(".")) or key.split(".")[0] in SWEEP_FIXED:
            raise RecipeError(f"recipe key 'sweep.{key}': cannot be swept; allowed: keys of data, backbone, pretrain, "
                              f"transfer, finetune, evaluation or arms")
        if not isinstance(values, list) or not values or len({format_value(v) for v in values}) != len(values):
            raise RecipeError(f"recipe key 'sweep.{key}': expected a non-empty list of distinct values, got {values!r}")


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {_yaml_key(f): _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _deep_merge(base: dict, overrides: dict, prefix: str) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in ("options",):
            _deep_merge(base[key], value, f"{prefix}.{key}")
        elif isinstance(value, dict) and key not in base and "." not in key:
            if key not in {_yaml_key(f) for f in dataclasses.fields(Recipe)}:
                near = difflib.get_close_matches(key, [_yaml_key(f) for f in dataclasses.fields(Recipe)], n=1)
                hint = f"; did you mean '{prefix}.{near[0]}'?" if near else ""
                raise RecipeError(f"recipe key '{prefix}.{key}': unknown key{hint}")
            base[key] = value
        elif "." in key:
            _deep_merge(base, apply_overrides({}, [f"{key}={format_value(value)}"]), prefix)
        else:
            base[key] = value
    return base


def _baseline(name: str, base: dict) -> Recipe:
    """`scratch`: the backbone, data and fine-tuning of `base`; no pre-training, no loaded weights, default transfer."""
    raw = copy.deepcopy(base)
    raw.pop("reference", None)  # a baseline is never the natural reference (nor the matched scratch of one)
    if name == "scratch":
        raw["pretrain"] = {"epochs": 0}
        student = (raw.get("selftrain") or {}).get("student_augment")
        if student:  # the arm's model is a student trained so: its scratch is trained so too
            raw["finetune"] = {**raw.get("finetune", {}), "augment": student}
        raw["selftrain"] = None
        raw["backbone"] = {**raw["backbone"], "from": None}
        raw["transfer"] = {}
    arm = _build(Recipe, raw, "")
    arm.arms = None
    return arm


def _default_arm_name(arm: Recipe) -> str:
    if arm.backbone.from_:
        return "transfer"
    return arm.pretrain.task if arm.pretrain.task != "none" and arm.pretrain.epochs > 0 else "model"


def pretrains(arm: Recipe) -> bool:
    """Whether this arm runs a pre-training stage."""
    return arm.pretrain.task != "none" and arm.pretrain.epochs > 0


def transfers(arm: Recipe) -> bool:
    """Whether this arm starts from trained weights (pre-trained here or loaded with backbone.from)."""
    return pretrains(arm) or bool(arm.backbone.from_)
