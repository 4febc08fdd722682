"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning"): a predictor on one view's
embedding must match the other view's embedding, which gets no gradient (stop-gradient); no negatives, no momentum
network."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.pretext.joint import JointEmbeddingModel, JointEmbeddingTask, check_dim, mlp


def simsiam_loss(p1: tf.Tensor, p2: tf.Tensor, z1: tf.Tensor, z2: tf.Tensor) -> tf.Tensor:
    """The symmetric negative cosine similarity `D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2`, `D(p, z) = -cos(p, z)`
    averaged over the batch; sg is stop-gradient (no gradient reaches `z1` or `z2` through this loss).

    Args:
        p1, p2: the predictor's outputs on the first and second views `[B, D]`.
        z1, z2: the projector's outputs (the embeddings) of the first and second views `[B, D]`.

    Returns:
        A scalar in [-1, 1]; -1 when every prediction points along its target (a collapsed embedding, where every
        p and z is the same vector, gets -1 as well: the stop-gradient and the predictor are what avoid it).

    Example:

    >>> import numpy as np
    >>> z = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    >>> float(simsiam_loss(z, z, z, z)), float(simsiam_loss(z, z, -z, -z))
    (-1.0, 1.0)
    """
    def negative_cosine(p, z):
        z = tf.stop_gradient(z)
        return -tf.reduce_mean(tf.reduce_sum(tf.math.l2_normalize(p, axis=1) * tf.math.l2_normalize(z, axis=1), axis=1))

    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


@keras.saving.register_keras_serializable(package="kpretrain")
class SimSiamTask(JointEmbeddingTask):
    """SimSiam on two augmented views of each image (the views of `TwoViewTask`).

    The projector is the paper's CIFAR one scaled down: Dense-BN-ReLU, Dense-BN, `projection_dim` wide (default
    twice the backbone's features, where the paper has 2048); the predictor is its bottleneck MLP, Dense
    (`predictor_dim`, default projection_dim // 4 as in the paper)-BN-ReLU, Dense back to `projection_dim`.

    Args:
        projection_dim: the embedding's width; None = 2 x the backbone's features.
        predictor_dim: the predictor's hidden width; None = projection_dim // 4 (at least 1).
        crop, translation, flip, color, noise: the views' augmentations (`TwoViewTask`).
        seed: the task's seed.

    Example:

    >>> from kpretrain.pretext import create_task
    >>> task = create_task("simsiam", {"predictor_dim": 16}, seed=0)
    >>> task.monitor, task.predictor_dim, task.projection_dim is None
    ('view_accuracy', 16, True)
    """

    task_name = "simsiam"
    projector_output_norm = True

    def __init__(self, projection_dim: int | None = None, predictor_dim: int | None = None, crop: float = 0.3,
                 translation: float = 0.1, flip: bool = True, color: float = 0.4, noise: float = 0.05,
                 seed: int | None = None, **kwargs):
        super().__init__(projection_dim, crop=crop, translation=translation, flip=flip, color=color, noise=noise,
                         seed=seed, **kwargs)
        self.predictor_dim = check_dim("predictor_dim", predictor_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"predictor_dim": self.predictor_dim})
        return config

    def joint_model(self, backbone, projector, dim, seed):
        predictor = mlp(dim, [self.predictor_dim or max(1, dim // 4), dim], seed=seed + 10, name="predictor")
        return SimSiamModel(backbone, projector, predictor, name="pretext_simsiam_model")


class SimSiamModel(JointEmbeddingModel):
    """`JointEmbeddingModel` whose loss is `simsiam_loss` of the predictor's outputs and the embeddings."""

    def __init__(self, backbone: keras.Model, projector: keras.Model, predictor: keras.Model, **kwargs):
        super().__init__(backbone, projector, **kwargs)
        self.predictor = predictor

    def pair_loss(self, z1, z2, training=True):
        p = tf.cast(self.predictor(tf.concat([z1, z2], axis=0), training=training), tf.float32)
        p1, p2 = tf.split(p, 2, axis=0)
        return simsiam_loss(p1, p2, z1, z2)
