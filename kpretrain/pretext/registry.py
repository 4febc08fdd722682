"""The one registry of pretext task names (importable without TensorFlow) and `create_task`."""

from __future__ import annotations

import importlib
import inspect

from kpretrain.errors import RecipeError

# name -> "module:Class"; classes are imported on first use, so recipe validation needs no TensorFlow
TASK_CLASSES = {
    "rotation": "kpretrain.pretext.rotation:RotationTask",
    "noise": "kpretrain.pretext.noise:NoiseTask",
    "overlay": "kpretrain.pretext.overlay:OverlayTask",
    "jigsaw": "kpretrain.pretext.jigsaw:JigsawTask",
    "contrastive": "kpretrain.pretext.contrastive:ContrastiveTask",
    "mixed": "kpretrain.pretext.mixed:MixedTask",
    "supervised": "kpretrain.pretext.supervised:SupervisedTask",
    "shapes": "kpretrain.pretext.shapes:ShapeSetTask",
    "fractal": "kpretrain.pretext.fractal:FractalTask",
    "simsiam": "kpretrain.pretext.simsiam:SimSiamTask",
    "barlow_twins": "kpretrain.pretext.barlow_twins:BarlowTwinsTask",
    "vicreg": "kpretrain.pretext.vicreg:VICRegTask",
    "byol": "kpretrain.pretext.byol:BYOLTask",
    "moco": "kpretrain.pretext.moco:MoCoTask",
    "dino": "kpretrain.pretext.dino:DINOTask",
    "masked_image": "kpretrain.pretext.masked_image:MaskedImageTask",
}
TASK_NAMES = tuple(TASK_CLASSES)
LABELLED_TASKS = ("supervised",)  # tasks trained on a data set's own labels, not on labels they make
SYNTHETIC_TASKS = ("shapes", "fractal")  # tasks that draw their own images (no data set images)
DEFAULT_MIXED_TASKS = ("rotation", "noise", "overlay")


def task_class(name: str):
    """The class registered as `name` in `TASK_CLASSES`, its module imported on first use.

    Args:
        name: a task name of `TASK_NAMES`.

    Returns:
        The task class (not an instance).

    Raises:
        KeyError: `name` is not registered (`create_task` checks names first).
    """
    module, cls = TASK_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def task_options(cls) -> list[str]:
    """Option names a task class accepts (its constructor's keyword arguments, seed excluded).

    Args:
        cls: a task class, e.g. `task_class("rotation")`.

    Returns:
        The names of its constructor's arguments, `self`, `seed` and `num_classes` left out, in order.
    """
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name not in ("self", "seed", "num_classes")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def create_task(name: str, options: dict | None = None, seed: int = 0, *, key: str = "pretrain.options",
                num_classes: int | None = None):
    """Build pretext task `name` with `options` (as in a recipe); bad input raises a one-line `RecipeError`.

    For `mixed`, `options.tasks` is a list of task names or a mapping name -> options (default: rotation,
    noise, overlay); each sub-task gets seed `seed + i + 1`.  `supervised` needs `num_classes`.
    Tasks are registered by name in `TASK_CLASSES` (name -> "module:Class"), imported on first use.

    Args:
        name: the task's name (`pretrain.task`), one of `TASK_NAMES`.
        options: the task's options (`pretrain.options`); None for the defaults.
        seed: the task's seed.
        key: the recipe key that the error messages name as the options' key.
        num_classes: the data set's number of classes, for a task trained on its labels (`supervised`).

    Returns:
        The task, an instance of its registered class.

    Raises:
        RecipeError: `name` is unknown, `options` is not a mapping, an option is unknown to the task or has a
            bad value (the message names `<key>.<option>`), or a `mixed` sub-task is not allowed.

    Example:

    >>> from kpretrain.pretext.registry import create_task
    >>> task = create_task("rotation", seed=0)
    >>> type(task).__name__, task.num_classes
    ('RotationTask', 4)
    >>> mixed = create_task("mixed", {"tasks": ["rotation", "noise"]}, seed=3)
    >>> [type(sub).__name__ for sub in mixed.tasks]
    ['RotationTask', 'NoiseTask']
    >>> create_task("rotation", {"angle": 3})
    Traceback (most recent call last):
    ...
    kpretrain.errors.RecipeError: pretrain.options.angle: unknown option for task 'rotation'; allowed: angles, all_rotations
    """
    from kpretrain.pretext.base import OptionError

    if name not in TASK_CLASSES:
        raise RecipeError(f"pretrain.task: unknown task {name!r}; allowed: {', '.join(TASK_NAMES)}")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise RecipeError(f"{key}: got {options!r}; allowed: a mapping of option names to values")
    cls = task_class(name)
    allowed = task_options(cls)
    for option in options:
        if option not in allowed:
            raise RecipeError(f"{key}.{option}: unknown option for task {name!r}; allowed: {', '.join(allowed) or 'none'}")
    options = dict(options)
    if name == "mixed":
        options["tasks"] = _mixed_subtasks(options.get("tasks") or DEFAULT_MIXED_TASKS, seed, f"{key}.tasks")
    if name in LABELLED_TASKS:
        options["num_classes"] = num_classes
    try:
        return cls(seed=seed, **options)
    except OptionError as exc:
        raise RecipeError(f"{key}.{exc}") from None


def _mixed_subtasks(spec, seed: int, key: str) -> list:
    if isinstance(spec, dict):
        items = [(sub, sub_options) for sub, sub_options in spec.items()]
    elif isinstance(spec, (list, tuple)) and all(isinstance(sub, str) for sub in spec):
        items = [(sub, None) for sub in spec]
    else:
        raise RecipeError(f"{key}: got {spec!r}; allowed: a list of task names or a mapping name -> options")
    allowed = [n for n in TASK_NAMES if n != "mixed" and n not in LABELLED_TASKS and n not in SYNTHETIC_TASKS]
    for sub, _ in items:
        if sub not in allowed:
            raise RecipeError(f"{key}: unknown task {sub!r}; allowed: {', '.join(allowed)}")
    return [create_task(sub, sub_options, seed + i + 1, key=f"{key}.{sub}") for i, (sub, sub_options) in
            enumerate(items)]
