"""k-nearest-neighbour evaluation of frozen backbone features (cosine similarity, weighted vote)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def backbone_features(backbone: keras.Model, images: tf.data.Dataset) -> np.ndarray:
    """Features `[N, D]` of every image in `images` (batches, or `(images, ...)` tuples), inference mode."""
    return np.asarray(backbone.predict(images, verbose=0), dtype=np.float32)


def _normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def knn_predict(train_features: np.ndarray, train_labels: np.ndarray, query_features: np.ndarray, *,
                num_classes: int, k: int = 20, temperature: float = 0.07, chunk: int = 256) -> np.ndarray:
    """Class of each query: the k most cosine-similar training examples vote with weight exp(sim / temperature).

    This is the weighted kNN of Wu et al. (2018), used by DINO and most self-supervised evaluations.  Queries go
    in chunks of `chunk`, so memory is `chunk x N` similarities (55k training examples: 56 MB).
    """
    train = _normalise(train_features)
    labels = np.asarray(train_labels, dtype=np.int64)
    k = min(k, len(train))
    predicted = np.empty(len(query_features), dtype=np.int64)
    for start in range(0, len(query_features), chunk):
        similarity = _normalise(query_features[start:start + chunk]) @ train.T
        neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(similarity, neighbours, axis=1).astype(np.float64) / temperature)
        votes = np.zeros((len(similarity), num_classes))
        np.add.at(votes, (np.arange(len(similarity))[:, None], labels[neighbours]), weights)
        predicted[start:start + chunk] = np.argmax(votes, axis=1)
    return predicted


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, *, num_classes: int, k: int = 20, temperature: float = 0.07) -> float:
    """Accuracy of `knn_predict` on the test features."""
    predicted = knn_predict(train_features, train_labels, test_features, num_classes=num_classes, k=k,
                            temperature=temperature)
    return float(np.mean(predicted == np.asarray(test_labels)))
