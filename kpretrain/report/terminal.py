"""The result table on a terminal: the summary rows as rich tables that fit the terminal's width (names wrap first,
numbers only on a very narrow terminal; a table never overflows).  Files and pipes get the Markdown table
(`csv_rows.rows_table`); both show the same numbers, read from `summary.summary_rows` and formatted by the same
helpers (`csv_rows.pct`, `interval`, `benefit_text`)."""

from __future__ import annotations

import sys

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from kpretrain.report.csv_rows import benefit_text, interval, pct
from kpretrain.report.markdown import SMOKE
from kpretrain.report.summary import BASELINE, COMPUTE

CAPTION = ("test acc: mean ± sd over the seeds, 95 % interval below.  Δ: paired difference to the arm's baseline "
           "(scratch unless named), 95 % interval below.  p: paired t-test, Holm-adjusted below when the run "
           "compares several arms.")
COMPUTE_CAPTION = ("  Δ compute: the same against the compute-matched scratch (its scratch given the optimizer steps "
                   "of its pre-training).")
NUMBERS = ("n", "test acc %", "Δ pts", "p", "Δ compute", "p compute")
NAME_WIDTH = 8  # names and the benefit get at least this many columns before numbers wrap


def is_terminal(stream=None) -> bool:
    """Whether `stream` (default: sys.stdout) is an interactive terminal: it gets rich tables, not Markdown."""
    stream = stream if stream is not None else sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def run_title(metrics: dict) -> str:
    """A run's (or sweep's) table title: its recipe, and the smoke mark of a smoke run."""
    return f"{metrics['recipe']}" + (SMOKE if metrics.get("smoke") else "")


def result_table(rows: list[dict], title: str | None = None, width: int = 80) -> Table:
    """The rich table of one run's `summary_rows` (a sweep's with a point column), laid out for `width` columns.

    Columns: arm, seeds, test accuracy in % (mean ± sd over its 95 % interval), the paired difference to the arm's
    baseline in points (over its 95 % interval), the p-value (over its Holm adjustment when the family has several
    comparisons), against the compute-matched scratch the same two (`Δ compute`, `p compute`) when the run has one,
    and with a natural reference arm the benefit.

    Args:
        rows: from `report.summary.summary_rows` (or one run's rows of `report.combine.combined_rows`).
        title: shown above the table.
        width: the terminal's width: the numbers keep theirs while names and the benefit wrap into the rest.

    Returns:
        A `rich.table.Table`.

    Example:
        >>> console = Console()
        >>> console.print(result_table(summary_rows(metrics), run_title(metrics), console.width))
    """
    point = any("point" in row for row in rows)
    benefit = any("benefit" in row for row in rows)
    compute = any(COMPUTE + "diff_mean" in row for row in rows)
    names = [*(["point"] if point else []), "arm", *NUMBERS[:6 if compute else 4], *(["benefit"] if benefit else [])]
    body = [_cells(row, point, benefit, compute) for row in rows]
    natural = [max(cell_len(line) for text in [name, *(cells[i] for cells in body)] for line in text.split("\n"))
               for i, name in enumerate(names)]
    widths = _widths(names, natural, width - 3 * (len(names) - 1))
    table = Table(title=title, caption=CAPTION + (COMPUTE_CAPTION if compute else ""), box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  title_justify="left", caption_justify="left")
    for name, fixed in zip(names, widths):
        table.add_column(name, justify="left" if name in ("point", "arm") else "right", overflow="fold", width=fixed)
    for cells in body:
        table.add_row(*cells)
    return table


def _widths(names: list[str], natural: list[int], room: int) -> list[int | None]:
    """Column widths for `room` cells of content: None (rich's choice) when everything fits or when even the numbers
    do not; otherwise the numbers at their natural width and the rest shared out among the names and benefit."""
    flexible = [i for i, name in enumerate(names) if name not in NUMBERS]
    fixed = sum(w for i, w in enumerate(natural) if i not in flexible)
    if sum(natural) <= room or fixed + NAME_WIDTH * len(flexible) > room:
        return [None] * len(names)
    widths: list[int | None] = list(natural)
    left = room - fixed
    for count, i in enumerate(sorted(flexible, key=lambda i: natural[i])):  # narrowest first: it may need less
        widths[i] = min(natural[i], left // (len(flexible) - count))
        left -= widths[i]
    return widths


def _cells(row: dict, point: bool, benefit: bool, compute: bool = False) -> list[str]:
    """A row's cells: [point,] arm, n, test accuracy, difference, p[, difference and p against the compute-matched
    scratch][, benefit]."""
    accuracy = (f"{pct(row['test_accuracy_mean'])} ± {pct(row['test_accuracy_std'])}\n"
                + interval(row["test_accuracy_ci"], 2).strip())
    return [*([row["point"]] if point else []), row["arm"], str(row["n"]), accuracy.strip(), *_comparison_cells(row),
            *(_comparison_cells(row, COMPUTE) if compute else []),
            *([benefit_text(row.get("benefit"), row["arm"])] if benefit else [])]


def _comparison_cells(row: dict, prefix: str = "") -> list[str]:
    """The difference cell (`+1.23` over `[-0.50, +2.96]`, naming a baseline other than scratch) and the p cell
    (`0.043` over `Holm 0.086`); `prefix` "compute_": those against the compute-matched scratch (named unless it
    is `scratch_compute`)."""
    if prefix + "diff_mean" not in row:
        return ["—", "—"]
    mean, ci, p, baseline = (row[prefix + key] for key in ("diff_mean", "diff_ci", "p", "baseline"))
    diff = f"{100 * mean:+.2f}" + (f" vs {baseline}" if baseline != ("scratch_compute" if prefix else BASELINE) else "")
    diff += "\n" + interval(ci, 2, True).strip()
    if p is None:
        return [diff.strip(), "—"]
    return [diff.strip(), f"{p:.2g}" + (f"\nHolm {row[prefix + 'p_holm']:.2g}" if row["comparisons"] > 1 else "")]


def print_tables(rows: list[dict], title: str | None = None, console: Console | None = None) -> None:
    """Print `rows` at the console's width: one table, or for `report.combine.combined_rows` one table per run
    directory (titled with the directory, its recipe and the smoke mark), in the order given.

    Args:
        rows: summary rows (see `result_table`).
        title: the title of a single table (rows without `run`).
        console: where to print (default: stdout).
    """
    console = console if console is not None else Console(highlight=False)
    runs: dict = {}
    for row in rows:
        runs.setdefault(row.get("run"), []).append(row)
    for index, (run, group) in enumerate(runs.items()):
        if index:
            console.line()
        heading = title if run is None else f"{run}: {group[0].get('recipe')}" + (" (smoke)" if group[0].get("smoke")
                                                                                 else "")
        console.print(result_table(group, heading, console.width))


def print_results(metrics: dict) -> None:
    """A finished run's results on stdout: its table (rich at the terminal's width on a terminal; Markdown, as
    report.md has it, for pipes and files) and its verdict lines.

    Args:
        metrics: the run's (or sweep's) metrics.json.
    """
    from kpretrain.report.markdown import markdown_table, verdict_lines
    from kpretrain.report.summary import summary_rows

    if is_terminal():
        print_tables(summary_rows(metrics), run_title(metrics))
    else:
        print(markdown_table(metrics))
    for line in verdict_lines(metrics):
        print(line)
