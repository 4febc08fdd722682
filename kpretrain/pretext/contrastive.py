"""Contrastive task (SimCLR): two augmented views per image, NT-Xent loss on a projection head."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.pretext.base import OptionError, check_number
from kpretrain.pretext.views import TwoViewTask


@keras.saving.register_keras_serializable(package="kpretrain")
class ContrastiveTask(TwoViewTask):
    """`task(images)` returns `(views [2B,...], partner [2B])`: views i and i+B are two augmentations of image
    i, and `partner[j]` is the index of the other view of j.  Augmentations are Keras preprocessing layers
    (zoom-in crop, translation, horizontal flip, brightness, contrast) plus Gaussian pixel noise (`TwoViewTask`).
    """

    task_name = "contrastive"

    def __init__(self, temperature: float = 0.5, projection_dim: int = 64, crop: float = 0.3,
                 translation: float = 0.1, flip: bool = True, color: float = 0.4, noise: float = 0.05,
                 seed: int | None = None, **kwargs):
        super().__init__(crop=crop, translation=translation, flip=flip, color=color, noise=noise, seed=seed, **kwargs)
        self.temperature = check_number("temperature", temperature, 1e-3, 10.0)
        if isinstance(projection_dim, bool) or not isinstance(projection_dim, int) or projection_dim < 1:
            raise OptionError("projection_dim", projection_dim, "an integer >= 1")
        self.projection_dim = projection_dim

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "projection_dim": self.projection_dim})
        return config

    def build_model(self, backbone: keras.Model, *, head: str = "mlp", seed: int = 0) -> keras.Model:
        """`ContrastiveModel`: backbone plus projection head (`mlp`: Dense-ReLU-Dense, or `linear`)."""
        if head not in ("mlp", "linear"):
            raise RecipeError(f"pretrain.head: got {head!r}; allowed for the contrastive projection: mlp, linear")
        dim = backbone.output_shape[-1]
        projection = keras.Sequential(name="projection")
        projection.add(keras.Input(shape=(dim,)))
        if head == "mlp":
            projection.add(keras.layers.Dense(dim, activation="relu", name="projection_hidden",
                                              kernel_initializer=keras.initializers.HeNormal(seed=seed)))
        projection.add(keras.layers.Dense(self.projection_dim, name="projection_out",
                                          kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1)))
        model = ContrastiveModel(backbone, projection, temperature=self.temperature)
        model.build(backbone.input_shape)  # built before fit, as resuming from a backup requires
        return model

    @property
    def monitor(self) -> str:
        return "contrastive_accuracy"


class ContrastiveModel(keras.Model):
    """`projection(backbone(views))`, trained by NT-Xent: each view must pick its partner (given as `y`) out
    of the other 2B-1 views by cosine similarity / temperature; `contrastive_accuracy` is that top-1 rate."""

    def __init__(self, backbone: keras.Model, projection: keras.Model, temperature: float = 0.5, **kwargs):
        kwargs.setdefault("name", "pretext_contrastive_model")
        super().__init__(**kwargs)
        self.backbone, self.projection, self.temperature = backbone, projection, temperature
        self.contrastive_accuracy = keras.metrics.Mean(name="contrastive_accuracy")

    def call(self, views, training=None):
        return self.projection(self.backbone(views, training=training), training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z = tf.math.l2_normalize(tf.cast(y_pred, tf.float32), axis=1)
        logits = tf.matmul(z, z, transpose_b=True) / self.temperature
        logits = logits - 1e9 * tf.eye(tf.shape(logits)[0])  # a view is never its own partner
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        self.contrastive_accuracy.update_state(
            tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), tf.cast(y, tf.int32)), tf.float32))
        return loss + tf.add_n(self.losses) if self.losses else loss
