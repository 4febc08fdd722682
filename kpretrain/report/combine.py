"""`kpretrain report` and `kpretrain.compare`: the summary rows of several run directories (and sweep points) in one
table, with 95 % intervals, paired differences to each arm's matched baseline and Holm-adjusted p-values, rendered
as Markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io as _io
import json
import os

from kpretrain.errors import InputError
from kpretrain.report.csv_rows import csv_fields, flat_row, rows_table
from kpretrain.report.summary import summary_rows

FORMATS = ("md", "csv", "json")


def read_metrics(run_dir: str) -> dict:
    """The `metrics.json` of a run directory.

    Raises:
        InputError: it cannot be read.
    """
    path = os.path.join(run_dir, "metrics.json")
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read a run's metrics ({exc}); pass run directories written by kpretrain run"
                         ) from None


def combined_rows(run_dirs) -> list[dict]:
    """One summary row per arm of each run directory (per point and arm of a sweep), in the order given.

    Args:
        run_dirs: run directories written by `kpretrain run` (or a sweep's points, or a sweep).

    Returns:
        The rows of `report.summary.summary_rows`, each with `run` (the directory as given) and `recipe` first.

    Raises:
        InputError: a directory has no readable `metrics.json`.
    """
    rows = []
    for run_dir in run_dirs:
        metrics = read_metrics(run_dir)
        rows.extend({"run": run_dir, "recipe": metrics.get("recipe"), "smoke": bool(metrics.get("smoke")), **row}
                    for row in summary_rows(metrics))
    return rows


def render_rows(rows: list[dict], format: str = "md") -> str:  # noqa: A002 - the --format of kpretrain report
    """`rows` as the text `kpretrain report --format FORMAT` prints, ending with a newline.

    Args:
        rows: from `combined_rows`.
        format: "md" (a Markdown table), "csv" (the flat columns `report.csv_rows.csv_fields`) or "json".

    Raises:
        InputError: an unknown format.
    """
    if format == "json":
        return json.dumps(rows, indent=2) + "\n"
    if format == "csv":
        text = _io.StringIO()
        writer = csv.DictWriter(text, fieldnames=csv_fields(rows), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat_row(row) for row in rows)
        return text.getvalue()
    if format == "md":
        return rows_table(rows) + "\n"
    raise InputError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
