"""Evaluation stage: test accuracy once, after training (refreshed and raw BN), and kNN of the backbone features."""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from kpretrain.models.freezing import freeze_to_depth
from kpretrain.models.heads import HeadedModel
from kpretrain.protocol.inputs import SeedData
from kpretrain.protocol.results import FinetuneResult, TestResult
from kpretrain.training.bn_refresh import (batch_norm_layers, refresh_batch_norm, statistics_restored,
                                          statistics_swapped)
from kpretrain.training.knn import backbone_features, knn_accuracy
from kpretrain.training.stages import accuracy
from kpretrain.training.timing import Clock, measure

KNN_K = 20


def evaluate_test(model: HeadedModel, inputs: SeedData, finetuned: FinetuneResult, *,
                  clock: Clock | None = None) -> TestResult:
    """Test accuracy with the statistics `finetune` left (refreshed when `evaluation.bn_refresh`, and always for
    averaged weights), then with the raw ones training produced (`finetuned.raw_bn`); confusion matrix of the
    former; with averaging, the last trained weights' accuracy (BN refreshed) as a diagnostic."""
    y = inputs.data.y_test
    with measure(clock, "evaluation"):
        last = None
        if finetuned.last_weights is not None:  # averaging: the weights it replaced, refreshed, as a diagnostic
            kept = model.get_weights()
            model.set_weights(finetuned.last_weights)
            if not inputs.recipe.evaluation.bn_refresh:  # they hold the stale statistics: refresh as for the average
                refresh_batch_norm(model, inputs.refresh_images(), inputs.bn_batches)
            last = accuracy(model, inputs.test, y)[0]
            model.set_weights(kept)
        tested, predicted = accuracy(model, inputs.test, y)
        refreshed = tested if inputs.recipe.evaluation.bn_refresh or finetuned.averaging else None
        raw = tested
        if finetuned.raw_bn:  # the statistics training left, when the model holds others
            with statistics_swapped(model, finetuned.raw_bn):
                raw = accuracy(model, inputs.test, y)[0]
    return TestResult(tested, raw, refreshed, confusion_matrix(y, predicted, inputs.data.num_classes).tolist(), last)


def knn_test_accuracy(backbone: keras.Model, inputs: SeedData, *, clock: Clock | None = None) -> float:
    """kNN (k=20, cosine) test accuracy of `backbone`'s features; memory = labelled subset, queries = test.

    Every BN layer of the backbone (frozen ones included) is refreshed on the labelled images first, and
    restored afterwards, so the number depends on the weights alone, not on the statistics an arm holds.
    """
    with measure(clock, "evaluation"), all_statistics_refreshed(backbone, inputs):
        memory = backbone_features(backbone, inputs.labelled_images)
        queries = backbone_features(backbone, inputs.test.map(lambda x, y: x))
    labels = inputs.labelled[1]
    return knn_accuracy(memory, labels, queries, inputs.data.y_test, num_classes=inputs.data.num_classes,
                        k=min(KNN_K, len(labels)))


@contextlib.contextmanager
def all_statistics_refreshed(backbone: keras.Model, inputs: SeedData):
    """Within the block, every BN layer of `backbone` holds statistics of the labelled images; then all is restored
    (statistics, and the `trainable` flags of layers and variables)."""
    if not batch_norm_layers(backbone, trainable_only=False):
        yield
        return
    layers = [(layer, layer.trainable) for layer in backbone._flatten_layers(include_self=True, recursive=True)]
    variables = [(v, v.trainable) for v in backbone.variables]
    try:
        with statistics_restored(backbone):
            freeze_to_depth(backbone, 0)
            refresh_batch_norm(backbone, inputs.refresh_images(), inputs.bn_batches)
            yield
    finally:
        for layer, trainable in layers:  # parents first: a parent's setter also sets its children
            layer.trainable = trainable
        for variable, trainable in variables:
            variable.trainable = trainable


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    return np.bincount(labels.astype(np.int64) * num_classes + predicted.astype(np.int64),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


