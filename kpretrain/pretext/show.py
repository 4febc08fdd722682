"""`save_task_grid`: a PNG grid of pretext examples, each titled with its label in words."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kpretrain.pretext.base import PretextTask  # noqa: E402
from kpretrain.pretext.masked_image import MaskedImageTask  # noqa: E402
from kpretrain.pretext.mixed import MixedTask  # noqa: E402
from kpretrain.pretext.views import TwoViewTask  # noqa: E402


def task_examples(task: PretextTask, images: np.ndarray, n: int) -> list[tuple[np.ndarray, str]]:
    """Up to `n` (image, title) pairs from one pass of `task` over `images` (a mixed task shows each sub-task)."""
    if isinstance(task, TwoViewTask):  # n // views images, each shown as its views side by side (local ones last)
        per = task.batch_multiplier
        views, _ = task(tf.constant(images[:max(n // per, 1)], tf.float32))
        count = len(views) // per
        return [(views[i + count * v].numpy(), f"#{i} {'view' if v < 2 else 'local'} {v + 1 if v < 2 else v - 1}")
                for i in range(count) for v in range(per)]
    if isinstance(task, MaskedImageTask):  # n // 2 images, each shown as its masked input beside the original
        task.check_images(images.shape)  # its one-line error, before Keras' call wraps it
        masked, labels = (t.numpy() for t in task(tf.constant(images[:max(n // 2, 1)], tf.float32)))
        return [pair for i in range(len(masked)) for pair in
                ((masked[i], f"#{i} {task.describe(labels[i])}"), (labels[i, ..., :-1], f"#{i} original"))]
    if isinstance(task, MixedTask):
        per_task = [task_examples(sub, images, math.ceil(n / len(task.tasks))) for sub in task.tasks]
        return [(image, f"{name}: {title}") for name, examples in zip(task.task_names, per_task)
                for image, title in examples][:n]
    if getattr(task, "generates_images", False):  # draws its own images: only their shape is taken
        images = np.zeros((max(n, 2), *images.shape[1:]), np.float32)
    out, labels = (t.numpy() for t in task(tf.constant(images[:max(n, 2)], tf.float32)))
    if task.batch_multiplier > 1:  # all rotations: show each image's variants next to each other
        order = np.arange(len(out)).reshape(task.batch_multiplier, -1).T.ravel()
        out, labels = out[order], labels[order]
    return [(out[i], task.describe(labels[i] if labels.ndim > 1 else int(labels[i])))  # multi-hot or a class
            for i in range(min(n, len(out)))]


def save_task_grid(task: PretextTask, images: np.ndarray, path: str, n: int = 16, title: str | None = None) -> str:
    """Write a PNG grid of `n` pretext examples made from float32 `images` [N,H,W,C] in [0, 1]; returns `path`."""
    examples = task_examples(task, np.asarray(images, np.float32), n)
    cols = math.ceil(math.sqrt(len(examples)))
    if isinstance(task, TwoViewTask):
        cols = task.batch_multiplier * math.ceil(cols / task.batch_multiplier)  # an image's views on one row
    if isinstance(task, MaskedImageTask):
        cols += cols % 2  # an image's masked input and original on one row
    rows = math.ceil(len(examples) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows + (0.4 if title else 0)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, label) in zip(axes.ravel(), examples):
        gray = image.shape[-1] == 1
        ax.imshow(image[..., 0] if gray else np.clip(image, 0, 1), cmap="gray" if gray else None, vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
