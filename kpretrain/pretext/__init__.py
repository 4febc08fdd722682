"""Pretext tasks as Keras layers, and `create_task` building one from a recipe's `pretrain` section."""

from __future__ import annotations

import inspect

from kpretrain.errors import RecipeError
from kpretrain.pretext.base import OptionError, PretextTask
from kpretrain.pretext.contrastive import ContrastiveModel, ContrastiveTask
from kpretrain.pretext.jigsaw import JigsawTask
from kpretrain.pretext.mixed import MixedTask
from kpretrain.pretext.noise import NoiseTask
from kpretrain.pretext.overlay import OverlayTask
from kpretrain.pretext.rotation import RotationTask

TASKS: dict[str, type[PretextTask]] = {
    "rotation": RotationTask,
    "noise": NoiseTask,
    "overlay": OverlayTask,
    "jigsaw": JigsawTask,
    "contrastive": ContrastiveTask,
    "mixed": MixedTask,
}
TASK_NAMES = tuple(TASKS)
DEFAULT_MIXED_TASKS = ("rotation", "noise", "overlay")

__all__ = ["PretextTask", "RotationTask", "NoiseTask", "OverlayTask", "JigsawTask", "ContrastiveTask",
           "ContrastiveModel", "MixedTask", "TASKS", "TASK_NAMES", "create_task", "task_options", "OptionError"]


def task_options(cls: type[PretextTask]) -> list[str]:
    """Option names a task class accepts (its constructor's keyword arguments, seed excluded)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params
            if p.name not in ("self", "seed") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def create_task(name: str, options: dict | None = None, seed: int = 0, *,
                key: str = "pretrain.options") -> PretextTask:
    """Build pretext task `name` with `options` (as in a recipe); bad input raises a one-line `RecipeError`.

    For `mixed`, `options.tasks` is a list of task names or a mapping name -> options (default: rotation,
    noise, overlay); each sub-task gets seed `seed + i + 1`.
    """
    if name not in TASKS:
        raise RecipeError(f"pretrain.task: unknown task {name!r}; allowed: {', '.join(TASK_NAMES)}")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise RecipeError(f"{key}: got {options!r}; allowed: a mapping of option names to values")
    cls = TASKS[name]
    allowed = task_options(cls)
    for option in options:
        if option not in allowed:
            raise RecipeError(f"{key}.{option}: unknown option for task {name!r}; allowed: {', '.join(allowed)}")
    options = dict(options)
    if name == "mixed":
        options["tasks"] = _mixed_subtasks(options.get("tasks") or DEFAULT_MIXED_TASKS, seed, f"{key}.tasks")
    try:
        return cls(seed=seed, **options)
    except OptionError as exc:
        raise RecipeError(f"{key}.{exc}") from None


def _mixed_subtasks(spec, seed: int, key: str) -> list[PretextTask]:
    if isinstance(spec, dict):
        items = [(sub, sub_options) for sub, sub_options in spec.items()]
    elif isinstance(spec, (list, tuple)) and all(isinstance(sub, str) for sub in spec):
        items = [(sub, None) for sub in spec]
    else:
        raise RecipeError(f"{key}: got {spec!r}; allowed: a list of task names or a mapping name -> options")
    for sub, _ in items:
        if sub not in TASKS or sub == "mixed":
            allowed = ", ".join(n for n in TASK_NAMES if n != "mixed")
            raise RecipeError(f"{key}: unknown task {sub!r}; allowed: {allowed}")
    return [create_task(sub, sub_options, seed + i + 1, key=f"{key}.{sub}") for i, (sub, sub_options) in
            enumerate(items)]
