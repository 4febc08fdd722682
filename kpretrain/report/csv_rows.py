"""Summary rows laid out flat: the rows table (`kpretrain report`, and the table of report.md), its cells, the CSV
columns of `kpretrain report --format csv`, and `history.csv`."""

from __future__ import annotations

import csv
import io as _io

from kpretrain.report.summary import BASELINE, COMPUTE

CSV_FIELDS = ["run", "recipe", "smoke", "point", "arm", "task", "frozen_depth", "n", "test_accuracy_mean", "test_accuracy_std",
              "test_accuracy_ci_low", "test_accuracy_ci_high", "test_accuracy_raw_mean", "knn_accuracy_mean", "baseline", "diff_mean",
              "diff_std", "diff_ci_low", "diff_ci_high", "p", "p_holm", "seeds_needed", "benefit_reference", "benefit",
              "benefit_ci_low", "benefit_ci_high", "benefit_undefined", "trainable_params"]
COMPUTE_FIELDS = [COMPUTE + key for key in ("baseline", "diff_mean", "diff_std", "diff_ci_low", "diff_ci_high", "p",
                                            "p_holm", "seeds_needed")]  # with a compute-matched scratch


def csv_fields(rows: list[dict]) -> list[str]:
    """The CSV columns of `rows`: `CSV_FIELDS`, then `COMPUTE_FIELDS` when some row has a compute-matched scratch."""
    return CSV_FIELDS + (COMPUTE_FIELDS if any(COMPUTE + "diff_mean" in row for row in rows) else [])


def pct(x: float) -> str:
    """A fraction in points, two decimals: `71.25`."""
    return f"{100 * x:.2f}"


def interval(ci, digits: int = 1, sign: bool = False) -> str:
    """`[low, high]` in points, or empty without an interval."""
    if not ci:
        return ""
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f" [{f.format(100 * ci[0])}, {f.format(100 * ci[1])}]"


def benefit_text(benefit: dict | None, arm: str | None = None) -> str:
    """The report's benefit cell: `65 % [40, 90]`, or why the ratio is undefined; `—` without one."""
    if not benefit:
        return "—"
    if not benefit["defined"]:
        short = ("natural's gain not established" if "not established" in (benefit["reason"] or "")
                 else benefit["reason"] or "no paired seeds")
        return f"undefined ({short})"
    low, high = benefit["ci95"]
    text = f"{100 * benefit['ratio']:.0f} % [{100 * low:.0f}, {100 * high:.0f}]"
    return text + (" (reference)" if arm is not None and arm == benefit["reference"] else "")


def rows_table(rows: list[dict]) -> str:
    """Markdown table of `summary_rows` (of one run, or of several with a `run` key each: a run column is added)."""
    labels = [key for key in ("run", "point") if any(key in row for row in rows)]
    benefit = any("benefit" in row for row in rows)
    compute = any(COMPUTE + "diff_mean" in row for row in rows)
    header = ("| arm | task | frozen | test acc % (mean ± std [95 % CI]) | raw (no BN refresh) % | Δ vs its scratch "
              "(pts [95 % CI], p) | " + ("Δ vs compute-matched scratch (pts [95 % CI], p) | " if compute else "")
              + ("benefit (% of natural's gain [95 % CI]) | " if benefit else "")
              + "kNN % (frozen features) | trainable params |")
    lines = ["".join(f"| {key} " for key in labels) + header,
             "|---" * (8 + int(benefit) + int(compute) + len(labels)) + "|"]
    for row in rows:
        knn = pct(row["knn_accuracy_mean"]) if "knn_accuracy_mean" in row else "—"
        lines.append("".join(f"| {row.get(key, '')}{' (smoke)' if key == 'run' and row.get('smoke') else ''} "
                             for key in labels) +
                     f"| {row['arm']} | {row['task']} | {row['frozen_depth']} | {pct(row['test_accuracy_mean'])} ± "
                     f"{pct(row['test_accuracy_std'])}{interval(row['test_accuracy_ci'], 2)} (n={row['n']}) | "
                     f"{pct(row['test_accuracy_raw_mean'])} | {_difference_cell(row)} | "
                     + (f"{_difference_cell(row, COMPUTE)} | " if compute else "")
                     + (f"{benefit_text(row.get('benefit'), row['arm'])} | " if benefit else "")
                     + f"{knn} | {row['trainable_params']:,} |")
    return "\n".join(lines)


def _difference_cell(row: dict, prefix: str = "") -> str:
    """The Δ cell: points [95 % CI], p (Holm-adjusted beside it when the family has several comparisons), naming a
    baseline other than scratch; `prefix` "compute_": the cell of the compute-matched scratch (named unless it is
    `scratch_compute`)."""
    if prefix + "diff_mean" not in row:
        return "—"
    mean, ci, p, baseline = (row[prefix + key] for key in ("diff_mean", "diff_ci", "p", "baseline"))
    diff = f"{100 * mean:+.2f}{interval(ci, 2, True)}"
    if p is not None:
        diff += f", p = {p:.2g}" + (f" (Holm {row[prefix + 'p_holm']:.2g})" if row["comparisons"] > 1 else "")
    if baseline != ("scratch_compute" if prefix else BASELINE):
        diff += f" (vs {baseline})"
    return diff


def flat_row(row: dict) -> dict:
    """A summary row with its intervals split into `_low` / `_high` columns (CSV); the benefit as its ratio, interval,
    reference arm and, when undefined, the reason (the ratio left empty)."""
    out = {k: v for k, v in row.items() if not k.endswith("_ci") and k != "benefit"}
    for key in ("test_accuracy_ci", "diff_ci", COMPUTE + "diff_ci"):
        if row.get(key):
            out[f"{key}_low"], out[f"{key}_high"] = row[key]
    b = row.get("benefit")
    if b:
        out.update(benefit_reference=b["reference"], benefit=b["ratio"])
        if b["defined"]:
            out["benefit_ci_low"], out["benefit_ci_high"] = b["ci95"]
        else:
            out["benefit_undefined"] = b["reason"]
    return out


def history_csv(metrics: dict) -> str:
    """Per-epoch history of every arm, seed and stage as CSV text."""
    rows, keys = [], set()
    for name, entry in metrics["arms"].items():
        for stage, histories in (("pretrain", entry.get("pretext", [])), ("finetune", entry["history"])):
            for hist in histories:
                series = {k: v for k, v in hist.items() if isinstance(v, list) and k != "epoch"}
                n = max((len(v) for v in series.values()), default=0)
                positions = hist.get("epoch") or list(range(1, n + 1))
                for epoch in range(n):
                    row = {"arm": name, "seed": hist["seed"], "stage": stage, "epoch": positions[epoch]}
                    for k, v in series.items():
                        if epoch < len(v):
                            row[k] = v[epoch]
                            keys.add(k)
                    rows.append(row)
    fields = ["arm", "seed", "stage", "epoch", *sorted(keys)]
    out = _io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
