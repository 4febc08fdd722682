"""tf.data input pipelines: number batches, permute indices statelessly, gather and scale whole batches (no
per-image Python)."""

from __future__ import annotations

import numbers

import numpy as np

from kpretrain.errors import DataError

SCALING = "float32 = uint8 / 255, range [0, 1]"


def _check(x, batch_size) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"pipeline input has dtype {x.dtype} and shape {x.shape}, expected uint8 images [N,H,W,C]; pass DatasetArrays.x_train/x_test (or a slice of them)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise DataError(f"data.batch_size = {batch_size!r} is not allowed; use a whole number >= 1")
    return x


def _batches(arrays: tuple[np.ndarray, ...], batch_size: int, shuffle: bool, seed: int, drop_remainder: bool,
             convert, start: int, repeat: bool):
    """Batch number b (counted over epochs) holds positions of epoch b // per_epoch in that epoch's permutation.

    The permutation is `index_shuffle` seeded by (seed, epoch): any batch is a pure function of (seed, b), so a
    pipeline can start at any batch (`start`, e.g. after resuming) and no state makes reruns differ.
    """
    import tensorflow as tf

    n = len(arrays[0])
    per_epoch = n // batch_size if drop_remainder else -(-n // batch_size)
    if repeat and per_epoch == 0:
        raise DataError(f"{n} examples make no full batch of data.batch_size = {batch_size}; "
                        f"lower data.batch_size or use more data")
    with tf.device("/cpu:0"):  # the whole data set stays in host memory; only batches travel to the accelerator
        tensors = tuple(tf.constant(a) for a in arrays)
    numbers = tf.data.Dataset.range(start, np.iinfo(np.int64).max if repeat else per_epoch)

    def batch(number):
        epoch, first = number // per_epoch, (number % per_epoch) * batch_size
        index = tf.range(first, tf.minimum(first + batch_size, n))
        if shuffle:
            index = tf.random.experimental.index_shuffle(index, tf.stack([tf.constant(seed, tf.int64), epoch]), n - 1)
        return convert(*(tf.gather(t, index) for t in tensors))

    ds = numbers.map(batch, num_parallel_calls=tf.data.AUTOTUNE)
    # No autotuning thread: with it, deleting an iterator that `fit` kept for a while sometimes blocked ~10 s
    # (TF 2.21, measured here); without it AUTOTUNE parallelism is the core count, at the same throughput.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _to_float(images):
    import tensorflow as tf

    return tf.cast(images, tf.float32) / 255.0


def image_batches(x_uint8, batch_size: int, *, shuffle: bool, seed: int, drop_remainder: bool = False,
                  start: int = 0, repeat: bool = False):
    """Batches of float32 images [B,H,W,C] in [0, 1] (see SCALING): one epoch, or endless epochs with `repeat`
    (each shuffled anew), from batch number `start` on.

    Any batch is a pure function of (`seed`, its number), so a pipeline can start at any batch.

    Args:
        x_uint8: uint8 images [N, H, W, C] (`DatasetArrays.x_train`, `x_test` or a slice of them).
        batch_size: the batch size.
        shuffle: whether each epoch is a permutation seeded by (`seed`, epoch) rather than the stored order.
        seed: the seed of the permutations.
        drop_remainder: whether an epoch leaves out its last, smaller batch.
        start: the number of the first batch (counted over epochs), e.g. where a resumed stage goes on.
        repeat: endless epochs instead of one.

    Returns:
        A `tf.data.Dataset` of image batches.

    Raises:
        DataError: the images are not uint8 [N, H, W, C], `batch_size` is not a whole number >= 1, or with
            `repeat` an epoch would have no batch (no images, or fewer than `batch_size` with `drop_remainder`).
    """
    x = _check(x_uint8, batch_size)
    return _batches((x,), batch_size, shuffle, seed, drop_remainder, _to_float, start, repeat)


def labelled_batches(x_uint8, y, batch_size: int, *, shuffle: bool, seed: int, drop_remainder: bool = False,
                     start: int = 0, repeat: bool = False):
    """Batches of (float32 images [B,H,W,C] in [0, 1], int32 labels [B]); `start` and `repeat` as `image_batches`.

    Args:
        x_uint8: uint8 images [N, H, W, C].
        y: integer class ids [N], one per image.
        batch_size, shuffle, seed, drop_remainder, start, repeat: as for `image_batches`.

    Returns:
        A `tf.data.Dataset` of (images, labels) batches.

    Raises:
        DataError: as `image_batches`, or the labels are not integers of shape [N].
    """
    x = _check(x_uint8, batch_size)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"pipeline labels have dtype {y.dtype} and shape {y.shape}, expected {len(x)} integer class ids; pass the labels that go with the images")
    return _batches((x, y.astype(np.int32)), batch_size, shuffle, seed, drop_remainder,
                    lambda xb, yb: (_to_float(xb), yb), start, repeat)


def target_batches(x_uint8, targets, weight: float, batch_size: int, *, shuffle: bool, seed: int, start: int = 0,
                   repeat: bool = False, drop_remainder: bool = False):
    """Batches of (float32 images in [0, 1], float32 class distributions [B, C], float32 sample weights [B] all
    equal to `weight`): hard labels as one-hot rows, soft labels as they are; `start`, `repeat` and
    `drop_remainder` as `image_batches`.

    Args:
        x_uint8: uint8 images [N, H, W, C].
        targets: class distributions [N, C], one row per image.
        weight: the sample weight of every example.
        batch_size, shuffle, seed, start, repeat, drop_remainder: as for `image_batches`.

    Returns:
        A `tf.data.Dataset` of (images, targets, weights) batches.

    Raises:
        DataError: as `image_batches`, or `targets` is not of shape [N, classes].
    """
    import tensorflow as tf

    x = _check(x_uint8, batch_size)
    targets = np.asarray(targets, dtype=np.float32)
    if targets.ndim != 2 or len(targets) != len(x):
        raise DataError(f"pipeline targets have shape {targets.shape}, expected [{len(x)}, classes]")
    return _batches((x, targets), batch_size, shuffle, seed, drop_remainder,
                    lambda xb, tb: (_to_float(xb), tb, tf.fill([tf.shape(tb)[0]], tf.constant(weight, tf.float32))),
                    start, repeat)
