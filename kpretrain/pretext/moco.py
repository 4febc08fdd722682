"""MoCo v2 (He et al. 2020, "Momentum Contrast"; Chen et al. 2020, "Improved Baselines with Momentum Contrastive
Learning"): each view must pick the momentum encoder's key of its other view out of a queue of earlier keys."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kpretrain.pretext.base import check_integer, check_number
from kpretrain.pretext.momentum import MomentumModel, MomentumTask


def info_nce(q: tf.Tensor, k: tf.Tensor, queue: tf.Tensor, temperature: float) -> tf.Tensor:
    """MoCo's InfoNCE loss: per query, cross-entropy of picking its positive key `k` among `[k, queue]`.

    Args:
        q: queries `[B, D]`, k: their positive keys `[B, D]` (no gradient), queue: negative keys `[K, D]`; all
            l2-normalised.
        temperature: the softmax temperature.

    Returns:
        `mean_i -log( exp(q_i.k_i / T) / (exp(q_i.k_i / T) + sum_j exp(q_i.queue_j / T)) )`.

    Example:

    >>> import numpy as np
    >>> q = np.eye(2, dtype=np.float32)
    >>> round(float(info_nce(q, q, -q, 1.0)), 4)  # -log(e / (e + 1/e)) = log(1 + e^-2)
    0.1269
    """
    k = tf.stop_gradient(k)
    positive = tf.reduce_sum(q * k, axis=1, keepdims=True)
    negative = tf.matmul(q, queue, transpose_b=True)
    logits = tf.concat([positive, negative], axis=1) / temperature
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.zeros(tf.shape(q)[0], tf.int32), logits))


@keras.saving.register_keras_serializable(package="kpretrain")
class MoCoTask(MomentumTask):
    """MoCo v2 on two augmented views of each image (the views of `TwoViewTask`), symmetrised: each view is a query
    whose positive is the key encoder's embedding of the other view, and whose negatives are the `queue_size` most
    recent keys; after every step the batch's keys replace the oldest ones.

    Scaled to small images: an MLP projector Dense-BN-ReLU then Dense `projection_dim` wide (default twice the
    backbone's features; the paper has 2048 then 128), a queue of 4,096 (65,536 in the paper, for ImageNet) and a
    key encoder whose momentum rises from `momentum` to 1 with BYOL's cosine schedule (0.999 constant in the paper;
    0.99 suits short runs, as in solo-learn's CIFAR settings).  Temperature 0.2 as in v2.  The queue starts as
    random unit vectors drawn from the task's seed, and is kept in the model's weights (backed up with the stage).
    No shuffled batch norm: the key encoder normalises each batch of views with its own statistics.

    Args:
        projection_dim: the embedding's width; None = 2 x the backbone's features.
        temperature: the softmax temperature, in [0.001, 10].
        queue_size: the number of negative keys kept, at least 1.
        momentum: the key encoder's momentum at the first step, in [0, 0.99999].
        crop, translation, flip, color, noise: the views' augmentations (`TwoViewTask`).
        seed: the task's seed.

    Example:

    >>> from kpretrain.pretext import create_task
    >>> task = create_task("moco", {"queue_size": 256}, seed=0)
    >>> task.queue_size, task.temperature, task.momentum
    (256, 0.2, 0.99)
    """

    task_name = "moco"

    def __init__(self, projection_dim: int | None = None, temperature: float = 0.2, queue_size: int = 4096,
                 momentum: float = 0.99, crop: float = 0.3, translation: float = 0.1, flip: bool = True,
                 color: float = 0.4, noise: float = 0.05, seed: int | None = None, **kwargs):
        super().__init__(projection_dim, momentum, crop=crop, translation=translation, flip=flip, color=color,
                         noise=noise, seed=seed, **kwargs)
        self.temperature = check_number("temperature", temperature, 1e-3, 10.0)
        self.queue_size = check_integer("queue_size", queue_size, 1)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "queue_size": self.queue_size})
        return config

    def joint_model(self, backbone, projector, dim, seed):
        return MoCoModel(backbone, projector, self.momentum, temperature=self.temperature, queue_size=self.queue_size,
                         dim=dim, seed=seed, name="pretext_moco_model")


class MoCoModel(MomentumModel):
    """`MomentumModel` trained by `info_nce` against a queue of keys (`queue`, `queue_position` are weights)."""

    def __init__(self, backbone: keras.Model, projector: keras.Model, momentum: float, *, temperature: float,
                 queue_size: int, dim: int, seed: int, **kwargs):
        super().__init__(backbone, projector, momentum, "moco", **kwargs)
        self.temperature = temperature
        start = np.random.default_rng(seed).normal(size=(queue_size, dim)).astype(np.float32)
        start /= np.linalg.norm(start, axis=1, keepdims=True)
        self.queue = self.add_weight(shape=(queue_size, dim), initializer=keras.initializers.Constant(start),
                                     trainable=False, name="queue")
        self.queue_position = self.add_weight(shape=(), initializer="zeros", trainable=False, name="queue_position")
        self._keys = None

    def momentum_loss(self, z, targets, training=True):
        q1, q2 = tf.split(tf.math.l2_normalize(z, axis=1), 2, axis=0)
        keys = tf.math.l2_normalize(targets, axis=1)
        k1, k2 = tf.split(keys, 2, axis=0)
        queue = tf.cast(self.queue, tf.float32)
        self._keys = keys  # enqueued by `after_step`, in the same traced step
        return (info_nce(q1, k2, queue, self.temperature) + info_nce(q2, k1, queue, self.temperature)) / 2.0

    def after_step(self):
        """The step's keys (both views) replace the oldest keys of the queue (a ring; the newest win a tie)."""
        keys = self._keys
        size = tf.shape(self.queue)[0]
        keys = keys[-size:]  # more keys than the queue holds: the last ones
        count = tf.shape(keys)[0]
        rows = tf.math.floormod(tf.cast(self.queue_position, tf.int32) + tf.range(count), size)
        self.queue.assign(tf.tensor_scatter_nd_update(self.queue, rows[:, None], tf.cast(keys, self.queue.dtype)))
        self.queue_position.assign(tf.cast(tf.math.floormod(tf.cast(self.queue_position, tf.int32) + count, size),
                                           self.queue_position.dtype))
