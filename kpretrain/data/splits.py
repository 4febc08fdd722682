"""Train-set splits: a stratified validation hold-out, a class-balanced labelled subset, and the unlabelled rest."""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from kpretrain.errors import DataError


@dataclasses.dataclass
class Splits:
    """Sorted, disjoint int64 indices into x_train."""

    labelled: np.ndarray
    validation: np.ndarray
    unlabelled: np.ndarray


def _check_int(key: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DataError(f"{key} = {value!r} is not allowed; use a whole number >= {minimum}" + (" or null for all labels" if key == "data.labels_per_class" else ""))
    return int(value)


def _stratified_counts(counts: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split total over classes in proportion to counts (largest remainder; ties broken at random)."""
    quota = total * counts / counts.sum()
    alloc = np.floor(quota).astype(np.int64)
    order = np.lexsort((rng.random(len(counts)), -(quota - alloc)))
    alloc[order[: total - alloc.sum()]] += 1
    return alloc


def make_splits(y_train, *, num_classes: int, validation: int, labels_per_class: int | None, seed: int) -> Splits:
    """Deterministic splits for a seed: a stratified validation hold-out, a class-balanced labelled subset, the rest.

    With the same seed and validation, a larger labels_per_class extends the smaller labelled set.

    Args:
        y_train: the train split's labels (int class ids 0..num_classes-1).
        num_classes: the number of classes.
        validation: the examples held out for validation (`data.validation`), stratified by class.
        labels_per_class: labelled examples per class (`data.labels_per_class`); None labels all the rest.
        seed: the seed of the split.

    Returns:
        `Splits`: sorted, disjoint int64 indices into x_train (`labelled`, `validation`, `unlabelled`).

    Raises:
        DataError: `validation` or `labels_per_class` is not a whole number in range (too large for the train
            split or for its smallest class), or a label is outside 0..num_classes-1.
    """
    y = np.asarray(y_train).ravel()
    n = len(y)
    validation = _check_int("data.validation", validation, 0)
    if validation >= n:
        raise DataError(f"data.validation = {validation} is too large: the training set has {n} examples; the maximum is {n - 1}")
    if labels_per_class is not None:
        labels_per_class = _check_int("data.labels_per_class", labels_per_class, 1)
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"training labels range {y.min()}..{y.max()} but num_classes = {num_classes}; labels must be 0..{num_classes - 1}")
    rng = np.random.default_rng(seed)
    counts = np.bincount(y, minlength=num_classes)
    val_counts = _stratified_counts(counts, validation, rng)
    if labels_per_class is not None:
        left = counts - val_counts
        smallest = int(np.argmin(left))
        if labels_per_class > left[smallest]:
            raise DataError(
                f"data.labels_per_class = {labels_per_class} is too large: class {smallest} has only {left[smallest]} training examples "
                f"left after data.validation = {validation}; the maximum is {left[smallest]} (or lower data.validation)")
    parts: dict[str, list[np.ndarray]] = {"labelled": [], "validation": [], "unlabelled": []}
    for c in range(num_classes):
        order = rng.permutation(np.flatnonzero(y == c))
        rest = order[val_counts[c]:]
        parts["validation"].append(order[: val_counts[c]])
        cut = len(rest) if labels_per_class is None else labels_per_class
        parts["labelled"].append(rest[:cut])
        parts["unlabelled"].append(rest[cut:])
    return Splits(**{k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()})
