"""Reports of a run: tables, statistics and plots (summary rows in `summary`, report.md in `markdown`, CSV and the
rows table in `csv_rows`)."""

from __future__ import annotations

import os


def write_run_report(out_dir: str, metrics: dict, class_names=None) -> None:
    """Write `history.csv`, `curves.png` and `report.md` for a finished run."""
    from kpretrain import io
    from kpretrain.report.confusion import plot_confusion, plot_probe_confusions, probe_confusion_rows
    from kpretrain.report.csv_rows import history_csv
    from kpretrain.report.markdown import run_report
    from kpretrain.report.plots import plot_curves
    from kpretrain.report.probes import has_probes, plot_probes

    io.write_text(os.path.join(out_dir, "history.csv"), history_csv(metrics))
    plot_curves(metrics, os.path.join(out_dir, "curves.png"))
    if has_probes(metrics):
        plot_probes(metrics, os.path.join(out_dir, "probe.png"))
    if probe_confusion_rows(metrics):
        plot_probe_confusions(metrics, os.path.join(out_dir, "probe_confusion.png"))
    names = metrics["data"]["class_names"]
    for arm, entry in metrics["arms"].items():
        plot_confusion(entry["confusion"], names, os.path.join(out_dir, f"confusion_{arm}.png"),
                       f"{metrics['recipe']}: {arm}, test set, mean of {len(entry['confusion'])} seed(s), % of each row")
    io.write_text(os.path.join(out_dir, "report.md"), run_report(metrics))


def write_sweep_report(out_dir: str, metrics: dict) -> None:
    """Write a sweep's `report.md` and, when `data.labels_per_class` is swept, `label_efficiency.png`."""
    from kpretrain import io
    from kpretrain.report.plots import plot_label_efficiency
    from kpretrain.report.markdown import sweep_report

    if "data.labels_per_class" in metrics["sweep"]:
        plot_label_efficiency(metrics, os.path.join(out_dir, "label_efficiency.png"))
    io.write_text(os.path.join(out_dir, "report.md"), sweep_report(metrics))
