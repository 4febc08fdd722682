"""The numbers a report shows, read from metrics.json: one summary row per arm (per point and arm for a sweep), what
metrics.json stores per arm under `statistics`, the benefit column, and the Holm family: computed once when
metrics.json is written (`arm_statistics`, `store_sweep_holm`) and read back by every renderer (`holm_adjusted`)."""

from __future__ import annotations

from kpretrain.report.statistics import accuracy_interval, benefit_ratio, holm, paired_comparison, t_interval

BASELINE = "scratch"
COMPUTE = "compute_"  # prefix of a row's comparison with its compute-matched scratch (`compute_diff_mean`, ...)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    r = t_interval(values)
    return r["mean"], r["std"]


def summary_rows(metrics: dict) -> list[dict]:
    """One row per arm (per point and arm for a sweep, with `point`): test accuracy (mean, std, 95 % t interval; raw
    mean; the interval shown within [0, 1]) and, against its matched scratch, the paired difference with its interval, paired t-test p-value and its
    Holm adjustment over all the comparisons of the run (every point's of a sweep), as metrics.json stores it
    (`holm_adjusted`); with an arm marked `reference: natural`, each compared arm's `benefit` (its share of the
    natural arm's gain, per point).  An arm with a compute-matched scratch (`baselines: [scratch, scratch_compute]`)
    has the same comparison with it under `compute_` keys (`compute_baseline`, `compute_diff_mean`, ...,
    `compute_p_holm`), in the same Holm family."""
    rows = _unadjusted_rows(metrics)
    adjusted = holm_adjusted(metrics, rows)
    for row in rows:
        row["test_accuracy_ci"] = accuracy_interval(row["test_accuracy_ci"])  # shown within [0, 1]
        for key, _ in _tests([row]):
            prefix = COMPUTE if len(key) > 2 else ""
            row[f"{prefix}p_holm"], row["comparisons"] = adjusted[key]
    return rows


def _unadjusted_rows(metrics: dict, benefit: bool = True) -> list[dict]:
    """`summary_rows` without the Holm columns (and without `benefit` when `benefit` is false)."""
    def reference(arms):
        return reference_arm(arms, metrics.get("reference")) if benefit else None

    if "points" in metrics:
        return [{"point": point["dir"], **row} for point in metrics["points"]
                for row in _arm_rows(point["arms"], reference(point["arms"]))]
    return _arm_rows(metrics["arms"], reference(metrics["arms"]))


def holm_family(rows: list[dict]) -> dict:
    """The one Holm adjustment: every comparison of `rows` (a run's, or every point's of a sweep) as one family.
    Returns (point or None, arm) -> (adjusted p, tested comparisons in the family), and (point, arm, "compute") for
    a comparison with a compute-matched scratch; None where there is no test."""
    tests = _tests(rows)
    tested = sum(p is not None for _, p in tests)
    return {key: (adjusted, tested) for (key, _), adjusted in zip(tests, holm([p for _, p in tests]))}


def _tests(rows: list[dict]) -> list[tuple[tuple, float | None]]:
    """(key, p) of every comparison of `rows`: (point, arm) with its baseline, (point, arm, "compute") with its
    compute-matched scratch."""
    return [((row.get("point"), row["arm"], *(["compute"] if prefix else [])), row[f"{prefix}p"])
            for row in rows for prefix in ("", COMPUTE) if f"{prefix}diff_mean" in row]


def holm_adjusted(metrics: dict, rows: list[dict] | None = None) -> dict:
    """(point or None, arm) -> (p_holm, comparisons) of every compared arm, as `metrics.json` stores them: one family
    per run or sweep, adjusted once when it was written (a sweep point's file holds the sweep's).  The one fallback
    for a `metrics.json` without them (written before statistics were stored, or a sweep before it stored its
    family, or unfinished): the family computed here from the raw p-values (`rows`: its unadjusted rows, if made)."""
    stored = _stored_holm(metrics)
    if stored is not None and (rows is None or all(key in stored for key, _ in _tests(rows))):
        return stored
    return holm_family(rows if rows is not None else _unadjusted_rows(metrics, benefit=False))


def _stored_holm(metrics: dict) -> dict | None:
    """The Holm columns stored under `arms.<arm>.statistics.vs_baseline`; None when some are missing, or for a sweep
    whose `holm` record does not say its points were adjusted together."""
    if "points" in metrics:
        if (metrics.get("holm") or {}).get("family") != "sweep":
            return None
        runs = [(point["dir"], point["arms"]) for point in metrics["points"]]
    else:
        runs = [(None, metrics["arms"])]
    out = {}
    for point, arms in runs:
        for name, entry in arms.items():
            if not entry["test_accuracy"]:  # not run yet: no row either
                continue
            if "statistics" not in entry:
                return None
            for kind, key in (("vs_baseline", (point, name)), ("vs_compute", (point, name, "compute"))):
                compared = entry["statistics"].get(kind)
                if compared is not None:
                    if "p_holm" not in compared or "comparisons" not in compared:
                        return None
                    out[key] = (compared["p_holm"], compared["comparisons"])
    return out


def store_sweep_holm(runs: list[dict]) -> dict:
    """Adjust every comparison of a sweep's points (each point's metrics, run layout) as one Holm family, once, and
    store it in each point's metrics: `statistics.vs_baseline` `p_holm` and `comparisons` of each compared arm, and
    `holm` = {family: "sweep", comparisons}.  Returns that record (for the sweep's own metrics.json)."""
    points = {"points": [{"dir": i, "arms": run["arms"]} for i, run in enumerate(runs)]}
    family = holm_family(_unadjusted_rows(points, benefit=False))
    record = {"family": "sweep", "comparisons": max((tested for _, tested in family.values()), default=0)}
    for (i, arm, *compute), (adjusted, tested) in family.items():
        kind = "vs_compute" if compute else "vs_baseline"
        runs[i]["arms"][arm]["statistics"][kind].update(p_holm=adjusted, comparisons=tested)
    for run in runs:
        run["holm"] = dict(record)
    return record


def arm_statistics(metrics: dict) -> dict:
    """What `metrics.json` records per arm under `statistics` (fractions, not points), with the Holm adjustment
    computed here, once, over the comparisons of `metrics` (a run; a sweep re-adjusts its points together with
    `store_sweep_holm`)."""
    out = {}
    rows = _unadjusted_rows(metrics)
    family = holm_family(rows)
    for row in rows:
        entry = {"test_accuracy": {"mean": row["test_accuracy_mean"], "std": row["test_accuracy_std"],
                                   "ci95": row["test_accuracy_ci"], "n": row["n"]}}
        for key, _ in _tests([row]):
            prefix = COMPUTE if len(key) > 2 else ""
            entry["vs_compute" if prefix else "vs_baseline"] = _stored_comparison(row, prefix, *family[key])
        if "benefit" in row:
            entry["benefit"] = row["benefit"]
        out[row["arm"]] = entry
    return out


def _stored_comparison(row: dict, prefix: str, p_holm: float | None, comparisons: int) -> dict:
    """`statistics.vs_baseline` (or `vs_compute`, `prefix` "compute_") of a row: what metrics.json stores."""
    def get(key):
        return row[prefix + key]

    return {"baseline": get("baseline"), "mean": get("diff_mean"), "std": get("diff_std"), "n": get("diff_n"),
            "ci95": get("diff_ci"), "p": get("p"), "p_holm": p_holm, "comparisons": comparisons,
            "bootstrap_ci95": get("bootstrap_ci"), "seeds_for_80_power": get("seeds_needed")}


def _row_comparison(compared: dict, prefix: str = "") -> dict:
    """The row fields of a stored comparison (`_stored_comparison`'s inverse, without the Holm columns)."""
    return {prefix + k: v for k, v in (("baseline", compared["baseline"]), ("diff_mean", compared["mean"]),
                                       ("diff_std", compared["std"]), ("diff_n", compared["n"]),
                                       ("diff_ci", compared["ci95"]), ("p", compared["p"]),
                                       ("bootstrap_ci", compared["bootstrap_ci95"]),
                                       ("seeds_needed", compared["seeds_for_80_power"]))}


def _compared(baseline: str, diffs: dict, prefix: str = "") -> dict:
    """The row fields of the paired comparison with `baseline` (`diffs`: seed -> difference; none when empty)."""
    if not diffs:
        return {}
    c = paired_comparison(list(diffs.values()))
    return {prefix + k: v for k, v in (("baseline", baseline), ("diff_mean", c["mean"]), ("diff_std", c["std"]),
                                       ("diff_n", c["n"]), ("diff_ci", c["ci"]), ("p", c["p"]),
                                       ("bootstrap_ci", c["bootstrap_ci"]), ("seeds_needed", c["seeds_needed"]))}


def _differences(entry: dict, base: dict) -> dict:
    """Seed -> the arm's test accuracy minus its baseline's, over the seeds both have."""
    paired = dict(zip(base["seeds"], base["test_accuracy"]))
    return {s: acc - paired[s] for s, acc in zip(entry["seeds"], entry["test_accuracy"]) if s in paired}


def reference_arm(arms: dict, default: str | None = None) -> str | None:
    """The arm marked `reference: natural` in metrics.json (its arm entry, or the run's `reference`), or None."""
    marked = [name for name, entry in arms.items() if entry.get("reference") == "natural"]
    return marked[0] if marked else default if default in arms else None


def _arm_rows(arms: dict, reference: str | None = None) -> list[dict]:
    """`_unadjusted_rows` of one run's (or one point's) arms; the benefit against `reference`, when given.

    The statistics are those metrics.json stores (`arms.<arm>.statistics`, computed once when the run wrote it);
    they are computed here only for a file written before they were stored."""
    finished = {name: entry for name, entry in arms.items() if entry["test_accuracy"]}
    if finished and all(_has_stored(entry, reference) for entry in finished.values()):
        return [_stored_row(name, entry, reference is not None) for name, entry in finished.items()]
    rows, paired_diffs = [], {}
    for name, entry in arms.items():
        if not entry["test_accuracy"]:  # not run yet (metrics.json of an unfinished run)
            continue
        row = _accuracy_row(name, entry)
        baseline = entry.get("baseline") or (  # runs before matched baselines paired every arm with scratch
            BASELINE if name != BASELINE and not name.startswith(BASELINE + "-") and "compute_of" not in entry
            else None)
        if arms.get(baseline) is not None:
            paired_diffs[name] = _differences(entry, arms[baseline])  # seed -> difference, for the benefit column
            row.update(_compared(baseline, paired_diffs[name]))
        compute = entry.get("compute_baseline")
        if arms.get(compute) is not None:
            row.update(_compared(compute, _differences(entry, arms[compute]), COMPUTE))
        rows.append(row)
    if reference is not None:
        natural = paired_diffs.get(reference, {})
        for row in rows:
            if "diff_mean" in row:
                row["benefit"] = _benefit(paired_diffs[row["arm"]], natural, reference)
    return rows


def _has_stored(entry: dict, reference: str | None) -> bool:
    stats = entry.get("statistics")
    return stats is not None and (reference is None or "vs_baseline" not in stats or "benefit" in stats)


def _stored_row(name: str, entry: dict, benefit: bool) -> dict:
    """An arm's row from the statistics its metrics.json entry stores (fractions)."""
    stats = entry["statistics"]
    row = _accuracy_row(name, entry, stats["test_accuracy"])
    compared = stats.get("vs_baseline")
    if compared is not None:
        row.update(_row_comparison(compared))
        if benefit and "benefit" in stats:
            row["benefit"] = stats["benefit"]
    if stats.get("vs_compute") is not None:
        row.update(_row_comparison(stats["vs_compute"], COMPUTE))
    return row


def _accuracy_row(name: str, entry: dict, stored: dict | None = None) -> dict:
    """An arm's row before its comparison: test accuracy (`stored`: its statistics as metrics.json stores them),
    raw and kNN means, parameters and protocol."""
    acc = t_interval(entry["test_accuracy"]) if stored is None else {
        "n": stored["n"], "mean": stored["mean"], "std": stored["std"], "ci": stored["ci95"]}
    row = {"arm": name, "n": acc["n"], "test_accuracy_mean": acc["mean"], "test_accuracy_std": acc["std"],
           "test_accuracy_ci": acc["ci"], "test_accuracy_raw_mean": mean_std(entry["test_accuracy_raw"])[0],
           "trainable_params": entry["trainable_params"], "task": _task(entry["protocol"]),
           "frozen_depth": entry["protocol"]["frozen_depth"], "init": entry["protocol"].get("init", "weights")}
    if entry.get("knn_accuracy"):
        row["knn_accuracy_mean"] = mean_std(entry["knn_accuracy"])[0]
    return row


def _benefit(diffs: dict, natural: dict, reference: str) -> dict:
    """`benefit_ratio` over the seeds both arms share, as recorded in metrics.json (fractions)."""
    seeds = [s for s in diffs if s in natural]
    b = benefit_ratio([diffs[s] for s in seeds], [natural[s] for s in seeds])
    if not natural:
        b["reason"] = f"the natural arm {reference!r} has no difference to scratch yet"
    return {"reference": reference, "ratio": b["ratio"], "ci95": b["ci95"], "defined": b["defined"],
            "reason": b["reason"], "n": b["n"]}


def _task(protocol: dict) -> str:
    """The arm's pre-training task, with self-training and augmentation when it has them."""
    parts = [protocol["task"]]
    if protocol.get("selftrain"):
        student = protocol["selftrain"].get("student_augment")
        parts.append(f"self-training x{protocol['selftrain']['rounds']}"
                     + (f" (students: {student} aug.)" if student else ""))
    if protocol.get("augment", "none") != "none":
        parts.append(f"{protocol['augment']} aug.")
    return " + ".join(parts)
