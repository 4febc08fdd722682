"""Matplotlib plots of a run (Agg backend, written atomically)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kpretrain.report import io  # noqa: E402


def _mean_curve(histories: list[dict], key: str):
    """(mean over seeds, the seeds' series) of `key`; epochs that were not measured are NaN."""
    series = [np.array([np.nan if v is None else v for v in h[key]], dtype=float)
              for h in histories if key in h and h[key]]
    if not series:
        return None, []
    n = min(len(s) for s in series)
    return np.mean([s[:n] for s in series], axis=0), series


def _plot(ax, ys, xs=None, **kwargs):
    """Plot measured points only (at `xs`, default epochs 1..n), joined across epochs that were not measured."""
    xs = np.arange(1, len(ys) + 1) if xs is None else np.asarray(xs[:len(ys)], dtype=float)
    keep = np.isfinite(ys)
    ax.plot(xs[keep], ys[keep], **kwargs)


def plot_curves(metrics: dict, path: str) -> None:
    """Figure-1 style: downstream validation accuracy per epoch for every arm, and pretext accuracy."""
    has_pretext = any("pretext" in e for e in metrics["arms"].values())
    fig, axes = plt.subplots(1, 2 if has_pretext else 1, figsize=(11 if has_pretext else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for i, (name, entry) in enumerate(metrics["arms"].items()):
        color = f"C{i}"
        mean, series = _mean_curve(entry["history"], "val_accuracy")
        if mean is None:
            continue
        for s in series:
            _plot(ax, s, color=color, alpha=0.25, lw=1)
        _plot(ax, mean, color=color, lw=2, marker="o", ms=3, label=f"{name} (n={len(series)})")
        raw, _ = _mean_curve(entry["history"], "val_accuracy_raw")
        if raw is not None and "val_accuracy_refreshed" in entry["history"][0]:
            _plot(ax, raw, color=color, lw=1, ls=":", marker="x", ms=5, label=f"{name}, stale BN")
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("downstream (BN refreshed; dotted: raw)" if metrics["evaluation"]["bn_refresh"] else "downstream")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if has_pretext:
        ax = axes[0, 1]
        for i, (name, entry) in enumerate(metrics["arms"].items()):
            if "pretext" not in entry:
                continue
            monitor = entry["pretext"][0]["monitor"]
            x = entry["pretext"][0].get("epoch")
            for key, style in ((f"val_{monitor}", "-"), (monitor, "--")):
                mean, _ = _mean_curve(entry["pretext"], key)
                if mean is not None:
                    _plot(ax, mean, x or None, color=f"C{i}", ls=style, marker="o", ms=3,
                          label=f"{name} {'val' if key.startswith('val_') else 'train'}")
        ax.set_xlabel("pre-training epochs (passes over the data)")
        ax.set_ylabel("pretext accuracy")
        ax.set_title("pretext task")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(metrics["recipe"])
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)
