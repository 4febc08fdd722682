"""Confusion matrices (the test set's per arm, the probes' on validation): the seeds' row-normalised mean, plots,
and the most confused pairs."""

from __future__ import annotations

import numpy as np


def mean_confusion(matrices) -> np.ndarray:
    """Row-normalised confusion (rows: true class, columns: predicted), averaged over the seeds' matrices."""
    rates = []
    for m in matrices:
        m = np.asarray(m, dtype=float)
        rates.append(m / np.maximum(m.sum(axis=1, keepdims=True), 1))
    return np.mean(rates, axis=0)


def most_confused(matrices, class_names, k: int = 3) -> list[tuple[str, str, float]]:
    """The `k` class pairs most often mistaken for each other (either way): (class, class, share of the two
    classes' test images predicted as the other one), summed over the seeds."""
    total = np.sum([np.asarray(m, dtype=float) for m in matrices], axis=0)
    n = total.sum(axis=1)
    pairs = []
    for i in range(len(total)):
        for j in range(i + 1, len(total)):
            if n[i] + n[j]:
                pairs.append((class_names[i], class_names[j], float((total[i, j] + total[j, i]) / (n[i] + n[j]))))
    return sorted(pairs, key=lambda p: -p[2])[:k]


def plot_confusion(matrices, class_names, path: str, title: str) -> None:
    """`mean_confusion` as a heat map with class names on the axes and the rates (%) in the cells."""
    plt = _pyplot()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    draw_confusion(ax, mean_confusion(matrices), class_names, title)
    fig.tight_layout()
    _save(fig, path)


def plot_probe_confusions(metrics: dict, path: str) -> None:
    """`probe_confusion.png`: per pre-training setting and probe, the validation confusion at the probe's best
    and at its last probe point (the seeds' mean), side by side."""
    plt = _pyplot()
    names = metrics["data"]["class_names"]
    rows = probe_confusion_rows(metrics)
    k = len(names)
    fig, axes = plt.subplots(len(rows), 2, figsize=(2 * (1.0 + 0.55 * k), len(rows) * (0.8 + 0.5 * k)),
                             squeeze=False)
    for (setting, probe, points), pair in zip(rows, axes):
        for ax, when in zip(pair, ("best", "last")):
            epochs = sorted({p[when]["epoch"] for p in points})
            scores = [p[when]["score"] for p in points]
            draw_confusion(ax, mean_confusion([p[when]["matrix"] for p in points]), names,
                           f"{setting}, {probe} probe at its {when} point (epoch {', '.join(map(str, epochs))}): "
                           f"validation {100 * sum(scores) / len(scores):.1f} %")
    fig.tight_layout()
    _save(fig, path)


def probe_confusion_rows(metrics: dict) -> list[tuple[str, str, list]]:
    """(pre-training setting, probe name, [{best, last} of each seed]) for every probed pre-training."""
    import re

    rows: dict[tuple[str, str], list] = {}
    for p in metrics.get("pretraining", []):
        for probe, points in (p.get("probe_confusion") or {}).items():
            rows.setdefault((re.sub(r"^seed\d+\.", "", p["unit"]), probe), []).append(points)
    return [(setting, probe, points) for (setting, probe), points in rows.items()]


def draw_confusion(ax, rates, class_names, title: str) -> None:
    """Row-normalised `rates` on `ax`: class names on the axes, % in the cells."""
    k = len(rates)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    names = [str(c) for c in class_names]
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    for i in range(k):
        for j in range(k):
            if rates[i, j] >= 0.005:
                ax.text(j, i, f"{100 * rates[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    from kpretrain import io

    io.save_figure(fig, path, dpi=110)
