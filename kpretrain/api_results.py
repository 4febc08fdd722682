"""What the Python API returns: `RunResult` (with `ArmResult` per arm), `TuneResult` and `Comparison`, read from
the files a run, a search or `kpretrain report` writes (`LRFindRun` and `TaskPreview` live beside their commands).

Their repr is short: a results table with numbers rounded for display (`api_display`); in Jupyter, the same table
as HTML.  Their fields keep full precision."""

from __future__ import annotations

import dataclasses
import os

from kpretrain import api_display as show
from kpretrain.api_history import STAGES, stage_history  # noqa: F401 - STAGES: the stages `history` reads
from kpretrain.errors import InputError


@dataclasses.dataclass(frozen=True, repr=False)
class ArmResult:
    """One arm's test accuracy per seed with its statistics, and its paired difference to its baseline (and to its
    compute-matched scratch, with `baselines: [scratch, scratch_compute]`).

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
        compute_baseline: the arm's compute-matched scratch, its matched scratch given the optimizer steps of the
            arm's pre-training (None without `scratch_compute` or pre-training).
        compute_difference: the paired comparison with it, as `difference` (metrics.json's `vs_compute`), p_holm
            in the same Holm family (None without a compute-matched scratch).

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
    compute_baseline: str | None = None  # its compute-matched scratch (baselines: [scratch, scratch_compute])
    compute_difference: dict | None = None  # vs the compute-matched scratch (metrics.json's vs_compute), as difference

    def __repr__(self) -> str:
        compared = "".join(_compared(baseline, d) for baseline, d in (
            (self.baseline, self.difference), (self.compute_baseline, self.compute_difference)))
        return (f"ArmResult({self.name!r}, n={len(self.test_accuracy)}, mean={show.rounded(self.mean)}, "
                f"std={show.rounded(self.std)}, ci95={show.rounded(self.ci95)}{compared})")


def _compared(baseline: str | None, difference: dict | None) -> str:
    """`, vs <baseline>: <difference> [<interval>], p_holm=<p>` as `ArmResult`'s repr shows it ("" for none)."""
    if baseline is None:
        return ""
    d = difference or {}
    return (f", vs {baseline}: {show.signed(d.get('mean'))} {show.interval(d.get('ci95'), sign=True)}, "
            f"p_holm={show.p_value(d.get('p_holm'))}")


@dataclasses.dataclass(frozen=True, repr=False)
class RunResult:
    """A finished run: its directory and `metrics.json`, read as arms, points (a sweep) and verdicts.

    Its repr is the results table (one line per arm, per point and arm for a sweep): n, mean, sd and 95 % interval
    of the test accuracy, the paired difference to the arm's baseline with its interval, and the Holm-adjusted
    p-value (the same against the compute-matched scratch, when the run has `scratch_compute`), rounded as
    `kpretrain report` shows them; Jupyter shows it as a table.

    Attributes:
        run_dir: the run directory.
        metrics: the `metrics.json` dictionary.

    Example:

    ```python
    result = kpretrain.run("recipes/fashion_overlay.yaml", smoke=True)
    result                                   # the table
    result.to_pandas()                       # one row per arm x seed
    result.history("overlay", seed=0)        # fine-tuning's loss, accuracy, val_* per epoch
    ```
    """

    run_dir: str
    metrics: dict

    def __repr__(self) -> str:
        return self._title() + "\n" + show.text_table(*show.summary_cells(self._rows()))

    def _repr_markdown_(self) -> str:
        return f"**{self._title()}**\n\n" + show.markdown_table(*show.summary_cells(self._rows()))

    def _repr_html_(self) -> str:
        return show.html_table(*show.summary_cells(self._rows()), caption=self._title())

    def _title(self) -> str:
        m = self.metrics
        seeds = len(m.get("seeds", []))
        notes = [f"{seeds} seed{'' if seeds == 1 else 's'}",
                 *(["smoke run: numbers mean nothing"] if m.get("smoke") else []),
                 *(["unfinished"] if not m.get("complete", True) else [])]
        return f"RunResult {m.get('recipe', '')} in {self.run_dir} ({', '.join(notes)}): test accuracy"

    def _rows(self) -> list[dict]:
        from kpretrain.report.summary import summary_rows

        return summary_rows(self.metrics)

    def to_pandas(self, per: str = "seed"):
        """The results as a `pandas.DataFrame` (needs pandas: `pip install 'kpretrain[notebook]'`).

        Args:
            per: "seed": one row per arm x seed (per point, arm and seed of a sweep, the swept keys as columns):
                `arm`, `seed`, `baseline`, `test_accuracy`, `test_accuracy_raw`, `test_accuracy_refreshed`,
                `val_accuracy`, `knn_accuracy`, `wall_time_s` (those the run has) and `diff_vs_baseline` (test
                accuracy minus the baseline's on the same seed); with `scratch_compute`, `compute_baseline` and
                `diff_vs_compute` (the same against the compute-matched scratch).  "arm": one row per arm (and
                point) with its statistics, the rows of `kpretrain report --format json` (`test_accuracy_mean`,
                `_std`, `_ci`, `diff_mean`, `diff_ci`, `p`, `p_holm`, ...; with `scratch_compute`, the same
                against it as `compute_baseline`, `compute_diff_mean`, `compute_diff_ci`, ..., `compute_p_holm`).

        Returns:
            A DataFrame, numbers in full precision.

        Raises:
            ImportError: pandas is not installed.
            InputError: `per` is neither "seed" nor "arm".
        """
        pd = show.pandas()
        if per == "seed":
            return pd.DataFrame(show.seed_records(self.metrics))
        if per == "arm":
            return pd.DataFrame(self._rows())
        raise InputError(f"to_pandas(per={per!r}): expected 'seed' or 'arm'")

    def history(self, arm: str, seed: int, stage: str = "finetune", point=None) -> dict:
        """One stage's history per epoch, as the run recorded it (metrics.json, from `units/`).

        Args:
            arm: the arm.
            seed: the seed.
            stage: "finetune" (`loss`, `accuracy`, `val_accuracy`, `val_accuracy_raw`, ...; a validation number is
                None at an epoch without validation) or "pretrain" (the pretext task's, with `epoch` in passes over
                the data).
            point: for a sweep, the point: its index, its directory name (`data.labels_per_class=10`) or its
                values (`{"data.labels_per_class": 10}`).

        Returns:
            {metric: [value per epoch]} with `epoch` (1-based for fine-tuning); `pandas.DataFrame(...)` of it is a
            table.

        Raises:
            InputError: an unknown arm, seed, stage or point, or an arm without pre-training for "pretrain".
        """
        return stage_history(self.metrics, arm, seed, stage, point)

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
    """The arms of a run or of one sweep point, their `difference` (and `compute_difference`) with the run's or
    sweep's Holm family."""
    out = {}
    for name, entry in metrics["arms"].items():
        stats = entry["statistics"]["test_accuracy"]
        ci = stats.get("ci95")
        difference, compute = (_adjusted(entry["statistics"].get(kind), adjusted.get(key)) for kind, key in (
            ("vs_baseline", (point, name)), ("vs_compute", (point, name, "compute"))))
        out[name] = ArmResult(name, list(entry["test_accuracy"]), stats["mean"], stats.get("std"),
                              tuple(ci) if ci else None, entry.get("baseline"), difference,
                              entry["statistics"].get("benefit"), entry.get("compute_baseline"), compute)
    return out


def _adjusted(compared: dict | None, holm: tuple | None) -> dict | None:
    """A stored comparison with the family's (p_holm, comparisons), when both are there."""
    if compared is None or holm is None:
        return compared
    return {**compared, **dict(zip(("p_holm", "comparisons"), holm))}


@dataclasses.dataclass(frozen=True, repr=False)
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

    def __repr__(self) -> str:
        done = sum(1 for t in self.trials if t.get("status") == "COMPLETED")
        lines = [f"TuneResult {self.directory}: best validation accuracy {show.number(self.best_score)} "
                 f"({len(self.trials)} trials, {done} completed)"]
        lines += [f"  {key} = {show.significant(value)!r}" for key, value in self.best_values.items()]
        return "\n".join(lines + ([repr(self.final)] if self.final is not None else []))


@dataclasses.dataclass(frozen=True, repr=False)
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

    def __repr__(self) -> str:
        runs = len(dict.fromkeys(row["run"] for row in self.rows))
        return (f"Comparison of {runs} run{'' if runs == 1 else 's'}: test accuracy\n"
                + show.text_table(*show.summary_cells(self.rows, run=True)))

    def _repr_html_(self) -> str:
        return show.html_table(*show.summary_cells(self.rows, run=True), caption="test accuracy")

    def render(self, format: str = "md") -> str:  # noqa: A002 - kpretrain report --format
        """The table as `kpretrain report --format FORMAT` prints it: "md", "csv" or "json"."""
        from kpretrain.report.combine import render_rows

        return render_rows(self.rows, format)
