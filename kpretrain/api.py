"""The Python API, for notebooks and scripts: `kpretrain.run`, `kpretrain.tune`, `kpretrain.lr_find`,
`kpretrain.show_task`, `kpretrain.compare` and `kpretrain.load_backbone`.

They run the same code as the command line (`kpretrain run`, `tune`, `lr-find`, `show-task`, `report`) and raise
the same typed errors (`RecipeError`, `DataError`, `InputError`) where the command line exits 2.  `kpretrain report`'s
function is `compare`: `kpretrain.report` is the subpackage of report writers (`kpretrain/report/`), and a function
of that name would be shadowed by it as soon as anything imports it.
"""

from __future__ import annotations

import json
import os

from kpretrain.api_results import ArmResult, Comparison, RunResult, TuneResult  # noqa: F401 - the API's results
from kpretrain.errors import InputError
from kpretrain.lr_range import LRFindRun
from kpretrain.recipe import Recipe, apply_overrides, load_raw, recipe_from_dict
from kpretrain.recipe.values import format_value, load_yaml
from kpretrain.task_preview import TaskPreview


def _overrides(overrides) -> list[str]:
    """`--set` strings from a list of them or a {key: value} mapping (values as `format_value` writes them)."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={format_value(v)}" for k, v in overrides.items()]
    return list(overrides)


def _raw(recipe, overrides=None) -> dict:
    """The raw recipe (plain dict) of a path, a dict or a `Recipe`, with `overrides` applied."""
    if isinstance(recipe, Recipe):
        recipe = recipe.to_dict()
    if isinstance(recipe, dict):
        return apply_overrides(json.loads(json.dumps(recipe)), _overrides(overrides))
    if isinstance(recipe, (str, os.PathLike)):
        return load_raw(os.fspath(recipe), _overrides(overrides))
    raise InputError(f"recipe: expected a path, a dict or a kpretrain Recipe, got {type(recipe).__name__}")


def run(recipe, *, out: str | None = None, overrides=None, smoke: bool = False, callbacks=None,
        backbone=None) -> RunResult:
    """Run every seed x arm of a recipe, as `kpretrain run` does.

    A directory holding an unfinished run of the same recipe is resumed; a finished one is read back.

    Args:
        recipe: a path, a dict (a recipe as YAML would load) or a `kpretrain.recipe.Recipe`.
        out: the run directory; default `runs/<name>/<UTC timestamp>/`.
        overrides: `{key: value}` or `["key=value", ...]`, as `--set`.
        smoke: tiny data and a few batches (`--smoke`).
        callbacks: your own Keras callbacks for every stage, or `{"pretrain": [...], "finetune": [...]}`.
        backbone: your own model as the backbone of every arm (`backbone.name`): a `keras.Model` (its
            architecture, saved as `user_backbone.keras` in the run directory; fresh seeded weights unless
            `backbone.init: file`), or a factory `function(input_shape, seed, **options) -> keras.Model` (recorded
            by its import path `module:function`; bind options with `functools.partial`).  It replaces the
            recipe's `backbone` section (`init` and `blocks` are kept).  Each arm is compared with a scratch of
            the same architecture.

    Returns:
        A `RunResult`.

    Raises:
        RecipeError, DataError, InputError: bad input (the command line's exit 2); `out` holds a run of another
            recipe or is in use; `runtime.distribute: multi_worker` (start `kpretrain run` on every worker).

    Example:

    ```python
    result = kpretrain.run("recipes/fashion_overlay.yaml", smoke=True, overrides={"seeds": [0, 1]})
    result.arms["overlay"].mean, result.verdicts, result.report()
    ```
    """
    from kpretrain.experiment import make_run
    from kpretrain import io
    from kpretrain.rundir import default_out_dir, run_directory

    raw = _raw(recipe, overrides)
    resolved = recipe_from_dict(raw)
    out_dir = out or default_out_dir(resolved.name)
    if backbone is not None:
        kept = {k: v for k, v in (raw.get("backbone") or {}).items() if k in ("init", "blocks")}
        raw["backbone"] = {**kept, "name": _backbone_name(backbone, out_dir)}  # the recipe's options were its own
        resolved = recipe_from_dict(raw)
    if resolved.runtime.distribute == "multi_worker":
        raise InputError("runtime.distribute=multi_worker: start `kpretrain run` on every worker instead")
    with run_directory(out_dir, resolved.to_dict(), smoke) as state:
        if state == "finished":
            return RunResult(out_dir, io.read_json(os.path.join(out_dir, "metrics.json")))
        if backbone is not None and not os.path.exists(resolved.backbone.name) and hasattr(backbone, "save"):
            with io.atomic_path(resolved.backbone.name) as tmp:  # a keras.Model: its architecture, in the run
                backbone.save(tmp)
        experiment = make_run(resolved, smoke=smoke, callbacks=callbacks)
        print("\n".join(experiment.prepare()))
        metrics = experiment.run(out_dir)
    return RunResult(out_dir, metrics)


def _backbone_name(backbone, out_dir: str) -> str:
    """`backbone.name` of a model object (saved in the run directory) or of a factory (its import path; a factory
    that cannot be imported by that path is registered in this process)."""
    import importlib

    import keras

    from kpretrain.models.backbones import BACKBONES

    if isinstance(backbone, keras.Model):
        return os.path.join(out_dir, "user_backbone.keras")
    if not callable(backbone):
        raise InputError(f"backbone: expected a keras.Model or a factory function(input_shape, seed, **options), "
                         f"got {type(backbone).__name__}")
    module = getattr(backbone, "__module__", None) or "__main__"
    qualname = getattr(backbone, "__qualname__", None) or f"{type(backbone).__name__}_{id(backbone):x}"
    name = f"{module}:{qualname}"
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        found = None
    if found is not backbone:  # a lambda or a nested function: usable in this process only
        BACKBONES[name] = backbone
    return name


def tune(recipe, *, overrides=None, tuner: str | None = None, max_trials: int | None = None,
         directory: str = "tuner_runs", overwrite: bool = False, smoke: bool = False,
         final: bool = False) -> TuneResult:
    """Search a recipe's `tune.space` with KerasTuner, scored on validation, as `kpretrain tune` does.

    Without `tune.space`, a default space over pre-training epochs, learning rate and frozen depth.  A search found
    in `directory/<name>/` is resumed.

    Args:
        recipe: a path, a dict or a `kpretrain.recipe.Recipe`.
        overrides: `{key: value}` or `["key=value", ...]`, as `--set`.
        tuner: "random", "bayesian", "hyperband" or "grid"; default `tune.tuner`.
        max_trials: default `tune.max_trials`; raising it resumes with more trials.
        directory: the tuner directory; results in `directory/<name>/`.
        overwrite: start the search over instead of resuming it.
        smoke: tiny data, a few batches per trial, at most 3 trials unless `max_trials`.
        final: then search scratch with the same budget and run every seed of the best recipe against it.

    Returns:
        A `TuneResult`.

    Raises:
        RecipeError, DataError, InputError: bad input (the command line's exit 2).
        RuntimeError: the search failed, e.g. no trial completed.

    Example:

    ```python
    searched = kpretrain.tune("recipes/fashion_tune.yaml", smoke=True, directory="tuner_runs")
    kpretrain.run(searched.best_recipe, smoke=True)
    ```
    """
    from kpretrain import tuning
    from kpretrain import io

    raw = _raw(recipe, overrides)
    searched = tuning.run_search(raw, tuner=tuner, max_trials=max_trials, directory=directory,
                                 overwrite=overwrite, smoke=smoke, final=final)
    project = os.path.join(directory, raw["name"])
    if searched.code != 0:
        raise RuntimeError(f"kpretrain tune {raw['name']}: the search failed (exit {searched.code}); "
                           f"see the messages above")
    if searched.outputs is None:  # a KerasTuner worker: what the chief wrote
        best = io.read_json(os.path.join(project, "best.json"))
        with open(os.path.join(project, "best_recipe.yaml")) as fh:
            best_recipe = load_yaml(fh)
    else:  # what the search wrote, as best.json and best_recipe.yaml hold it
        best, best_recipe = searched.outputs.written, searched.outputs.best_recipe
    finished = None if searched.final is None else RunResult(searched.final.run_dir, searched.final.metrics)
    return TuneResult(project, best["best"]["values"], best["best"]["score"], best_recipe, best["trials"], finished)


def load_backbone(run_dir: str, arm: str | None = None, seed: int | None = None):
    """The pre-trained backbone (a Keras model) of an arm and seed of a finished run.

    Args:
        run_dir: a run directory (a sweep point's directory for a sweep).
        arm: the arm; default the first pre-trained arm.
        seed: the seed; default the arm's first.

    Returns:
        Without `arm` and `seed`, the exported `backbone.keras` (the first pre-trained arm, first seed), loaded in
        Keras safe mode; otherwise the backbone rebuilt from the run's recipe with the weights that seed's
        pre-training unit recorded.

    Raises:
        InputError: not a finished run directory, or the arm has no pre-trained backbone.

    Example:

    ```python
    backbone = kpretrain.load_backbone("runs/api_example", arm="overlay", seed=1)
    features = backbone(keras.ops.zeros((1, 28, 28, 1)))
    ```
    """
    from kpretrain.export import pretrained_backbone, read_run
    from kpretrain.models.loading import load_backbone as load_exported

    metrics, recipe = read_run(run_dir)
    if arm is None and seed is None:
        return load_exported(run_dir, tuple(metrics["data"]["image_shape"]))[0]
    if arm is None:
        arm = next((name for name, e in metrics["arms"].items() if e.get("pretrain_unit")), "")
    return pretrained_backbone(run_dir, metrics, recipe, arm,
                               seed if seed is not None else (metrics["arms"].get(arm) or {}).get("seeds", [0])[0])


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

    return preview_task(recipe_from_dict(_raw(recipe, overrides)), arm=arm, out=out, n=n,
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
