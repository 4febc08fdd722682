"""`transfer.head_init: logistic_regression`: warm-start the linear head on frozen backbone features (seed 003)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.training.knn import backbone_features


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, num_classes: int, *, l2: float = 1e-4,
                            steps: int = 300, learning_rate: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(kernel [D, C], bias [C]) of a multinomial logistic regression, `logits = features @ kernel + bias`.

    Full-batch Adam on standardised features from zero weights (deterministic); the standardisation is folded
    back into the returned kernel and bias.  The loss is mean cross-entropy + l2 * ||kernel||^2 (standardised scale).
    """
    features = np.asarray(features, dtype=np.float32)
    mean, std = features.mean(axis=0), features.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)  # constant features stay at zero weight
    x = tf.constant((features - mean) / std)
    y = tf.constant(np.asarray(labels, dtype=np.int64))
    kernel = tf.Variable(tf.zeros((features.shape[1], num_classes)))
    bias = tf.Variable(tf.zeros((num_classes,)))
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = x @ kernel + bias
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            loss += l2 * tf.reduce_sum(kernel ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, [kernel, bias]), [kernel, bias]))

    for _ in range(steps):
        step()
    scaled_kernel = kernel.numpy() / std[:, None]
    return scaled_kernel, bias.numpy() - mean @ scaled_kernel


def logistic_regression_head(backbone: keras.Model, head: keras.Model, images: tf.data.Dataset,
                             labels: np.ndarray, num_classes: int, *, l2: float = 1e-4, steps: int = 300) -> dict:
    """Fit a logistic regression on the backbone's features of `images` (unshuffled, in `labels` order) and copy
    it into `head`'s `<name>_logits` Dense layer; returns the head's train accuracy and the feature dimension.
    """
    with_weights = [layer for layer in head.layers if layer.weights]
    if len(with_weights) != 1 or with_weights[0].name != f"{head.name}_logits":
        raise RecipeError("transfer.head_init: logistic_regression needs a linear head (one Dense layer); "
                          "set finetune.head: linear or transfer.head_init: none")
    logits_layer = with_weights[0]
    features = backbone_features(backbone, images)
    labels = np.asarray(labels)
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} images but {len(labels)} labels")
    kernel, bias = fit_logistic_regression(features, labels, num_classes, l2=l2, steps=steps)
    logits_layer.kernel.assign(kernel)
    logits_layer.bias.assign(bias)
    predicted = np.argmax(head.predict(features, verbose=0), axis=1)
    return {"train_accuracy": float(np.mean(predicted == labels)), "feature_dim": int(features.shape[1])}
