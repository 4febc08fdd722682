"""`kpretrain tune`: a KerasTuner search over any recipe keys (`tune.space`), scored on validation, never on test.

A trial is the searched arm with the trial's values set as recipe keys: pre-train, transfer, fine-tune on the
recipe's first seed.  Outputs go to `DIR/<name>/` beside KerasTuner's own files: `best.json`,
`best_recipe.yaml` (runnable with `kpretrain run`) and `tune.png`.  The same command resumes a stopped search
(KerasTuner's reload: finished trials are kept, the one that was running is run again); one process at a time
owns `DIR/<name>/` (its `.lock`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import shutil
import sys
import traceback
from dataclasses import dataclass, replace

import keras_tuner
import tensorflow as tf
from keras_tuner.src.engine.tuner_utils import SaveBestEpoch  # the best-epoch checkpoint Tuner.run_trial adds

from kpretrain.errors import InputError, RecipeError
from kpretrain.experiment import Experiment
from kpretrain.models.backbones import block_names
from kpretrain.protocol import build_model, run_unit
from kpretrain.protocol.unit import initial_backbone
from kpretrain.protocol.pretrain import pretraining_key
from kpretrain.recipe import Recipe, apply_overrides, load_raw, pretrains, recipe_from_dict, with_defaults
from kpretrain.recipe_values import dump_yaml, format_value, load_yaml
from kpretrain.report import io
from kpretrain.rundir import LOCK_NAME, DirectoryLock
from kpretrain.training.runtime import configure_runtime, describe_device, distribution_strategy

SPEC_OPTIONS = {"int": ("step", "sampling"), "float": ("step", "sampling"), "choice": ()}
UNSEARCHABLE = ("name", "seeds", "baselines", "tune", "runtime")  # identity, the plan, or how (not what) trains
SPEC_HINT = "{int: [lo, hi]}, {float: [lo, hi], sampling: log} or {choice: [a, b, ...]}"
_MISSING = object()


@dataclass(frozen=True)
class Dimension:
    """One searched recipe key: an int or float range (optional `step`, `sampling`) or a list of choices."""

    key: str
    kind: str
    values: tuple  # (lo, hi) for int and float; the candidates for choice
    step: float | None = None
    sampling: str = "linear"

    @classmethod
    def parse(cls, key, spec) -> "Dimension":
        """Validate one `tune.space` entry; every problem is a RecipeError naming `tune.space.<key>`."""
        where = f"recipe key 'tune.space.{key}'"
        if not isinstance(key, str) or not all(key.split(".")):
            raise RecipeError(f"{where}: expected a dotted recipe key, e.g. pretrain.epochs")
        if key.split(".")[0] in UNSEARCHABLE:
            raise RecipeError(f"{where}: '{key.split('.')[0]}' cannot be searched; allowed: keys of data, backbone, "
                              f"pretrain, transfer, finetune, evaluation or arms")
        kinds = [kind for kind in SPEC_OPTIONS if isinstance(spec, dict) and kind in spec]
        if len(kinds) != 1:
            raise RecipeError(f"{where}: expected {SPEC_HINT}, got {spec!r}")
        kind = kinds[0]
        extra = sorted(set(spec) - {kind, *SPEC_OPTIONS[kind]})
        if extra:
            raise RecipeError(f"{where}: unknown option {extra[0]!r} for {kind}; allowed: "
                              f"{', '.join(SPEC_OPTIONS[kind]) or 'none'}")
        if kind == "choice":
            values = spec["choice"]
            if not isinstance(values, list) or not values or len({str(v) for v in values}) != len(values):
                raise RecipeError(f"{where}: choice must be a non-empty list of distinct values, got {values!r}")
            return cls(key, kind, tuple(values))
        number = int if kind == "int" else (int, float)
        bounds, step, sampling = spec[kind], spec.get("step"), spec.get("sampling", "linear")
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(_is(b, number) for b in bounds)
                and bounds[0] < bounds[1]):
            hint = " (text, not a number: write 1e-4 without quotes)" if isinstance(bounds, list) and any(
                isinstance(b, str) for b in bounds) else ""
            raise RecipeError(f"{where}: expected [lo, hi], {'integers' if kind == 'int' else 'numbers'} with "
                              f"lo < hi, got {bounds!r}{hint}")
        if sampling not in ("linear", "log") or (sampling == "log" and bounds[0] <= 0):
            raise RecipeError(f"{where}: sampling {sampling!r} with lo {bounds[0]}; allowed: linear, or log with lo > 0")
        if step is not None and not (_is(step, number) and step > (1 if sampling == "log" else 0)):
            raise RecipeError(f"{where}: step {step!r}; allowed: a positive {kind}, above 1 with log sampling")
        return cls(key, kind, tuple(bounds), step, sampling)

    @property
    def by_label(self) -> bool:
        """KerasTuner choices hold one type of int, float or str: other choices are searched by their labels."""
        return self.kind == "choice" and (len({type(v) for v in self.values}) > 1
                                          or type(self.values[0]) not in (int, float, str))

    def declare(self, hp: keras_tuner.HyperParameters):
        """Register this dimension in `hp`; returns the trial's recipe value."""
        if self.kind == "int":
            return hp.Int(self.key, *self.values, step=self.step, sampling=self.sampling)
        if self.kind == "float":
            return hp.Float(self.key, *map(float, self.values), step=self.step, sampling=self.sampling)
        labels = [str(v) for v in self.values]
        return self.value_of(hp.Choice(self.key, labels if self.by_label else list(self.values)))

    def value_of(self, stored):
        """The recipe value of a value stored by KerasTuner."""
        return self.values[[str(v) for v in self.values].index(stored)] if self.by_label else stored

    def corners(self) -> list:
        """The values checked before any trial: both bounds, or every choice."""
        return list(self.values)


def _is(value, types) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


def parse_space(space: dict) -> list[Dimension]:
    """`tune.space` as dimensions, in the recipe's order."""
    if not space:
        raise RecipeError("recipe key 'tune.space': empty; declare the keys to search, e.g. "
                          "tune: {space: {pretrain.epochs: {int: [0, 3]}}}")
    return [Dimension.parse(key, spec) for key, spec in space.items()]


def with_values(raw: dict, values: dict) -> dict:
    """The raw recipe with `values` (recipe key -> value) set as keys, each as `--set` would set it."""
    return apply_overrides(raw, [f"{k}={format_value(v)}" for k, v in values.items()])


def trial_recipe(raw: dict, values: dict) -> Recipe:
    """The recipe `raw` with `values` set, validated."""
    return recipe_from_dict(with_values(raw, values))


def searched_arm(recipe: Recipe) -> str:
    """The searched arm: `tune.arm`, else the first that is no baseline (its name may change with the values:
    an arm without `arms:` is named after its task)."""
    names = list(recipe.arm_recipes())
    arm = recipe.tune.arm or next(iter(_protocol_arms(recipe)), None)
    if arm not in names:
        raise RecipeError(f"recipe key 'tune.arm': {arm!r} is not an arm of this recipe; allowed: {', '.join(names)}")
    return arm


def _protocol_arms(recipe: Recipe) -> list[str]:
    baselines = {*recipe.baselines, *recipe.baseline_pairs().values()}
    return [name for name in recipe.arm_recipes() if name not in baselines]


PRETRAININGS_KEPT = 8  # pre-trained weights a search keeps in memory for later trials with the same pre-training


class ProtocolHyperModel(keras_tuner.HyperModel):
    """A trial: the searched arm with the trial's values on the first seed, through `protocol.run_unit` (the
    sequence `kpretrain run` executes); `fit` returns validation accuracy only and never touches test data."""

    def __init__(self, raw: dict, *, smoke: bool = False, strategy: tf.distribute.Strategy | None = None):
        super().__init__(name=raw.get("name"))
        self.raw = raw
        recipe = recipe_from_dict(raw)
        self.dims = parse_space(recipe.tune.space)
        self.arm_name = searched_arm(recipe)
        for dim in self.dims:
            if dim.key.startswith("arms.") and dim.key.split(".")[1] not in (recipe.arms or {}):
                raise RecipeError(f"recipe key 'tune.space.{dim.key}': the recipe has no arm "
                                  f"{dim.key.split('.')[1]!r}; allowed arms: {', '.join(recipe.arms or {}) or 'none'}")
        self.smoke = smoke
        self.strategy = strategy
        self._last: tuple | None = None  # (values, experiment, arm) of the latest trial built or fitted
        self._pretrained: dict = {}  # pre-training settings and data -> PretrainResult, for later trials
        if recipe.tune.tuner == "grid":
            for dim in self.dims:
                if dim.kind == "float" and dim.step is None:
                    raise RecipeError(f"recipe key 'tune.space.{dim.key}': the grid tuner needs a step for a float "
                                      f"range; add step: or list the values with choice:")

    def check(self) -> None:
        """Before any trial: each bound and choice, set alone, validates and reaches the searched arm."""
        for dim in self.dims:
            for value in dim.corners():
                try:
                    _, arm = self.trial({dim.key: value})
                    local = dim.key.removeprefix(f"arms.{self.arm_name}.")
                    if _lookup(arm.to_dict(), local) != value:
                        raise RecipeError(f"the searched arm {self.arm_name!r} does not receive it"
                                          + ("" if local != dim.key else f" (it sets {local} itself: search "
                                                                         f"'arms.{self.arm_name}.{local}')"))
                except InputError as exc:
                    raise RecipeError(f"recipe key 'tune.space.{dim.key}': {value!r} fails: {exc}") from None

    def trial(self, values: dict) -> tuple[Experiment, Recipe]:
        """The prepared Experiment of the recipe with `values` set, and its searched arm."""
        if self._last is None or self._last[0] != values:
            experiment = Experiment(trial_recipe(self.raw, values), smoke=self.smoke)
            experiment.prepare()
            name = searched_arm(experiment.recipe)
            self._last = (values, experiment, experiment.arms[name])
        return self._last[1:]

    def declare(self, hp: keras_tuner.HyperParameters) -> dict:
        """Register every dimension in `hp`; returns the trial's values by recipe key."""
        return {dim.key: dim.declare(hp) for dim in self.dims}

    def build(self, hp):
        experiment, arm = self.trial(self.declare(hp))
        configure_runtime(experiment.recipe.runtime)  # KerasTuner's clear_session() resets the dtype policy
        return build_model(arm, experiment.seed_data(experiment.recipe.seeds[0]))

    def fit(self, hp, model, callbacks=(), epochs=None, initial_epoch=0, **kwargs):
        """`run_unit` on the trial's model: what `kpretrain run` records for the searched arm and first seed, with
        `epochs` (a Hyperband round's budget, `tuner/epochs`) as its `finetune.epochs`.  A Hyperband trial that
        continues an earlier one is trained from its start for that whole budget (`initial_epoch` is ignored;
        its model is built fresh, see `_FromTheStart`).  KerasTuner's checkpoint holds the model scored.
        Other `fit` arguments of `search(...)` (`verbose`) are KerasTuner's display settings, not the recipe's."""
        experiment, arm = self.trial(self.declare(hp))
        if epochs is not None:
            arm = replace(arm, finetune=replace(arm.finetune, epochs=epochs))
        checkpoints = [c for c in callbacks if isinstance(c, SaveBestEpoch)]
        key = pretraining_key(arm, experiment.recipe)
        unit = run_unit(arm, experiment.seed_data(experiment.recipe.seeds[0]), model=model,
                        pretrained=self._pretrained.get(key), test=False, scope=self._scope,
                        callbacks=[c for c in callbacks if not isinstance(c, SaveBestEpoch)])
        if pretrains(arm) and unit.pretrain is not None:  # trials differing only after pre-training reuse it
            self._pretrained.pop(key, None)
            self._pretrained[key] = unit.pretrain
            while len(self._pretrained) > PRETRAININGS_KEPT:
                self._pretrained.pop(next(iter(self._pretrained)))
        scores = {"val_accuracy": unit.finetune.val_accuracy, "val_accuracy_raw": unit.finetune.val_accuracy_raw}
        save_scored(checkpoints, unit.model, scores)
        return scores

    def _scope(self):
        return self.strategy.scope() if self.strategy else contextlib.nullcontext()


def save_scored(checkpoints: list, model, scores: dict) -> None:
    """KerasTuner's best-epoch checkpoints (`get_best_models`) get the model the trial scores, once, after training:
    per epoch they would keep the best validated epoch's weights with training's BN statistics, or those of an
    epoch `evaluation.validate_every` left unvalidated, which nothing scored."""
    for checkpoint in checkpoints:
        checkpoint.set_model(model)
        checkpoint.on_epoch_end(0, dict(scores))  # has the objective and beats -inf: saved


def _lookup(tree: dict, key: str):
    for part in key.split("."):
        tree = tree.get(part, _MISSING) if isinstance(tree, dict) else _MISSING
    return tree


class _NoTensorBoard:
    """KerasTuner imports tensorboard in every trial to patch TensorBoard callbacks; none are used here, and
    TensorFlow 2.21 no longer installs tensorboard."""

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        pass

    def on_trial_begin(self, trial):
        """One line per trial: its number out of the maximum, its values (recipe keys) and the best score so far."""
        super().on_trial_begin(trial)
        if getattr(self, "_kpretrain_quiet", False):
            return
        dims = getattr(self.hypermodel, "dims", [])
        values = {d.key: d.value_of(trial.hyperparameters.values[d.key]) for d in dims
                  if d.key in trial.hyperparameters.values}
        best = [t for t in self.oracle.get_best_trials(1) if t.score is not None]  # a worker asks the chief
        so_far = f"best val_accuracy so far {best[0].score:.4f}" if best else "no trial completed yet"
        number = int(trial.trial_id) + 1 if str(trial.trial_id).isdigit() else trial.trial_id
        print(f"trial {number}/{self.oracle.max_trials}: {json.dumps(values)}; {so_far}", flush=True)


class _FromTheStart:
    """Hyperband continues a trial of the previous round by loading that trial's checkpoint into the model it
    builds, then fits the remaining epochs with a new optimizer (its schedule restarted).  Here the model is built
    fresh, and `ProtocolHyperModel.fit` trains it for the round's whole budget: the score `kpretrain run` records
    with that many fine-tuning epochs (continued trials repeat their earlier rounds' epochs)."""

    def _build_hypermodel(self, hp):
        return keras_tuner.Tuner._build_hypermodel(self, hp)  # Hyperband's own loads the checkpoint


TUNERS = {kind: type(cls.__name__, (_NoTensorBoard, *([_FromTheStart] if kind == "hyperband" else []), cls), {})
          for kind, cls in {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization,
                            "hyperband": keras_tuner.Hyperband, "grid": keras_tuner.GridSearch}.items()}


def make_tuner(kind: str, hypermodel: ProtocolHyperModel, *, max_trials: int, max_epochs: int, directory: str,
               project_name: str, overwrite: bool, seed: int) -> keras_tuner.Tuner:
    """KerasTuner tuner maximising validation accuracy; Hyperband's budget is the fine-tuning epochs."""
    common = dict(hypermodel=hypermodel, objective=keras_tuner.Objective("val_accuracy", "max"), seed=seed,
                  directory=directory, project_name=project_name, overwrite=overwrite,
                  distribution_strategy=hypermodel.strategy)
    if kind == "hyperband":
        tuner = TUNERS[kind](max_epochs=max_epochs, **common)
        tuner.oracle.max_trials = max_trials  # the base Oracle stops there; it is not part of the saved state
        return tuner
    return TUNERS[kind](max_trials=max_trials, **common)


def is_worker() -> bool:
    """Whether this process is a KerasTuner worker of a distributed search (not the chief)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")


# ---- outputs ----------------------------------------------------------------------------------------
def trial_rows(oracle: keras_tuner.Oracle, dims: list[Dimension]) -> list[dict]:
    """Every trial (id, status, score, recipe values, error), completed ones best first."""
    rows = []
    for trial in oracle.trials.values():
        stored = trial.hyperparameters.values
        row = {"trial_id": trial.trial_id, "status": trial.status, "score": trial.score,
               "values": {d.key: d.value_of(stored[d.key]) for d in dims if d.key in stored}}
        if trial.message:
            row["error"] = trial.message.strip().splitlines()[-1]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["status"] != "COMPLETED", -(r["score"] or 0.0), r["trial_id"]))


def summary_table(rows: list[dict], dims: list[Dimension]) -> str:
    """Markdown table: trial, values, score, status; best first."""
    lines = ["| trial | " + " | ".join(d.key for d in dims) + " | val_accuracy | status |",
             "|---" * (len(dims) + 3) + "|"]
    for row in rows:
        cells = [_fmt(row["values"].get(d.key, "")) for d in dims]
        score = "—" if row["score"] is None else f"{row['score']:.4f}"
        lines.append(f"| {row['trial_id']} | " + " | ".join(cells) + f" | {score} | {row['status']} |")
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def best_recipe_text(raw: dict, best: dict) -> str:
    """The recipe with the best values set as keys (tune section kept), as YAML with a provenance comment."""
    text = dump_yaml(with_values(raw, best["values"]))
    recipe_from_dict(load_yaml(text))  # runnable as written
    return (f"# best of kpretrain tune {raw['name']}: trial {best['trial_id']}, val_accuracy {best['score']:.4f}\n"
            + text)


def plot_search(rows: list[dict], dims: list[Dimension], path: str) -> None:
    """Objective against each hyperparameter, one subplot each; the best trial in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "COMPLETED"]
    cols = min(4, len(dims))
    fig, axes = plt.subplots(math.ceil(len(dims) / cols), cols, figsize=(4 * cols, 3.2 * math.ceil(len(dims) / cols)),
                             squeeze=False)
    for ax, dim in zip(axes.flat, dims):
        points = [(r["values"][dim.key], r["score"]) for r in done if dim.key in r["values"]]
        if dim.kind == "choice":  # every choice on the axis, in the recipe's order
            labels = [str(v) for v in dim.values]
            xs = [labels.index(str(x)) for x, _ in points]
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:  # the whole range searched
            xs = [x for x, _ in points]
            lo, hi = dim.values
            if dim.sampling == "log":
                ax.set_xscale("log")
                ax.set_xlim(lo / (hi / lo) ** 0.05, hi * (hi / lo) ** 0.05)
            else:
                ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        ax.scatter(xs, [y for _, y in points], color="C0")
        ax.scatter(xs[:1], [y for _, y in points[:1]], color="red", zorder=3)
        ax.set_xlabel(dim.key)
        ax.set_ylabel("val_accuracy")
    for ax in list(axes.flat)[len(dims):]:
        ax.axis("off")
    fig.suptitle(f"{len(done)} completed trials")
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)


def _difference(a, b, prefix: str = "") -> str | None:
    """First key (dotted) where two JSON-like trees differ; keys only one has (a newer schema) are skipped."""
    if isinstance(a, dict) and isinstance(b, dict):
        return next(filter(None, (_difference(a[k], b[k], f"{prefix}{k}.") for k in a if k in b)), None)
    return None if a == b else prefix.rstrip(".")


# ---- the command --------------------------------------------------------------------------------------
SMOKE_TRIALS = 3  # --smoke runs at most this many trials unless --max-trials says otherwise


def tune(path, sets=(), *, tuner: str | None = None, max_trials: int | None = None,
         directory: str = "tuner_runs", overwrite: bool = False, smoke: bool = False, final: bool = False,
         debug: bool = False, quiet: bool = False) -> int:
    """`kpretrain tune`: validate everything, search (resuming a finished or interrupted one), write the outputs;
    with `final`, search scratch with the same budget and run the best protocol against it on every seed."""
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
    worker = is_worker()
    if final and worker:
        raise InputError("--final: only the chief (KERASTUNER_TUNER_ID=chief) re-runs the best recipe")
    strategy = _runtime(recipe)
    experiment = Experiment(recipe, smoke=smoke)
    plan = experiment.prepare()
    if not quiet:
        print("\n".join(plan))
    if not recipe.tune.space:
        raw.setdefault("tune", {})["space"] = default_space(recipe, experiment)
        recipe = recipe_from_dict(raw)
        print(f"tune: the recipe declares no tune.space; the default space: {json.dumps(raw['tune']['space'])}")
    hypermodel = ProtocolHyperModel(raw, smoke=smoke, strategy=strategy)
    hypermodel.check()
    scratch = None
    if final:  # checked before the first trial, like the main search
        scratch = ProtocolHyperModel(scratch_search_recipe(raw, hypermodel.arm_name), smoke=smoke,
                                     strategy=hypermodel.strategy)
        scratch.check()
    project = os.path.join(directory, recipe.name)
    with contextlib.ExitStack() as held:
        if not worker:  # the chief (or a search on its own) owns the directory; its workers share it
            try:
                held.enter_context(DirectoryLock(project, "tuner directory", "use another --dir"))
            except OSError as exc:
                raise _unwritable(directory, exc) from None
        held.enter_context(_atomic_state_files())
        if overwrite and not worker:  # here, not by KerasTuner: its overwrite removes the directory, lock included
            _clear(project)
        code, best = _search(hypermodel, directory, recipe.name, smoke, debug, worker, quiet)
        if best is None or scratch is None:
            return code
        code, scratch_best = _search(scratch, project, "scratch", smoke, debug, worker, quiet)
        if scratch_best is None:
            return code
        return _final(project, raw, best, scratch.raw, scratch_best, smoke, debug)


def _search(hypermodel: ProtocolHyperModel, directory: str, name: str, smoke: bool, debug: bool,
            worker: bool, quiet: bool = False) -> tuple[int, dict | None]:
    """One KerasTuner search of `hypermodel` in `directory/name` (resumed when found there): (exit code, best trial)."""
    recipe = recipe_from_dict(hypermodel.raw)
    arm_name = hypermodel.arm_name
    project = os.path.join(directory, name)
    signature = {**recipe.arm_recipes()[arm_name].to_dict(), "smoke": smoke}  # what a trial's score depends on
    signature["tune"].pop("max_trials")
    _check_resumable(os.path.join(project, "search.json"), signature, False)
    print(f"tune {name}: {recipe.tune.tuner}, {recipe.tune.max_trials} trials over "
          f"{', '.join(d.key for d in hypermodel.dims)}; arm {arm_name}, seed {recipe.seeds[0]}, scored on validation")
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
        io.write_json(os.path.join(project, "search.json"), signature)
    try:
        search._kpretrain_quiet = quiet
        search.search(verbose=0 if quiet else 1)  # KerasTuner's trial display
    except Exception as exc:  # noqa: BLE001 - a failure while training is exit 1
        return _failed("search", exc, debug), None
    if worker:
        print(f"worker {os.environ['KERASTUNER_TUNER_ID']}: no trials left")
        return 0, None
    best = write_outputs(search.oracle, hypermodel.dims, hypermodel.raw, project, debug,
                         {"recipe": recipe.name, "objective": "val_accuracy", "direction": "max",
                          "tuner": recipe.tune.tuner, "arm": arm_name, "seed": recipe.seeds[0], "smoke": smoke,
                          "space": recipe.tune.space})
    if best is None:
        print("kpretrain: no trial completed; see the errors above (rerun with --debug for tracebacks)",
              file=sys.stderr)
        return 1, None
    return 0, best


SCRATCH_SECTIONS = ("backbone", "finetune")  # what a scratch baseline's score depends on that an arm can set
SHARED_SECTIONS = ("data", "evaluation")  # what it depends on too, but every arm of the final run shares


def scratch_search_recipe(raw: dict, arm_name: str) -> dict:
    """The raw recipe whose search tunes the searched arm's matched scratch with the same budget: the searched keys
    that apply to scratch, plus its fine-tuning learning rate, schedule and epochs when those are not searched.
    A searched `data` or `evaluation` key is a RecipeError: the final run's `scratch-tuned` arm could not hold
    scratch's own best value of it."""
    recipe = recipe_from_dict(raw)
    arm = recipe.arm_recipes()[arm_name].to_dict()  # its backbone and fine-tuning; the arm's own keys included
    space = {}
    for key, spec in recipe.tune.space.items():
        local = key.removeprefix(f"arms.{arm_name}.")
        if local.split(".")[0] in SHARED_SECTIONS:
            raise RecipeError(f"recipe key 'tune.space.{key}': --final cannot search it: every arm of the final run "
                              f"shares {local.split('.')[0]}, so the tuned scratch could not keep its own best value; "
                              f"set it at the top level, or search without --final")
        if local.split(".")[0] in SCRATCH_SECTIONS and local != "backbone.from":
            space[local] = spec
    epochs = arm["finetune"]["epochs"]
    space.setdefault("finetune.optimizer.learning_rate",
                     _learning_rates(arm["finetune"]["optimizer"]["learning_rate"], recipe.tune.tuner))
    space.setdefault("finetune.optimizer.schedule", {"choice": ["constant", "cosine"]})
    if recipe.tune.tuner != "hyperband":  # Hyperband's budget is the epochs
        space.setdefault("finetune.epochs", {"int": [max(1, epochs // 2), 2 * epochs]})
    scratch = {k: v for k, v in arm.items() if k not in ("arms", "sweep", "baseline", "reference")}
    scratch.update(name=f"{recipe.name}-scratch", baselines=["scratch"],
                   tune={**arm["tune"], "arm": "scratch", "space": space})
    return scratch


def _unwritable(directory: str, exc: OSError) -> InputError:
    return InputError(f"--dir {directory!r}: cannot write there ({exc.strerror}); choose a writable directory")


def _clear(project: str) -> None:
    """Empty the project directory for --overwrite, keeping the lock file that this process holds."""
    for path in (os.path.join(project, name) for name in os.listdir(project) if name != LOCK_NAME):
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


@contextlib.contextmanager
def _atomic_state_files():
    """KerasTuner writes its state (oracle.json, trial_*/trial.json, tuner0.json) in place: opening truncates,
    so a process killed between truncating and writing leaves an empty or partial file from which the search
    can never be reloaded.  During the search its JSON writes go to a temporary file renamed into place."""
    from keras_tuner.src import utils as tuner_utils  # every KerasTuner state write calls utils.save_json

    original = tuner_utils.save_json

    def save_json(path, obj):
        if "://" in str(path):  # a remote file system (gs://, ...) has no atomic rename: KerasTuner's own write
            return original(path, obj)
        text = json.dumps(obj)
        io.write_text(str(path), text)
        return text

    tuner_utils.save_json = save_json
    try:
        yield
    finally:
        tuner_utils.save_json = original


def _runtime(recipe: Recipe) -> tf.distribute.Strategy | None:
    """Apply the recipe's runtime settings, print the device; returns the distribution strategy."""
    configure_runtime(recipe.runtime)
    strategy = distribution_strategy(recipe.runtime.distribute)
    print(describe_device(strategy, recipe.runtime.distribute))
    return strategy


def write_outputs(oracle: keras_tuner.Oracle, dims: list[Dimension], raw: dict, project: str, debug: bool,
                  info: dict) -> dict | None:
    """Print the summary; write best.json, and when a trial completed best_recipe.yaml and tune.png; returns the best."""
    rows = trial_rows(oracle, dims)
    print(summary_table(rows, dims))
    for row in rows:
        if "error" in row:
            print(f"trial {row['trial_id']} {row['status'].lower()}: {row['error']}", file=sys.stderr)
            if debug:
                print(oracle.trials[row["trial_id"]].message, file=sys.stderr)
    best = rows[0] if rows and rows[0]["status"] == "COMPLETED" else None
    io.write_json(os.path.join(project, "best.json"), {**info, "best": best, "trials": rows})
    if best is not None:
        io.write_text(os.path.join(project, "best_recipe.yaml"), best_recipe_text(raw, best))
        plot_search(rows, dims, os.path.join(project, "tune.png"))
        print(f"best: trial {best['trial_id']}, val_accuracy {best['score']:.4f}: {json.dumps(best['values'])}")
        print(f"results: {project}/best.json, {project}/tune.png; run it: kpretrain run {project}/best_recipe.yaml")
    return best


def _check_resumable(path: str, signature: dict, overwrite: bool) -> None:
    """A search resumes only with the recipe (and budget) it started with."""
    if overwrite or not os.path.exists(path):
        return
    with open(path) as fh:
        previous = with_defaults(json.load(fh))  # keys added since the search started: their defaults
    key = _difference(previous, with_defaults(json.loads(json.dumps(signature))))
    if key:
        raise InputError(f"{os.path.dirname(path)} holds a search of a different recipe ({key} differs); "
                         f"pass --overwrite to start over, or --dir for a new search")


def _learning_rates(lr: float, tuner: str) -> dict:
    """A tenth to ten times `lr` (1e-3 for `auto`), log scale (five values for the grid tuner)."""
    lr = 1e-3 if lr == "auto" else lr
    if tuner == "grid":
        return {"choice": [lr / 10, lr / 3, lr, lr * 3, lr * 10]}
    return {"float": [lr / 10, lr * 10], "sampling": "log"}


def default_space(recipe: Recipe, experiment: Experiment) -> dict:
    """The space of a recipe that declares none: the searched arm's pre-training epochs (0 = none) and learning
    rate, and its frozen depth (0 to every block of the backbone)."""
    name = searched_arm(recipe)
    arm = recipe.arm_recipes()[name]
    if not pretrains(arm):
        raise RecipeError(f"recipe key 'tune.space': empty, and the searched arm {name!r} does not pre-train, so "
                          f"there is no default space; declare the keys to search, e.g. "
                          f"tune: {{space: {{finetune.optimizer.learning_rate: {{float: [1.0e-4, 1.0e-2], sampling: log}}}}}}")
    depth = len(block_names(initial_backbone(arm, experiment.seed_data(recipe.seeds[0]))))  # a throwaway model
    prefix = f"arms.{name}." if recipe.arms and name in recipe.arms else ""
    return {f"{prefix}pretrain.epochs": {"int": [0, max(2, 2 * math.ceil(arm.pretrain.epochs))]},
            f"{prefix}pretrain.optimizer.learning_rate": _learning_rates(arm.pretrain.optimizer.learning_rate,
                                                                         recipe.tune.tuner),
            f"{prefix}transfer.frozen_depth": {"int": [0, depth]}}


def final_recipe(raw: dict, best: dict, scratch_raw: dict, scratch_best: dict) -> dict:
    """The best recipe with the tuned scratch as arm `scratch-tuned`, the searched arm's baseline."""
    final = load_yaml(best_recipe_text(raw, best))
    arm_name = searched_arm(recipe_from_dict(final))
    tuned = recipe_from_dict(with_values(scratch_raw, scratch_best["values"])).arm_recipes()["scratch"].to_dict()
    arms = final.get("arms") or {arm_name: {}}
    arms["scratch-tuned"] = {k: tuned[k] for k in ("backbone", "pretrain", "transfer", "finetune")}
    arms[arm_name] = {**(arms.get(arm_name) or {}), "baseline": "scratch-tuned"}
    final["arms"] = arms
    final["tune"] = {**final.get("tune", {}), "arm": arm_name}
    recipe_from_dict(final)  # runnable as written
    return final


def _final(project: str, raw: dict, best: dict, scratch_raw: dict, scratch_best: dict, smoke: bool,
           debug: bool) -> int:
    """Every seed of the best recipe, its searched arm against the scratch tuned with the same budget, on test."""
    from kpretrain.report.tables import markdown_table, verdict_lines

    final = final_recipe(raw, best, scratch_raw, scratch_best)
    io.write_text(os.path.join(project, "final_recipe.yaml"),
                  f"# kpretrain tune {raw['name']} --final: the best recipe (trial {best['trial_id']}) against "
                  f"scratch tuned with the same budget (scratch trial {scratch_best['trial_id']})\n"
                  + dump_yaml(final))
    recipe = recipe_from_dict(final)
    out = os.path.join(project, "final", dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    print(f"final: best recipe against the tuned scratch (scratch-tuned), seeds {recipe.seeds}, into {out}")
    try:
        metrics = Experiment(recipe, smoke=smoke).run(out)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        return _failed("final run", exc, debug)
    print(markdown_table(metrics))
    print("\n".join(verdict_lines(metrics)))
    return 0


def _failed(stage: str, exc: Exception, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(f"kpretrain: {stage} failed: {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
          file=sys.stderr)
    return 1
