"""What a unit's stages read: one seed's data and splits, the recipe's shared settings, the `--smoke` budget."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from kpretrain.data import DatasetArrays, Splits, image_batches, labelled_batches
from kpretrain.recipe import Recipe


@dataclasses.dataclass(frozen=True)
class Budget:
    """Caps that `--smoke` applies: tiny data and a few batches per stage, every arm and seed kept."""

    train_examples: int | None = None
    test_examples: int | None = None
    validation: int | None = None
    labels_per_class: int | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None
    bn_batches: int | None = None

    def cap(self, value, limit):
        return value if limit is None or value is None else min(value, limit)


FULL = Budget()
SMOKE = Budget(train_examples=600, test_examples=200, validation=100, labels_per_class=10, steps_per_epoch=3,
               epochs=1, bn_batches=2)


@dataclasses.dataclass(frozen=True, eq=False)
class SeedData:
    """One seed's data for every arm: the same labelled subset, validation split and test split.

    `recipe` is the experiment's recipe (arms share its data, evaluation and runtime sections); `pretrain_data`
    holds other data sets named by `pretrain.dataset`; `sources` caches what `backbone.from` loaded.
    """

    recipe: Recipe
    data: DatasetArrays
    split: Splits
    seed: int
    budget: Budget = FULL
    pretrain_data: dict = dataclasses.field(default_factory=dict)
    sources: dict = dataclasses.field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.recipe.data.batch_size

    @property
    def bn_batches(self) -> int:
        return self.budget.cap(self.recipe.evaluation.bn_refresh_batches, self.budget.bn_batches)

    def steps(self, n: int, drop_remainder: bool = False) -> int:
        """Steps per epoch over `n` examples, capped by the budget."""
        steps = n // self.batch_size if drop_remainder else math.ceil(n / self.batch_size)
        return max(1, self.budget.cap(steps, self.budget.steps_per_epoch))

    def epochs(self, epochs):
        return self.budget.cap(epochs, self.budget.epochs)

    @functools.cached_property
    def labelled(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images, labels) of the labelled subset."""
        return self.data.x_train[self.split.labelled], self.data.y_train[self.split.labelled]

    @functools.cached_property
    def y_validation(self) -> np.ndarray:
        return self.data.y_train[self.split.validation]

    @functools.cached_property
    def validation(self):
        """Unshuffled (images, labels) batches of the validation split."""
        return labelled_batches(self.data.x_train[self.split.validation], self.y_validation, self.batch_size,
                                shuffle=False, seed=self.seed)

    @functools.cached_property
    def labelled_images(self):
        """Unshuffled image batches of the labelled subset (features for kNN and the head warm start)."""
        return image_batches(self.labelled[0], self.batch_size, shuffle=False, seed=self.seed)

    @functools.cached_property
    def test(self):
        """Unshuffled (images, labels) batches of the test split: read once per unit, after training."""
        return labelled_batches(self.data.x_test, self.data.y_test, self.batch_size, shuffle=False, seed=self.seed)

    def refresh_images(self):
        """Shuffled labelled images for a BN refresh: a new dataset each time, so every arm sees the same batches."""
        return image_batches(self.labelled[0], self.batch_size, shuffle=True, seed=self.seed)

    def train_batches(self, start: int = 0):
        """Endless shuffled (images, labels) batches of the labelled subset from batch number `start` on, in this
        seed's order (a pure function of seed and batch number)."""
        return labelled_batches(*self.labelled, self.batch_size, shuffle=True, seed=self.seed, start=start, repeat=True)
