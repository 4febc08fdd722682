"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"): an online network with a predictor learns to predict a
momentum target network's embedding of the other view; no negatives."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.pretext.joint import check_dim, mlp
from kpretrain.pretext.momentum import MomentumModel, MomentumTask


def byol_loss(p1: tf.Tensor, p2: tf.Tensor, t1: tf.Tensor, t2: tf.Tensor) -> tf.Tensor:
    """The symmetrised BYOL loss `mean ||p1' - t2'||^2 + mean ||p2' - t1'||^2` of l2-normalised vectors (x' = x / |x|),
    i.e. `(2 - 2 cos(p1, t2)) + (2 - 2 cos(p2, t1))` averaged over the batch; no gradient reaches the targets.

    Args:
        p1, p2: the online predictor's outputs on the first and second views `[B, D]`.
        t1, t2: the target network's embeddings of the first and second views `[B, D]`.

    Returns:
        A scalar in [0, 8]: 0 when every prediction points along the other view's target.

    Example:

    >>> import numpy as np
    >>> t = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    >>> float(byol_loss(t, t, t, t)), float(byol_loss(t, t, -t, -t))
    (0.0, 8.0)
    """
    def distance(p, t):
        t = tf.stop_gradient(t)
        cosine = tf.reduce_sum(tf.math.l2_normalize(p, axis=1) * tf.math.l2_normalize(t, axis=1), axis=1)
        return tf.reduce_mean(2.0 - 2.0 * cosine)

    return distance(p1, t2) + distance(p2, t1)


@keras.saving.register_keras_serializable(package="kpretrain")
class BYOLTask(MomentumTask):
    """BYOL on two augmented views of each image (the views of `TwoViewTask`).

    The projector is the paper's scaled down: Dense-BN-ReLU then Dense, `projection_dim` wide (default twice the
    backbone's features, where the paper has 4096 then 256); the predictor is the same shape, `predictor_dim` wide
    inside.  The target (a momentum copy of backbone and projector) follows the online network with BYOL's cosine
    schedule from `momentum` to 1 over the stage (the paper starts at 0.996 for 1,000 ImageNet epochs; 0.99 suits
    the short runs of small images, as in solo-learn's CIFAR settings).

    Args:
        projection_dim: the embedding's width; None = 2 x the backbone's features.
        predictor_dim: the predictor's hidden width; None = projection_dim.
        momentum: the target's momentum at the first step, in [0, 0.99999].
        crop, translation, flip, color, noise: the views' augmentations (`TwoViewTask`).
        seed: the task's seed.

    Example:

    >>> from kpretrain.pretext import create_task
    >>> task = create_task("byol", {"momentum": 0.996}, seed=0)
    >>> task.monitor, task.momentum, task.predictor_dim
    ('view_accuracy', 0.996, None)
    """

    task_name = "byol"

    def __init__(self, projection_dim: int | None = None, predictor_dim: int | None = None, momentum: float = 0.99,
                 crop: float = 0.3, translation: float = 0.1, flip: bool = True, color: float = 0.4,
                 noise: float = 0.05, seed: int | None = None, **kwargs):
        super().__init__(projection_dim, momentum, crop=crop, translation=translation, flip=flip, color=color,
                         noise=noise, seed=seed, **kwargs)
        self.predictor_dim = check_dim("predictor_dim", predictor_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"predictor_dim": self.predictor_dim})
        return config

    def joint_model(self, backbone, projector, dim, seed):
        predictor = mlp(dim, [self.predictor_dim or dim, dim], seed=seed + 10, name="predictor")
        return BYOLModel(backbone, projector, predictor, self.momentum, name="pretext_byol_model")


class BYOLModel(MomentumModel):
    """`MomentumModel` trained by `byol_loss` of the online predictions and the target's embeddings."""

    def __init__(self, backbone: keras.Model, projector: keras.Model, predictor: keras.Model, momentum: float,
                 **kwargs):
        super().__init__(backbone, projector, momentum, "byol", **kwargs)
        self.predictor = predictor

    def momentum_loss(self, z, targets, training=True):
        p = tf.cast(self.predictor(z, training=training), tf.float32)
        p1, p2 = tf.split(p, 2, axis=0)
        t1, t2 = tf.split(targets, 2, axis=0)
        return byol_loss(p1, p2, t1, t2) + tf.add_n(self.predictor.losses or [tf.constant(0.0)])
