"""Contrastive task (SimCLR): two augmented views per image, NT-Xent loss on a projection head."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.pretext.base import OptionError, PretextTask, check_number


class StatelessSeeds(keras.random.SeedGenerator):
    """Feeds seeds derived from one stateless seed to Keras random ops (Keras' augmentation layers take a
    SeedGenerator, whose variable state would make parallel tf.data maps nondeterministic)."""

    def __init__(self, seed: tf.Tensor):  # no variable: deliberately skips SeedGenerator.__init__
        self.name = "stateless_seeds"
        self._seed, self._drawn = seed, 0

    def next(self, ordered=True):
        self._drawn += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._drawn)


@keras.saving.register_keras_serializable(package="kpretrain")
class ContrastiveTask(PretextTask):
    """`task(images)` returns `(views [2B,...], partner [2B])`: views i and i+B are two augmentations of image
    i, and `partner[j]` is the index of the other view of j.  Augmentations are Keras preprocessing layers
    (zoom-in crop, translation, horizontal flip, brightness, contrast) plus Gaussian pixel noise.
    """

    task_name = "contrastive"
    num_classes = None  # not a classification task: the model is trained with NT-Xent
    batch_multiplier = 2

    def __init__(self, temperature: float = 0.5, projection_dim: int = 64, crop: float = 0.3,
                 translation: float = 0.1, flip: bool = True, color: float = 0.4, noise: float = 0.05,
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.temperature = check_number("temperature", temperature, 1e-3, 10.0)
        if isinstance(projection_dim, bool) or not isinstance(projection_dim, int) or projection_dim < 1:
            raise OptionError("projection_dim", projection_dim, "an integer >= 1")
        self.projection_dim = projection_dim
        self.crop = check_number("crop", crop, 0.0, 0.9)
        self.translation = check_number("translation", translation, 0.0, 0.5)
        if not isinstance(flip, bool):
            raise OptionError("flip", flip, "true, false")
        self.flip = flip
        self.color = check_number("color", color, 0.0, 1.0)
        self.noise = check_number("noise", noise, 0.0, 1.0)
        self.augmentations = []
        if self.crop:
            self.augmentations.append(keras.layers.RandomZoom((-self.crop, 0.0), fill_mode="reflect"))
        if self.translation:
            self.augmentations.append(
                keras.layers.RandomTranslation(self.translation, self.translation, fill_mode="reflect"))
        if self.flip:
            self.augmentations.append(keras.layers.RandomFlip("horizontal"))
        if self.color:
            self.augmentations += [keras.layers.RandomBrightness(self.color, value_range=(0.0, 1.0)),
                                   keras.layers.RandomContrast(self.color, value_range=(0.0, 1.0))]

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "projection_dim": self.projection_dim, "crop": self.crop,
                       "translation": self.translation, "flip": self.flip, "color": self.color,
                       "noise": self.noise})
        return config

    def augment(self, images, seed):
        """One random view of each image, a pure function of `seed`."""
        seeds = StatelessSeeds(seed)
        for layer in self.augmentations:
            transformation = layer.get_random_transformation(images, training=True, seed=seeds)
            images = layer.transform_images(images, transformation, training=True)
        if self.noise:
            images = images + self.noise * tf.random.stateless_normal(tf.shape(images), seed=seeds.next())
        return tf.clip_by_value(images, 0.0, 1.0)

    def transform(self, images, step):
        first_seed, second_seed = self.seeds(step, 2)
        batch = tf.shape(images)[0]
        views = tf.concat([self.augment(images, first_seed), self.augment(images, second_seed)], axis=0)
        partner = tf.concat([tf.range(batch, 2 * batch), tf.range(batch)], axis=0)
        return views, partner

    def describe(self, label: int) -> str:
        return f"pair of view {label}"

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

    def compile_kwargs(self) -> dict:
        """Nothing beyond the optimizer: the model computes NT-Xent and its accuracy itself."""
        return {}

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
