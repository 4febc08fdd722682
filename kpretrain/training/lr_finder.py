"""Learning-rate range test (Smith 2017; fastai's lr_find): the loss while the learning rate grows exponentially."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from kpretrain.recipe import LRFindConfig, OptimizerConfig
from kpretrain.training.optimizers import create_optimizer
from kpretrain.training.state import build_state

MIN_STEPS = 5  # before this step a low start (a warm-started head) and one noisy batch would read as divergence
SUGGESTIONS = ("steepest", "valley", "minimum")  # minimum: the learning rate of the smoothed minimum, divided by 10


@dataclasses.dataclass(frozen=True)
class LRFindResult:
    """The curve (learning rate, raw and smoothed loss per step) and the suggestions made from it."""

    learning_rates: list
    losses: list
    smoothed: list
    suggestions: dict  # name -> learning rate
    method: str  # which suggestion `suggested_lr` is
    stopped: str  # why the test ended: "diverged" or "end"

    @property
    def suggested_lr(self) -> float:
        return self.suggestions[self.method]

    def record(self) -> dict:
        return {"suggested_lr": self.suggested_lr, "method": self.method, "suggestions": self.suggestions,
                "stopped": self.stopped, "curve": {"learning_rate": self.learning_rates, "loss": self.losses,
                                                    "smoothed_loss": self.smoothed}}


def smooth(losses, beta: float = 0.98) -> np.ndarray:
    """Exponential moving average of `losses` with bias correction (as Adam corrects its moments)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return np.asarray(out, dtype=float)


def suggest(lrs, smoothed) -> dict:
    """Steepest descent of the smoothed loss against log lr, fastai's valley (two thirds down the longest
    decreasing run), and the minimum's learning rate / 10."""
    lrs, smoothed = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    if len(lrs) < 3:
        raise ValueError(f"the range test took {len(lrs)} steps; it needs at least 3 to suggest a learning rate")
    # as fastai: the first tenth (a bias-corrected average of a few noisy batches) and the last 5 steps are skipped
    n = len(lrs)
    window = slice(max(1, n // 10), n - 5 if n - 5 - max(1, n // 10) >= 3 else n)
    lrs, smoothed = lrs[window], smoothed[window]
    slope = np.gradient(smoothed, np.log(lrs))
    lowest = int(np.argmin(smoothed))
    steepest = int(np.argmin(slope[: max(lowest, 1) + 1]))  # descending part only: up to the minimum
    # longest decreasing subsequence ending at each point (O(n^2), n <= a few hundred)
    n = len(smoothed)
    length, start = np.ones(n, dtype=int), np.arange(n)
    for j in range(1, n):
        for i in range(j):
            if smoothed[i] > smoothed[j] and length[i] + 1 > length[j]:
                length[j], start[j] = length[i] + 1, start[i]
    end = int(np.argmax(length))
    valley = int(start[end] + (end - start[end]) * 2 // 3)
    return {"steepest": float(lrs[steepest]), "valley": float(lrs[valley]), "minimum": float(lrs[lowest] / 10)}


def lr_range_test(model: keras.Model, batches, *, compile_kwargs: dict, optimizer: OptimizerConfig,
                  settings: LRFindConfig | None = None, jit_compile: bool = False) -> LRFindResult:
    """Train `model` one batch per step from `settings.start_lr` to `settings.end_lr` (exponentially), stop once the
    smoothed loss exceeds `settings.diverge` x its minimum (from step `MIN_STEPS` on; a loss that is not finite
    stops it at once); the model's weights and optimizer are restored after.

    `batches` yields what the stage's `fit` takes: images, `(images, labels)` or `(images, labels, sample weights)`
    (a mixed pretext task's, a self-training student's)."""
    settings = settings or LRFindConfig()
    weights = model.get_weights()
    previous = getattr(model, "optimizer", None) if getattr(model, "compiled", False) else None
    steps = settings.steps
    factor = (settings.end_lr / settings.start_lr) ** (1 / max(1, steps - 1))
    config = dataclasses.replace(optimizer, learning_rate=settings.start_lr, schedule="constant", warmup_epochs=0.0)
    finder = create_optimizer(config)
    model.compile(optimizer=finder, jit_compile=jit_compile, **compile_kwargs)
    build_state(model, batches)
    lrs, losses, best, stopped = [], [], np.inf, "end"
    try:
        for step, batch in enumerate(batches.take(steps)):
            lr = settings.start_lr * factor ** step
            finder.learning_rate.assign(lr)
            x, y, sample_weight = (*batch, None, None)[:3] if isinstance(batch, tuple) else (batch, None, None)
            logs = model.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
            loss = float(logs["loss"])
            lrs.append(lr)
            losses.append(loss)
            smoothed = smooth(losses, settings.beta)[-1]
            if not np.isfinite(loss) or (step >= MIN_STEPS and smoothed > settings.diverge * best):
                stopped = "diverged"
                break
            best = min(best, smoothed)
    finally:
        model.set_weights(weights)
        if previous is not None:
            model.compile(optimizer=previous, jit_compile=jit_compile, **compile_kwargs)
    finite = [i for i, loss in enumerate(losses) if np.isfinite(loss)]
    lrs, losses = [lrs[i] for i in finite], [losses[i] for i in finite]
    smoothed = smooth(losses, settings.beta)
    return LRFindResult(lrs, losses, [float(s) for s in smoothed], suggest(lrs, smoothed), settings.suggestion, stopped)


def plot_lr_find(result: LRFindResult, path: str, title: str = "") -> None:
    """Loss against learning rate (log axis), raw and smoothed, each suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kpretrain import io

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(result.learning_rates, result.losses, color="0.75", lw=0.8, label="loss")
    ax.plot(result.learning_rates, result.smoothed, color="C0", label="smoothed loss")
    for (name, lr), colour in zip(result.suggestions.items(), ("C3", "C2", "C1")):
        y = float(np.interp(np.log(lr), np.log(result.learning_rates), result.smoothed))
        chosen = " (suggested)" if name == result.method else ""
        label = "minimum / 10" if name == "minimum" else name
        ax.scatter([lr], [y], color=colour, zorder=3, label=f"{label}: {lr:.2g}{chosen}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    if result.smoothed:  # from below the lowest loss to above the starting loss; the divergence runs off the top
        low = min(min(result.losses), min(result.smoothed))
        ax.set_ylim(low - 0.1 * abs(low), max(result.smoothed[0], np.median(result.smoothed)) * 1.5)
    ax.set_title(title or "learning-rate range test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)
