"""The Python API's toolkit functions: `kpretrain.lr_find`, `kpretrain.show_task` and `kpretrain.compare`
(`kpretrain lr-find`, `show-task` and `report`), re-exported by `kpretrain.api`."""

from __future__ import annotations

import os

from kpretrain.api_results import Comparison
from kpretrain.errors import InputError
from kpretrain.lr_range import LRFindRun
from kpretrain.recipe import recipe_from_dict
from kpretrain.recipe.files import raw_recipe as _raw
from kpretrain.runtime_logs import start_tensorflow
from kpretrain.task_preview import TaskPreview


def lr_find(recipe, *, stage: str = "finetune", arm: str | None = None, out: str | None = None, overrides=None,
            start_lr: float | None = None, end_lr: float | None = None, steps: int | None = None,
            suggestion: str | None = None, smoke: bool = False) -> LRFindRun:
    """The learning-rate range test of one stage of one arm, as `kpretrain lr-find` does.

    Trains the stage's real model (for "finetune", after the arm's pre-training and transfer) on its own batches
    for the recipe's first seed while the learning rate grows exponentially, restores it, and writes the curve and
    the suggested learning rates to `out/lr_find.json` and `out/lr_find.png`.

    Args:
        recipe: a path, a dict or a `kpretrain.recipe.Recipe` (not a sweep).
        stage: "pretrain" or "finetune".
        arm: default the first arm that is not a baseline (a baseline such as scratch is allowed).
        out: the directory written; default `runs/<name>-lr-find/<UTC timestamp>/`.
        overrides: `{key: value}` or `["key=value", ...]`, as `--set`.
        start_lr, end_lr, steps, suggestion: replace the stage's `optimizer.lr_find` values (`suggestion`:
            "steepest", "valley" or "minimum", the one `suggested_lr` is).
        smoke: tiny data, and at most 50 steps unless `steps` is given.

    Returns:
        An `LRFindRun`: `arm`, `stage`, `seed`, `settings`, `result` (the curve and the suggestions),
        `suggested_lr`, `out_dir`.

    Raises:
        RecipeError, DataError, InputError: bad input (the command line's exit 2), e.g. an unknown arm, a sweep, or
            `stage="pretrain"` for an arm without pre-training.

    Example:

    ```python
    found = kpretrain.lr_find("recipes/fashion_overlay.yaml", stage="pretrain", smoke=True)
    kpretrain.run("recipes/fashion_overlay.yaml", overrides={"pretrain.optimizer.learning_rate": found.suggested_lr})
    ```
    """
    from kpretrain.lr_range import plan_lr_find, run_lr_find

    resolved = recipe_from_dict(_raw(recipe, overrides))
    if resolved.runtime.distribute == "multi_worker":
        raise InputError("runtime.distribute=multi_worker: start `kpretrain lr-find` on every worker instead")
    plan = plan_lr_find(resolved, stage=stage, arm=arm, out=out, start_lr=start_lr, end_lr=end_lr, steps=steps,
                        suggestion=suggestion, smoke=smoke)
    start_tensorflow()  # as kpretrain.run: no C++ start-up lines, no retracing warnings
    return run_lr_find(plan, log=print)


def show_task(recipe, *, arm: str | None = None, out: str | None = None, n: int = 16, overrides=None,
              shortcut_check: bool = True) -> TaskPreview:
    """A grid of pretext examples with their labels, and the pretext shortcut check, as `kpretrain show-task` does.

    Args:
        recipe: a path, a dict or a `kpretrain.recipe.Recipe`.
        arm: the arm whose pretext task is shown; default the first arm with a task that makes labels.
        out: the PNG file; default `<recipe name>_task.png`.
        n: the number of examples.
        overrides: `{key: value}` or `["key=value", ...]`, as `--set`.
        shortcut_check: also check whether image statistics alone predict the pretext label.

    Returns:
        A `TaskPreview`: `png`, `arm`, `task`, and `shortcuts` (one `ShortcutResult` per checkable task: its
        cross-validated `accuracy` next to `chance`).

    Raises:
        RecipeError, DataError: an unknown arm, no pretext task that makes labels, or unreadable data.

    Example:

    ```python
    shown = kpretrain.show_task("recipes/fashion_overlay.yaml", out="overlay.png")
    [(s.task, s.accuracy, s.chance) for s in shown.shortcuts]
    ```
    """
    from kpretrain.task_preview import preview_task

    resolved = recipe_from_dict(_raw(recipe, overrides))
    start_tensorflow()  # as kpretrain.run: no C++ start-up lines, no retracing warnings
    return preview_task(resolved, arm=arm, out=out, n=n,
                        shortcut_check=shortcut_check)


def compare(run_dirs, *, plot: str | None = None) -> Comparison:
    """One table across run directories with intervals and paired tests, as `kpretrain report` does.

    Named `compare`, not `report`: `kpretrain.report` is the subpackage of report writers, which would shadow a
    function of that name as soon as anything imports it.

    Args:
        run_dirs: run directories written by `kpretrain run` or `kpretrain.run` (or sweep points, or a sweep), or
            one of them.
        plot: also draw every run's arms with their 95 % intervals into this PNG file.

    Returns:
        A `Comparison`: its `rows`, and `render(format)` for Markdown, CSV or JSON text.

    Raises:
        InputError: a directory has no readable `metrics.json`.

    Example:

    ```python
    table = kpretrain.compare(["runs/fashion_overlay/20261127T201500Z", "runs/mnist_mixed/20261128T090000Z"])
    open("runs.csv", "w").write(table.render("csv"))
    ```
    """
    from kpretrain.report.combine import combined_rows

    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    rows = combined_rows([os.fspath(d) for d in run_dirs])
    if plot is not None:
        from kpretrain.report.plots import plot_runs

        plot_runs(rows, plot)
    return Comparison(rows, plot)
