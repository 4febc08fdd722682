"""The CIFAR-10 "binary version" folder (data_batch_1..5.bin, test_batch.bin, batches.meta.txt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kpretrain.errors import DataError

TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
RECORD_BYTES = 1 + 32 * 32 * 3  # one label byte, then 1024 red, 1024 green, 1024 blue pixels


def is_cifar_binary_folder(folder) -> bool:
    return (Path(folder) / TEST_FILE).is_file() or (Path(folder) / TRAIN_FILES[0]).is_file()


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"CIFAR-10 binary folder {path.parent}: {path.name} is missing; it needs {', '.join(TRAIN_FILES)} and {TEST_FILE}")
    data = np.fromfile(path, np.uint8)
    if data.size == 0 or data.size % RECORD_BYTES:
        raise DataError(f"CIFAR-10 file {path}: {data.size} bytes is not a whole number of {RECORD_BYTES}-byte records (truncated?); download the file again")
    records = data.reshape(-1, RECORD_BYTES)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records[:, 0].astype(np.int64)


def load_cifar_binary_arrays(folder) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str] | None]:
    """Read the folder as (x_train, y_train, x_test, y_test, class names from batches.meta.txt or None)."""
    folder = Path(folder)
    train = [_read_batch(folder / name) for name in TRAIN_FILES]
    x_test, y_test = _read_batch(folder / TEST_FILE)
    meta = folder / "batches.meta.txt"
    names = [line.strip() for line in meta.read_text().splitlines() if line.strip()] if meta.is_file() else None
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test, names
