"""`probe.png`: pretext validation and the probes of the backbone along pre-training, per pre-training setting."""

from __future__ import annotations

import re


def has_probes(metrics: dict) -> bool:
    return any(k.startswith("val_probe_") for p in metrics.get("pretraining", []) for k in p["history"])


def plot_probes(metrics: dict, path: str) -> None:
    """One panel per pre-training setting (its units across seeds): the pretext validation metric (solid) and each
    probe's validation accuracy (dashed) against data epochs; the selected checkpoint, if any, marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kpretrain import io

    groups: dict[str, list] = {}
    for p in metrics["pretraining"]:
        if any(k.startswith("val_probe_") for k in p["history"]):
            groups.setdefault(re.sub(r"^seed\d+\.", "", p["unit"]), []).append(p)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.8), squeeze=False)
    for ax, (name, units) in zip(axes.flat, groups.items()):
        for i, p in enumerate(units):
            h, monitor = p["history"], f"val_{p['monitor']}"
            keys = [monitor, *sorted(k for k in h if k.startswith("val_probe_"))]
            for key, colour in zip(keys, ("C0", "C3", "C2")):
                points = [(e, v) for e, v in zip(h["epoch"], h.get(key, [])) if v is not None]
                label = None if i else ("pretext " + p["monitor"] if key == monitor else key.removeprefix("val_"))
                ax.plot(*zip(*points), color=colour, ls="-" if key == monitor else "--", marker=".", alpha=0.8,
                        label=label)
            if p.get("selected_epoch"):
                ax.axvline(p["selected_epoch"], color="0.6", lw=0.8, ls=":",
                           label=None if i else "selected checkpoint")
        ax.set_title(f"{name} ({len(units)} seed{'s' * (len(units) > 1)})", fontsize=9)
        ax.set_xlabel("pre-training epoch (passes over the data)")
        ax.set_ylabel("validation")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    from kpretrain.report.plots import SMOKE_TITLE

    fig.suptitle(f"{metrics['recipe']}: pretext validation and probes along pre-training"
                 + (SMOKE_TITLE if metrics.get("smoke") else ""), fontsize=10)
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)
