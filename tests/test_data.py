"""Tests for kpretrain.data: IDX/npz/image-folder/system sources, resolution order, errors, splits and pipelines."""

import gzip
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from kpretrain.data import KNOWN_DATASETS, SCALING, image_batches, labelled_batches, load_dataset, make_splits, resolve_dataset
from kpretrain.data import tfds_source
from kpretrain.data.idx import read_idx
from kpretrain.errors import DataError, InputError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.fixture(autouse=True)
def isolated_data_dirs(tmp_path, monkeypatch):
    """Empty $KPRETRAIN_DATA_DIR and $TFDS_DATA_DIR so only what a test writes (and /usr/share/datasets) is found."""
    monkeypatch.setenv("KPRETRAIN_DATA_DIR", str(tmp_path / "kpretrain_data"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_data"))
    monkeypatch.delenv("KPRETRAIN_OFFLINE", raising=False)
    return tmp_path / "kpretrain_data"


def idx_bytes(array: np.ndarray) -> bytes:
    """A hand-written IDX header (0x0000 08 ndim, big-endian dims) followed by uint8 data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_digits(n: int, seed: int, shape=(28, 28)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10


def write_idx_folder(folder: Path, seed: int, gz: bool = True, n_train: int = 30, n_test: int = 10, shape=(28, 28)):
    folder.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr = fake_digits(n_train, seed, shape)
    x_te, y_te = fake_digits(n_test, seed + 1, shape)
    suffix = ".gz" if gz else ""
    for role, arr in [("train_images", x_tr), ("train_labels", y_tr), ("test_images", x_te), ("test_labels", y_te)]:
        write_idx(folder / (IDX_NAMES[role] + suffix), arr, gz)
    return x_tr, y_tr, x_te, y_te


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True])
def test_idx_file_round_trip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "imgs", images, gz)), images)
    read_labels = read_idx(write_idx(tmp_path / "lbls", labels, gz))
    assert read_labels.shape == (7,) and np.array_equal(read_labels, labels)
    assert read_idx(tmp_path / "imgs").flags.writeable


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_loads_with_channel_axis_and_name_variants(tmp_path, gz):
    folder = tmp_path / "digits"
    x_tr, y_tr, x_te, y_te = write_idx_folder(folder, seed=1, gz=gz, shape=(6, 6))
    suffix = ".gz" if gz else ""
    (folder / f"train-images-idx3-ubyte{suffix}").rename(folder / f"train-images.idx3-ubyte{suffix}")
    data = load_dataset("my_digits", path=folder)
    assert data.name == "my_digits" and data.source == f"idx:{folder}"
    assert data.x_train.shape == (30, 6, 6, 1) and data.x_train.dtype == np.uint8
    assert np.array_equal(data.x_train[..., 0], x_tr) and np.array_equal(data.x_test[..., 0], x_te)
    assert data.y_train.dtype == np.int64 and np.array_equal(data.y_train, y_tr) and np.array_equal(data.y_test, y_te)
    assert data.num_classes == 10 and data.class_names == [str(i) for i in range(10)]
    assert data.image_shape == (6, 6, 1)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_file_names_the_file_and_sizes(tmp_path, gz):
    folder = tmp_path / "digits"
    write_idx_folder(folder, seed=2, gz=False, shape=(6, 6))
    path = folder / IDX_NAMES["train_images"]
    data = path.read_bytes()[:-5]
    if gz:
        path.unlink()
        path = folder / (IDX_NAMES["train_images"] + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        load_dataset("digits", path=folder)
    expected = 16 + 30 * 36
    assert str(path) in str(err.value) and f"truncated: expected {expected} bytes, got {expected - 5}" in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_magic_names_the_file_and_the_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(DataError, match=r"bad magic number 0x12345678") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_image_and_label_counts_must_match(tmp_path):
    folder = tmp_path / "digits"
    write_idx_folder(folder, seed=3, shape=(6, 6))
    write_idx(folder / (IDX_NAMES["test_labels"] + ".gz"), np.zeros(9, np.uint8), gz=True)
    with pytest.raises(DataError, match=r"10 images but 9 labels"):
        load_dataset("digits", path=folder)


def test_idx_folder_with_a_missing_file_says_which(tmp_path):
    folder = tmp_path / "digits"
    write_idx_folder(folder, seed=4, shape=(6, 6))
    (folder / (IDX_NAMES["test_labels"] + ".gz")).unlink()
    with pytest.raises(DataError, match=r"no test labels file"):
        load_dataset("digits", path=folder)


# ---------------------------------------------------------------- real Fashion-MNIST (installed by CI; must not skip)

@pytest.fixture(scope="module")
def fashion():
    assert FASHION_DIR.is_dir(), f"{FASHION_DIR} missing: install the Debian package dataset-fashion-mnist"
    return load_dataset("fashion_mnist")


def test_fashion_mnist_from_the_debian_package(fashion):
    assert fashion.source == f"idx:{FASHION_DIR}"
    assert fashion.x_train.shape == (60000, 28, 28, 1) and fashion.x_test.shape == (10000, 28, 28, 1)
    assert fashion.x_train.dtype == np.uint8 and fashion.y_train.dtype == np.int64
    assert fashion.num_classes == 10 and fashion.class_names == list(KNOWN_DATASETS["fashion_mnist"].class_names)
    assert np.array_equal(np.bincount(fashion.y_train), np.full(10, 6000))
    assert np.array_equal(np.bincount(fashion.y_test), np.full(10, 1000))
    assert fashion.x_train.max() == 255 and fashion.x_train.min() == 0
    assert resolve_dataset("fashion_mnist") == f"idx:{FASHION_DIR}"


# ---------------------------------------------------------------- npz and image folders

def test_npz_file_as_explicit_path(tmp_path):
    x_tr, y_tr = fake_digits(12, 5, (4, 4))
    x_te, y_te = fake_digits(4, 6, (4, 4))
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr.reshape(-1, 1).astype(np.int32), x_test=x_te, y_test=y_te,
             class_names=np.array([f"c{i}" for i in range(10)]))
    data = load_dataset("tiny", path=path)
    assert data.source == f"npz:{path}" and data.x_train.shape == (12, 4, 4, 1)
    assert np.array_equal(data.y_train, y_tr) and data.y_train.dtype == np.int64
    assert data.class_names[3] == "c3" and data.num_classes == 10


def test_npz_in_data_dir_env_var(isolated_data_dirs):
    folder = isolated_data_dirs / "mnist"
    folder.mkdir(parents=True)
    x_tr, y_tr = fake_digits(20, 7)
    np.savez(folder / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_tr[:5], y_test=y_tr[:5])
    data = load_dataset("mnist")
    assert data.source == f"npz:{folder / 'mnist.npz'}" and data.image_shape == (28, 28, 1)
    assert data.class_names == list("0123456789") and np.array_equal(data.x_train[..., 0], x_tr)


def test_npz_missing_array_is_named(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 3, 3), np.uint8), y_train=np.zeros(2, np.int64))
    with pytest.raises(DataError, match=r"no array x_test, y_test"):
        load_dataset("bad", path=path)


def test_cifar10_binary_batches_in_data_dir(isolated_data_dirs):
    folder = isolated_data_dirs / "cifar10"
    folder.mkdir(parents=True)
    def record(label):  # red plane = 1, green = 2, blue = 3 + label, as in the CIFAR-10 binary layout
        return bytes([label]) + bytes([1]) * 1024 + bytes([2]) * 1024 + bytes([3 + label]) * 1024
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(record(i) + record(0))
    (folder / "test_batch.bin").write_bytes(record(9))
    (folder / "batches.meta.txt").write_text("\n".join(KNOWN_DATASETS["cifar10"].class_names) + "\n\n")
    data = load_dataset("cifar10")
    assert data.source == f"cifar-bin:{folder}" and data.x_train.shape == (10, 32, 32, 3) and data.x_test.shape == (1, 32, 32, 3)
    assert np.array_equal(data.y_train, [1, 0, 2, 0, 3, 0, 4, 0, 5, 0]) and data.class_names[9] == "truck"
    assert np.array_equal(data.x_test[0, 5, 7], [1, 2, 12]) and (data.x_train[0] == [1, 2, 4]).all()


def write_png_classes(root: Path, classes: dict[str, int], mode: str = "L", size=(5, 4)) -> dict[Path, int]:
    """Write n (< 20) images per class; each image's pixels all equal 20*class + index so content can be traced."""
    from PIL import Image

    values = {}
    for c, (name, n) in enumerate(sorted(classes.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            value = 20 * c + i
            path = root / name / f"img{i:02d}.png"
            Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)
            values[path] = value
    return values


def test_image_folder_without_test_split_holds_out_one_sixth(tmp_path):
    root = tmp_path / "shapes"
    write_png_classes(root, {"circle": 12, "square": 12, "triangle": 6})
    (root / "notes.txt").write_text("ignored")
    data = load_dataset("shapes", path=root)
    assert data.class_names == ["circle", "square", "triangle"] and data.num_classes == 3
    assert data.x_train.shape == (25, 4, 5, 1) and data.x_test.shape == (5, 4, 5, 1)
    assert np.array_equal(np.bincount(data.y_test), [2, 2, 1]) and np.array_equal(np.bincount(data.y_train), [10, 10, 5])
    # every image keeps its label: pixel value // 20 is the class
    for x, y in [(data.x_train, data.y_train), (data.x_test, data.y_test)]:
        assert np.array_equal(x[:, 0, 0, 0] // 20, y) and (x == x[:, :1, :1, :]).all()
    assert sorted(np.concatenate([data.x_train, data.x_test])[:, 0, 0, 0]) == sorted(
        [20 * c + i for c, n in enumerate([12, 12, 6]) for i in range(n)])
    assert "held out a stratified 1/6" in data.source
    again = load_dataset("shapes", path=root)
    assert np.array_equal(again.x_test, data.x_test) and np.array_equal(again.y_test, data.y_test)


def test_image_folder_with_train_and_test_folders_rgb(tmp_path):
    root = tmp_path / "pets"
    write_png_classes(root / "train", {"cat": 3, "dog": 4}, mode="RGB")
    write_png_classes(root / "test", {"cat": 2, "dog": 1}, mode="RGB")
    data = load_dataset("pets", path=root)
    assert data.x_train.shape == (7, 4, 5, 3) and data.x_test.shape == (3, 4, 5, 3)
    assert np.array_equal(data.y_train, [0, 0, 0, 1, 1, 1, 1]) and np.array_equal(data.y_test, [0, 0, 1])
    assert np.array_equal(data.x_test[:, 0, 0, 0], [0, 1, 20])
    assert resolve_dataset("pets", path=root) == f"images:{root}"


def test_image_folder_with_mixed_sizes_names_the_odd_file(tmp_path):
    from PIL import Image

    root = tmp_path / "mixed"
    write_png_classes(root, {"a": 2, "b": 2})
    Image.new("L", (9, 9)).save(root / "b" / "zz_big.png")
    with pytest.raises(DataError, match=r"zz_big.png: size 9x9 differs from 5x4.*data.image_size"):
        load_dataset("mixed", path=root)


def test_image_folder_of_mixed_sizes_and_colour_modes_loads_resized_and_converted(tmp_path):
    """data.image_size and data.channels: Keras' image loading resizes and converts every file while loading."""
    from PIL import Image

    root = tmp_path / "mixed"
    write_png_classes(root, {"a": 3, "b": 3})  # 5x4 grayscale, flat value 20*class + i
    Image.new("RGB", (12, 7), (200, 100, 0)).save(root / "b" / "zz_rgb.png")
    Image.new("L", (3, 9), 90).save(root / "a" / "zz_tall.png")
    data = load_dataset("mixed", path=root, image_size=[6, 8], channels=3)
    assert data.x_train.shape[1:] == (6, 8, 3) and len(data.x_train) + len(data.x_test) == 8
    every = np.concatenate([data.x_train, data.x_test])
    assert any((im == [200, 100, 0]).all() for im in every)  # the colour image, resized: flat, so unchanged values
    assert any((im == 90).all() for im in every)  # a grayscale file, as three equal channels
    gray = load_dataset("mixed", path=root, image_size=[6, 8], channels=1)
    expected = int(round(0.299 * 200 + 0.587 * 100))  # PIL's luminance
    assert gray.x_train.shape[1:] == (6, 8, 1) and any(abs(int(im[0, 0, 0]) - expected) <= 1
                                                         for im in np.concatenate([gray.x_train, gray.x_test]))
    assert "converted while loading: 6x8x3" in data.source
    # arrays of any other source are converted too (here: a gray .npz to 3 channels, upsampled)
    np.savez(tmp_path / "tiny.npz", x_train=np.full((4, 2, 2), 50, np.uint8), y_train=np.array([0, 1, 0, 1]),
             x_test=np.full((2, 2, 2), 50, np.uint8), y_test=np.array([0, 1]))
    converted = load_dataset("tiny", path=tmp_path / "tiny.npz", image_size=[4, 4], channels=3)
    assert converted.x_train.shape == (4, 4, 4, 3) and (converted.x_train == 50).all()


# ---------------------------------------------------------------- resolution order and errors

def test_explicit_path_beats_data_dir_beats_system_location(tmp_path, isolated_data_dirs):
    assert resolve_dataset("fashion_mnist") == f"idx:{FASHION_DIR}"
    env_copy = isolated_data_dirs / "fashion_mnist"
    x_env = write_idx_folder(env_copy, seed=10)[0]
    assert resolve_dataset("fashion_mnist") == f"idx:{env_copy}"
    explicit = tmp_path / "explicit"
    x_explicit = write_idx_folder(explicit, seed=20, gz=False)[0]
    assert resolve_dataset("fashion_mnist", path=explicit) == f"idx:{explicit}"
    from_env, from_path = load_dataset("fashion_mnist"), load_dataset("fashion_mnist", path=explicit)
    assert np.array_equal(from_env.x_train[..., 0], x_env) and np.array_equal(from_path.x_train[..., 0], x_explicit)
    assert from_path.class_names[0] == "T-shirt/top"


def test_data_dir_accepts_hyphenated_folder_name(isolated_data_dirs):
    write_idx_folder(isolated_data_dirs / "fashion-mnist", seed=11)
    assert resolve_dataset("fashion_mnist") == f"idx:{isolated_data_dirs / 'fashion-mnist'}"


def test_known_name_with_wrong_shape_is_refused(tmp_path):
    write_idx_folder(tmp_path / "small", seed=12, shape=(8, 8))
    with pytest.raises(DataError, match=r"10 classes of 8x8x1 images, expected 10 classes of 28x28x1"):
        load_dataset("mnist", path=tmp_path / "small")


def test_unknown_name_suggests_the_nearest_known_name():
    with pytest.raises(DataError, match=r"unknown data set 'fashon-mnist' \(did you mean 'fashion_mnist'\?\)") as err:
        load_dataset("fashon-mnist")
    assert "mnist, fashion_mnist, kmnist, cifar10" in str(err.value)
    with pytest.raises(InputError, match="unknown data set"):
        resolve_dataset("cifar100000")


def test_missing_path_and_empty_path_are_explained(tmp_path):
    with pytest.raises(DataError, match=r"does not exist"):
        load_dataset("mine", path=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no data set"):
        load_dataset("mine", path=tmp_path / "empty")


def test_missing_data_set_names_every_place_and_fails_fast_offline(monkeypatch, isolated_data_dirs):
    monkeypatch.setenv("KPRETRAIN_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset("kmnist")
    message = str(err.value)
    assert time.monotonic() - start < 5
    assert message.startswith("data set 'kmnist' not found: looked in $KPRETRAIN_DATA_DIR/kmnist")
    assert str(isolated_data_dirs / "kmnist") in message and "/usr/share/datasets/kmnist" in message
    assert "TFDS" in message and "download skipped: KPRETRAIN_OFFLINE=1" in message and "set data.path" in message
    assert "\n" not in message


def test_missing_data_set_does_not_download_when_host_is_unreachable(monkeypatch):
    monkeypatch.setattr(tfds_source, "network_problem", lambda url, timeout=3.0: "example.invalid:443 unreachable (test)")
    with pytest.raises(DataError, match=r"download not tried: example.invalid:443 unreachable \(test\)"):
        resolve_dataset("cifar10")


def test_network_check_is_bounded(monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    assert tfds_source.network_problem(f"http://127.0.0.1:{port}/x") is None
    listener.close()
    assert "unreachable" in tfds_source.network_problem(f"http://127.0.0.1:{port}/x")
    hang = threading.Event()

    def hanging_connect(*args, **kwargs):
        hang.wait(5)
        raise OSError("gave up")

    monkeypatch.setattr(tfds_source.socket, "create_connection", hanging_connect)
    start = time.monotonic()
    assert "no answer in 0.2 s" in tfds_source.network_problem("https://example.invalid/", timeout=0.2)
    assert time.monotonic() - start < 1.5
    hang.set()


# ---------------------------------------------------------------- splits

@pytest.fixture(scope="module")
def balanced_labels():
    return np.random.default_rng(42).permutation(np.repeat(np.arange(10), 100))


def test_splits_are_class_balanced_disjoint_and_complete(balanced_labels):
    s = make_splits(balanced_labels, num_classes=10, validation=100, labels_per_class=5, seed=0)
    assert np.array_equal(np.bincount(balanced_labels[s.labelled], minlength=10), np.full(10, 5))
    assert np.array_equal(np.bincount(balanced_labels[s.validation], minlength=10), np.full(10, 10))
    assert len(s.unlabelled) == 1000 - 100 - 50
    everything = np.concatenate([s.labelled, s.validation, s.unlabelled])
    assert len(np.unique(everything)) == 1000 and set(everything) == set(range(1000))
    for part in (s.labelled, s.validation, s.unlabelled):
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)


def test_splits_are_deterministic_per_seed_and_differ_across_seeds(balanced_labels):
    a = make_splits(balanced_labels, num_classes=10, validation=100, labels_per_class=5, seed=1)
    b = make_splits(balanced_labels, num_classes=10, validation=100, labels_per_class=5, seed=1)
    c = make_splits(balanced_labels, num_classes=10, validation=100, labels_per_class=5, seed=2)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("labelled", "validation", "unlabelled"))
    assert not np.array_equal(a.labelled, c.labelled) and not np.array_equal(a.validation, c.validation)


def test_larger_label_budget_extends_the_smaller_one(balanced_labels):
    small = make_splits(balanced_labels, num_classes=10, validation=100, labels_per_class=5, seed=3)
    large = make_splits(balanced_labels, num_classes=10, validation=100, labels_per_class=20, seed=3)
    assert set(small.labelled) < set(large.labelled) and np.array_equal(small.validation, large.validation)


def test_all_labels_when_labels_per_class_is_none(balanced_labels):
    s = make_splits(balanced_labels, num_classes=10, validation=50, labels_per_class=None, seed=0)
    assert len(s.labelled) == 950 and len(s.unlabelled) == 0 and not set(s.labelled) & set(s.validation)
    none_held_out = make_splits(balanced_labels, num_classes=10, validation=0, labels_per_class=None, seed=0)
    assert len(none_held_out.labelled) == 1000 and len(none_held_out.validation) == 0


def test_validation_is_stratified_on_imbalanced_classes():
    y = np.random.default_rng(0).permutation(np.repeat([0, 1, 2], [500, 300, 200]))
    s = make_splits(y, num_classes=3, validation=100, labels_per_class=10, seed=0)
    assert np.array_equal(np.bincount(y[s.validation]), [50, 30, 20])
    for seed in range(5):
        counts = np.bincount(y[make_splits(y, num_classes=3, validation=7, labels_per_class=None, seed=seed).validation], minlength=3)
        assert counts.sum() == 7 and np.all(np.abs(counts - 7 * np.array([0.5, 0.3, 0.2])) < 1)


def test_split_errors_name_the_key_value_and_maximum(balanced_labels):
    with pytest.raises(DataError, match=r"data.labels_per_class = 91 is too large: .* the maximum is 90"):
        make_splits(balanced_labels, num_classes=10, validation=100, labels_per_class=91, seed=0)
    assert len(make_splits(balanced_labels, num_classes=10, validation=100, labels_per_class=90, seed=0).unlabelled) == 0
    with pytest.raises(DataError, match=r"data.validation = 1000 is too large: .* the maximum is 999"):
        make_splits(balanced_labels, num_classes=10, validation=1000, labels_per_class=None, seed=0)
    with pytest.raises(DataError, match=r"data.labels_per_class = 0"):
        make_splits(balanced_labels, num_classes=10, validation=0, labels_per_class=0, seed=0)


# ---------------------------------------------------------------- pipelines

@pytest.fixture(scope="module")
def indexed_images():
    """50 images whose pixels all equal their index (and 255 for the last), labels = index % 7."""
    x = np.broadcast_to(np.arange(50, dtype=np.uint8)[:, None, None, None], (50, 3, 2, 1)).copy()
    x[-1] = 255
    return x, np.arange(50) % 7


def ids(images) -> list[int]:
    return [int(v) for v in np.round(np.asarray(images)[:, 0, 0, 0] * 255)]


def test_image_batches_scale_to_unit_range_in_order(indexed_images):
    x, _ = indexed_images
    batches = [b.numpy() for b in image_batches(x, 16, shuffle=False, seed=0)]
    assert [b.shape for b in batches] == [(16, 3, 2, 1)] * 3 + [(2, 3, 2, 1)]
    everything = np.concatenate(batches)
    assert everything.dtype == np.float32 and everything.min() == 0.0 and everything.max() == 1.0
    assert np.array_equal(everything, x.astype(np.float32) / 255)
    assert SCALING.startswith("float32 = uint8 / 255")


def test_labelled_batches_keep_labels_with_images(indexed_images):
    x, y = indexed_images
    pairs = [(xb.numpy(), yb.numpy()) for xb, yb in labelled_batches(x, y, 8, shuffle=True, seed=5)]
    images = np.concatenate([p[0] for p in pairs])
    labels = np.concatenate([p[1] for p in pairs])
    assert labels.dtype == np.int32 and images.dtype == np.float32
    order = ids(images)
    order[order.index(255)] = 49
    assert sorted(order) == list(range(50)) and np.array_equal(labels, y[order])
    in_order = np.concatenate([yb.numpy() for _, yb in labelled_batches(x, y, 8, shuffle=False, seed=5)])
    assert np.array_equal(in_order, y)


def test_shuffle_is_a_pure_function_of_seed_and_batch_number(indexed_images):
    x, _ = indexed_images
    def epoch(ds):
        return sum((ids(b) for b in ds), [])
    a, b, c = (image_batches(x, 10, shuffle=True, seed=s) for s in (1, 1, 2))
    first = epoch(a)
    assert first == epoch(b) and first != epoch(c) and first != list(ids(x / 255))
    assert epoch(a) == first  # no state: iterating again gives the same epoch
    endless = [ids(batch) for batch in image_batches(x, 10, shuffle=True, seed=1, repeat=True).take(15)]
    assert sum(endless[:5], []) == first  # 50 images: 5 batches per epoch, the first epoch as above
    assert sum(endless[5:10], []) != first and sorted(sum(endless[5:10], [])) == sorted(first)  # reshuffled
    resumed = [ids(batch) for batch in image_batches(x, 10, shuffle=True, seed=1, repeat=True, start=7).take(8)]
    assert resumed == endless[7:15]  # starting at batch 7 continues exactly where an uninterrupted pipeline is


def test_drop_remainder_and_bad_inputs(indexed_images):
    x, y = indexed_images
    assert [int(b.shape[0]) for b in image_batches(x, 16, shuffle=True, seed=0, drop_remainder=True)] == [16] * 3
    with pytest.raises(DataError, match="expected uint8 images"):
        image_batches(x.astype(np.float32), 4, shuffle=False, seed=0)
    with pytest.raises(DataError, match="data.batch_size = 0"):
        labelled_batches(x, y, 0, shuffle=False, seed=0)
    with pytest.raises(DataError, match="49 integer class ids"):
        labelled_batches(x[:49], y, 4, shuffle=False, seed=0)


@pytest.mark.parametrize("dataset,needle", [
    ("tfds:stl10", "data set 'tfds:stl10' unavailable: TFDS {dir}/stl10 (not prepared; download skipped: "
                   "KPRETRAIN_OFFLINE=1); on a machine online run `tfds build stl10`"),
    ("emnist", "data set 'emnist' unavailable: TFDS {dir}/emnist"),  # a plain name TFDS knows
    ("tfds:no_such_set", "TensorFlow Datasets has no data set 'no_such_set'"),
])
def test_a_tfds_data_set_offline_is_one_line_naming_what_to_do(dataset, needle, tmp_path, monkeypatch, capsys):
    from kpretrain.cli import main

    monkeypatch.setenv("KPRETRAIN_OFFLINE", "1")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "data": {"dataset": dataset, "labels_per_class": 10,
                                                            "data_dir": str(tmp_path / "tfds")}}))
    assert main(["run", str(recipe), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert needle.format(dir=tmp_path / "tfds") in err and len(err.strip().splitlines()) == 1, err


def test_bundled_digits_load_offline_with_a_held_out_test_split():
    data = load_dataset("digits")
    assert data.num_classes == 10 and data.x_train.shape[1:] == (8, 8, 1) and data.x_train.dtype == np.uint8
    assert len(data.x_train) + len(data.x_test) == 1797 and 280 <= len(data.x_test) <= 320
    assert data.x_train.max() == 255 and np.bincount(data.y_test).min() >= 25  # stratified
    assert "scikit-learn digits" in data.source
    bigger = load_dataset("digits", image_size=[16, 16])
    assert bigger.x_train.shape[1:] == (16, 16, 1) and np.array_equal(bigger.y_test, data.y_test)
