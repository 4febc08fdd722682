"""Shape-set task (synthetic): how many distinct primitives of a seeded vocabulary does a drawn image hold?"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from kpretrain.pretext.base import OptionError, check_integer
from kpretrain.pretext.synthetic import SyntheticTask, balanced_labels, random_colours

# (name, symbol, sides: 0 round, rotation in degrees, aspect: width / length, hollow); y points down
SHAPES = (
    ("disc", "●", 0, 0, 1.0, False),
    ("triangle up", "▲", 3, 90, 1.0, False),
    ("triangle down", "▼", 3, -90, 1.0, False),
    ("square", "■", 4, 0, 1.0, False),
    ("diamond", "◆", 4, 45, 1.0, False),
    ("bar -", "—", 4, 0, 0.3, False),
    ("bar |", "|", 4, 90, 0.3, False),
    ("bar /", "/", 4, -45, 0.3, False),
    ("bar \\", "\\", 4, 45, 0.3, False),
    ("ring", "○", 0, 0, 1.0, True),
    ("hollow triangle up", "△", 3, 90, 1.0, True),
    ("hollow triangle down", "▽", 3, -90, 1.0, True),
    ("hollow square", "□", 4, 0, 1.0, True),
    ("hollow diamond", "◇", 4, 45, 1.0, True),
)
SIZES = (("large", 0.95), ("small", 0.55))  # extent (circumradius) as a share of half a grid cell
# every primitive kind: filled shapes large and small, hollow ones large only (a small outline is a blob)
PRIMITIVES = tuple((size_name, size, *shape) for shape in SHAPES for size_name, size in SIZES
                   if not (shape[5] and size_name == "small"))
HOLLOW_SHARE = 0.5  # an outline's inner boundary, as a share of its outer one
SIZE_JITTER = 0.1  # each drawn primitive's size varies by up to this share
MAX_PRIMITIVES = 9  # drawn on a grid of at most 3 x 3 cells


@keras.saving.register_keras_serializable(package="kpretrain")
class ShapeSetTask(SyntheticTask):
    """Each image draws `primitives` primitives (one per cell of a grid, never overlapping, each in a random colour)
    out of `d` distinct kinds of a seeded vocabulary of `vocabulary` kinds (shape, size, orientation), with d from
    1 to `max_distinct` in near-equal numbers; label d - 1.  Every one of the d kinds appears at least once.

    `multi_label: true` extends the task contract: labels are float32 multi-hot [batch, vocabulary] (which kinds
    the image holds, d ones), trained with binary cross-entropy on logits and scored by binary accuracy.
    """

    task_name = "shapes"

    def __init__(self, vocabulary: int = 6, max_distinct: int = 4, primitives: int | None = None,
                 multi_label: bool = False, images_per_epoch: int | None = None, seed: int | None = None, **kwargs):
        super().__init__(images_per_epoch=images_per_epoch, seed=seed, **kwargs)
        self.vocabulary = check_integer("vocabulary", vocabulary, 2, len(PRIMITIVES))
        self.max_distinct = check_integer("max_distinct", max_distinct, 2, min(self.vocabulary, MAX_PRIMITIVES))
        self.primitives = check_integer("primitives", self.max_distinct if primitives is None else primitives,
                                        self.max_distinct, MAX_PRIMITIVES)
        if not isinstance(multi_label, bool):
            raise OptionError("multi_label", multi_label, "true, false")
        self.multi_label = multi_label
        self.num_classes = self.vocabulary if multi_label else self.max_distinct
        rng = np.random.default_rng([self.seed, 0x5A1E])
        self.kinds = tuple(int(k) for k in np.sort(rng.choice(len(PRIMITIVES), self.vocabulary, replace=False)))

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary": self.vocabulary, "max_distinct": self.max_distinct,
                       "primitives": self.primitives, "multi_label": self.multi_label})
        return config

    def kind_names(self) -> list[str]:
        """The vocabulary in label order: e.g. 'small triangle up'."""
        return [f"{PRIMITIVES[k][0]} {PRIMITIVES[k][2]}" for k in self.kinds]

    def generate(self, batch, height, width, channels, step):
        label_seed, order_seed, repeat_seed, cell_seed, offset_seed, size_seed, colour_seed = self.seeds(step, 7)
        slots, vocabulary = self.primitives, self.vocabulary
        distinct = balanced_labels(batch, self.max_distinct, label_seed) + 1
        # kinds: the first `distinct` of a random order of the vocabulary, each once, then repeats of them
        order = tf.argsort(tf.random.stateless_uniform(tf.stack([batch, vocabulary]), seed=order_seed), axis=1)
        repeats = tf.cast(tf.random.stateless_uniform(tf.stack([batch, slots]), seed=repeat_seed)
                          * tf.cast(distinct[:, None], tf.float32), tf.int32)
        pick = tf.where(tf.range(slots)[None, :] < distinct[:, None], tf.range(slots)[None, :], repeats)
        kinds = tf.gather(order, pick, batch_dims=1)  # [batch, slots] vocabulary indices
        images = self._draw(kinds, batch, height, width, channels, (cell_seed, offset_seed, size_seed, colour_seed))
        if self.multi_label:
            return images, tf.reduce_max(tf.one_hot(kinds, vocabulary, dtype=tf.float32), axis=1)
        return images, distinct - 1

    def _draw(self, kinds, batch, height, width, channels, seeds):
        cell_seed, offset_seed, size_seed, colour_seed = seeds
        slots, grid = self.primitives, math.ceil(math.sqrt(self.primitives))
        table = np.array([[size, sides, math.radians(angle), aspect, hollow]
                          for _, size, _, _, sides, angle, aspect, hollow in (PRIMITIVES[k] for k in self.kinds)],
                         np.float32)
        size, sides, angle, aspect, hollow = tf.unstack(tf.gather(tf.constant(table), kinds), axis=-1)  # [B, S]
        h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        half_cell = tf.minimum(h, w) / (2 * grid)
        radius = size * half_cell * tf.random.stateless_uniform(tf.shape(size), seed=size_seed,
                                                                minval=1 - SIZE_JITTER, maxval=1.0)
        # each primitive in its own grid cell, at a random point where it stays inside the cell
        cells = tf.argsort(tf.random.stateless_uniform(tf.stack([batch, grid * grid]), seed=cell_seed),
                           axis=1)[:, :slots]
        cell_size = tf.stack([h / grid, w / grid])
        slack = cell_size / 2 - radius[..., None]
        offset = tf.random.stateless_uniform(tf.stack([batch, slots, 2]), seed=offset_seed, minval=-1.0, maxval=1.0)
        centre = (tf.cast(tf.stack([cells // grid, cells % grid], axis=-1), tf.float32) + 0.5) * cell_size
        centre += offset * tf.maximum(slack, 0.0)
        ys = tf.range(h)[None, None, :, None] + 0.5 - centre[..., 0, None, None]  # [B, S, H, 1]
        xs = tf.range(w)[None, None, None, :] + 0.5 - centre[..., 1, None, None]  # [B, S, 1, W]
        cos, sin = [t[..., None, None] for t in (tf.cos(angle), tf.sin(angle))]
        along = cos * xs + sin * ys  # the shape's own axes
        across = (-sin * xs + cos * ys) / aspect[..., None, None]
        distance = tf.sqrt(along ** 2 + across ** 2)  # round; a polygon's: the largest over its edge normals
        for n in (3, 4):
            edges = [along * math.cos(2 * math.pi * i / n) + across * math.sin(2 * math.pi * i / n) for i in range(n)]
            distance = tf.where(tf.equal(sides, n)[..., None, None], tf.reduce_max(tf.stack(edges), axis=0), distance)
        outer = radius * tf.where(tf.equal(sides, 0), 1.0, tf.cos(math.pi / tf.maximum(sides, 1.0)))  # apothem
        outer = outer[..., None, None]
        ink = tf.clip_by_value(outer - distance + 0.5, 0.0, 1.0)  # one pixel of anti-aliasing
        inside = tf.clip_by_value(distance - outer * HOLLOW_SHARE + 0.5, 0.0, 1.0)
        ink = tf.where(tf.cast(hollow, tf.bool)[..., None, None], tf.minimum(ink, inside), ink)  # [B, S, H, W]
        colours = random_colours(batch, slots, channels, colour_seed)
        return tf.clip_by_value(tf.einsum("bshw,bsc->bhwc", ink, colours), 0.0, 1.0)

    def describe(self, label) -> str:
        """A count class (`2 distinct`) or, multi-label, the symbols of the kinds present (lower-case s: small)."""
        if np.ndim(label) == 0:
            return f"{int(label) + 1} distinct"
        present = [PRIMITIVES[k] for k, on in zip(self.kinds, np.asarray(label)) if on > 0.5]
        return " ".join(("s" if p[0] == "small" else "") + p[3] for p in present)

    def compile_kwargs(self) -> dict:
        if not self.multi_label:
            return super().compile_kwargs()
        return {"loss": keras.losses.BinaryCrossentropy(from_logits=True),
                "metrics": [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)]}  # logits > 0
