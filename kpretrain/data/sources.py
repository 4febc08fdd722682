"""Finding a data set by name (explicit path, $KPRETRAIN_DATA_DIR, system folders, TFDS) and loading it into memory."""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path

import numpy as np

from kpretrain.data.arrays import DatasetArrays, make_dataset_arrays
from kpretrain.data.checksums import file_checksums
from kpretrain.data.cifar_binary import is_cifar_binary_folder, load_cifar_binary_arrays
from kpretrain.data.folder import IMAGE_SUFFIXES, image_folder_layout, load_image_folder_arrays
from kpretrain.data.idx import EXPECTED_NAMES as IDX_NAMES, find_idx_files, load_idx_arrays
from kpretrain.data.npz import find_npz, load_npz_arrays
from kpretrain.data.tfds_source import (GENERIC_DOWNLOAD_URL, TfdsUnavailable, load_tfds_arrays, tfds_data_dir,
                                        tfds_knows, tfds_status)
from kpretrain.errors import DataError

DATA_DIR_ENV = "KPRETRAIN_DATA_DIR"
DEFAULT_DATA_DIR = "~/.kpretrain/datasets"
SYSTEM_DATA_DIR = "/usr/share/datasets"
FORMATS_HINT = "a folder of MNIST-format IDX files, CIFAR-10 .bin batches, an .npz file (x_train, y_train, x_test, y_test) or class sub-folders of images (optionally under train/ and test/)"


@dataclasses.dataclass(frozen=True)
class KnownDataset:
    """What kpretrain knows about a named data set: TFDS name, classes, where systems install it, image shape."""

    tfds_name: str
    class_names: tuple[str, ...]
    system_paths: tuple[str, ...]
    image_shape: tuple[int, int, int]
    download_url: str
    files_hint: str


_IDX_HINT = f"put the four IDX files ({IDX_NAMES})"
KNOWN_DATASETS: dict[str, KnownDataset] = {
    "mnist": KnownDataset(
        "mnist", tuple("0123456789"), ("/usr/share/datasets/mnist", "~/.keras/datasets/mnist.npz"), (28, 28, 1),
        "https://storage.googleapis.com/cvdf-datasets/mnist/", f"{_IDX_HINT} or mnist.npz"),
    "fashion_mnist": KnownDataset(
        "fashion_mnist",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        ("/usr/share/datasets/fashion-mnist", "~/.keras/datasets/fashion-mnist"), (28, 28, 1),
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        f"install the Debian package dataset-fashion-mnist, or {_IDX_HINT}"),
    "kmnist": KnownDataset(
        "kmnist", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), ("/usr/share/datasets/kmnist",), (28, 28, 1),
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/", f"{_IDX_HINT} or kmnist.npz"),
    "cifar10": KnownDataset(
        "cifar10", ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        ("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10", "/usr/share/datasets/cifar-10-batches-bin"), (32, 32, 3),
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "put cifar10.npz (x_train, y_train, x_test, y_test) or the CIFAR-10 binary batches (data_batch_1.bin ... test_batch.bin)"),
}


def data_dir() -> Path:
    """$KPRETRAIN_DATA_DIR, default ~/.kpretrain/datasets."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def _candidates(name: str) -> list[tuple[str, Path]]:
    """(label for messages, path) of every place a known data set is looked for, in order."""
    variants = dict.fromkeys([name, name.replace("_", "-")])
    found = [(f"${DATA_DIR_ENV}/{v} ({data_dir() / v})", data_dir() / v) for v in variants]
    found += [(f"${DATA_DIR_ENV}/{v}.npz", data_dir() / f"{v}.npz") for v in variants]
    system = [f"{SYSTEM_DATA_DIR}/{v}" for v in variants] + list(KNOWN_DATASETS[name].system_paths)
    found += [(p, Path(p).expanduser()) for p in dict.fromkeys(system)]
    return found


def _detect(path: Path, name: str) -> tuple[str, Path] | None:
    """(format, path to read) for a file or folder holding a data set, or None if it holds none."""
    if path.is_file():
        return ("npz", path) if path.suffix == ".npz" else None
    if not path.is_dir():
        return None
    if find_idx_files(path) is not None:
        return "idx", path
    if is_cifar_binary_folder(path):
        return "cifar-bin", path
    npz = find_npz(path, name)
    if npz is not None:
        return "npz", npz
    if image_folder_layout(path) is not None:
        return "images", path
    return None


def _unknown_name_error(name: str) -> DataError:
    close = difflib.get_close_matches(name.lower(), KNOWN_DATASETS, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return DataError(
        f"unknown data set '{name}'{hint}: known are {', '.join([*KNOWN_DATASETS, *BUNDLED])} and every TensorFlow Datasets "
        f"name (tfds:<name>); for your own data, set data.path to {FORMATS_HINT}")


BUNDLED = {"digits": "scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes)"}


def load_digits_arrays():
    """scikit-learn's bundled digits: 8x8 grayscale, 0..16 scaled to 0..255, a stratified 1/6 held out as test."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("data set 'digits' comes with scikit-learn, which is not installed; pip install scikit-learn") from None
    from kpretrain.data.folder import HOLDOUT_SEED, holdout_mask

    found = load_digits()
    x = np.round(found.images * (255 / 16)).astype(np.uint8)[..., np.newaxis]
    y = found.target.astype(np.int64)
    test = holdout_mask(y)
    note = f"scikit-learn digits, a stratified 1/6 of each class held out as test, seed {HOLDOUT_SEED}"
    return x[~test], y[~test], x[test], y[test], [str(d) for d in range(10)], note


def _tfds_name(name: str, path) -> str | None:
    """The TFDS name a `data.dataset` asks for: `tfds:<name>`, or a plain name kpretrain does not know but TFDS does."""
    if name.startswith("tfds:"):
        return name.removeprefix("tfds:")
    if path is None and name not in KNOWN_DATASETS and tfds_knows(name):
        return name
    return None


def _locate(name: str, path, tfds_dir: str | None = None) -> tuple[str, Path | str]:
    """(format, where): the first place holding the data set; format 'tfds' means TFDS with a description."""
    if name in BUNDLED and path is None:
        return "bundled", name
    tfds_name = _tfds_name(name, path)
    if tfds_name is not None:
        if not tfds_knows(tfds_name):
            raise DataError(f"data set '{name}': TensorFlow Datasets has no data set '{tfds_name}'; see "
                            f"https://www.tensorflow.org/datasets/catalog for the names")
        available, detail = tfds_status(tfds_name, GENERIC_DOWNLOAD_URL, tfds_dir)
        if available:
            return "tfds", detail
        raise DataError(f"data set '{name}' unavailable: {detail}; on a machine online run `tfds build {tfds_name}` "
                        f"(pip install tensorflow-datasets) and copy {tfds_name}/ from its data directory into "
                        f"{tfds_data_dir(tfds_dir)}, or set data.data_dir to a TFDS data directory holding it")
    if path is not None:
        where = Path(path).expanduser()
        if not where.exists():
            raise DataError(f"data.path {where} (data set '{name}') does not exist; point data.path at {FORMATS_HINT}")
        found = _detect(where, name)
        if found is None:
            raise DataError(f"data.path {where} (data set '{name}') holds no data set; point data.path at {FORMATS_HINT}")
        return found
    info = KNOWN_DATASETS.get(name)
    if info is None:
        raise _unknown_name_error(name)
    looked = []
    for label, where in _candidates(name):
        found = _detect(where, name) if where.exists() else None
        if found is not None:
            return found
        if where.exists():
            looked.append(f"{label} (exists but holds no data set)")
        elif where.suffix != ".npz":  # keep the message short: the <name>.npz variants are not listed
            looked.append(label)
    available, detail = tfds_status(info.tfds_name, info.download_url)
    if available:
        return "tfds", detail
    raise DataError(f"data set '{name}' not found: looked in {', '.join(looked + [detail])}; {info.files_hint} in one of these folders or set data.path")


def _describe(kind: str, where) -> str:
    if kind == "tfds":
        return str(where)
    if kind == "images" and image_folder_layout(where) == "classes":
        return f"images:{where} (no test/ folder: a stratified 1/6 of each class is held out as test)"
    return f"{kind}:{where}"


def resolve_dataset(name: str, path=None, tfds_dir: str | None = None) -> str:
    """Where `load_dataset` would read the data set from (no decoding).

    Args:
        name: the data set's name (`data.dataset`), as for `load_dataset`.
        path: an explicit IDX folder, image folder or .npz file (`data.path`); None to look the name up.
        tfds_dir: TensorFlow Datasets' data directory (`data.data_dir`); None for the default.

    Returns:
        A description such as `idx:<folder>`, `npz:<file>`, `images:<folder>` or TFDS's.

    Raises:
        DataError: the data set is found nowhere, or `path` holds none; the message says where it looked.
    """
    return _describe(*_locate(name, path, tfds_dir))


def _files_read(kind: str, where) -> list[Path]:
    """The data files a source of this kind reads (none for TFDS: its own files, versioned by TFDS)."""
    if kind == "idx":
        return list(find_idx_files(where).values())
    if kind == "npz":
        return [Path(where)]
    if kind in ("cifar-bin", "images"):
        return [p for p in Path(where).rglob("*") if p.is_file() and (kind == "cifar-bin" or p.suffix.lower() in IMAGE_SUFFIXES)]
    return []


def convert_images(x: np.ndarray, image_size=None, channels=None) -> np.ndarray:
    """uint8 images [N, H, W, C] resized to `image_size` (bilinear) and converted to `channels` (1 or 3)."""
    import tensorflow as tf

    if channels is not None and x.shape[-1] != channels:
        x = (tf.image.rgb_to_grayscale(x) if channels == 1 else tf.image.grayscale_to_rgb(tf.constant(x))).numpy()
    if image_size is not None and tuple(x.shape[1:3]) != tuple(image_size):
        x = np.clip(np.round(tf.image.resize(x, tuple(image_size), method="bilinear").numpy()), 0, 255).astype(np.uint8)
    return x


def load_dataset(name: str, path=None, image_size=None, channels=None, *, tfds_dir: str | None = None,
                 split: dict | None = None) -> DatasetArrays:
    """Load a data set by name (or from path) into uint8 arrays, resized and converted when asked.

    A name is looked up in `$KPRETRAIN_DATA_DIR`, the system folders and TensorFlow Datasets (`tfds:<name>`, or a
    name kpretrain does not know but TFDS does); `digits` is scikit-learn's bundled data set.

    Args:
        name: the data set's name (`data.dataset`): mnist, fashion_mnist, kmnist, cifar10, digits, a TFDS name, or
            a name of your own with `path`.
        path: an explicit IDX folder, image folder or .npz file (`data.path`); None to look the name up.
        image_size: [H, W] to resize every image to (bilinear); None keeps the stored size.
        channels: 1 (grayscale) or 3 (RGB) to convert to; None keeps the stored channels.
        tfds_dir: TensorFlow Datasets' data directory (`data.data_dir`); None for the default.
        split: TFDS split names when they are not train/test (`data.split`), e.g. `{"test": "validation"}`.

    Returns:
        A `DatasetArrays`: uint8 images [N, H, W, C] and int64 labels of the train and test splits, the class
        names, the source and the checksums of the files read.

    Raises:
        DataError: the data set cannot be found or read, or a known data set holds other classes or image shapes
            than expected; the one-line message says how to fix it.
    """
    kind, where = _locate(name, path, tfds_dir)
    info = KNOWN_DATASETS.get(name)
    names = None
    if kind == "idx":
        x_train, y_train, x_test, y_test = load_idx_arrays(where)
        source = f"idx:{where}"
    elif kind == "cifar-bin":
        x_train, y_train, x_test, y_test, names = load_cifar_binary_arrays(where)
        source = f"cifar-bin:{where}"
    elif kind == "npz":
        x_train, y_train, x_test, y_test, names = load_npz_arrays(where)
        source = f"npz:{where}"
    elif kind == "images":
        x_train, y_train, x_test, y_test, names, note = load_image_folder_arrays(where, image_size, channels)
        source = f"images:{where} ({note})"
    elif kind == "bundled":
        x_train, y_train, x_test, y_test, names, note = load_digits_arrays()
        source = f"bundled:{where} ({note})"
    else:
        tfds_name = info.tfds_name if info is not None else _tfds_name(name, path)
        try:
            x_train, y_train, x_test, y_test, names, source = load_tfds_arrays(
                tfds_name, info.download_url if info is not None else GENERIC_DOWNLOAD_URL, tfds_dir, split)
        except TfdsUnavailable as err:
            fix = (f"{info.files_hint} in ${DATA_DIR_ENV}/{name} or set data.path" if info is not None else
                   f"prepare it with `tfds build {tfds_name}` on a machine online, or set data.data_dir")
            raise DataError(f"data set '{name}' could not be loaded: {err}; {fix}") from None
    if names is None and info is not None:
        names = list(info.class_names)
    data = make_dataset_arrays(name, x_train, y_train, x_test, y_test, source=source, class_names=names,
                               num_classes=len(names) if names is not None else None)
    data.files = file_checksums(_files_read(kind, where))
    if info is not None and (data.image_shape != info.image_shape or data.num_classes != len(info.class_names)):
        raise DataError(
            f"data set '{name}' from {source}: {data.num_classes} classes of {'x'.join(map(str, data.image_shape))} images, expected "
            f"{len(info.class_names)} classes of {'x'.join(map(str, info.image_shape))}; point data.path at the right data, or give your own data another name")
    if (image_size is not None or channels is not None) and kind != "images":  # folders convert while loading
        data = make_dataset_arrays(name, convert_images(data.x_train, image_size, channels), data.y_train,
                                   convert_images(data.x_test, image_size, channels), data.y_test, source=data.source,
                                   class_names=data.class_names, num_classes=data.num_classes)
        data.files = file_checksums(_files_read(kind, where))
    if image_size is not None or channels is not None:
        data.source += f" (converted while loading: {'x'.join(map(str, data.image_shape))})"
    return data
