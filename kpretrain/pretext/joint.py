"""Shared parts of the joint-embedding methods without negatives (SimSiam, Barlow Twins, VICReg): the projector,
a model that computes its method's loss on the two views' embeddings, and the metrics every method logs."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.pretext.base import check_integer
from kpretrain.pretext.views import TwoViewTask

HEADS = ("mlp", "linear")


def check_dim(option: str, value) -> int | None:
    """Validate a layer width: an integer >= 1, or None for the task's default."""
    return None if value is None else check_integer(option, value, 1)


def mlp(dim_in: int, widths, *, seed: int, name: str, output_norm: bool = False) -> keras.Sequential:
    """Dense (no bias) - BatchNorm - ReLU per hidden width, then Dense to `widths[-1]` (BatchNorm after it if
    `output_norm`); built, with seeded initialisers."""
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=(dim_in,)))
    for i, width in enumerate(widths[:-1]):
        model.add(keras.layers.Dense(width, use_bias=False, name=f"{name}_hidden{i + 1}",
                                     kernel_initializer=keras.initializers.HeNormal(seed=seed + i)))
        model.add(keras.layers.BatchNormalization(name=f"{name}_bn{i + 1}"))
        model.add(keras.layers.ReLU(name=f"{name}_relu{i + 1}"))
    model.add(keras.layers.Dense(widths[-1], use_bias=not output_norm, name=f"{name}_out",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=seed + len(widths))))
    if output_norm:
        model.add(keras.layers.BatchNormalization(name=f"{name}_out_bn"))
    return model


def view_accuracy(z: tf.Tensor, partner: tf.Tensor) -> tf.Tensor:
    """Per view, 1.0 if its nearest other view by cosine similarity is its partner (chance about 1 / 2B; a collapsed
    embedding scores about that)."""
    z = tf.math.l2_normalize(z, axis=1)
    similarity = tf.matmul(z, z, transpose_b=True) - 3.0 * tf.eye(tf.shape(z)[0])  # never itself
    nearest = tf.argmax(similarity, axis=1, output_type=tf.int32)
    return tf.cast(tf.equal(nearest, tf.cast(partner, tf.int32)), tf.float32)


def embedding_std(z: tf.Tensor) -> tf.Tensor:
    """The collapse indicator of SimSiam (Chen & He 2021, fig. 2): the standard deviation across the batch of each
    dimension of the l2-normalised embedding, averaged over dimensions and times sqrt(dim), so that about 1 means
    spread-out embeddings and 0 a collapsed one."""
    z = tf.math.l2_normalize(z, axis=1)
    dim = tf.cast(tf.shape(z)[1], tf.float32)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0)) * tf.sqrt(dim)


def off_diagonal_sum_of_squares(matrix: tf.Tensor) -> tf.Tensor:
    """Sum of the squares of a square matrix's off-diagonal entries."""
    return tf.reduce_sum(tf.square(matrix)) - tf.reduce_sum(tf.square(tf.linalg.diag_part(matrix)))


class JointEmbeddingTask(TwoViewTask):
    """Base of SimSiam, Barlow Twins and VICReg: two views (`TwoViewTask`), a projector of `projection_dim`
    (None: twice the backbone's features), and a model from `joint_model` that computes the method's loss.

    `pretrain.head` chooses the projector: `mlp` (default) Dense-BN-ReLU then Dense, each `projection_dim` wide;
    `linear` the last Dense alone.  The monitor is `view_accuracy` (higher is better; see `view_accuracy`);
    `embedding_std` is logged beside it as a collapse indicator.
    """

    projector_output_norm = False  # BatchNorm after the projector's last layer (SimSiam)

    def __init__(self, projection_dim: int | None = None, seed: int | None = None, **view_options):
        super().__init__(seed=seed, **view_options)
        self.projection_dim = check_dim("projection_dim", projection_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"projection_dim": self.projection_dim})
        return config

    def build_model(self, backbone: keras.Model, *, head: str = "mlp", seed: int = 0) -> keras.Model:
        """The method's `JointEmbeddingModel` on `backbone`, built (as resuming from a backup requires)."""
        if head not in HEADS:
            raise RecipeError(f"pretrain.head: got {head!r}; allowed for the {self.task_name} projector: "
                              f"{', '.join(HEADS)}")
        features = backbone.output_shape[-1]
        dim = self.projection_dim or 2 * features
        projector = mlp(features, [dim] * (2 if head == "mlp" else 1), seed=seed, name="projector",
                        output_norm=self.projector_output_norm)
        model = self.joint_model(backbone, projector, dim, seed)
        model.build(backbone.input_shape)
        return model

    def joint_model(self, backbone: keras.Model, projector: keras.Model, dim: int, seed: int) -> keras.Model:
        """The method's model on `backbone` and `projector` (whose embeddings are `dim` wide)."""
        raise NotImplementedError

    @property
    def monitor(self) -> str:
        return "view_accuracy"


class JointEmbeddingModel(keras.Model):
    """`projector(backbone(views))` trained by `pair_loss(z1, z2)` on the embeddings of the first and second views;
    logs `view_accuracy` and `embedding_std` (see those functions) beside the loss."""

    def __init__(self, backbone: keras.Model, projector: keras.Model, pair_loss=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.projector, self._pair_loss = backbone, projector, pair_loss
        self.view_accuracy = keras.metrics.Mean(name="view_accuracy")
        self.embedding_std = keras.metrics.Mean(name="embedding_std")

    def call(self, views, training=None):
        return self.projector(self.backbone(views, training=training), training=training)

    def pair_loss(self, z1: tf.Tensor, z2: tf.Tensor, training=True) -> tf.Tensor:
        return self._pair_loss(z1, z2)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z = tf.cast(y_pred, tf.float32)
        z1, z2 = tf.split(z, 2, axis=0)
        loss = self.pair_loss(z1, z2, training=training)
        self.view_accuracy.update_state(view_accuracy(z, y))
        self.embedding_std.update_state(embedding_std(z))
        return loss + tf.add_n(self.losses) if self.losses else loss
