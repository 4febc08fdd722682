"""Jigsaw task: the image is cut into grid x grid tiles, shuffled by one of a fixed set of permutations."""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.pretext.base import OptionError, PretextTask

DEFAULT_PERMUTATIONS = {2: 24, 3: 100}
MAX_PERMUTATIONS = {2: 24, 3: 1000}
CANDIDATES_3X3 = 5000


@keras.saving.register_keras_serializable(package="kpretrain")
class JigsawTask(PretextTask):
    """Label k means output tile j is input tile `permutations[k][j]` (tiles in row-major order); k = 0 is
    the identity.  The permutation set is a deterministic function of (grid, num_permutations, seed), picked
    greedily for a large minimum Hamming distance.

    When the height or width is not divisible by `grid`, only the largest divisible centred region is
    tiled; the remaining border rows and columns stay in place, so the image keeps its shape.
    """

    task_name = "jigsaw"

    def __init__(self, grid: int = 2, num_permutations: int | None = None, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if grid not in (2, 3) or isinstance(grid, bool):
            raise OptionError("grid", grid, "2, 3")
        if num_permutations is None:
            num_permutations = DEFAULT_PERMUTATIONS[grid]
        if (isinstance(num_permutations, bool) or not isinstance(num_permutations, int)
                or not 2 <= num_permutations <= MAX_PERMUTATIONS[grid]):
            raise OptionError("num_permutations", num_permutations,
                              f"null or an integer in [2, {MAX_PERMUTATIONS[grid]}] for grid {grid}")
        self.grid = grid
        self.num_permutations = num_permutations
        self.num_classes = num_permutations
        self.permutations = spread_permutations(grid * grid, num_permutations, self.seed)

    def get_config(self):
        config = super().get_config()
        config.update({"grid": self.grid, "num_permutations": self.num_permutations})
        return config

    def match_labels(self, other: "JigsawTask") -> "JigsawTask":
        """Label k is permutation k of `other`'s set (which depends on its seed)."""
        self.permutations = np.array(other.permutations)
        return self

    def check_images(self, shape):
        if shape[1] is None or shape[2] is None or min(shape[1], shape[2]) < self.grid:
            raise RecipeError(f"pretrain.options.grid: {self.grid} needs images with a known height and width of at "
                              f"least {self.grid} pixels; got {shape[1]}x{shape[2]}")

    def transform(self, images, step):
        (label_seed,) = self.seeds(step, 1)
        labels = tf.random.stateless_uniform([tf.shape(images)[0]], seed=label_seed, maxval=self.num_classes,
                                             dtype=tf.int32)
        return self._permute_tiles(images, tf.gather(tf.constant(self.permutations, tf.int32), labels)), labels

    def undo(self, images, labels):
        """Put the tiles of jigsaw outputs `images` with their `labels` back in place."""
        inverse = np.argsort(self.permutations, axis=1).astype(np.int32)
        return self._permute_tiles(tf.convert_to_tensor(images, tf.float32), tf.gather(inverse, labels))

    def _permute_tiles(self, images, sources):
        """Output tile j of example i is input tile `sources[i, j]`."""
        self.check_images(images.shape)
        g = self.grid
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        th, tw = height // g, width // g
        top, left = (height - g * th) // 2, (width - g * tw) // 2
        region = images[:, top:top + g * th, left:left + g * tw, :]
        tiles = tf.reshape(tf.transpose(tf.reshape(region, [-1, g, th, g, tw, channels]), [0, 1, 3, 2, 4, 5]),
                           [-1, g * g, th, tw, channels])
        tiles = tf.gather(tiles, sources, batch_dims=1)
        region = tf.reshape(tf.transpose(tf.reshape(tiles, [-1, g, g, th, tw, channels]), [0, 1, 3, 2, 4, 5]),
                            [-1, g * th, g * tw, channels])
        if (g * th, g * tw) == (height, width):
            return region
        middle = tf.concat([images[:, top:top + g * th, :left], region, images[:, top:top + g * th, left + g * tw:]],
                           axis=2)
        return tf.concat([images[:, :top], middle, images[:, top + g * th:]], axis=1)

    def describe(self, label: int) -> str:
        return "identity" if label == 0 else f"perm {label}"


def spread_permutations(tiles: int, count: int, seed: int) -> np.ndarray:
    """`count` distinct permutations of `tiles` items, identity first, each next one the (seeded) candidate
    farthest in Hamming distance from those already chosen."""
    rng = np.random.default_rng(seed)
    if math.factorial(tiles) <= CANDIDATES_3X3:
        candidates = rng.permutation(np.array(list(itertools.permutations(range(tiles)))))
    else:
        candidates = np.unique(rng.permuted(np.tile(np.arange(tiles), (CANDIDATES_3X3, 1)), axis=1), axis=0)
        candidates = rng.permutation(candidates)
    chosen = [np.arange(tiles)]
    nearest = (candidates != chosen[0]).sum(axis=1)
    while len(chosen) < count:
        best = candidates[int(np.argmax(nearest))]
        chosen.append(best)
        nearest = np.minimum(nearest, (candidates != best).sum(axis=1))
    return np.stack(chosen).astype(np.int32)
