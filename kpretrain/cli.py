"""Command line: `kpretrain run | show-task | tune | lr-find | export | report`.

Exit codes: 0 success, 1 failure while training, 2 bad input (one line naming the key or file, no traceback
unless --debug, no run directory left behind).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import traceback

from kpretrain.cli_parser import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, verbosity, build_parser  # noqa: F401
from kpretrain.runtime_logs import start_tensorflow as _start_tensorflow  # TF's logs quiet: kpretrain/__init__


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `kpretrain`: what it does and its commands
        parser.print_help()
        return EXIT_OK
    handler = {"run": cmd_run, "show-task": cmd_show_task, "tune": cmd_tune, "lr-find": cmd_lr_find,
               "export": cmd_export, "report": cmd_report}[args.command]
    from kpretrain.errors import InputError

    try:
        return handler(args)
    except InputError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"kpretrain: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("kpretrain: interrupted", file=sys.stderr)
        return 130


def cmd_run(args) -> int:
    from kpretrain.errors import InputError
    from kpretrain.recipe import load_recipe

    recipe_path, smoke = args.recipe, args.smoke
    if args.resume is not None:
        if args.recipe or (args.out and os.path.abspath(args.out) != os.path.abspath(args.resume)):
            raise InputError("--resume DIR takes the recipe and run directory from DIR; drop the recipe and --out")
        recipe_path = os.path.join(args.resume, "recipe.yaml")
        if not os.path.exists(recipe_path):
            raise InputError(_no_recipe_there(args.resume))
        from kpretrain.rundir import started_with_smoke

        smoke = smoke or started_with_smoke(args.resume)
        args.out = args.resume
    elif not args.recipe:
        raise InputError("kpretrain run needs a recipe (e.g. recipes/fashion_overlay.yaml) or --resume DIR")
    recipe = load_recipe(recipe_path, [*args.sets, *verbosity(args)])
    if args.dry_run:
        _start_tensorflow(args.debug, threads=recipe.runtime.threads)
        print("\n".join(_plan(_experiment(recipe, smoke, args), args)))
        executor = _executor(recipe, args)
        if executor is not None:
            print(f"executor: dask, units on {executor.describe()}")
        print("dry run: recipe and data are valid; nothing was trained")
        return EXIT_OK
    if recipe.runtime.distribute == "multi_worker":  # which process is the chief is known once the strategy exists
        _start_tensorflow(args.debug, "multi_worker", recipe.runtime.threads)
        from kpretrain.training.runtime import distribution_strategy, is_chief

        if not is_chief(distribution_strategy("multi_worker")):  # it trains; the chief alone writes the run directory
            experiment = _experiment(recipe, smoke, args)
            plan = _plan(experiment, args)
            out_dir = tempfile.mkdtemp(prefix="kpretrain-worker-")
            print(f"multi-worker: this worker's files go to {out_dir} (removed at the end); the chief writes the results")
            try:
                return _run_and_report(experiment, plan, out_dir, args.debug, chief=False, quiet=args.quiet)
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
    from kpretrain.rundir import default_out_dir, run_directory

    out_dir = args.out or default_out_dir(recipe.name)
    with run_directory(out_dir, recipe.to_dict(), smoke) as state:  # checked before TensorFlow starts: immediate
        if state == "finished":
            print(f"{out_dir} holds a finished run of recipe {recipe.name} (metrics.json is complete); "
                  f"nothing to train: see {out_dir}/report.md")
            return EXIT_OK
        _start_tensorflow(args.debug, recipe.runtime.distribute, recipe.runtime.threads)
        executor = _executor(recipe, args)
        experiment = _experiment(recipe, smoke, args)
        plan = _plan(experiment, args)
        if state == "resume" and not args.quiet:
            print(f"resuming the unfinished run in {out_dir}: recorded units are reused")
        return _run_and_report(experiment, plan, out_dir, args.debug, quiet=args.quiet, executor=executor)


def _executor(recipe, args):
    """The executor `--workers` / `--address` / `runtime.executor` ask for (None: the local loop); imported once
    TensorFlow started quietly."""
    from kpretrain.experiment.executor import executor_for

    return executor_for(recipe, workers=args.workers, address=args.address)


def _no_recipe_there(run_dir: str) -> str:
    """The refusal of `--resume` for a directory without `recipe.yaml`: what to run instead."""
    names = set(os.listdir(run_dir)) if os.path.isdir(run_dir) else set()
    if ".lock" in names and names <= {".lock", "run.json"}:  # a run stopped as it took the directory
        return (f"--resume {run_dir!r}: the run there stopped before it wrote recipe.yaml (nothing was trained); "
                f"start it again with `kpretrain run RECIPE --out {run_dir}`")
    return f"--resume {run_dir!r}: no recipe.yaml there; pass a run directory written by kpretrain run"


def _plan(experiment, args) -> list[str]:
    """The run's plan lines (data and splits checked), with what `--set` added to the recipe's arms."""
    from kpretrain.recipe.files import arms_added_by_overrides

    added = arms_added_by_overrides(args.recipe, args.sets) if args.recipe and args.sets else None
    return experiment.prepare() + ([added] if added else [])


def _experiment(recipe, smoke: bool, args):
    """The run, with a live progress display on a terminal (plain lines otherwise; nothing but warnings with -q;
    no live display with -v, whose Keras lines would break it)."""
    from kpretrain.experiment import make_run
    from kpretrain.experiment.progress import Progress

    return make_run(recipe, smoke=smoke, progress=Progress(quiet=args.quiet, live=False if args.verbose else None))


def _run_and_report(experiment, plan: list[str], out_dir: str, debug: bool, chief: bool = True,
                    quiet: bool = False, executor=None) -> int:
    """Print the plan, run every unit into `out_dir` (on `executor`'s workers, if any), print the summary; exit
    code."""
    from kpretrain.errors import InputError, print_failure
    from kpretrain.experiment.executor import execute
    from kpretrain.training.interruption import Interrupted, stop_on_signals

    if not quiet:
        print("\n".join(plan))
        print(f"run directory: {out_dir}")
    resume = f"; resume with: kpretrain run --resume {out_dir}" if chief else ""
    try:
        with stop_on_signals():
            try:
                metrics = execute(experiment, out_dir, executor)
            finally:
                experiment.progress.close()
    except (Interrupted, KeyboardInterrupt) as exc:
        name = exc.args[0] if isinstance(exc, Interrupted) else "SIGINT"
        print(f"kpretrain: interrupted ({name}); finished units are kept in {out_dir}/units{resume}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else 130
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure while training is exit 1
        print_failure("training", exc, debug, f"; partial results in {out_dir}" if chief else "")
        return EXIT_FAILED
    from kpretrain.report.terminal import print_results

    print_results(metrics)
    for warning in metrics["warnings"]:
        experiment.progress.warn(warning)
    print(f"results: {out_dir}/report.md" if chief else "results: in the chief's run directory")
    return EXIT_OK


def cmd_show_task(args) -> int:
    from kpretrain.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.sets)
    _start_tensorflow(args.debug, threads=recipe.runtime.threads)
    from kpretrain.task_preview import preview_task

    shown = preview_task(recipe, arm=args.arm, out=args.out, n=args.n, shortcut_check=not args.quiet)
    print(shown.png)
    for result in shown.shortcuts:
        print(f"shortcut check: {result.line()}")
    if not args.quiet:
        print(shown.blocks_line())
    return EXIT_OK


def cmd_tune(args) -> int:
    from kpretrain.errors import InputError
    from kpretrain.recipe import load_recipe

    args.sets = [*args.sets, *verbosity(args)]
    runtime = load_recipe(args.recipe, args.sets).runtime
    distribute = runtime.distribute
    workers = _tf_config_workers()
    if distribute == "multi_worker" and workers > 1:
        raise InputError(f"runtime.distribute=multi_worker: a search cannot span the {workers} workers of TF_CONFIG; "
                         "distribute it with KerasTuner's chief and workers (KERASTUNER_TUNER_ID), trials on "
                         "mirrored or none")
    _start_tensorflow(args.debug, distribute, runtime.threads)
    from kpretrain.tuning import tune

    return tune(args.recipe, args.sets, tuner=args.tuner, max_trials=args.max_trials, directory=args.dir,
                overwrite=args.overwrite, smoke=args.smoke, final=args.final, debug=args.debug, quiet=args.quiet)


def cmd_export(args) -> int:
    from kpretrain.errors import InputError

    if not os.path.isdir(args.run_dir):
        raise InputError(f"{args.run_dir}: not a directory; pass a run directory written by kpretrain run")
    _start_tensorflow(args.debug)
    from kpretrain.export import export_run

    export_run(args.run_dir, arm=args.arm, seed=args.seed, what=args.model, out=args.out,
               log=(lambda text: None) if args.quiet else print)
    return EXIT_OK


def cmd_lr_find(args) -> int:
    from kpretrain.errors import InputError, print_failure
    from kpretrain.lr_range import plan_lr_find, run_lr_find
    from kpretrain.recipe import load_recipe

    recipe = load_recipe(args.recipe, [*args.sets, *verbosity(args)])
    plan = plan_lr_find(recipe, stage=args.stage, arm=args.arm, out=args.out, start_lr=args.start_lr,
                        end_lr=args.end_lr, steps=args.steps, suggestion=args.suggestion, smoke=args.smoke)
    _start_tensorflow(args.debug, recipe.runtime.distribute, recipe.runtime.threads)
    try:
        found = run_lr_find(plan, log=None if args.quiet else print)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failure while training is exit 1
        print_failure("lr-find", exc, args.debug)
        return EXIT_FAILED
    result, out_dir = found.result, found.out_dir
    others = ", ".join(f"{k} {v:.3g}" for k, v in result.suggestions.items() if k != result.method)
    print(f"{len(result.learning_rates)} steps ({'stopped: the loss diverged' if result.stopped == 'diverged' else 'to the end'}); "
          f"suggested learning rate ({result.method}): {result.suggested_lr:.3g}; {others}")
    print(f"use it: --set {found.stage}.optimizer.learning_rate={result.suggested_lr:.3g}  (or learning_rate: auto)")
    print(f"results: {out_dir}/lr_find.json, {out_dir}/lr_find.png")
    return EXIT_OK


def _tf_config_workers() -> int:
    """Tasks that train (chief and workers) in the TF_CONFIG cluster; 1 without one."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        return 1
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def cmd_report(args) -> int:
    from kpretrain.report.combine import combined_rows, render_rows
    from kpretrain.report.terminal import is_terminal, print_tables

    rows = combined_rows(args.run_dirs)
    if args.format is None and is_terminal():  # no --format, at a terminal: rich tables at its width
        print_tables(rows)
    else:
        sys.stdout.write(render_rows(rows, args.format or "md"))
    if args.plot:
        from kpretrain.report.plots import plot_runs

        plot_runs(rows, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
