"""`kpretrain show-task` and `kpretrain.show_task`: a grid of an arm's pretext examples with their labels
(`pretext.show.save_task_grid`) and the pretext shortcut check (`pretext.shortcut`) on the recipe's data.

Not named `show_task`: a submodule `kpretrain/show_task.py` would shadow the API function `kpretrain.show_task` once
imported.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from kpretrain.errors import RecipeError
from kpretrain.recipe import Recipe, pretrains

if TYPE_CHECKING:  # imports TensorFlow
    from kpretrain.pretext.shortcut import ShortcutResult


@dataclasses.dataclass(frozen=True)
class TaskPreview:
    """What `preview_task` wrote and found.

    Attributes:
        png: the PNG grid of pretext examples, each titled with its label.
        arm: the arm whose pretext task is shown.
        task: that arm's `pretrain.task`.
        shortcuts: one `ShortcutResult` per checkable (sub-)task: `task`, cross-validated `accuracy` of a logistic
            regression on image statistics, `chance`, `examples`, `folds`; `line()` is the sentence the command
            prints.  Empty when the check was not asked for.
        architecture: the arm's backbone as `metrics.json` records it: `name`, `parameters` and its `blocks` as
            [name, layers] (what `transfer.frozen_depth` counts).
    """

    png: str
    arm: str
    task: str
    shortcuts: tuple[ShortcutResult, ...] = ()
    architecture: dict | None = None

    def blocks_line(self) -> str:
        """`backbone <name> (<n> parameters): <block> (<k> layers), ...`."""
        a = self.architecture
        return (f"backbone {a['name']} ({a['parameters']:,} parameters): "
                + ", ".join(f"{block} ({layers} layers)" for block, layers in a["blocks"]))


def shown_arm(recipe: Recipe, arm: str | None = None) -> tuple[str, Recipe]:
    """The arm whose pretext task is shown: `arm`, or the first arm with a pretext task that makes labels.

    Raises:
        RecipeError: `arm` is not an arm of the recipe, or has no such task (or no arm has one).
    """
    from kpretrain.pretext.registry import LABELLED_TASKS

    arms = recipe.arm_recipes()
    if arm is not None and arm not in arms:
        raise RecipeError(f"--arm {arm!r}: not an arm of {recipe.name}; allowed: {', '.join(arms)}")
    shown = {arm: arms[arm]} if arm else arms
    name = next((n for n, a in shown.items() if pretrains(a) and a.pretrain.task not in LABELLED_TASKS), None)
    if name is None and arm:
        raise RecipeError(f"--arm {arm!r}: it has no pretext task that makes labels to show; pick an arm with "
                          f"pre-training")
    if name is None:
        raise RecipeError("recipe key 'pretrain.task': the recipe has no pretext task that makes labels to show; "
                          "set pretrain.task, e.g. overlay")
    return name, shown[name]


def preview_task(recipe: Recipe, *, arm: str | None = None, out: str | None = None, n: int = 16,
                 shortcut_check: bool = True) -> TaskPreview:
    """Draw `n` pretext examples of an arm's task from the recipe's data and check the task for shortcuts.

    Args:
        recipe: a validated recipe.
        arm: the arm whose task is shown; default the first arm with a pretext task that makes labels.
        out: the PNG file; default `<recipe name>_task.png`.
        n: the number of examples (at least 2).
        shortcut_check: also run the shortcut check (can image statistics alone predict the pretext label?).

    Returns:
        A `TaskPreview`.

    Raises:
        RecipeError: see `shown_arm`.
        DataError: the arm's data set cannot be read.
    """
    name, chosen = shown_arm(recipe, arm)
    from kpretrain.data import load_dataset
    from kpretrain.pretext import create_task
    from kpretrain.pretext.shortcut import checkable_tasks, shortcut_check as check
    from kpretrain.pretext.show import save_task_grid

    pretrain = chosen.pretrain
    data = load_dataset(pretrain.dataset or recipe.data.dataset, recipe.data.path if not pretrain.dataset else None,
                        recipe.data.image_size, recipe.data.channels)
    n = max(2, n)
    out = out or f"{recipe.name}_task.png"
    save_task_grid(create_task(pretrain.task, pretrain.options, seed=0), data.x_train[:n].astype("float32") / 255.0,
                   out, n=n, title=f"{recipe.name}: {pretrain.task}")
    shortcuts = ()
    if shortcut_check:
        task = create_task(pretrain.task, pretrain.options, seed=0, num_classes=data.num_classes)
        shortcuts = tuple(check(sub, data.x_train) for sub in checkable_tasks(task))
    from kpretrain.export import architecture
    from kpretrain.models.blocks import describe

    backbone = architecture(chosen.backbone, data.image_shape, seed=0)
    return TaskPreview(out, name, pretrain.task, shortcuts,
                       describe(backbone, chosen.backbone.from_ or chosen.backbone.name))
