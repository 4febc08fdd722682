"""The command line's arguments: `build_parser()`, one small function per sub-command, the help's epilogues
(examples, exit codes, environment) and the default of every option in its help."""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one short line and exit 2, like every other bad input
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"kpretrain: error: {message}\n")


EXIT_CODES = {
    "ok": "  0    success",
    "finished": "  0    success, also a --out holding a finished run: nothing to do",
    "failed": "  1    failure while training (partial results stay in the run directory)",
    "bad": "  2    bad input: recipe, arguments, data, a directory of another recipe or in use; one line naming the fix",
    "bad_files": "  2    bad input: arguments or a run directory that is missing or not a run's; one line naming the fix",
    "signal": "  130  stopped by Ctrl-C, 143 by SIGTERM (started again, it resumes)",
    "signal_no_resume": "  130  stopped by Ctrl-C, 143 by SIGTERM",
}
ENVIRONMENT = {
    "data": "  KPRETRAIN_DATA_DIR   where local data sets are looked for first (default ~/.kpretrain/datasets)\n"
            "  KPRETRAIN_OFFLINE    1: never download with TFDS; a missing data set is exit 2 at once",
    "cluster": "  TF_CONFIG            the cluster of runtime.distribute: multi_worker (one process per worker)",
    "tuner": "  KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT\n"
             "                       a distributed search: the chief (KERASTUNER_TUNER_ID=chief) and its workers",
}
# What each command's help lists: only the exit codes it can return and the variables it reads.
HELP_FACTS = {
    "run": (("finished", "failed", "bad", "signal"), ("data", "cluster")),
    "tune": (("ok", "failed", "bad", "signal"), ("data", "tuner")),
    "lr-find": (("ok", "failed", "bad", "signal_no_resume"), ("data",)),
    "show-task": (("ok", "bad", "signal_no_resume"), ("data",)),
    "export": (("ok", "bad_files"), ()),
    "report": (("ok", "bad_files"), ()),
}


def _command(sub, name: str, summary: str, description: str, examples: str):
    """A sub-command whose help says what it does, shows its defaults and examples, and lists the exit codes it
    can return and the environment variables it reads (`HELP_FACTS`)."""
    codes, variables = HELP_FACTS[name]
    parts = ["examples:\n" + examples, "\n".join(["exit codes:"] + [EXIT_CODES[code] for code in codes])]
    if variables:
        parts.append("\n".join(["environment:"] + [ENVIRONMENT[name] for name in variables]))
    return sub.add_parser(name, help=summary, description=description, epilog="\n\n".join(parts),
                          formatter_class=_HelpFormatter)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description wrapped, examples as written, and the default of every option that has one."""

    def _fill_text(self, text, width, indent):
        import textwrap

        paragraphs = text.split("\n\n")
        wrapped = [p if p.startswith(("examples:", "exit codes:", "environment:", "quick start:")) else
                   textwrap.fill(" ".join(p.split()), width, initial_indent=indent, subsequent_indent=indent)
                   for p in paragraphs]
        return "\n\n".join(wrapped)

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _recipe_options(command, smoke_help: str = "tiny data and a few batches: checks a recipe end to end in seconds"):
    command.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                         help="override a recipe key with a YAML value, e.g. --set 'seeds=[0,1,2]' (repeatable)")
    command.add_argument("--smoke", action="store_true", help=smoke_help)
    _output_options(command, verbose="also Keras' line per epoch of every stage (runtime.verbose=2)")


def _output_options(command, verbose: str | None = None):
    command.add_argument("-q", "--quiet", action="store_true", help="only errors and the final results")
    if verbose:
        command.add_argument("-v", "--verbose", action="store_true", help=verbose)
    command.add_argument("--debug", action="store_true", help="show tracebacks")


def verbosity(args) -> list[str]:
    """The --set that -v means (Keras' per-epoch lines), if given."""
    return ["runtime.verbose=2"] if getattr(args, "verbose", False) else []


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kpretrain", formatter_class=_HelpFormatter,
                     description="Does pre-training help my model, and under which settings?  One YAML recipe, one "
                                 "command: pre-train a backbone on a pretext task, transfer it, train the same model "
                                 "from scratch, and compare them honestly (intervals, paired tests).",
                     epilog="quick start:\n  kpretrain run recipes/fashion_overlay.yaml --smoke   (minutes: every step on tiny data)\n"
                            "  kpretrain run recipes/fashion_overlay.yaml\n"
                            "  kpretrain <command> --help   (defaults, examples, exit codes, environment)")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="<command>")
    for add in (_add_run, _add_show_task, _add_tune, _add_lr_find, _add_export, _add_report):
        add(sub)
    return parser


def _add_run(sub) -> None:
    run = _command(sub, "run", "train every seed x arm of a recipe and report pre-training against scratch",
                   "Pre-train (each arm's pretext task), transfer, fine-tune and test every arm and seed of RECIPE, "
                   "with the scratch baseline on identical data per seed; write metrics.json, report.md, plots and the "
                   "exported backbone into the run directory.  A run stopped in any way continues when started again.",
                   "  kpretrain run recipes/fashion_overlay.yaml\n"
                   "  kpretrain run recipes/fashion_overlay.yaml --smoke --set 'seeds=[0]'\n"
                   "  kpretrain run --resume runs/fashion_overlay/20261127T201500Z\n"
                   "  kpretrain run recipes/fashion_label_efficiency.yaml --workers 2   (units on 2 processes, same numbers)")
    run.add_argument("recipe", nargs="?", help="YAML recipe, e.g. recipes/fashion_overlay.yaml")
    run.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR with its own recipe.yaml")
    run.add_argument("--out", help="run directory (default: runs/<name>/<UTC timestamp>/); an unfinished run there "
                     "of the same recipe is resumed")
    run.add_argument("--dry-run", action="store_true", help="validate recipe and data, print the plan, train nothing")
    run.add_argument("--workers", type=int, metavar="N", help="train the units on a local Dask cluster of N worker "
                     "processes (one GPU each when there are GPUs; runtime.executor=dask); same numbers as one process")
    run.add_argument("--address", metavar="ADDRESS", help="train the units on the running Dask cluster whose "
                     "scheduler is at ADDRESS (e.g. tcp://10.0.0.5:8786); its workers must see the run directory")
    _recipe_options(run, "every arm and seed on tiny data and a few batches: checks a recipe end to end")


def _add_show_task(sub) -> None:
    show = _command(sub, "show-task", "draw pretext examples with their labels and check the task for shortcuts",
                    "Draw a grid of pretext examples of the recipe's first pretext task (or --arm's) with their "
                    "labels, and run the pretext shortcut check (can image statistics alone predict the label?).",
                    "  kpretrain show-task recipes/fashion_overlay.yaml\n"
                    "  kpretrain show-task recipes/mnist_mixed.yaml --out mixed.png --n 32\n"
                    "  kpretrain show-task recipes/fashion_synthetic.yaml --arm fractal")
    show.add_argument("recipe", help="YAML recipe")
    show.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                      help="override a recipe key (repeatable)")
    show.add_argument("--out", default=None, help="PNG file (default: <recipe name>_task.png)")
    show.add_argument("--n", type=int, default=16, help="number of examples")
    show.add_argument("--arm", default=None, help="the arm whose pretext task to show (default: the first that has one)")
    _output_options(show)


def _add_tune(sub) -> None:
    tune = _command(sub, "tune", "search the protocol with KerasTuner, scored on validation",
                    "Search the recipe's tune.space (a default space over pre-training epochs, learning rate and "
                    "frozen depth when it has none) with KerasTuner; each trial runs the searched arm on the first seed "
                    "and is scored on validation, never test.  A stopped search resumes.  --final then searches scratch "
                    "with the same budget and runs every seed of the best recipe against it.",
                    "  kpretrain tune recipes/fashion_tune.yaml --smoke\n"
                    "  kpretrain tune recipes/fashion_tune.yaml --max-trials 40\n"
                    "  kpretrain tune recipes/fashion_overlay.yaml --tuner grid --final")
    tune.add_argument("recipe", help="YAML recipe")
    tune.add_argument("--tuner", choices=("random", "bayesian", "hyperband", "grid"), help="default: tune.tuner")
    tune.add_argument("--max-trials", type=int, help="default: tune.max_trials; raising it resumes with more trials")
    tune.add_argument("--dir", default="tuner_runs", help="tuner directory; results in DIR/<name>/ (DIR/<name>-smoke/ with --smoke)")
    tune.add_argument("--overwrite", action="store_true", help="start the search over instead of resuming it")
    tune.add_argument("--final", action="store_true",
                      help="then tune scratch with the same budget and run every seed of the best recipe against it")
    _recipe_options(tune, "tiny data, a few batches per trial, at most 3 trials unless --max-trials")


def _add_lr_find(sub) -> None:
    lr = _command(sub, "lr-find", "learning-rate range test of one stage of an arm",
                  "Train the stage's real model on its own batches while the learning rate grows exponentially; "
                  "write the loss curve (lr_find.png) and the suggested learning rates (lr_find.json).  The model is "
                  "restored afterwards.  In a recipe, learning_rate: auto does this before every stage.",
                  "  kpretrain lr-find recipes/fashion_overlay.yaml\n"
                  "  kpretrain lr-find recipes/fashion_overlay.yaml --stage pretrain --suggestion valley")
    lr.add_argument("recipe", help="YAML recipe")
    lr.add_argument("--stage", choices=("pretrain", "finetune"), default="finetune",
                    help="the stage tested (fine-tuning comes after the arm's pre-training and transfer)")
    lr.add_argument("--arm", help="default: the first arm that is not a baseline (scratch is allowed)")
    lr.add_argument("--out", help="directory for lr_find.json and lr_find.png (default: runs/<name>-lr-find/<UTC timestamp>/)")
    lr.add_argument("--start-lr", type=float, help="default: <stage>.optimizer.lr_find.start_lr (1e-7)")
    lr.add_argument("--end-lr", type=float, help="default: <stage>.optimizer.lr_find.end_lr (10)")
    lr.add_argument("--steps", type=int, help="default: <stage>.optimizer.lr_find.steps (200)")
    lr.add_argument("--suggestion", choices=("steepest", "valley", "minimum"),
                    help="which suggestion is suggested_lr (default: <stage>.optimizer.lr_find.suggestion, steepest)")
    _recipe_options(lr, "tiny data, at most 50 steps")


def _add_export(sub) -> None:
    export = _command(sub, "export", "export the backbone or the fine-tuned classifier of any arm and seed",
                      "Build the pre-trained backbone (or the fine-tuned classifier) of any arm and seed of a finished "
                      "run from its unit records, as <what>.keras (Keras safe mode) and a SavedModel <what>/ (endpoint "
                      "serve, float32 images in [0, 1]) with kpretrain.json, under RUN_DIR/backbones/<arm>/seed<k>/ "
                      "(or classifiers/, or --out).  backbone.from accepts those directories.",
                      "  kpretrain export runs/fashion_overlay/20261127T201500Z\n"
                      "  kpretrain export RUN_DIR --arm overlay --seed 2 --out exported/\n"
                      "  kpretrain export RUN_DIR --model classifier --arm scratch")
    export.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory (for a sweep: a point's)")
    export.add_argument("--model", choices=("backbone", "classifier"), default="backbone", help="what to export")
    export.add_argument("--arm", help="default: every arm that has one")
    export.add_argument("--seed", type=int, help="default: every seed")
    export.add_argument("--out", help="default: RUN_DIR/backbones/ (or RUN_DIR/classifiers/); one <arm>/seed<k>/ each")
    _output_options(export)


def _add_report(sub) -> None:
    report = _command(sub, "report", "one table across run directories, with intervals and paired tests",
                      "Combine the metrics.json of run directories (and sweep points) into one table with 95 % "
                      "intervals, paired differences to each arm's matched baseline and Holm-adjusted p-values.",
                      "  kpretrain report runs/fashion_overlay/*\n"
                      "  kpretrain report runs/a runs/b --format csv > runs.csv\n"
                      "  kpretrain report runs/a runs/b --plot runs.png")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or sweep points)")
    report.add_argument("--format", choices=("md", "csv", "json"),
                        help="output format (default: a table fitted to the terminal, or md when piped)")
    report.add_argument("--plot", metavar="FILE.png", help="also draw every run's arms with their 95 %% intervals")
    _output_options(report)


def _version() -> str:
    from kpretrain._version import __version__

    return f"kpretrain {__version__}"
