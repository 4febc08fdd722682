"""Matplotlib plots of a run (Agg backend, written atomically)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kpretrain import io  # noqa: E402

SMOKE_TITLE = " (smoke run: numbers mean nothing)"


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
    fig.suptitle(metrics["recipe"] + (SMOKE_TITLE if metrics.get("smoke") else ""))
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)


def plot_label_efficiency(metrics: dict, path: str) -> None:
    """Test accuracy against labels per class (log axis) for every arm of a sweep, with 95 % t-interval bands."""
    from kpretrain.report.statistics import t_interval

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    names = list(dict.fromkeys(name for point in metrics["points"] for name in point["arms"]))
    for i, name in enumerate(names):
        xs, means, lows, highs = [], [], [], []
        for point in metrics["points"]:
            entry = point["arms"].get(name)
            if not entry or not entry["test_accuracy"]:
                continue
            stats = t_interval(entry["test_accuracy"])
            xs.append(point["data"]["labelled"] / metrics["points"][0]["data"]["num_classes"])
            means.append(100 * stats["mean"])
            low, high = stats["ci"] or (stats["mean"], stats["mean"])
            lows.append(100 * low)
            highs.append(100 * high)
        order = np.argsort(xs)
        xs, means, lows, highs = (np.asarray(v)[order] for v in (xs, means, lows, highs))
        ax.plot(xs, means, marker="o", color=f"C{i}", label=name)
        ax.fill_between(xs, lows, highs, color=f"C{i}", alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("labels per class")
    ax.set_ylabel("test accuracy % (mean, 95 % CI band)")
    ax.set_title(f"{metrics['recipe']}: label efficiency" + (SMOKE_TITLE if metrics.get("smoke") else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)


def plot_runs(rows: list[dict], path: str) -> None:
    """`kpretrain report --plot`: every run's (and point's) arms side by side, test accuracy with its 95 % interval."""
    labels = [" / ".join(str(row[k]) for k in ("run", "point", "arm") if row.get(k) is not None) for row in rows]
    means = np.array([100 * row["test_accuracy_mean"] for row in rows])
    ci = [row["test_accuracy_ci"] or [row["test_accuracy_mean"]] * 2 for row in rows]
    errors = np.array([[m - 100 * lo for m, (lo, _) in zip(means, ci)], [100 * hi - m for m, (_, hi) in zip(means, ci)]])
    runs = list(dict.fromkeys(row.get("run") for row in rows))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    for i, row in enumerate(rows):
        ax.errorbar(means[i], y[i], xerr=errors[:, i:i + 1], fmt="o", capsize=3,
                    color=f"C{runs.index(row.get('run')) % 10}")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("test accuracy % (mean, 95 % CI)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)
