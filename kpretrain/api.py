"""The Python API, for notebooks and scripts: `kpretrain.run`, `kpretrain.tune`, `kpretrain.lr_find`,
`kpretrain.show_task`, `kpretrain.compare` and `kpretrain.load_backbone`.

They run the same code as the command line (`kpretrain run`, `tune`, `lr-find`, `show-task`, `report`) and raise
the same typed errors (`RecipeError`, `DataError`, `InputError`) where the command line exits 2.  `kpretrain report`'s
function is `compare`: `kpretrain.report` is the subpackage of report writers (`kpretrain/report/`), and a function
of that name would be shadowed by it as soon as anything imports it.
"""

from __future__ import annotations

import contextlib
import io as _io
import os

from kpretrain.api_results import ArmResult, Comparison, RunResult, TuneResult  # noqa: F401 - the API's results
from kpretrain.api_tools import LRFindRun, TaskPreview, compare, lr_find, show_task  # noqa: F401 - report, lr-find, show-task
from kpretrain.callback_context import CallbackContext  # noqa: F401 - what callbacks are told
from kpretrain.errors import InputError
from kpretrain.recipe import recipe_from_dict
from kpretrain.recipe.files import override_strings as _overrides, raw_recipe as _raw
from kpretrain.recipe.values import load_yaml


def _progress(quiet: bool, verbose: bool):
    """The progress display of an API call, as the command line's `-q` / `-v` make it: nothing but warnings
    (`quiet`), plain per-unit lines (`verbose`), or by default the live display where it can be drawn."""
    from kpretrain.experiment.progress import Progress

    return Progress(quiet=quiet, live=False if verbose else None)


def run(recipe, *, out: str | None = None, overrides=None, smoke: bool = False, callbacks=None,
        backbone=None, quiet: bool = False, verbose: bool = False, workers: int | None = None,
        address: str | None = None) -> RunResult:
    """Run every seed x arm of a recipe, as `kpretrain run` does.

    A directory holding an unfinished run of the same recipe is resumed; a finished one is read back.
    TensorFlow's C++ start-up lines and its retracing warnings are silenced, as on the command line.

    Args:
        recipe: a path, a dict (a recipe as YAML would load) or a `kpretrain.recipe.Recipe`.
        out: the run directory; default `runs/<name>/<UTC timestamp>/`.
        overrides: `{key: value}` or `["key=value", ...]`, as `--set`.
        smoke: tiny data and a few batches (`--smoke`).
        callbacks: your own Keras callbacks for every stage, or `{"pretrain": [...], "finetune": [...]}`.  Before
            each stage, each gets `callback.kpretrain_context`, a `kpretrain.CallbackContext` (stage, arm, seed,
            run_dir, unit, arms), and its `set_context(context)` is called when it has one.
        backbone: your own model as the backbone of every arm (`backbone.name`): a `keras.Model` (its
            architecture, saved as `user_backbone.keras` in the run directory; fresh seeded weights unless
            `backbone.init: file`), or a factory `function(input_shape, seed, **options) -> keras.Model` (recorded
            by its import path `module:function`; bind options with `functools.partial`).  It replaces the
            recipe's `backbone` section (`init` and `blocks` are kept).  Each arm is compared with a scratch of
            the same architecture.
        quiet: print nothing to stdout (errors are raised; warnings still go to stderr).
        verbose: plain lines, one per unit, instead of the live display.
        workers: train the units on a local Dask cluster of this many worker processes (`--workers`), with the
            same numbers; `runtime.executor: dask` without it starts one worker per GPU or per two CPU cores.
        address: train the units on the running Dask cluster whose scheduler is there (`--address`).

    Returns:
        A `RunResult`: its repr is the results table; `to_pandas()`, `history(arm, seed)`.

    Raises:
        RecipeError, DataError, InputError: bad input (the command line's exit 2); `out` holds a run of another
            recipe or is in use; `runtime.distribute: multi_worker` (start `kpretrain run` on every worker).

    Example:

    ```python
    result = kpretrain.run("recipes/fashion_overlay.yaml", smoke=True, overrides={"seeds": [0, 1]}, quiet=True)
    result  # the table: arm, mean, sd, 95 % interval, difference to the baseline, Holm p
    result.arms["overlay"].mean, result.verdicts, result.history("overlay", seed=0)
    ```
    """
    from kpretrain.runtime_logs import start_tensorflow

    raw = _raw(recipe, overrides)
    resolved = recipe_from_dict(raw)
    start_tensorflow(threads=resolved.runtime.threads)  # before anything imports it: no C++ start-up lines, ...
    from kpretrain import io
    from kpretrain.experiment import make_run
    from kpretrain.rundir import default_out_dir, run_directory

    out_dir = out or default_out_dir(resolved.name)
    if backbone is not None:
        kept = {k: v for k, v in (raw.get("backbone") or {}).items() if k in ("init", "blocks")}
        raw["backbone"] = {**kept, "name": _backbone_name(backbone, out_dir)}  # the recipe's options were its own
        resolved = recipe_from_dict(raw)
    if resolved.runtime.distribute == "multi_worker":
        raise InputError("runtime.distribute=multi_worker: start `kpretrain run` on every worker instead")
    from kpretrain.experiment.executor import execute, executor_for

    executor = executor_for(resolved, workers=workers, address=address)
    if executor is not None and callbacks:
        raise InputError("callbacks= run in this process, but workers= / address= train the units in other "
                         "processes; drop one of them")
    with run_directory(out_dir, resolved.to_dict(), smoke) as state:
        if state == "finished":
            return RunResult(out_dir, io.read_json(os.path.join(out_dir, "metrics.json")))
        if backbone is not None and not os.path.exists(resolved.backbone.name) and hasattr(backbone, "save"):
            with io.atomic_path(resolved.backbone.name) as tmp:  # a keras.Model: its architecture, in the run
                backbone.save(tmp)
        progress = _progress(quiet, verbose)
        experiment = make_run(resolved, smoke=smoke, callbacks=callbacks, progress=progress)
        plan = experiment.prepare()
        progress.log("\n".join(plan))
        try:
            metrics = execute(experiment, out_dir, executor)
        finally:
            progress.close()
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
         final: bool = False, quiet: bool = False, verbose: bool = False) -> TuneResult:
    """Search a recipe's `tune.space` with KerasTuner, scored on validation, as `kpretrain tune` does.

    Without `tune.space`, a default space over pre-training epochs, learning rate (searched in trials that pre-train)
    and frozen depth.  A search found in `directory/<name>/` (`directory/<name>-smoke/` with `smoke`) is resumed.

    Args:
        recipe: a path, a dict or a `kpretrain.recipe.Recipe`.
        overrides: `{key: value}` or `["key=value", ...]`, as `--set`.
        tuner: "random", "bayesian", "hyperband" or "grid"; default `tune.tuner`.
        max_trials: default `tune.max_trials`; raising it resumes with more trials.
        directory: the tuner directory; results in `directory/<name>/`.
        overwrite: start the search over instead of resuming it.
        smoke: tiny data, a few batches per trial, at most 3 trials unless `max_trials`; in its own project,
            `directory/<name>-smoke/`, apart from the real search.
        final: then search scratch with the same budget and run every seed of the best recipe against it.
        quiet: print nothing (errors are raised).
        verbose: Keras' per-epoch lines in every trial (`runtime.verbose=2`, as `kpretrain tune -v`).

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
    from kpretrain import io
    from kpretrain.runtime_logs import start_tensorflow

    raw = _raw(recipe, [*_overrides(overrides), *(["runtime.verbose=2"] if verbose else [])])
    start_tensorflow(threads=recipe_from_dict(raw).runtime.threads)  # before anything imports it: no C++ lines
    from kpretrain import tuning

    with contextlib.redirect_stdout(_io.StringIO()) if quiet else contextlib.nullcontext():
        searched = tuning.run_search(raw, tuner=tuner, max_trials=max_trials, directory=directory,
                                     overwrite=overwrite, smoke=smoke, final=final, quiet=quiet)
    project = searched.directory  # directory/<name>/, or directory/<name>-smoke/ with smoke
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
