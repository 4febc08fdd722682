"""VICReg (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning"): the two views' embeddings must agree (invariance) while each dimension keeps a standard deviation of
at least 1 over the batch (variance) and the dimensions stay uncorrelated (covariance)."""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from kpretrain.pretext.base import check_number
from kpretrain.pretext.joint import JointEmbeddingModel, JointEmbeddingTask, off_diagonal_sum_of_squares

GAMMA = 1.0  # the standard deviation each dimension is held at (the paper's gamma)
EPSILON = 1e-4  # added to the variance before its square root (the paper's epsilon)


def vicreg_terms(z1: tf.Tensor, z2: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(invariance, variance, covariance) of the paper's reference implementation.

    invariance: the mean squared difference of the embeddings, over batch and dimensions; variance: per view, the
    mean over dimensions of `max(0, 1 - sqrt(var_j + 1e-4))` (unbiased variance over the batch), averaged over the
    two views; covariance: per view, the sum of the squared off-diagonal entries of the embedding's covariance
    matrix divided by its width, summed over the two views.
    """
    def variance(z):
        std = tf.sqrt(tf.math.reduce_variance(z, axis=0) * batch / tf.maximum(batch - 1.0, 1.0) + EPSILON)
        return tf.reduce_mean(tf.nn.relu(GAMMA - std))

    def covariance(z):
        centred = z - tf.reduce_mean(z, axis=0)
        matrix = tf.matmul(centred, centred, transpose_a=True) / tf.maximum(batch - 1.0, 1.0)
        return off_diagonal_sum_of_squares(matrix) / tf.cast(tf.shape(z)[1], tf.float32)

    batch = tf.cast(tf.shape(z1)[0], tf.float32)
    invariance = tf.reduce_mean(tf.square(z1 - z2))
    return invariance, (variance(z1) + variance(z2)) / 2.0, covariance(z1) + covariance(z2)


def vicreg_loss(z1: tf.Tensor, z2: tf.Tensor, invariance: float = 25.0, variance: float = 25.0,
                covariance: float = 1.0) -> tf.Tensor:
    """`invariance * s + variance * v + covariance * c` of the terms `vicreg_terms` computes.

    Args:
        z1, z2: the embeddings of the first and second views `[B, D]`.
        invariance, variance, covariance: the weights of the three terms (the paper's lambda, mu, nu).

    Returns:
        A scalar >= 0; a collapsed (constant) embedding gets `variance * (1 - 0.01)` (each dimension's standard
        deviation is sqrt(1e-4)).

    Example:

    >>> import numpy as np
    >>> round(float(vicreg_loss(np.ones((4, 3), np.float32), np.ones((4, 3), np.float32))), 4)
    24.75
    """
    s, v, c = vicreg_terms(z1, z2)
    return invariance * s + variance * v + covariance * c


@keras.saving.register_keras_serializable(package="kpretrain")
class VICRegTask(JointEmbeddingTask):
    """VICReg on two augmented views of each image (the views of `TwoViewTask`).

    The projector (the paper's "expander") is scaled down: Dense-BN-ReLU then Dense, `projection_dim` wide
    (default twice the backbone's features, where the paper has three layers of 8192).  The weights keep the
    paper's 25 / 25 / 1 and gamma 1.

    Args:
        projection_dim: the embedding's width; None = 2 x the backbone's features.
        invariance, variance, covariance: the weights of the three terms, each in [0, 1000].
        crop, translation, flip, color, noise: the views' augmentations (`TwoViewTask`).
        seed: the task's seed.

    Example:

    >>> from kpretrain.pretext import create_task
    >>> task = create_task("vicreg", {"covariance": 2}, seed=0)
    >>> task.invariance, task.variance, task.covariance
    (25.0, 25.0, 2.0)
    """

    task_name = "vicreg"

    def __init__(self, projection_dim: int | None = None, invariance: float = 25.0, variance: float = 25.0,
                 covariance: float = 1.0, crop: float = 0.3, translation: float = 0.1, flip: bool = True,
                 color: float = 0.4, noise: float = 0.05, seed: int | None = None, **kwargs):
        super().__init__(projection_dim, crop=crop, translation=translation, flip=flip, color=color, noise=noise,
                         seed=seed, **kwargs)
        self.invariance = check_number("invariance", invariance, 0.0, 1000.0)
        self.variance = check_number("variance", variance, 0.0, 1000.0)
        self.covariance = check_number("covariance", covariance, 0.0, 1000.0)

    def get_config(self):
        config = super().get_config()
        config.update({"invariance": self.invariance, "variance": self.variance, "covariance": self.covariance})
        return config

    def joint_model(self, backbone, projector, dim, seed):
        loss = functools.partial(vicreg_loss, invariance=self.invariance, variance=self.variance,
                                 covariance=self.covariance)
        return JointEmbeddingModel(backbone, projector, loss, name="pretext_vicreg_model")
