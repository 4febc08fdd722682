"""Confusion matrices of the test set: the seeds' row-normalised mean, its plot, and the most confused pairs."""

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kpretrain.report import io

    rates = mean_confusion(matrices)
    k = len(rates)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
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
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)
