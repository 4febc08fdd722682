"""The recipe's schema: one dataclass per section, and `Recipe`, the whole experiment.

Each field carries its validation metadata (`_spec`: allowed `choices`, `minimum`, `maximum`, `doc`), which
`kpretrain.recipe.coerce` reads when it builds a section from raw values.  The sections on how a run is
evaluated, executed and searched (`evaluation`, `runtime`, `tune`) are in `kpretrain.recipe.run_config`; the
settings every training stage has (`optimizer`, `averaging`, `select`) in `kpretrain.recipe.stage_config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from kpretrain.pretext.registry import TASK_NAMES
from kpretrain.recipe.coerce import _seeds, _to_plain, _yaml_key
from kpretrain.recipe.fields import _spec
from kpretrain.recipe.run_config import LOGGERS, EvaluationConfig, RuntimeConfig, TuneConfig  # noqa: F401 - sections
from kpretrain.recipe.stage_config import (AveragingConfig, LRFindConfig, OptimizerConfig,  # noqa: F401 - sections
                                           SelectConfig)

PRETEXT_TASKS = ("none", *TASK_NAMES)
BASELINES = ("scratch", "scratch_compute")


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

    name: str = _spec(default="small_cnn", doc="a registered backbone (small_cnn, resnet_small, mlp), "
                                               "keras.applications.<Name>, package.module:function (a factory) or "
                                               "a .keras file (its architecture)")
    from_: Optional[str] = _spec(default=None, doc="backbone.keras or SavedModel directory of an earlier run")
    options: dict = _spec(default_factory=dict, doc="keyword arguments of the backbone builder")
    weights: Optional[str] = _spec(default=None, doc="a local weights file of a keras.applications backbone "
                                                     "(nothing is downloaded); null = fresh seeded weights")
    init: str = _spec(default="random", choices=("random", "file", "fresh"), finish=lambda v: "random" if v == "fresh" else v,
                      doc="a .keras backbone.name: random (fresh seeded weights) or file (the file's own weights); "
                          "fresh: 0.6.0's name for random, deprecated")
    blocks: Optional[list] = _spec(default=None, doc="the backbone's blocks (frozen depth, unfreezing): layer-name "
                                                     "prefixes or regular expressions, one per block; null = found "
                                                     "from the model")


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
class Recipe:
    """A whole experiment: data, backbone, the default protocol, arms, baselines and seeds."""

    name: str = _spec(default="")
    seeds: list = _spec(default_factory=lambda: [0], doc="a list of ints, or a count n meaning [0..n-1]", finish=_seeds)
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    selftrain: Optional[SelfTrainConfig] = _spec(default=None, doc="self-training after fine-tuning; null = none")
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    baselines: list = _spec(default_factory=lambda: ["scratch"], choices=BASELINES,
                            doc="scratch: each arm's matched scratch | scratch_compute (with scratch): that scratch "
                                "given as many more optimizer steps as the arm's pre-training took")
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
        """The recipe as a plain dict (nested dicts and lists) with its YAML key names (`backbone.from`).

        Returns:
            A new dict that `recipe_from_dict` turns back into an equal recipe.
        """
        return _to_plain(self)

    def sweep_points(self) -> list[tuple[dict, "Recipe"]]:
        """Every point of the `sweep:` grid, in order (first key slowest), with its recipe.

        Returns:
            A list of `({key: value}, the recipe at that point)` pairs; a recipe without `sweep` is its own single
            point `[({}, self)]`.

        Raises:
            RecipeError: a point's recipe does not validate; the message names the point.
        """
        from kpretrain.recipe.rules import recipe_from_dict  # the layers above: they build and check recipes
        from kpretrain.recipe.sweep import sweep_points

        return sweep_points(self, recipe_from_dict)

    def arm_recipes(self) -> dict[str, "Recipe"]:
        """Each arm's fully resolved recipe, baselines (matched scratches included) first, in run order.

        Returns:
            A dict arm name -> resolved `Recipe` (see `kpretrain.recipe.arms.resolve_arms`).

        Raises:
            RecipeError: an arm's overrides do not validate (`recipe_from_dict` has checked that already).

        Example:

        >>> from kpretrain.recipe import recipe_from_dict
        >>> recipe = recipe_from_dict({"name": "demo", "arms": {
        ...     "rotation": {"pretrain": {"task": "rotation"}},
        ...     "wide": {"backbone": {"options": {"widths": [64, 128, 256]}}}}})
        >>> list(recipe.arm_recipes())
        ['scratch', 'scratch-wide', 'rotation', 'wide']
        """
        from kpretrain.recipe.arms import resolve_arms

        return resolve_arms(self)[0]

    def baseline_pairs(self) -> dict[str, str]:
        """Which baseline each non-baseline arm is compared with.

        An arm's matched scratch has the same backbone, data and fine-tuning (`scratch`, or `scratch-<arm>` when
        they differ from the top level's); an arm with `baseline:` is compared with that arm instead.

        Returns:
            A dict arm name -> its baseline's name; empty when the recipe has no `scratch` baseline.

        Example:

        >>> from kpretrain.recipe import recipe_from_dict
        >>> recipe = recipe_from_dict({"name": "demo", "arms": {
        ...     "rotation": {"pretrain": {"task": "rotation"}},
        ...     "wide": {"backbone": {"options": {"widths": [64, 128, 256]}}}}})
        >>> recipe.baseline_pairs()
        {'rotation': 'scratch', 'wide': 'scratch-wide'}
        """
        from kpretrain.recipe.arms import resolve_arms

        return resolve_arms(self)[1]

    def compute_baselines(self) -> dict:
        """The compute-matched scratches (`baselines: [scratch, scratch_compute]`; see `arms.compute_scratches`).

        Returns:
            A dict name -> `kpretrain.recipe.arms.ComputeMatch`; empty without `scratch_compute` or pre-training.

        Example:

        >>> from kpretrain.recipe import recipe_from_dict
        >>> recipe_from_dict({"name": "demo", "baselines": ["scratch", "scratch_compute"],
        ...                   "pretrain": {"task": "rotation"}}).compute_baselines()
        {'scratch_compute': ComputeMatch(arms=('rotation',), extends='scratch')}
        """
        from kpretrain.recipe.arms import resolve_arms

        return resolve_arms(self)[2]


RECIPE_KEYS = tuple(_yaml_key(f) for f in dataclasses.fields(Recipe))  # the top-level keys, in order
