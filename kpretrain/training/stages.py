"""One training stage = compile + fit with a fresh optimizer; epochs may be fractional."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from kpretrain.recipe import OptimizerConfig
from kpretrain.training.optimizers import create_optimizer


@dataclass
class StageResult:
    """What a stage leaves behind: Keras history (per epoch) and wall time."""

    history: dict = field(default_factory=dict)
    epochs: int = 0
    steps_per_epoch: int = 0
    wall_time_s: float = 0.0


def epoch_plan(epochs: float, steps_per_epoch: int) -> tuple[int, int]:
    """(Keras epochs, steps per Keras epoch) for a possibly fractional number of data epochs."""
    if epochs <= 0:
        return 0, steps_per_epoch
    if float(epochs).is_integer():
        return int(epochs), steps_per_epoch
    keras_epochs = math.ceil(epochs)
    total = max(1, int(round(epochs * steps_per_epoch)))
    return keras_epochs, max(1, total // keras_epochs)


def fit_stage(model: keras.Model, train: tf.data.Dataset, *, epochs: float, steps_per_epoch: int,
              optimizer: OptimizerConfig, compile_kwargs: dict, validation: tf.data.Dataset | None = None,
              callbacks=(), jit_compile: bool = False, verbose: int = 0) -> StageResult:
    """Compile `model` with a fresh optimizer and fit it on the repeated `train` dataset."""
    keras_epochs, steps = epoch_plan(epochs, steps_per_epoch)
    if keras_epochs == 0:
        return StageResult()
    model.compile(optimizer=create_optimizer(optimizer, steps, keras_epochs), jit_compile=jit_compile,
                  **compile_kwargs)
    start = time.perf_counter()
    history = model.fit(train.repeat(), epochs=keras_epochs, steps_per_epoch=steps, validation_data=validation,
                        callbacks=list(callbacks), verbose=verbose, shuffle=False)
    return StageResult(history={k: [float(v) for v in vals] for k, vals in history.history.items()},
                       epochs=keras_epochs, steps_per_epoch=steps, wall_time_s=time.perf_counter() - start)


def predict_classes(model: keras.Model, images: tf.data.Dataset) -> np.ndarray:
    """Arg-max class of every example of a dataset of image batches (or (images, labels))."""
    logits = model.predict(images, verbose=0)
    return np.argmax(logits, axis=-1)


def accuracy(model: keras.Model, images: tf.data.Dataset, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """(accuracy, predicted classes) of `model` on unshuffled `images` whose labels are `labels`."""
    predicted = predict_classes(model, images)
    return float(np.mean(predicted == labels)), predicted
