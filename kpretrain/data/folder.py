"""Image-folder data sets: one sub-folder per class, optionally under train/ and test/."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kpretrain.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
HOLDOUT_FRACTION = 1 / 6
HOLDOUT_SEED = 0
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and _images_in(p))


def image_folder_layout(folder) -> str | None:
    """'split' (train/ and test/ with class folders), 'classes' (class folders only) or None (not an image folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    train, test = folder / "train", folder / "test"
    if train.is_dir() and test.is_dir() and _class_dirs(train):
        return "split"
    return "classes" if _class_dirs(folder) else None


def _decode(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pillow normally comes with matplotlib; fall back to TensorFlow's decoder
        import tensorflow as tf
        try:
            return tf.io.decode_image(path.read_bytes(), expand_animations=False).numpy()
        except tf.errors.OpError as err:
            raise DataError(f"image {path}: cannot be decoded ({' '.join(err.message.split())}); replace or delete it") from None
    try:
        with Image.open(path) as img:
            img = img.convert("L" if img.mode in GRAY_MODES else "RGB")
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise DataError(f"image {path}: cannot be decoded ({' '.join(str(err).split())}); replace or delete it") from None


def _load_converted(paths: list[Path], image_size, channels) -> np.ndarray:
    """Every image resized to `image_size` ([H, W], bilinear) and converted to `channels` (1 or 3; default: 3 if
    any image has colour) by Keras' image loading."""
    import keras

    if channels is None:
        from PIL import Image

        modes = []
        for path in paths:
            try:
                with Image.open(path) as img:
                    modes.append(img.mode)
            except (OSError, ValueError) as err:
                raise DataError(f"image {path}: cannot be decoded ({' '.join(str(err).split())}); replace or delete it") from None
        channels = 1 if all(m in GRAY_MODES for m in modes) else 3
    images = []
    for path in paths:
        try:
            img = keras.utils.load_img(path, color_mode="grayscale" if channels == 1 else "rgb",
                                       target_size=tuple(image_size) if image_size else None, interpolation="bilinear")
        except (OSError, ValueError) as err:
            raise DataError(f"image {path}: cannot be decoded ({' '.join(str(err).split())}); replace or delete it") from None
        array = np.asarray(img, dtype=np.uint8)
        images.append(array[..., np.newaxis] if array.ndim == 2 else array)
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise DataError(f"image folder: images of sizes {sorted(sizes)[:2]} ...; set data.image_size: [H, W] to resize them")
    return np.stack(images)


def _load_files(paths: list[Path], image_size=None, channels=None) -> np.ndarray:
    if image_size is not None or channels is not None:
        return _load_converted(paths, image_size, channels)
    images = [_decode(p) for p in paths]
    images = [im[..., np.newaxis] if im.ndim == 2 else im for im in images]
    size = images[0].shape[:2]
    for path, im in zip(paths, images):
        if im.shape[:2] != size:
            raise DataError(f"image {path}: size {im.shape[1]}x{im.shape[0]} differs from {size[1]}x{size[0]} ({paths[0].name}); set data.image_size: [H, W] to resize them while loading")
    channels = max(im.shape[2] for im in images)
    return np.stack([np.repeat(im, channels, axis=2) if im.shape[2] < channels else im for im in images])


def _class_files(folder: Path, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    paths, labels = [], []
    for label, name in enumerate(class_names):
        sub = folder / name
        files = _images_in(sub) if sub.is_dir() else []
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, np.int64)


def holdout_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of a deterministic, stratified ~1/6 of each class (at least one when a class has two or more)."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = int(len(members) * HOLDOUT_FRACTION + 0.5)
        n_test = max(n_test, 1) if len(members) >= 2 else 0
        mask[rng.permutation(members)[:n_test]] = True
    return mask


def load_image_folder_arrays(folder, image_size=None, channels=None) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                               np.ndarray, list[str], str]:
    """Read (x_train, y_train, x_test, y_test, class_names, note on the test split) from an image folder, resizing
    to `image_size` and converting to `channels` while loading when given."""
    folder = Path(folder)
    layout = image_folder_layout(folder)
    if layout is None:
        raise DataError(f"image folder {folder}: no class sub-folders with images ({', '.join(sorted(IMAGE_SUFFIXES))}); put each class's images in folder/<class>/")
    if layout == "split":
        class_names = [p.name for p in _class_dirs(folder / "train")]
        extra = sorted({p.name for p in _class_dirs(folder / "test")} - set(class_names))
        if extra:
            raise DataError(f"image folder {folder}: test/ has classes {', '.join(extra)} that train/ lacks; give train/ the same class folders")
        train_paths, y_train = _class_files(folder / "train", class_names)
        test_paths, y_test = _class_files(folder / "test", class_names)
        x_all = _load_files(train_paths + test_paths, image_size, channels)
        return x_all[: len(train_paths)], y_train, x_all[len(train_paths):], y_test, class_names, "test = test/ folder"
    class_names = [p.name for p in _class_dirs(folder)]
    paths, labels = _class_files(folder, class_names)
    x_all = _load_files(paths, image_size, channels)
    test = holdout_mask(labels)
    note = f"no test/ folder: held out a stratified 1/6 of each class as test, seed {HOLDOUT_SEED}"
    return x_all[~test], labels[~test], x_all[test], labels[test], class_names, note
