"""The in-memory form of a data set: uint8 images [N,H,W,C] and int64 labels, checked on creation."""

from __future__ import annotations

import dataclasses

import numpy as np

from kpretrain.errors import DataError


@dataclasses.dataclass
class DatasetArrays:
    """A whole data set in memory; images stay uint8 (scaling happens in the pipeline)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    source: str
    files: dict = dataclasses.field(default_factory=dict)  # {path: sha256} of the files read (provenance)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])


def _as_images(x, what: str, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise DataError(f"{where}: {what} has shape {x.shape}, expected [N,H,W] or [N,H,W,C] images; store one image per row")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer) or (x.size and (x.min() < 0 or x.max() > 255)):
            raise DataError(f"{where}: {what} has dtype {x.dtype}, expected uint8 pixels 0..255; convert with (x * 255).astype('uint8') if they are floats in [0, 1]")
        x = x.astype(np.uint8)
    return x


def _as_labels(y, n: int, what: str, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: {what} has shape {y.shape} and dtype {y.dtype}, expected integer class ids of shape [N]; store labels as ints, not one-hot")
    if len(y) != n:
        raise DataError(f"{where}: {what} has {len(y)} labels but there are {n} images; the counts must match")
    return y.astype(np.int64)


def make_dataset_arrays(name, x_train, y_train, x_test, y_test, *, source: str, class_names=None, num_classes=None) -> DatasetArrays:
    """Check and normalise arrays into a DatasetArrays (4-D uint8 images, int64 labels in 0..num_classes-1)."""
    x_train = _as_images(x_train, "x_train", source)
    x_test = _as_images(x_test, "x_test", source)
    y_train = _as_labels(y_train, len(x_train), "y_train", source)
    y_test = _as_labels(y_test, len(x_test), "y_test", source)
    if len(x_train) == 0:
        raise DataError(f"{source}: the training set is empty; add training images")
    if x_train.shape[1:] != x_test.shape[1:] and len(x_test):
        raise DataError(f"{source}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}; all images must have one size")
    labels = np.concatenate([y_train, y_test])
    if num_classes is None:
        num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"{source}: labels range {labels.min()}..{labels.max()}, expected 0..{num_classes - 1} ({num_classes} classes); renumber the classes from 0")
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != num_classes:
        raise DataError(f"{source}: {len(class_names)} class names for {num_classes} classes; give one name per class")
    return DatasetArrays(name, x_train, y_train, x_test, y_test, int(num_classes), class_names, source)
