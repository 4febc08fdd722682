"""The Python API: `kpretrain.run`, `kpretrain.tune`, `kpretrain.load_backbone`, for notebooks and scripts.

They run the same code as the command line (`kpretrain run`, `kpretrain tune`) and raise the same typed errors
(`RecipeError`, `DataError`, `InputError`) where the command line exits 2.
"""

from __future__ import annotations

import dataclasses
import json
import os

from kpretrain.errors import InputError
from kpretrain.recipe import Recipe, apply_overrides, load_raw, recipe_from_dict
from kpretrain.recipe.values import format_value, load_yaml


@dataclasses.dataclass(frozen=True)
class ArmResult:
    """One arm's test accuracy per seed with its statistics, and its paired difference to its baseline."""

    name: str
    test_accuracy: list
    mean: float
    std: float | None
    ci95: tuple | None
    baseline: str | None = None
    difference: dict | None = None  # vs the baseline (metrics.json): mean, ci95, p, p_holm, comparisons, ...
    benefit: dict | None = None  # share of the natural reference arm's gain: reference, ratio, ci95, defined, reason


@dataclasses.dataclass(frozen=True)
class RunResult:
    """A finished run: its directory and `metrics.json`, read as arms, points (a sweep) and verdicts."""

    run_dir: str
    metrics: dict

    @property
    def arms(self) -> dict[str, ArmResult]:
        """Per arm (a run without `sweep:`); for a sweep use `points`."""
        if "points" in self.metrics:
            raise AttributeError("a sweep has no single set of arms; read result.points")
        return _arms(self.metrics, _holm(self.metrics))

    @property
    def points(self) -> list[tuple[dict, dict[str, ArmResult]]]:
        """A sweep's points: ({swept key: value}, arms), p_holm adjusted over every comparison of the sweep."""
        adjusted = _holm(self.metrics) if "points" in self.metrics else {}
        return [(p["values"], _arms(p, adjusted, p["dir"])) for p in self.metrics.get("points", [])]

    @property
    def verdicts(self) -> list[str]:
        from kpretrain.report.markdown import verdict_lines

        return verdict_lines(self.metrics)

    def report(self) -> str:
        """The run's `report.md` (Markdown)."""
        with open(os.path.join(self.run_dir, "report.md")) as fh:
            return fh.read()


def _holm(metrics: dict) -> dict:
    """(point, arm) -> (p_holm, comparisons): as metrics.json stores them (computed for an older file)."""
    from kpretrain.report.summary import holm_adjusted

    return holm_adjusted(metrics)


def _arms(metrics: dict, adjusted: dict, point: str | None = None) -> dict[str, ArmResult]:
    """The arms of a run or of one sweep point, their `difference` with the run's or sweep's Holm family."""
    out = {}
    for name, entry in metrics["arms"].items():
        stats = entry["statistics"]["test_accuracy"]
        ci = stats.get("ci95")
        difference = entry["statistics"].get("vs_baseline")
        if difference is not None and (point, name) in adjusted:
            difference = {**difference, **dict(zip(("p_holm", "comparisons"), adjusted[(point, name)]))}
        out[name] = ArmResult(name, list(entry["test_accuracy"]), stats["mean"], stats.get("std"),
                              tuple(ci) if ci else None, entry.get("baseline"), difference,
                              entry["statistics"].get("benefit"))
    return out


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """A finished search: its directory, the best trial's values and score, the best recipe, every trial."""

    directory: str
    best_values: dict
    best_score: float
    best_recipe: dict
    trials: list
    final: RunResult | None = None  # with final=True: every seed of the best recipe against the tuned scratch


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


def run(recipe, *, out: str | None = None, overrides=None, smoke: bool = False, callbacks=None) -> RunResult:
    """Run every seed x arm of `recipe` (a path, a dict or a `Recipe`) into `out` (default
    `runs/<name>/<UTC timestamp>/`), as `kpretrain run` does; a directory holding an unfinished run of the same
    recipe is resumed, a finished one is read back.  `overrides`: {key: value} or ["key=value", ...].
    `callbacks`: your own Keras callbacks for every stage, or {"pretrain": [...], "finetune": [...]}."""
    from kpretrain.experiment import make_run
    from kpretrain.report import io
    from kpretrain.rundir import default_out_dir, run_directory

    resolved = recipe_from_dict(_raw(recipe, overrides))
    if resolved.runtime.distribute == "multi_worker":
        raise InputError("runtime.distribute=multi_worker: start `kpretrain run` on every worker instead")
    out_dir = out or default_out_dir(resolved.name)
    with run_directory(out_dir, resolved.to_dict(), smoke) as state:
        if state == "finished":
            return RunResult(out_dir, io.read_json(os.path.join(out_dir, "metrics.json")))
        experiment = make_run(resolved, smoke=smoke, callbacks=callbacks)
        print("\n".join(experiment.prepare()))
        metrics = experiment.run(out_dir)
    return RunResult(out_dir, metrics)


def tune(recipe, *, overrides=None, tuner: str | None = None, max_trials: int | None = None,
         directory: str = "tuner_runs", overwrite: bool = False, smoke: bool = False,
         final: bool = False) -> TuneResult:
    """`kpretrain tune`: search `recipe`'s `tune.space` (a default space without one) with KerasTuner, scored on
    validation, resuming a search found in `directory/<name>/`; `final=True` then searches scratch with the same
    budget and runs every seed of the best recipe against it.  Raises RuntimeError when no trial completed."""
    from kpretrain import tuning
    from kpretrain.report import io

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
    """The pre-trained backbone (a Keras model) of `arm` and `seed` in a run directory (a sweep point's directory
    for a sweep): without both, the exported `backbone.keras` (the first pre-trained arm, first seed), loaded in
    safe mode; otherwise rebuilt from the run's recipe with the weights of that seed's pre-training unit."""
    from kpretrain.export import pretrained_backbone, read_run
    from kpretrain.models.loading import load_backbone as load_exported

    metrics, recipe = read_run(run_dir)
    if arm is None and seed is None:
        return load_exported(run_dir, tuple(metrics["data"]["image_shape"]))[0]
    if arm is None:
        arm = next((name for name, e in metrics["arms"].items() if e.get("pretrain_unit")), "")
    return pretrained_backbone(run_dir, metrics, recipe, arm,
                               seed if seed is not None else (metrics["arms"].get(arm) or {}).get("seeds", [0])[0])
