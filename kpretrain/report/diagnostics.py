"""The diagnostic lines of a run's report.md (`markdown.run_report`): self-training rounds, weight averaging, learning
rates found by the range test, fine-tuning that had not converged, and the probes' most confused class pairs."""

from __future__ import annotations

import numpy as np

from kpretrain.report.confusion import most_confused, probe_confusion_rows
from kpretrain.report.csv_rows import pct


def selftrain_lines(metrics: dict) -> list[str]:
    """Per self-training arm and round: pseudo labels kept, their hidden-label accuracy, teacher and student
    validation accuracy (seed means)."""
    lines = []
    for name, entry in metrics["arms"].items():
        records = [r for r in entry.get("selftrain") or [] if r]
        for i in range(max((len(r["rounds"]) for r in records), default=0)):
            rounds = [r["rounds"][i] for r in records if i < len(r["rounds"])]
            kept = np.mean([r["pseudo_labels"] for r in rounds])
            right = [r["pseudo_label_accuracy"] for r in rounds if r.get("pseudo_label_accuracy") is not None]
            accuracy = f", {100 * np.mean(right):.1f} % right" if right else ""
            lines.append(f"{name} round {i + 1}: {kept:,.0f} pseudo labels of {records[0]['pool']:,} pool images"
                         f"{accuracy}; teacher {pct(np.mean([r['teacher_val_accuracy'] for r in rounds]))} %, "
                         f"student {pct(np.mean([r['student_val_accuracy'] for r in rounds]))} % validation")
    return lines


def probe_confusion_lines(metrics: dict) -> list[str]:
    """Per pre-training setting and probe: the most confused class pairs at its best and at its last probe point
    (validation, summed over the seeds)."""
    names, lines = metrics["data"]["class_names"], []
    for setting, probe, points in probe_confusion_rows(metrics):
        for when in ("best", "last"):
            epochs = ", ".join(str(e) for e in sorted({p[when]["epoch"] for p in points}))
            pairs = most_confused([p[when]["matrix"] for p in points], names)
            lines.append(f"- {setting}: most confused by the {probe} probe at its {when} point (epoch {epochs}): "
                         + "; ".join(f"{a} / {b} {100 * share:.1f} %" for a, b, share in pairs))
    if lines:
        lines += ["", "Validation confusion matrices of the probes at those points: `probe_confusion.png`."]
    return lines


def averaging_lines(metrics: dict) -> list[str]:
    """Per averaged arm: test accuracy of the last weights, of the averaged ones before and after the BN refresh."""
    lines = []
    for name, entry in metrics["arms"].items():
        if entry.get("averaging") and entry.get("test_accuracy_last"):
            method = entry["averaging"][0]["method"]
            mean = lambda xs: 100 * sum(xs) / len(xs)  # noqa: E731
            lines.append(f"{name} ({method}): last weights {mean(entry['test_accuracy_last']):.2f} % -> averaged, stale "
                         f"BN {mean(entry['test_accuracy_raw']):.2f} % -> averaged, BN refreshed "
                         f"{mean(entry['test_accuracy']):.2f} %")
    for p in metrics.get("pretraining", []):
        if p.get("averaging"):
            a = p["averaging"]
            last, avg = (a.get(f"val_{p['monitor']}_{k}") for k in ("last", "averaged"))
            lines.append(f"pre-training {p['unit']} ({a['method']}): pretext validation {p['monitor']} "
                         f"last weights {last:.4f} -> averaged, BN refreshed {avg:.4f}")
    return lines


def learning_rate_lines(metrics: dict) -> list[str]:
    """Each range test's chosen learning rate (`learning_rate: auto`): per pre-training unit and per arm."""
    lines = [f"pre-training {p['unit']} ({p['task']}): learning rate found {p['lr_find']['suggested_lr']:.3g} "
             f"({p['lr_find']['method']})" for p in metrics.get("pretraining", []) if p.get("lr_find")]
    for name, entry in metrics["arms"].items():
        if entry.get("finetune_learning_rate"):
            rates = ", ".join(f"{lr:.3g}" for lr in entry["finetune_learning_rate"])
            lines.append(f"{name} fine-tuning: learning rate found per seed {rates}")
    return lines


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
