"""Momentum (teacher / target / key) networks shared by BYOL, MoCo v2 and DINO: a copy of the online backbone and
head whose weights follow the online ones as an exponential moving average, updated after every optimizer step.

The copy lives inside the pretext model as weights Keras does not train (`trainable_weights` leaves them out), so
`model.save_weights` and the stage backup (`training/backup.py`, Keras `BackupAndRestore`) hold it together with
the step counter of its momentum schedule and any queue or centre a method keeps: a stage resumed after SIGKILL
goes on from the same momentum network.  The target's batch-norm layers always normalise with the batch's
statistics (as in BYOL and MoCo), so their moving statistics are never read.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.pretext.base import check_number
from kpretrain.pretext.joint import JointEmbeddingModel, JointEmbeddingTask, embedding_std, view_accuracy


def momentum_at(step, total, base: float):
    """The cosine momentum schedule of BYOL (Grill et al. 2020, eq. 2): `base` at step 0, rising to 1 at `total`.

    Args:
        step: optimizer steps done (a number or a tensor).
        total: the stage's optimizer steps (at least 1).
        base: the momentum at the start, in [0, 1).

    Returns:
        `1 - (1 - base) * (cos(pi * step / total) + 1) / 2`.

    Example:

    >>> round(float(momentum_at(0, 100, 0.99)), 6), round(float(momentum_at(50, 100, 0.99)), 6)
    (0.99, 0.995)
    """
    fraction = tf.minimum(tf.cast(step, tf.float32) / tf.maximum(tf.cast(total, tf.float32), 1.0), 1.0)
    return 1.0 - (1.0 - base) * (tf.cos(math.pi * fraction) + 1.0) / 2.0


def momentum_copy(network: keras.Model, name: str, task_name: str) -> keras.Model:
    """A copy of `network` (same architecture and weights, new variables) for a momentum network."""
    try:
        copy = keras.models.clone_model(network)
    except Exception as exc:  # a subclassed backbone without get_config / from_config
        raise RecipeError(f"pretrain.task: {task_name} keeps a momentum copy of the backbone, and "
                          f"keras.models.clone_model cannot copy {network.name!r} ({type(exc).__name__}); give the "
                          f"backbone get_config/from_config or choose a task without one (simsiam, barlow_twins, "
                          f"vicreg, contrastive)") from None
    copy.build(network.input_shape)
    copy.set_weights(network.get_weights())
    copy._name = name  # noqa: SLF001  # two sub-models of one model must not share a name
    return copy


class MomentumTask(JointEmbeddingTask):
    """A joint-embedding task whose model keeps a momentum network; `momentum` is the schedule's starting value."""

    def __init__(self, projection_dim: int | None = None, momentum: float = 0.99, seed: int | None = None,
                 **view_options):
        super().__init__(projection_dim, seed=seed, **view_options)
        self.momentum = check_number("momentum", momentum, 0.0, 0.99999)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum})
        return config


class MomentumModel(JointEmbeddingModel):
    """`JointEmbeddingModel` plus a momentum copy of its backbone and projector (the target).

    Subclasses implement `momentum_loss(z, targets, training)` from the online embeddings `z` [V*B, D] and the
    target's [V*B, D] (no gradient), and may update their own state after each optimizer step in `after_step`
    (called in the same traced step, after the weights moved).  Every step, after the optimizer: the target moves
    towards the online weights with `momentum_at(step, total steps of the fit, momentum)`.
    """

    def __init__(self, backbone: keras.Model, projector: keras.Model, momentum: float, task_name: str, **kwargs):
        super().__init__(backbone, projector, **kwargs)
        self.momentum = momentum
        self.target_backbone = momentum_copy(backbone, "target_backbone", task_name)
        self.target_projector = momentum_copy(projector, "target_projector", task_name)
        self.momentum_step = self.add_weight(shape=(), initializer="zeros", trainable=False, name="momentum_step")
        self.momentum_total = self.add_weight(shape=(), initializer="ones", trainable=False, name="momentum_total")

    # -- what Keras trains: the online networks only ------------------------------------------------------
    @property
    def target_weights(self) -> list:
        return [*self.target_backbone.weights, *self.target_projector.weights]

    @property
    def trainable_weights(self):
        target = {id(v) for v in self.target_weights}
        return [v for v in super().trainable_weights if id(v) not in target]

    @property
    def trainable_variables(self):  # Keras builds optimizers (and restores their backups) on this list
        return self.trainable_weights

    @property
    def non_trainable_weights(self):
        trainable = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in trainable]

    @property
    def non_trainable_variables(self):
        return self.non_trainable_weights

    # -- the step --------------------------------------------------------------------------------------
    def fit(self, *args, epochs=1, steps_per_epoch=None, **kwargs):
        """Keras `fit`; the momentum schedule spans its `epochs x steps_per_epoch` steps (a resumed fit the same)."""
        if steps_per_epoch:
            self.momentum_total.assign(float(epochs * steps_per_epoch))
        return super().fit(*args, epochs=epochs, steps_per_epoch=steps_per_epoch, **kwargs)

    def train_step(self, data):
        logs = super().train_step(data)
        self.update_target()
        self.after_step()
        return logs

    def update_target(self) -> None:
        """Move every trained weight of the target towards its online counterpart; count the step."""
        tau = momentum_at(self.momentum_step, self.momentum_total, self.momentum)
        online = [*self.backbone.trainable_weights, *self.projector.trainable_weights]
        target = [*self.target_backbone.trainable_weights, *self.target_projector.trainable_weights]
        for source, follower in zip(online, target):
            follower.assign(tf.cast(tau, follower.dtype) * follower + tf.cast(1.0 - tau, follower.dtype) * source)
        self.momentum_step.assign_add(1.0)

    def after_step(self) -> None:
        """A method's own update after each optimizer step (queue, centre); nothing by default."""

    def target_embeddings(self, views) -> tf.Tensor:
        """The target's embeddings of `views` (batch statistics in its BN layers; no gradient)."""
        features = self.target_backbone(views, training=True)
        return tf.stop_gradient(tf.cast(self.target_projector(features, training=True), tf.float32))

    def momentum_loss(self, z: tf.Tensor, targets: tf.Tensor, training=True) -> tf.Tensor:
        raise NotImplementedError

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z = tf.cast(y_pred, tf.float32)
        views = x[:tf.shape(y)[0]]  # the target sees the two (global) views of each image
        loss = self.momentum_loss(z, self.target_embeddings(views), training=training)
        pairs = z[:tf.shape(y)[0]]  # the two (global) views of each image
        self.view_accuracy.update_state(view_accuracy(pairs, y))
        self.embedding_std.update_state(embedding_std(pairs))
        online = [*self.backbone.losses, *self.projector.losses]  # the target's regularisers do not train
        return loss + tf.add_n(online) if online else loss
