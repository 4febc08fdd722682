"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction"): the
cross-correlation matrix of the two views' batch-normalised embeddings is pulled to the identity."""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from kpretrain.pretext.base import check_number
from kpretrain.pretext.joint import JointEmbeddingModel, JointEmbeddingTask, off_diagonal_sum_of_squares

EPSILON = 1e-5  # added to the variance when batch-normalising (the paper's BatchNorm1d default)


def barlow_twins_loss(z1: tf.Tensor, z2: tf.Tensor, off_diagonal: float = 0.0051) -> tf.Tensor:
    """`sum_i (1 - C_ii)^2 + off_diagonal * sum_{i != j} C_ij^2`, where `C = n1^T n2 / B` is the cross-correlation of
    the embeddings normalised per dimension over the batch (`n = (z - mean) / sqrt(var + 1e-5)`, biased variance).

    Args:
        z1, z2: the embeddings of the first and second views `[B, D]`.
        off_diagonal: lambda, the weight of the redundancy-reduction (off-diagonal) term.

    Returns:
        A scalar >= 0; 0 when the two views' normalised embeddings are equal and their dimensions uncorrelated; `D`
        for a collapsed (constant) embedding, whose normalised embedding is 0.

    Example:

    >>> import numpy as np
    >>> float(barlow_twins_loss(np.ones((4, 3), np.float32), np.ones((4, 3), np.float32)))
    3.0
    """
    def normalised(z):
        mean, variance = tf.nn.moments(z, axes=[0])
        return (z - mean) / tf.sqrt(variance + EPSILON)

    batch = tf.cast(tf.shape(z1)[0], tf.float32)
    correlation = tf.matmul(normalised(z1), normalised(z2), transpose_a=True) / batch
    invariance = tf.reduce_sum(tf.square(1.0 - tf.linalg.diag_part(correlation)))
    return invariance + off_diagonal * off_diagonal_sum_of_squares(correlation)


@keras.saving.register_keras_serializable(package="kpretrain")
class BarlowTwinsTask(JointEmbeddingTask):
    """Barlow Twins on two augmented views of each image (the views of `TwoViewTask`).

    The projector is the paper's scaled down: Dense-BN-ReLU then Dense, `projection_dim` wide (default twice the
    backbone's features, where the paper has three layers of 8192).  lambda keeps the paper's 0.0051.

    Args:
        projection_dim: the embedding's width; None = 2 x the backbone's features.
        off_diagonal: lambda, the weight of the off-diagonal (redundancy-reduction) term, in [0, 1].
        crop, translation, flip, color, noise: the views' augmentations (`TwoViewTask`).
        seed: the task's seed.

    Example:

    >>> from kpretrain.pretext import create_task
    >>> create_task("barlow_twins", {"off_diagonal": 0.01}, seed=0).off_diagonal
    0.01
    """

    task_name = "barlow_twins"

    def __init__(self, projection_dim: int | None = None, off_diagonal: float = 0.0051, crop: float = 0.3,
                 translation: float = 0.1, flip: bool = True, color: float = 0.4, noise: float = 0.05,
                 seed: int | None = None, **kwargs):
        super().__init__(projection_dim, crop=crop, translation=translation, flip=flip, color=color, noise=noise,
                         seed=seed, **kwargs)
        self.off_diagonal = check_number("off_diagonal", off_diagonal, 0.0, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update({"off_diagonal": self.off_diagonal})
        return config

    def joint_model(self, backbone, projector, dim, seed):
        loss = functools.partial(barlow_twins_loss, off_diagonal=self.off_diagonal)
        return JointEmbeddingModel(backbone, projector, loss, name="pretext_barlow_twins_model")
