"""How the Python API's results look in a notebook or a terminal: short tables of the summary rows `kpretrain report`
prints (`report.summary.summary_rows`), as text (repr), Markdown and HTML, with numbers rounded for display only;
and their pandas tables (pandas is the optional extra `kpretrain[notebook]`)."""

from __future__ import annotations

import html

PANDAS_MISSING = "to_pandas() needs pandas; pip install 'kpretrain[notebook]' (or pandas)"
PER_SEED = ("test_accuracy", "test_accuracy_raw", "test_accuracy_refreshed", "val_accuracy", "knn_accuracy",
            "wall_time_s")  # metrics.json's per-seed lists that `to_pandas()` gives one column each
DIGITS = 4  # accuracies and their differences, as displayed
COMPUTE = "compute_"  # a summary row's keys against the compute-matched scratch (`report.summary.COMPUTE`)


def number(value) -> str:
    """A number rounded for display ("—" for none)."""
    return "—" if value is None else f"{value:.{DIGITS}f}"


def signed(value) -> str:
    return "—" if value is None else f"{value:+.{DIGITS}f}"


def interval(pair, sign: bool = False) -> str:
    if not pair:
        return "—"
    show = signed if sign else number
    return f"[{show(pair[0])}, {show(pair[1])}]"


def p_value(p) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def rounded(value):
    """`value` with every float rounded for display (tuples, lists and dicts followed)."""
    if isinstance(value, float):
        return round(value, DIGITS)
    if isinstance(value, (list, tuple)):
        return type(value)(rounded(v) for v in value)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def significant(value):
    """A recipe value for display: a float to 4 significant digits (a learning rate of 1e-05 stays one)."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def summary_cells(rows: list[dict], run: bool = False) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of summary rows: [run,] [point,] arm, n, mean, sd, 95 % CI, difference to the baseline with
    its interval, baseline, Holm-adjusted p; when some row has one (`baselines: [scratch, scratch_compute]`), the
    same four against the compute-matched scratch."""
    point = any("point" in row for row in rows)
    prefixes = ("", COMPUTE) if any(COMPUTE + "diff_mean" in row for row in rows) else ("",)
    headers = [*(["run"] if run else []), *(["point"] if point else []), "arm", "n", "mean", "sd", "95 % CI",
               "vs baseline", "95 % CI", "baseline", "p (Holm)",
               *(["vs compute", "95 % CI", "compute baseline", "p (Holm)"] if len(prefixes) > 1 else [])]
    cells = []
    for row in rows:
        cells.append([*([str(row["run"])] if run else []), *([str(row.get("point", ""))] if point else []),
                      str(row["arm"]), str(row.get("n", "")), number(row.get("test_accuracy_mean")),
                      number(row.get("test_accuracy_std")), interval(row.get("test_accuracy_ci")),
                      *(cell for prefix in prefixes for cell in _comparison_cells(row, prefix))])
    return headers, cells


def _comparison_cells(row: dict, prefix: str = "") -> list[str]:
    """A row's difference to its baseline (`prefix` "compute_": its compute-matched scratch), the interval, the
    baseline's name and the Holm-adjusted p; blank where the row has no such comparison."""
    compared = prefix + "diff_mean" in row
    return [signed(row[prefix + "diff_mean"]) if compared else "",
            interval(row.get(prefix + "diff_ci"), sign=True) if compared else "",
            str(row.get(prefix + "baseline") or ""), p_value(row.get(prefix + "p_holm")) if compared else ""]


def text_table(headers: list[str], cells: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in [headers, *cells])


def markdown_table(headers: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells])


def html_table(headers: list[str], cells: list[list[str]], caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in cells)
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def seed_records(metrics: dict) -> list[dict]:
    """One record per arm x seed (per point, arm and seed of a sweep): the swept values, arm, seed, baseline, each
    per-seed list of `PER_SEED` that metrics.json holds, and `diff_vs_baseline` (the paired difference of test
    accuracy to the baseline's on the same seed); when some arm has a compute-matched scratch
    (`baselines: [scratch, scratch_compute]`), every record also has `compute_baseline` and `diff_vs_compute`
    (the same difference to it; None for an arm without one)."""
    out = []
    points = metrics.get("points") or [{"values": {}, "arms": metrics["arms"]}]
    compute = any(entry.get("compute_baseline") for point in points for entry in point["arms"].values())
    for point in points:
        for name, entry in point["arms"].items():
            paired = _accuracy_by_seed(point["arms"], entry.get("baseline"))
            matched = _accuracy_by_seed(point["arms"], entry.get("compute_baseline"))
            for i, seed in enumerate(entry.get("seeds", [])[:len(entry["test_accuracy"])]):
                record = {**point["values"], "arm": name, "seed": seed, "baseline": entry.get("baseline")}
                record.update({key: entry[key][i] for key in PER_SEED if isinstance(entry.get(key), list)
                               and i < len(entry[key])})
                mine = entry["test_accuracy"][i]
                record["diff_vs_baseline"] = _minus(mine, paired.get(seed))
                if compute:
                    record["compute_baseline"] = entry.get("compute_baseline")
                    record["diff_vs_compute"] = _minus(mine, matched.get(seed))
                out.append(record)
    return out


def _accuracy_by_seed(arms: dict, name: str | None) -> dict:
    """Seed -> test accuracy of arm `name` (empty for no such arm)."""
    entry = arms.get(name or "", {})
    return dict(zip(entry.get("seeds", []), entry.get("test_accuracy", [])))


def _minus(mine: float, theirs: float | None) -> float | None:
    return None if theirs is None else mine - theirs


def pandas():
    """The pandas module, or ImportError naming the extra that installs it."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(PANDAS_MISSING) from None
    return pd
