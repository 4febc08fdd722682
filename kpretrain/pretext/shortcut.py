"""The pretext shortcut check: can the pretext label be read off low-level image statistics instead of shape?

A logistic regression on 19 numbers per image (a 16-bin intensity histogram, the maximum, the mean and the ink
fraction) is fitted on pretext examples and scored by k-fold cross-validation.  When it gets most of the way to the
pretext network's accuracy, the task can be solved without learning anything about shape.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from kpretrain.training.head_init import fit_logistic_regression

BINS = 16
INK = 0.1  # a pixel brighter than this is ink
WARN_SHARE = 0.8  # warn when the shortcut gets this share of the network's margin over chance
SHORTCUT_WAY, WEAK_WAY = 0.5, 0.1  # without a network: a shortcut / a partial one, as a share of chance -> perfect


@dataclasses.dataclass(frozen=True)
class ShortcutResult:
    """Cross-validated accuracy of the statistics classifier, next to chance (the majority label's share)."""

    task: str
    accuracy: float
    chance: float
    examples: int
    folds: int

    def share_of(self, network_accuracy: float | None) -> float | None:
        """The shortcut's margin over chance as a share of the network's (None without a network margin)."""
        if network_accuracy is None or network_accuracy - self.chance <= 1e-9:
            return None
        return (self.accuracy - self.chance) / (network_accuracy - self.chance)

    def record(self, network_accuracy: float | None = None) -> dict:
        share = self.share_of(network_accuracy)
        return {"task": self.task, "accuracy": self.accuracy, "chance": self.chance, "examples": self.examples,
                "folds": self.folds, "network_accuracy": network_accuracy, "share_of_network_margin": share,
                "warning": share is not None and share >= WARN_SHARE}

    def line(self, network_accuracy: float | None = None) -> str:
        share = self.share_of(network_accuracy)
        text = (f"{self.task}: a logistic regression on {BINS + 3} image statistics predicts the pretext label with "
                f"accuracy {self.accuracy:.3f} (chance {self.chance:.3f}; {self.folds}-fold, {self.examples} examples)")
        if network_accuracy is not None:
            text += f"; the pretext network reaches {network_accuracy:.3f}"
        if share is not None and share >= WARN_SHARE:
            text += (f": the statistics alone get {100 * share:.0f} % of its margin over chance, so the task can be "
                     f"solved without learning shape")
        elif network_accuracy is None:
            text += ": " + self.meaning()
        return text

    def meaning(self) -> str:
        """In words, what the accuracy says without a pretext network to compare with: how far the statistics
        alone get from chance towards a perfect pretext score."""
        way = (self.accuracy - self.chance) / max(1e-9, 1.0 - self.chance)
        if way >= SHORTCUT_WAY:
            return (f"a shortcut: image statistics alone get {100 * way:.0f} % of the way from chance to a perfect "
                    f"score, so a network can solve this task without learning shape (pre-training may then teach "
                    f"little that transfers)")
        if way >= WEAK_WAY:
            return (f"a partial shortcut: image statistics alone get {100 * way:.0f} % of the way from chance to a "
                    f"perfect score; the rest needs more than intensity")
        return "no shortcut found: image statistics alone do little better than chance"


def image_statistics(images) -> np.ndarray:
    """[N, 19] per image (float pixels in [0, 1], channels averaged): intensity histogram (16 bins, fractions),
    maximum, mean, ink fraction (pixels above 0.1)."""
    gray = np.asarray(images, dtype=np.float32)
    gray = gray.reshape(len(gray), -1, gray.shape[-1]).mean(axis=-1) if gray.ndim == 4 else gray.reshape(len(gray), -1)
    bins = np.clip((gray * BINS).astype(np.int64), 0, BINS - 1)
    histogram = np.stack([np.bincount(row, minlength=BINS) for row in bins]) / gray.shape[1]
    return np.concatenate([histogram, gray.max(axis=1, keepdims=True), gray.mean(axis=1, keepdims=True),
                           (gray > INK).mean(axis=1, keepdims=True)], axis=1).astype(np.float32)


def checkable_tasks(task) -> list:
    """The class-labelling tasks inside `task`: itself, or a mixed task's tasks; none for a two-view task (contrastive,
    SimSiam, Barlow Twins, VICReg: no classes, its labels pair views), masked-image modelling (no classes, its labels
    are the images to reconstruct), supervised pre-training (the data set's own labels) or a multi-label task (no
    single class)."""
    if hasattr(task, "tasks"):
        return [t for sub in task.tasks for t in checkable_tasks(sub)]
    if (task.num_classes is None or task.task_name == "supervised" or getattr(task, "needs_labels", False)
            or getattr(task, "multi_label", False)):
        return []
    return [task]


def shortcut_check(task, images_uint8: np.ndarray, *, examples: int = 4000, folds: int = 3, seed: int = 0,
                   batch_size: int = 256) -> ShortcutResult:
    """Label `examples` images (a seeded sample of `images_uint8`) with `task` in batches, and cross-validate a
    logistic regression on their statistics."""
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(images_uint8))[:examples]
    images = tf.data.Dataset.from_tensor_slices(images_uint8[np.sort(pick)]).batch(batch_size).map(
        lambda x: tf.cast(x, tf.float32) / 255.0)
    features, labels = [], []
    for x, y in task.make_dataset(images):
        features.append(image_statistics(x.numpy()))
        labels.append(y.numpy())
    features, labels = np.concatenate(features), np.concatenate(labels)
    order = rng.permutation(len(labels))
    correct = 0
    num_classes = int(task.num_classes)
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        kernel, bias = fit_logistic_regression(features[train], labels[train], num_classes)
        correct += int(np.sum(np.argmax(features[fold] @ kernel + bias, axis=1) == labels[fold]))
    chance = float(np.bincount(labels, minlength=num_classes).max() / len(labels))
    return ShortcutResult(task.task_name, correct / len(labels), chance, int(len(labels)), folds)
