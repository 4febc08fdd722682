"""What the Python API returns: `RunResult` (with `ArmResult` per arm), `TuneResult` and `Comparison`, read from
the files a run, a search or `kpretrain report` writes (`LRFindRun` and `TaskPreview` live beside their commands)."""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class ArmResult:
    """One arm's test accuracy per seed with its statistics, and its paired difference to its baseline.

    Attributes:
        name: the arm's name.
        test_accuracy: the test accuracy of each seed, in the recipe's seed order.
        mean: their mean.
        std: their sample standard deviation (None for one seed).
        ci95: the 95 % Student t interval of the mean, (low, high) (None for one seed).
        baseline: the arm's matched baseline (None for a baseline).
        difference: the paired comparison with the baseline, as metrics.json stores it: `mean`, `ci95`, `p`,
            `p_holm`, `comparisons`, `seeds_for_80_power`, ... (None for a baseline).
        benefit: the share of the natural reference arm's gain: `reference`, `ratio`, `ci95`, `defined`, `reason`
            (None without a reference arm).

    Example:

    ```python
    arm = kpretrain.run("recipes/fashion_overlay.yaml", smoke=True).arms["overlay"]
    print(arm.mean, arm.ci95, arm.difference["p_holm"])
    ```
    """

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
    """A finished run: its directory and `metrics.json`, read as arms, points (a sweep) and verdicts.

    Attributes:
        run_dir: the run directory.
        metrics: the `metrics.json` dictionary.

    Example:

    ```python
    result = kpretrain.run("recipes/fashion_overlay.yaml", smoke=True)
    print(result.arms["overlay"].mean, "\n".join(result.verdicts))
    ```
    """

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
    """A finished search: its directory, the best trial's values and score, the best recipe, every trial.

    Attributes:
        directory: the search's directory, `<directory>/<recipe name>/` (best.json, best_recipe.yaml, tune.png).
        best_values: the best trial's values, recipe key -> value.
        best_score: the best trial's validation accuracy.
        best_recipe: the recipe with the best values set (best_recipe.yaml as a dict).
        trials: every trial's row (trial_id, status, score, values, error), completed ones best first.
        final: with `final=True`, every seed of the best recipe against the tuned scratch, as a `RunResult`.

    Example:

    ```python
    searched = kpretrain.tune("recipes/fashion_tune.yaml", smoke=True)
    print(searched.best_values, searched.best_score)
    ```
    """

    directory: str
    best_values: dict
    best_score: float
    best_recipe: dict
    trials: list
    final: RunResult | None = None  # with final=True: every seed of the best recipe against the tuned scratch


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Run directories in one table: `kpretrain report`'s rows.

    Attributes:
        rows: one dict per arm of each run (per point and arm of a sweep), in the order the directories were given:
            `run`, `recipe`, (`point`,) `arm`, `task`, `n`, `test_accuracy_mean`, `test_accuracy_std`,
            `test_accuracy_ci`, and against the matched baseline `baseline`, `diff_mean`, `diff_ci`, `p`, `p_holm`,
            `comparisons`, `seeds_needed`, ...: what `kpretrain report --format json` prints.
        plot: the PNG drawn (every run's arms with their 95 % intervals), or None.

    Example:

    ```python
    table = kpretrain.compare(["runs/a", "runs/b"])
    print(table.render("md"))
    ```
    """

    rows: list
    plot: str | None = None

    def render(self, format: str = "md") -> str:  # noqa: A002 - kpretrain report --format
        """The table as `kpretrain report --format FORMAT` prints it: "md", "csv" or "json"."""
        from kpretrain.report.combine import render_rows

        return render_rows(self.rows, format)
