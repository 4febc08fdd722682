"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"): self-distillation without
labels; a student matches the sharpened, centred output distribution of a momentum teacher on another view."""

from __future__ import annotations

import keras
import tensorflow as tf

from kpretrain.pretext.base import check_integer, check_number, check_range
from kpretrain.pretext.momentum import MomentumModel, MomentumTask

LOCAL_SEED_SALT = 7919  # folded into a batch's seed for its local views


def dino_loss(student: tf.Tensor, teacher: tf.Tensor, center: tf.Tensor, student_temperature: float = 0.1,
              teacher_temperature: float = 0.04) -> tf.Tensor:
    """DINO's cross-entropy between the teacher's centred, sharpened distributions on the two global views and the
    student's on every other view, averaged over the pairs (a view is never compared with itself).

    Args:
        student: the student's outputs (logits over the prototypes) `[V*B, K]`: global view 1, global view 2, then
            the local views, B images each.
        teacher: the teacher's outputs on the two global views `[2*B, K]` (no gradient).
        center: the running mean of the teacher's outputs `[K]`.
        student_temperature, teacher_temperature: the softmax temperatures (the teacher's lower: sharpening).

    Returns:
        `mean over pairs (t, s), t in {1, 2}, s != t of mean_b -sum_k P_t[b, k] log P_s[b, k]`, with
        `P_t = softmax((teacher - center) / teacher_temperature)`, `P_s = softmax(student / student_temperature)`.

    Example:

    >>> import numpy as np
    >>> uniform = np.zeros((4, 3), np.float32)  # two views of two images, every distribution uniform
    >>> round(float(dino_loss(uniform, uniform, np.zeros(3, np.float32))), 4)  # log 3
    1.0986
    """
    teacher = tf.stop_gradient(tf.nn.softmax((teacher - center) / teacher_temperature, axis=1))
    batch = tf.shape(teacher)[0] // 2
    student = tf.nn.log_softmax(student / student_temperature, axis=1)
    views = tf.shape(student)[0] // batch
    student = tf.reshape(student, [views, batch, -1])
    total, pairs = 0.0, 0
    for t, probabilities in enumerate(tf.split(teacher, 2, axis=0)):
        cross = -tf.reduce_mean(tf.reduce_sum(probabilities[None] * student, axis=2), axis=1)  # [views]
        total += tf.reduce_sum(cross) - cross[t]
        pairs += 1
    return total / (tf.cast(views, tf.float32) - 1.0) / pairs


@keras.saving.register_keras_serializable(package="kpretrain")
class NormalizedDense(keras.layers.Layer):
    """DINO's last layer: a Dense without bias whose kernel columns are l2-normalised (weight normalisation with its
    scale fixed to 1), so that the output is the cosine to each prototype for normalised inputs."""

    def __init__(self, units: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.seed = units, seed

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel",
                                      initializer=keras.initializers.GlorotUniform(seed=self.seed))

    def call(self, inputs):
        return tf.matmul(inputs, tf.math.l2_normalize(tf.cast(self.kernel, inputs.dtype), axis=0))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kpretrain")
class DINOTask(MomentumTask):
    """DINO on two global views of each image (the views of `TwoViewTask`) and, with `local_crops`, that many more
    local views (stronger zoom-in crops, at the same resolution: the backbones of small images take one size).

    The head is the paper's scaled down: Dense-BN-ReLU, Dense to a `projection_dim` bottleneck (default twice the
    backbone's features; the paper has 2048 then 256), l2-normalisation, then a weight-normalised layer to
    `prototypes` outputs (65,536 in the paper).  The teacher (momentum copy of backbone and head) sees the global
    views only; its outputs are centred by a running mean (`center_momentum`) and sharpened
    (`teacher_temperature`, constant: the paper's warm-up to 0.07 is not done), which is what keeps DINO from
    collapsing.  The teacher's momentum rises from `momentum` to 1 with the cosine schedule (0.996 in the paper).

    Args:
        projection_dim: the bottleneck's width; None = 2 x the backbone's features.
        prototypes: the number of outputs, at least 2.
        student_temperature, teacher_temperature: the softmax temperatures, in [0.001, 10].
        center_momentum: the momentum of the teacher outputs' running mean, in [0, 1).
        local_crops: local views per image, 0 to 8 (0: two views only, the multi-crop off).
        local_crop: how much of the side a local view cuts away, `[min, max]` in (0, 0.95).
        momentum: the teacher's momentum at the first step, in [0, 0.99999].
        crop, translation, flip, color, noise: the views' augmentations (`TwoViewTask`).
        seed: the task's seed.

    Example:

    >>> from kpretrain.pretext import create_task
    >>> task = create_task("dino", {"local_crops": 2}, seed=0)
    >>> task.batch_multiplier, task.prototypes, task.local_crop
    (4, 1024, (0.4, 0.7))
    """

    task_name = "dino"

    def __init__(self, projection_dim: int | None = None, prototypes: int = 1024, student_temperature: float = 0.1,
                 teacher_temperature: float = 0.04, center_momentum: float = 0.9, local_crops: int = 0,
                 local_crop=(0.4, 0.7), momentum: float = 0.99, crop: float = 0.3, translation: float = 0.1,
                 flip: bool = True, color: float = 0.4, noise: float = 0.05, seed: int | None = None, **kwargs):
        super().__init__(projection_dim, momentum, crop=crop, translation=translation, flip=flip, color=color,
                         noise=noise, seed=seed, **kwargs)
        self.prototypes = check_integer("prototypes", prototypes, 2)
        self.student_temperature = check_number("student_temperature", student_temperature, 1e-3, 10.0)
        self.teacher_temperature = check_number("teacher_temperature", teacher_temperature, 1e-3, 10.0)
        self.center_momentum = check_number("center_momentum", center_momentum, 0.0, 0.99999)
        self.local_crops = check_integer("local_crops", local_crops, 0, 8)
        self.local_crop = check_range("local_crop", local_crop, 0.0, 0.95, low_open=True, high_open=True)
        self.batch_multiplier = 2 + self.local_crops
        others = [layer for layer in self.augmentations if not isinstance(layer, keras.layers.RandomZoom)]
        self.local_augmentations = [keras.layers.RandomZoom((-self.local_crop[1], -self.local_crop[0]),
                                                            fill_mode="reflect"), *others]

    def get_config(self):
        config = super().get_config()
        config.update({"prototypes": self.prototypes, "student_temperature": self.student_temperature,
                       "teacher_temperature": self.teacher_temperature, "center_momentum": self.center_momentum,
                       "local_crops": self.local_crops, "local_crop": list(self.local_crop)})
        return config

    def transform(self, images, step):
        views, partner = super().transform(images, step)  # the two global views, as every two-view task makes them
        if not self.local_crops:
            return views, partner
        base = tf.random.experimental.stateless_fold_in(self.seeds(step, 1)[0], LOCAL_SEED_SALT)
        local = [self.augment(images, seed, self.local_augmentations)  # seeds apart from the global views'
                 for seed in tf.unstack(tf.random.experimental.stateless_split(base, self.local_crops))]
        return tf.concat([views, *local], axis=0), partner

    def joint_model(self, backbone, projector, dim, seed):
        head = keras.Sequential([keras.Input(shape=(backbone.output_shape[-1],)), *projector.layers,
                                 keras.layers.UnitNormalization(name="projector_l2"),
                                 NormalizedDense(self.prototypes, seed=seed + 20, name="prototypes")],
                                name="projector")
        return DINOModel(backbone, head, self.momentum, prototypes=self.prototypes,
                         temperatures=(self.student_temperature, self.teacher_temperature),
                         center_momentum=self.center_momentum, name="pretext_dino_model")


class DINOModel(MomentumModel):
    """`MomentumModel` trained by `dino_loss`; `center` (a weight) is the running mean of the teacher's outputs."""

    def __init__(self, backbone: keras.Model, head: keras.Model, momentum: float, *, prototypes: int,
                 temperatures: tuple, center_momentum: float, **kwargs):
        super().__init__(backbone, head, momentum, "dino", **kwargs)
        self.temperatures, self.center_momentum = temperatures, center_momentum
        self.center = self.add_weight(shape=(prototypes,), initializer="zeros", trainable=False, name="center")
        self._batch_center = None

    def momentum_loss(self, z, targets, training=True):
        self._batch_center = tf.reduce_mean(targets, axis=0)  # moves the centre in `after_step`
        return dino_loss(z, targets, tf.cast(self.center, tf.float32), *self.temperatures)

    def after_step(self):
        m = self.center_momentum
        self.center.assign(m * self.center + (1.0 - m) * tf.cast(self._batch_center, self.center.dtype))
