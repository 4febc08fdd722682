"""Fractal task (synthetic, FractalDB-style): which seeded iterated function system drew this image?"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from kpretrain.pretext.base import OptionError, check_integer, check_number
from kpretrain.pretext.synthetic import SyntheticTask, balanced_labels, random_colours

MAX_MAPS = 6
SCALES = (0.25, 0.85)  # singular values of a map's linear part: every map contracts
MIN_FILL = 0.15  # a class's attractor must cover this share of a 32 x 32 square (FractalDB's filling rate)
TRIES = 100  # systems drawn per class to pass MIN_FILL; else the fullest one is kept
BURN_IN = 12  # chaos-game steps before points are drawn (0.85 ** 12 < 0.15)
DRAWN_STEPS = 16  # steps each walker draws
POINTS_PER_PIXEL = 2  # points drawn per image pixel


@keras.saving.register_keras_serializable(package="kpretrain")
class FractalTask(SyntheticTask):
    """Class k is iterated function system k: 2 to 4 (`maps`) random contractive affine maps drawn from the seed,
    kept only if its attractor is not too thin.  An image runs the chaos game (points pushed through randomly
    chosen maps, each map as likely as the area it keeps) in TF ops and draws the visited points.

    Images of one class vary: each map's rotations, scales and shift are perturbed by up to `jitter` (a share of
    their range), and the fractal is scaled to 70-100 % of the image at a random place, in a random colour.
    """

    task_name = "fractal"

    def __init__(self, classes: int = 10, maps=(2, 4), jitter: float = 0.1, images_per_epoch: int | None = None,
                 seed: int | None = None, **kwargs):
        super().__init__(images_per_epoch=images_per_epoch, seed=seed, **kwargs)
        self.classes = check_integer("classes", classes, 2, 10_000)
        pair = (maps, maps) if isinstance(maps, int) else maps
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or any(isinstance(m, bool) or not isinstance(m, int)
                                                                        for m in pair)
                or not 2 <= pair[0] <= pair[1] <= MAX_MAPS):
            raise OptionError("maps", maps, f"an integer or [min, max] of integers with 2 <= min <= max <= {MAX_MAPS}")
        self.maps = (int(pair[0]), int(pair[1]))
        self.jitter = check_number("jitter", jitter, 0.0, 1.0)
        self.num_classes = self.classes
        self.systems = function_systems(self.classes, self.maps, np.random.default_rng([self.seed, 0xF2AC]))

    def get_config(self):
        config = super().get_config()
        config.update({"classes": self.classes, "maps": list(self.maps), "jitter": self.jitter})
        return config

    def generate(self, batch, height, width, channels, step):
        label_seed, jitter_seed, choice_seed, start_seed, place_seed, colour_seed = self.seeds(step, 6)
        labels = balanced_labels(batch, self.classes, label_seed)
        params = tf.gather(tf.constant(self.systems), labels)  # [B, MAX_MAPS, 8]
        params += self.jitter * tf.constant(PARAMETER_RANGES) * tf.random.stateless_uniform(
            tf.shape(params), seed=jitter_seed, minval=-0.5, maxval=0.5)
        linear, shift, weight = affine_maps(params)
        walkers = (POINTS_PER_PIXEL * height * width + DRAWN_STEPS - 1) // DRAWN_STEPS
        steps = BURN_IN + DRAWN_STEPS
        # each step's map by inverting the weights' cumulative sums (stateless_categorical draws differently in
        # tf.data than eagerly, TF 2.21)
        uniform = tf.random.stateless_uniform(tf.stack([batch, steps * walkers]), seed=choice_seed)
        cumulative = tf.cumsum(weight, axis=-1)
        cumulative /= cumulative[:, -1:]  # exactly 1 from the last used map on: padding maps are never chosen
        choices = tf.searchsorted(cumulative, uniform, side="right", out_type=tf.int32)
        choices = tf.reshape(choices, tf.stack([batch, steps, walkers]))
        point = tf.random.stateless_uniform(tf.stack([batch, walkers, 2]), seed=start_seed, minval=-1.0, maxval=1.0)
        chosen = tf.one_hot(choices, MAX_MAPS)  # every step's maps gathered at once: [B, steps, walkers, ...]
        linear, shift = tf.einsum("bswm,bmij->bswij", chosen, linear), tf.einsum("bswm,bmi->bswi", chosen, shift)
        drawn = []
        for step_index in range(steps):
            columns = linear[:, step_index]
            point = columns[..., 0] * point[..., :1] + columns[..., 1] * point[..., 1:] + shift[:, step_index]
            if step_index >= BURN_IN:
                drawn.append(point)
        points = tf.concat(drawn, axis=1)  # [B, N, 2]
        return draw_points(points, batch, height, width, channels, place_seed, colour_seed), labels

    def describe(self, label: int) -> str:
        return f"fractal {label}"


# a map's parameters: rotation before and after the scaling, two scales, mirror (sign), shift x, y
PARAMETER_RANGES = (2 * math.pi, 2 * math.pi, SCALES[1] - SCALES[0], SCALES[1] - SCALES[0], 0.0, 2.0, 2.0, 0.0)


def affine_maps(params):
    """(linear parts [..., 2, 2], shifts [..., 2], unnormalised map weights: 0 for padding maps) of maps given as
    rotation, scales, mirror, shift and whether the map is used."""
    before, after, scale_x, scale_y, mirror, shift_x, shift_y, used = tf.unstack(params, axis=-1)
    scale_x, scale_y = (tf.clip_by_value(s, SCALES[0], SCALES[1]) for s in (scale_x, scale_y))

    def rotation(angle):
        cos, sin = tf.cos(angle), tf.sin(angle)
        return tf.stack([tf.stack([cos, -sin], -1), tf.stack([sin, cos], -1)], -2)

    scaling = tf.linalg.diag(tf.stack([scale_x, scale_y * mirror], -1))
    linear = rotation(after) @ scaling @ rotation(before)
    weight = tf.where(used > 0, scale_x * scale_y, 0.0)  # as likely as the area a map keeps
    return linear, tf.stack([shift_x, shift_y], -1), weight


def draw_points(points, batch, height, width, channels, place_seed, colour_seed):
    """float32 [B, H, W, C]: each image's points fitted into a random 70-100 % square of it, lit in a random colour."""
    low, high = tf.reduce_min(points, axis=1, keepdims=True), tf.reduce_max(points, axis=1, keepdims=True)
    span = tf.maximum(tf.reduce_max(high - low, axis=-1, keepdims=True), 1e-6)
    unit = (points - (low + high) / 2) / span  # in [-0.5, 0.5]
    scale_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(place_seed, 2))
    scale = tf.random.stateless_uniform(tf.stack([batch, 1, 1]), seed=scale_seed, minval=0.7, maxval=1.0)
    shift = (1 - scale) * tf.random.stateless_uniform(tf.stack([batch, 1, 2]), seed=shift_seed, minval=-0.5,
                                                      maxval=0.5)
    place = 0.5 + unit * scale + shift  # in [0, 1]
    size = tf.cast(tf.stack([width, height]), tf.float32)
    pixel = tf.clip_by_value(tf.cast(place * size, tf.int32), 0, tf.cast(size, tf.int32) - 1)  # (x, y)
    index = tf.reshape(tf.broadcast_to(tf.range(batch)[:, None, None], tf.shape(pixel[..., :1])), [-1])
    cells = tf.stack([index, tf.reshape(pixel[..., 1], [-1]), tf.reshape(pixel[..., 0], [-1])], axis=1)
    lit = tf.tensor_scatter_nd_max(tf.zeros(tf.stack([batch, height, width]), tf.int32), cells,
                                   tf.ones(tf.shape(cells)[:1], tf.int32))  # integer: order-independent
    colours = random_colours(batch, 1, channels, colour_seed)
    return tf.cast(lit, tf.float32)[..., None] * colours[:, :, None, :]


def function_systems(classes: int, maps: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """float32 [classes, MAX_MAPS, 8]: per class, its maps' parameters (see `affine_maps`); unused rows zero."""
    systems = np.zeros((classes, MAX_MAPS, 8), np.float32)
    for k in range(classes):
        best, best_fill = None, -1.0
        for _ in range(TRIES):
            count = rng.integers(maps[0], maps[1] + 1)
            system = np.zeros((MAX_MAPS, 8), np.float32)
            system[:count] = np.stack([rng.uniform(0, 2 * math.pi, count), rng.uniform(0, 2 * math.pi, count),
                                       rng.uniform(*SCALES, count), rng.uniform(*SCALES, count),
                                       rng.choice([-1.0, 1.0], count), rng.uniform(-1, 1, count),
                                       rng.uniform(-1, 1, count), np.ones(count)], axis=1)
            fill = filling_rate(system, rng)
            if fill > best_fill:
                best, best_fill = system, fill
            if fill >= MIN_FILL:
                break
        systems[k] = best
    return systems


def filling_rate(system: np.ndarray, rng: np.random.Generator, side: int = 32, points: int = 4096) -> float:
    """Share of a side x side square that the system's attractor (fitted into it) covers, by a numpy chaos game."""
    used = system[system[:, 7] > 0]
    before, after, sx, sy, mirror, tx, ty = used[:, :7].T
    rotation = lambda a: np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], -2)
    linear = rotation(after) @ (np.eye(2) * np.stack([sx, sy * mirror], -1)[:, None, :]) @ rotation(before)
    weight = sx * sy / np.sum(sx * sy)
    point = rng.uniform(-1, 1, (points // DRAWN_STEPS, 2))
    drawn = []
    for step in range(BURN_IN + DRAWN_STEPS):
        chosen = rng.choice(len(used), len(point), p=weight)
        point = np.einsum("wij,wj->wi", linear[chosen], point) + np.stack([tx, ty], -1)[chosen]
        if step >= BURN_IN:
            drawn.append(point)
    drawn = np.concatenate(drawn)
    low, high = drawn.min(0), drawn.max(0)
    pixel = np.clip(((drawn - low) / max(np.max(high - low), 1e-6) * side).astype(int), 0, side - 1)
    return len(np.unique(pixel[:, 0] * side + pixel[:, 1])) / side ** 2
