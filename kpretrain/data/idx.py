"""MNIST-format IDX files (raw or gzip): header parsing, size checks and the four-file train/test layout."""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from kpretrain.errors import DataError

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILE_RE = re.compile(r"^(?:.*[-_])?(train|t10k|test)-(images|labels)[.-]idx([13])-ubyte(?:\.gz)?$")
ROLES = ("train_images", "train_labels", "test_images", "test_labels")
EXPECTED_NAMES = "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":  # gzip is detected by content, not by the file name
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(f"IDX file {path}: damaged gzip stream ({err}); download the file again") from None


def read_idx(path) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a native-endian numpy array, checking magic number and size."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"IDX file {path}: truncated: expected at least 4 header bytes, got {len(data)}; download the file again")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\0\0" or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(f"IDX file {path}: bad magic number 0x{magic:08x}, expected 0x00000803 (images) or 0x00000801 (labels); this is not an IDX file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path}: truncated: expected at least {header} header bytes, got {len(data)}; download the file again")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise DataError(f"IDX file {path}: {what}: expected {expected} bytes, got {len(data)} (header says shape {dims}); download the file again")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))  # writable native copy


def find_idx_files(folder) -> dict[str, Path] | None:
    """Map the four roles (train/test images/labels) to files in folder; None if it has no IDX files at all."""
    folder = Path(folder)
    found: dict[str, list[Path]] = {role: [] for role in ROLES}
    for path in sorted(folder.iterdir()):
        m = IDX_FILE_RE.match(path.name)
        if m and path.is_file():
            split = "train" if m.group(1) == "train" else "test"
            found[f"{split}_{m.group(2)}"].append(path)
    if not any(found.values()):
        return None
    missing = [role.replace("_", " ") for role, paths in found.items() if not paths]
    if missing:
        raise DataError(f"IDX folder {folder}: no {', '.join(missing)} file; it needs all four of {EXPECTED_NAMES}")
    for role, paths in found.items():
        if len(paths) > 1:
            raise DataError(f"IDX folder {folder}: several {role.replace('_', ' ')} files ({', '.join(p.name for p in paths)}); keep one")
    return {role: paths[0] for role, paths in found.items()}


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise DataError(f"IDX file {images_path}: holds {x.dtype} data of shape {x.shape}, expected uint8 images [N,H,W] (magic 0x00000803); check the file is an image file")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"IDX file {labels_path}: holds {y.dtype} data of shape {y.shape}, expected integer labels [N] (magic 0x00000801); check the file is a label file")
    if len(x) != len(y):
        raise DataError(f"IDX files {images_path.name} and {labels_path.name} in {images_path.parent}: {len(x)} images but {len(y)} labels; the counts must match")
    return x, y


def load_idx_arrays(folder) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the four IDX files of folder as (x_train, y_train, x_test, y_test)."""
    files = find_idx_files(folder)
    if files is None:
        raise DataError(f"IDX folder {folder}: no IDX files; it needs {EXPECTED_NAMES}")
    x_train, y_train = _read_pair(files["train_images"], files["train_labels"])
    x_test, y_test = _read_pair(files["test_images"], files["test_labels"])
    return x_train, y_train, x_test, y_test
