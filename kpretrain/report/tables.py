"""Tables: per-arm summary, paired differences to the baseline, history rows, the markdown report."""

from __future__ import annotations

import csv
import io as _io
import math

import numpy as np

BASELINE = "scratch"


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summary_rows(metrics: dict) -> list[dict]:
    """One row per arm: mean/std of test accuracy (raw and refreshed) and the paired difference to scratch."""
    arms = metrics["arms"]
    rows = []
    for name, entry in arms.items():
        mean, std = mean_std(entry["test_accuracy"])
        raw_mean, _ = mean_std(entry["test_accuracy_raw"])
        row = {"arm": name, "n": len(entry["test_accuracy"]), "test_accuracy_mean": mean, "test_accuracy_std": std,
               "test_accuracy_raw_mean": raw_mean, "trainable_params": entry["trainable_params"],
               "task": entry["protocol"]["task"], "frozen_depth": entry["protocol"]["frozen_depth"],
               "init": entry["protocol"].get("init", "weights")}
        if entry.get("knn_accuracy"):
            row["knn_accuracy_mean"] = mean_std(entry["knn_accuracy"])[0]
        baseline = entry.get("baseline") or (  # runs before matched baselines paired every arm with scratch
            BASELINE if name != BASELINE and not name.startswith(BASELINE + "-") else None)
        base = arms.get(baseline)
        if base is not None:
            paired = dict(zip(base["seeds"], base["test_accuracy"]))
            diffs = [acc - paired[s] for s, acc in zip(entry["seeds"], entry["test_accuracy"]) if s in paired]
            if diffs:
                row["diff_mean"], row["diff_std"] = mean_std(diffs)
                row["diff_n"] = len(diffs)
                row["baseline"] = baseline
        rows.append(row)
    return rows


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown_table(metrics: dict) -> str:
    """Arm x mean ± std test accuracy, raw accuracy, paired difference vs scratch (points)."""
    lines = ["| arm | task | frozen | test acc % (mean ± std) | raw (no BN refresh) % | Δ vs its scratch (pts) | "
             "kNN % (frozen features) | trainable params |",
             "|---|---|---|---|---|---|---|---|"]
    for row in summary_rows(metrics):
        diff = "—" if "diff_mean" not in row else f"{100 * row['diff_mean']:+.2f} ± {100 * row['diff_std']:.2f}" + (
            f" (vs {row['baseline']})" if row["baseline"] != BASELINE else "")
        knn = pct(row["knn_accuracy_mean"]) if "knn_accuracy_mean" in row else "—"
        lines.append(f"| {row['arm']} | {row['task']} | {row['frozen_depth']} | {pct(row['test_accuracy_mean'])} ± "
                     f"{pct(row['test_accuracy_std'])} (n={row['n']}) | {pct(row['test_accuracy_raw_mean'])} | {diff} | "
                     f"{knn} | {row['trainable_params']:,} |")
    return "\n".join(lines)


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


def run_report(metrics: dict) -> str:
    """The run's `report.md`."""
    d = metrics["data"]
    rows = summary_rows(metrics)
    lines = [f"# {metrics['recipe']}" + (" (smoke run: tiny data, numbers mean nothing)" if metrics["smoke"] else ""), ""]
    lines += ["## Result", "", markdown_table(metrics), ""]
    for row in rows:
        if "diff_mean" in row:
            n = row["diff_n"]
            verdict = verdict_line(row["arm"], row["diff_mean"], row["diff_std"], n, row["baseline"])
            lines.append(f"- {verdict}")
    lines += ["", f"Test accuracy is measured {'after refreshing' if metrics['evaluation']['bn_refresh'] else 'without refreshing'} "
              "the batch-norm moving statistics on training batches; the raw column shows the accuracy before.", ""]
    warnings = [*metrics["warnings"], *convergence_lines(metrics)]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    lines += ["## Setup", "",
              f"- data: {d['dataset']} ({d['source']}), image {tuple(d['image_shape'])}, {d['num_classes']} classes, "
              f"scaling {d['scaling']}",
              f"- per seed: {d['labelled']} labelled, {d['validation']} validation, {d['unlabelled']} unlabelled pool; "
              f"test {d['test']}",
              f"- seeds: {metrics['seeds']}",
              *_time_line(metrics),
              f"- wall time: {metrics['wall_time_s']:.0f} s on {metrics['environment']['device']} "
              f"({metrics['environment']['cpu_count']} cores), TensorFlow {metrics['environment']['tensorflow']}, "
              f"Keras {metrics['environment']['keras']}", ""]
    lines += ["| arm | protocol |", "|---|---|"]
    for name, entry in metrics["arms"].items():
        p = entry["protocol"]
        lines.append(f"| {name} | " + ", ".join(f"{k}={v}" for k, v in p.items() if v is not None) + " |")
    lines += ["", "## Plots", "", "![learning curves](curves.png)", ""]
    if metrics.get("backbone"):
        b = metrics["backbone"]
        lines += ["## Exported backbone", "",
                  f"Pre-trained backbone of arm `{b['arm']}`, seed {b['seed']}: `backbone.keras` and the SavedModel "
                  "`backbone/` (endpoint `serve`, float32 images, see `backbone/kpretrain.json`).", ""]
    return "\n".join(lines)


def _time_line(metrics: dict) -> list[str]:
    split = metrics.get("time_split")
    if not split:
        return []
    wall = max(split["wall"], 1e-9)
    return [f"- time split: training {split['training']:.0f} s ({100 * split['training'] / wall:.0f} %), evaluation "
            f"{split['evaluation']:.0f} s ({100 * split['evaluation'] / wall:.0f} %), other {split['other']:.0f} s"]


def convergence_lines(metrics: dict, tolerance: float = 0.005) -> list[str]:
    """Arms whose seed-mean validation accuracy still rose by `tolerance` or more over the last 20 % of epochs."""
    lines = []
    for name, entry in metrics["arms"].items():
        curves = [[v for v in h.get("val_accuracy", []) if v is not None] for h in entry["history"]]
        n = min((len(c) for c in curves), default=0)
        if n < 5:
            continue
        mean = np.mean([c[:n] for c in curves], axis=0)
        start = mean[int(np.floor(0.8 * (n - 1)))]
        if mean[-1] - start >= tolerance:
            lines.append(f"{name}: validation accuracy still rising (+{100 * (mean[-1] - start):.1f} pts over the last "
                         f"20 % of validations); raise finetune.epochs")
    return lines


def verdict_line(arm: str, diff: float, std: float, n: int, baseline: str = BASELINE) -> str:
    """One line saying how the arm compares to its matched scratch (mean ± std of paired differences over seeds)."""
    if n < 2:
        return f"{arm} vs {baseline}: {100 * diff:+.2f} pts (1 seed: no estimate of noise; run more seeds)"
    se = std / math.sqrt(n)
    if se == 0:
        word = "gain" if diff > 0 else "loss" if diff < 0 else "no difference"
        return f"{arm} vs {baseline}: {100 * diff:+.2f} pts, identical on every seed ({word}, {n} seeds)"
    t = diff / se
    word = ("consistent gain" if t > 2 else "consistent loss" if t < -2 else "no clear difference")
    return f"{arm} vs {baseline}: {100 * diff:+.2f} ± {100 * std:.2f} pts over {n} seeds ({word}; t = {t:.1f})"
