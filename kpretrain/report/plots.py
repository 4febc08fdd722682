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
    """Figure-1 style: downstream validation accuracy per epoch for every arm, and each pretext task's monitor."""
    has_pretext = any("pretext" in e for e in metrics["arms"].values())
    fig, axes = plt.subplots(1, 2 if has_pretext else 1, figsize=(11 if has_pretext else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for i, (name, entry) in enumerate(metrics["arms"].items()):
        color = f"C{i}"
        mean, series = _mean_curve(entry["history"], "val_accuracy")
        if mean is None:
            continue
        x = entry["history"][0].get("epoch")  # a compute-matched scratch's last epoch is cut short
        for s in series:
            _plot(ax, s, x, color=color, alpha=0.25, lw=1)
        _plot(ax, mean, x, color=color, lw=2, marker="o", ms=3, label=f"{name} (n={len(series)})")
        raw, _ = _mean_curve(entry["history"], "val_accuracy_raw")
        if raw is not None and "val_accuracy_refreshed" in entry["history"][0]:
            _plot(ax, raw, x, color=color, lw=1, ls=":", marker="x", ms=5, label=f"{name}, stale BN")
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("downstream (BN refreshed; dotted: raw)" if metrics["evaluation"]["bn_refresh"] else "downstream")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if has_pretext:
        ax = axes[0, 1]
        monitors = []  # accuracy, view_accuracy, masked_r2, ...: each task's own monitor
        for i, (name, entry) in enumerate(metrics["arms"].items()):
            if "pretext" not in entry:
                continue
            monitor = entry["pretext"][0]["monitor"]
            monitors += [monitor] if monitor not in monitors else []
            x = entry["pretext"][0].get("epoch")
            for key, style in ((f"val_{monitor}", "-"), (monitor, "--")):
                mean, _ = _mean_curve(entry["pretext"], key)
                if mean is not None:
                    _plot(ax, mean, x or None, color=f"C{i}", ls=style, marker="o", ms=3,
                          label=f"{name} {'val' if key.startswith('val_') else 'train'}")
        ax.set_xlabel("pre-training epochs (passes over the data)")
        ax.set_ylabel("pretext " + ", ".join(m.replace("_", " ") for m in monitors))
        ax.set_title("pretext task")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(metrics["recipe"] + (SMOKE_TITLE if metrics.get("smoke") else ""))
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)


def plot_label_efficiency(metrics: dict, path: str) -> None:
    """A sweep over labels per class (log axis): left, every arm's test accuracy with its 95 % t-interval band
    (within [0, 100]); right, every compared arm's paired difference to its matched baseline with its 95 % interval,
    the comparison the verdicts make (the bands on the left are not paired and overlap more)."""
    from kpretrain.report.summary import summary_rows

    labels = {point["dir"]: point["data"]["labelled"] / point["data"]["num_classes"] for point in metrics["points"]}
    rows = [row for row in summary_rows(metrics) if row["point"] in labels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, name in enumerate(dict.fromkeys(row["arm"] for row in rows)):
        mine = sorted((labels[row["point"]], row) for row in rows if row["arm"] == name)
        xs = np.array([x for x, _ in mine])
        means = np.array([100 * row["test_accuracy_mean"] for _, row in mine])
        ci = np.array([[100 * v for v in (row["test_accuracy_ci"] or [row["test_accuracy_mean"]] * 2)] for _, row in mine])
        left.plot(xs, means, marker="o", color=f"C{i}", label=name)
        left.fill_between(xs, ci[:, 0], ci[:, 1], color=f"C{i}", alpha=0.15)
        compared = [(x, row) for x, row in mine if "diff_mean" in row]
        if compared:
            dx = np.array([x for x, _ in compared]) * (1 + 0.03 * (i - 1))  # arms side by side on the log axis
            diff = np.array([100 * row["diff_mean"] for _, row in compared])
            dci = np.array([[100 * v for v in (row["diff_ci"] or [row["diff_mean"]] * 2)] for _, row in compared])
            right.errorbar(dx, diff, yerr=[diff - dci[:, 0], dci[:, 1] - diff], marker="o", capsize=3,
                           color=f"C{i}", label=f"{name} - {compared[0][1]['baseline']}")
    left.set_ylabel("test accuracy % (mean, 95 % CI band)")
    left.set_title("test accuracy per arm")
    right.axhline(0, color="black", lw=1)
    right.set_ylabel("paired difference, points (mean, 95 % CI)")
    right.set_title("difference to the matched baseline (paired by seed)")
    ticks = sorted(set(labels.values()))
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xlabel("labels per class")
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{metrics['recipe']}: label efficiency" + (SMOKE_TITLE if metrics.get("smoke") else ""))
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
    smoke = any(row.get("smoke") for row in rows)
    ax.set_title(f"test accuracy of {len(runs)} run(s)" + (" (smoke runs among them: their numbers mean nothing)"
                                                            if smoke else ""), fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)
