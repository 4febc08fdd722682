"""Data sets (IDX, image folders, .npz, TFDS), train/validation/labelled splits and tf.data pipelines."""

from kpretrain.data.pipeline import SCALING, image_batches, labelled_batches, target_batches
from kpretrain.data.sources import KNOWN_DATASETS, DatasetArrays, load_dataset, resolve_dataset
from kpretrain.data.splits import Splits, make_splits

__all__ = [
    "DatasetArrays", "load_dataset", "KNOWN_DATASETS", "resolve_dataset",
    "Splits", "make_splits", "image_batches", "labelled_batches", "target_batches", "SCALING",
]
