"""The `kpretrain tune` command: validate the recipe and its space, lock its project (`DIR/<name>/`, or
`DIR/<name>-smoke/` with `--smoke`), search (resuming a search of the same recipe found there), write the outputs,
and with `--final` the tuned-scratch search and final run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, replace

import tensorflow as tf

from kpretrain.errors import InputError
from kpretrain.experiment import plan_lines, prepare
from kpretrain.experiment.progress import Progress
from kpretrain.recipe import Recipe, apply_overrides, load_raw, recipe_from_dict, with_defaults
from kpretrain.recipe.values import format_value
from kpretrain.rundir import LOCK_NAME, DirectoryLock, first_difference
from kpretrain.training.runtime import configure_runtime, describe_device, distribution_strategy
from kpretrain.tuning.final import FinalRun, run_final, scratch_search_recipe
from kpretrain.tuning.hypermodel import ProtocolHyperModel, atomic_state_files, make_tuner
from kpretrain.tuning.outputs import SIGNATURE_FILE, SearchOutputs, failed, write_search_outputs, write_signature
from kpretrain.tuning.space import default_space

SMOKE_TRIALS = 3  # --smoke runs at most this many trials unless --max-trials says otherwise
SMOKE_SUFFIX = "-smoke"  # a --smoke search's project is DIR/<name>-smoke/: it never resumes, or blocks, a real one


def project_name(name: str, smoke: bool) -> str:
    """The project (directory under `--dir`) of a search of the recipe `name`.

    Args:
        name: the recipe's name.
        smoke: whether the search runs with `--smoke`.

    Returns:
        `name`, or `name` + `SMOKE_SUFFIX` for a smoke search: smoke and real searches of a recipe never share one.
    """
    return name + (SMOKE_SUFFIX if smoke else "")


@dataclass(frozen=True)
class SearchResult:
    """A `kpretrain tune` that returned: its exit code and directory (`DIR/<name>/`, `DIR/<name>-smoke/` with
    `--smoke`); `outputs`, what the search
    wrote (None when no trial completed, or in a worker); `final`, the final run of `--final` when it ran."""

    code: int
    directory: str
    outputs: SearchOutputs | None = None
    final: FinalRun | None = None


def tune(path, sets=(), *, tuner: str | None = None, max_trials: int | None = None,
         directory: str = "tuner_runs", overwrite: bool = False, smoke: bool = False, final: bool = False,
         debug: bool = False, quiet: bool = False) -> int:
    """`kpretrain tune`: validate everything, search (resuming a finished or interrupted one), write the outputs;
    with `final`, search scratch with the same budget and run the best protocol against it on every seed.

    Args:
        path, sets, tuner, max_trials, directory, overwrite, smoke, final, debug, quiet: as for `run_search`.

    Returns:
        The exit code: 0 on success, 1 when training failed or no trial completed.

    Raises:
        InputError: bad input (RecipeError, DataError included), as the command line reports with exit code 2.
    """
    return run_search(path, sets, tuner=tuner, max_trials=max_trials, directory=directory, overwrite=overwrite,
                      smoke=smoke, final=final, debug=debug, quiet=quiet).code


def run_search(path, sets=(), *, tuner: str | None = None, max_trials: int | None = None,
               directory: str = "tuner_runs", overwrite: bool = False, smoke: bool = False, final: bool = False,
               debug: bool = False, quiet: bool = False) -> SearchResult:
    """`tune`, returning what the search wrote instead of its exit code alone.

    Args:
        path: the recipe: a YAML file's path or a raw recipe (a dict).
        sets: `--set` overrides (`key=value` strings).
        tuner: `--tuner`: `tune.tuner`, unless None.
        max_trials: `--max-trials`: `tune.max_trials`, unless None.
        directory: `--dir`: the search goes to `directory/<name>/` (`project_name`).
        overwrite: `--overwrite`: start over instead of resuming.
        smoke: `--smoke`: the smoke budget, at most `SMOKE_TRIALS` trials unless `max_trials`, in its own project
            `directory/<name>-smoke/`.
        final: `--final`: search scratch with the same budget, then run the best recipe against it.
        debug: `--debug`: tracebacks of failures.
        quiet: `-q`: no plan and no per-trial lines.

    Returns:
        A `SearchResult`; bad input raises InputError (or RecipeError, DataError) as `tune` does.
    """
    raw, recipe = _load(path, sets, tuner, max_trials, smoke)
    worker = is_worker()
    if final and worker:
        raise InputError("--final: only the chief (KERASTUNER_TUNER_ID=chief) re-runs the best recipe")
    strategy = _runtime(recipe)
    datasets: dict = {}  # loaded once: for the plan, then for every trial of both searches
    prepared = prepare(recipe, smoke=smoke, datasets=datasets)
    if not quiet:
        print("\n".join(plan_lines(prepared)))
    if not recipe.tune.space:
        raw.setdefault("tune", {})["space"] = default_space(recipe, prepared)
        recipe = recipe_from_dict(raw)
        print(f"tune: the recipe declares no tune.space; the default space: {json.dumps(raw['tune']['space'])}")
    hypermodel = ProtocolHyperModel(raw, smoke=smoke, strategy=strategy, datasets=datasets)
    hypermodel.check()
    scratch = None
    if final:  # checked before the first trial, like the main search
        scratch = ProtocolHyperModel(scratch_search_recipe(raw, hypermodel.arm_name), smoke=smoke,
                                     strategy=hypermodel.strategy, datasets=datasets)
        scratch.check()
    name = project_name(recipe.name, smoke)
    project = os.path.join(directory, name)
    with contextlib.ExitStack() as held:
        if not worker:  # the chief (or a search on its own) owns the directory; its workers share it
            try:
                held.enter_context(DirectoryLock(project, "tuner directory", "use another --dir"))
            except OSError as exc:
                raise _unwritable(directory, exc) from None
        held.enter_context(atomic_state_files())
        if overwrite and not worker:  # here, not by KerasTuner: its overwrite removes the directory, lock included
            _clear(project)
        code, outputs = _search(hypermodel, directory, name, smoke, debug, worker, quiet)
        result = SearchResult(code, project, outputs)
        if outputs is None or scratch is None:
            return result
        code, scratch_outputs = _search(scratch, project, "scratch", smoke, debug, worker, quiet)
        if scratch_outputs is None:
            return replace(result, code=code)
        ran = run_final(project, raw, outputs.best, scratch.raw, scratch_outputs.best, smoke, debug)
        return replace(result, code=ran.code, final=ran)


def _load(path, sets, tuner: str | None, max_trials: int | None, smoke: bool) -> tuple[dict, Recipe]:
    """The raw recipe (a path or a raw dict) with `sets`, `--tuner` and `--max-trials` applied, and the recipe;
    a sweep is an InputError; `--smoke` caps the trials at `SMOKE_TRIALS` unless `--max-trials` is given."""
    sets = [*sets, *([f"tune.tuner={tuner}"] if tuner else []),
            *([f"tune.max_trials={max_trials}"] if max_trials is not None else [])]
    raw = load_raw(path, sets) if isinstance(path, str) else apply_overrides(path, sets)  # a path or a raw dict
    recipe = recipe_from_dict(raw)
    if recipe.sweep:
        first = next(iter(recipe.sweep))
        raise InputError(f"kpretrain tune searches one recipe, not a sweep; tune one of its points, e.g. "
                         f"--set sweep=null --set {first}={format_value(recipe.sweep[first][0])}")
    if smoke and max_trials is None and recipe.tune.max_trials > SMOKE_TRIALS:
        raw.setdefault("tune", {})["max_trials"] = SMOKE_TRIALS
        recipe = recipe_from_dict(raw)
    return raw, recipe


def _search(hypermodel: ProtocolHyperModel, directory: str, name: str, smoke: bool, debug: bool,
            worker: bool, quiet: bool = False) -> tuple[int, SearchOutputs | None]:
    """One KerasTuner search of `hypermodel` in `directory/name` (resumed when found there): (exit code, what it
    wrote; None when no trial completed, or in a worker)."""
    recipe = recipe_from_dict(hypermodel.raw)
    arm_name = hypermodel.arm_name
    project = os.path.join(directory, name)
    signature = {**recipe.arm_recipes()[arm_name].to_dict(), "smoke": smoke}  # what a trial's score depends on
    signature["tune"].pop("max_trials")
    _check_resumable(os.path.join(project, SIGNATURE_FILE), signature, False)
    searched = ", ".join(d.key + (f" (when {d.parent} > 0)" if d.parent else "") for d in hypermodel.dims)
    print(f"tune {name}: {recipe.tune.tuner}, {recipe.tune.max_trials} trials over {searched}; arm {arm_name}, "
          f"seed {recipe.seeds[0]}, scored on validation")
    try:  # reloads the search found there; trials that were running when it stopped are run again
        search = make_tuner(recipe.tune.tuner, hypermodel, max_trials=recipe.tune.max_trials,
                            max_epochs=recipe.arm_recipes()[arm_name].finetune.epochs, directory=directory,
                            project_name=name, overwrite=False,
                            seed=recipe.seeds[0] + 1)  # KerasTuner takes seed 0 as "no seed"
    except OSError as exc:
        raise _unwritable(directory, exc) from None
    except json.JSONDecodeError as exc:  # a state file cut short by a crash before its writes were atomic
        raise InputError(f"{project}: cannot resume this search, a KerasTuner state file is unreadable "
                         f"({exc}); pass --overwrite to start over, or --dir for a new search") from None
    if not worker:
        write_signature(project, signature)
    error = None
    hypermodel.progress = progress = Progress(quiet=quiet, live=False if recipe.runtime.verbose else None)
    try:  # one display: kpretrain's lines per trial (`TrialDisplay`), not KerasTuner's
        search.search(verbose=0)
    except Exception as exc:  # noqa: BLE001 - a failure while training is exit 1
        error = exc
    finally:
        progress.close()
        hypermodel.progress = None
    if error is not None:
        return failed("search", error, debug), None
    if worker:
        print(f"worker {os.environ['KERASTUNER_TUNER_ID']}: no trials left")
        return 0, None
    outputs = write_search_outputs(search.oracle, hypermodel.dims, hypermodel.raw, project, debug,
                                   {"recipe": recipe.name, "objective": "val_accuracy", "direction": "max",
                                    "tuner": recipe.tune.tuner, "arm": arm_name, "seed": recipe.seeds[0],
                                    "smoke": smoke, "space": recipe.tune.space})
    if outputs.best is None:
        print("kpretrain: no trial completed; see the errors above (rerun with --debug for tracebacks)",
              file=sys.stderr)
        return 1, None
    return 0, outputs


def is_worker() -> bool:
    """Whether this process is a KerasTuner worker of a distributed search (not the chief).

    Returns:
        True when `KERASTUNER_ORACLE_IP` is set and `KERASTUNER_TUNER_ID` does not name the chief.
    """
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")


def _runtime(recipe: Recipe) -> tf.distribute.Strategy | None:
    """Apply the recipe's runtime settings, print the device; returns the distribution strategy."""
    configure_runtime(recipe.runtime)
    strategy = distribution_strategy(recipe.runtime.distribute)
    print(describe_device(strategy, recipe.runtime.distribute))
    return strategy


def _check_resumable(path: str, signature: dict, overwrite: bool) -> None:
    """A search resumes only with the recipe (and budget) it started with."""
    if overwrite or not os.path.exists(path):
        return
    with open(path) as fh:
        previous = with_defaults(json.load(fh))  # keys added since the search started: their defaults
    # keys only one side has (a newer schema) are skipped
    found = first_difference(previous, with_defaults(json.loads(json.dumps(signature))), skip_missing=True)
    if found:
        raise InputError(f"{os.path.dirname(path)} holds a search of a different recipe ({found[0]} differs); "
                         f"pass --overwrite to start over, or --dir for a new search")


def _difference(a, b) -> str | None:
    """First key (dotted) where two JSON-like trees differ; keys only one has (a newer schema) are skipped.
    (The name this module had before `kpretrain.rundir.first_difference`.)"""
    found = first_difference(a, b, skip_missing=True)
    return found[0] if found else None


def _unwritable(directory: str, exc: OSError) -> InputError:
    return InputError(f"--dir {directory!r}: cannot write there ({exc.strerror}); choose a writable directory")


def _clear(project: str) -> None:
    """Empty the project directory for --overwrite, keeping the lock file that this process holds."""
    for path in (os.path.join(project, name) for name in os.listdir(project) if name != LOCK_NAME):
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
