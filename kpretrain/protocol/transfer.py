"""Transfer stage: re-initialise (transfer.init), freeze (frozen_depth, bn), warm-start the head (head_init)."""

from __future__ import annotations

import contextlib

import keras

from kpretrain.models.heads import HeadedModel
from kpretrain.models.initialisation import reinitialise_from_statistics, reinitialise_random
from kpretrain.models.freezing import freeze_to_depth
from kpretrain.protocol.inputs import SeedData
from kpretrain.protocol.results import TransferResult
from kpretrain.recipe import Recipe
from kpretrain.protocol.evaluate import all_statistics_refreshed
from kpretrain.training.bn_refresh import batch_norm_layers, bn_state
from kpretrain.training.head_init import logistic_regression_head
from kpretrain.training.stages import accuracy
from kpretrain.training.timing import Clock, measure


def transfer(model: HeadedModel, arm: Recipe, inputs: SeedData, *, clock: Clock | None = None) -> TransferResult:
    """Apply the arm's transfer protocol to `model` (its backbone pre-trained, loaded or random), in place."""
    t, seed = arm.transfer, inputs.seed
    backbone = model.backbone
    if t.init == "statistics":
        reinitialise_from_statistics(backbone, seed, t.init_pooling)
    elif t.init == "random":
        source = (inputs.sources[arm.backbone.from_].get("metadata") or {}) if arm.backbone.from_ else {}
        reinitialise_random(backbone, source.get("backbone", arm.backbone.name),
                            source.get("options", arm.backbone.options), seed)
    frozen = freeze_to_depth(backbone, t.frozen_depth, t.bn)
    head_init = None
    if t.head_init == "logistic_regression":
        with measure(clock, "evaluation"):
            head_init = _warm_start_head(model, inputs)
    keras.utils.set_random_seed(seed)  # same data order and dropout in fine-tuning, whatever the protocol
    return TransferResult(frozen_blocks=tuple(frozen), head_init=head_init)


def _warm_start_head(model: HeadedModel, inputs: SeedData) -> dict:
    """Logistic regression on the backbone's features with every BN layer refreshed on the labelled images (as the
    probe's are; none with `evaluation.bn_refresh: false`).  The frozen BN layers keep those statistics: the head
    was fitted on them and fine-tuning does not change them; trainable ones get back the statistics they were
    handed (raw numbers stay raw)."""
    backbone = model.backbone
    refresh = inputs.recipe.evaluation.bn_refresh
    with all_statistics_refreshed(backbone, inputs) if refresh else contextlib.nullcontext():
        record = logistic_regression_head(backbone, model.head, inputs.labelled_images, inputs.labelled[1],
                                          inputs.data.num_classes)
        record["val_accuracy_before_finetune"] = accuracy(model, inputs.validation, inputs.y_validation)[0]
        fitted_on = bn_state(backbone)
    if refresh:
        for layer, (mean, variance) in zip(batch_norm_layers(backbone, trainable_only=False), fitted_on):
            if not layer.trainable:
                layer.moving_mean.assign(mean)
                layer.moving_variance.assign(variance)
    return record
