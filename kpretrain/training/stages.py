"""One training stage = compile + fit with a fresh optimizer; epochs may be fractional."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from kpretrain.recipe import AveragingConfig, OptimizerConfig, SelectConfig
from kpretrain.training.averaging import BestEpoch, LastWeights, PolyakAverage
from kpretrain.training.backup import EpochLog, StageBackup
from kpretrain.training.interruption import StopOnSignal
from kpretrain.training.lr_finder import lr_range_test
from kpretrain.training.optimizers import create_optimizer
from kpretrain.training.state import build_state
from kpretrain.training.timing import Clock, measure


@dataclass
class StageResult:
    """What a stage leaves behind: Keras history (per epoch) and wall time."""

    history: dict = field(default_factory=dict)
    epochs: int = 0
    steps_per_epoch: int = 0
    wall_time_s: float = 0.0
    data_epochs: list = field(default_factory=list)  # position of each history point, in passes over the data
    resumed_from: int = 0  # the epoch a resumed stage started from (0: it ran whole)
    lr_find: dict | None = None  # the range test that chose the learning rate (`learning_rate: auto`)
    last_weights: list | None = field(default=None, repr=False)  # with averaging: the weights before it replaced them
    selected_epoch: int | None = None  # with select best: the Keras epoch (0-based) whose weights the model holds
    selected_state: object = field(default=None, repr=False)  # with select best: `keep_with_best()` at that epoch


def epoch_plan(epochs: float, steps_per_epoch: int, min_points: int = 1) -> tuple[int, int]:
    """(Keras epochs, steps per Keras epoch) for a possibly fractional number of data epochs.

    With `min_points`, short stages are cut into at least that many Keras epochs, so that their
    validation curve has that many points.
    """
    if epochs <= 0:
        return 0, steps_per_epoch
    total = max(1, int(round(epochs * steps_per_epoch)))
    keras_epochs = int(epochs) if float(epochs).is_integer() else math.ceil(epochs)
    keras_epochs = min(total, max(keras_epochs, min_points))
    if keras_epochs == epochs:
        return keras_epochs, steps_per_epoch
    return keras_epochs, max(1, total // keras_epochs)


class StopAfterSteps(keras.callbacks.Callback):
    """Stops training after the batch that completes `total` steps, in Keras epochs of `steps` batches (a last
    epoch cut short, then validated as usual); counts from the epoch Keras starts at, so a resumed stage too."""

    def __init__(self, total: int, steps: int):
        super().__init__()
        self.total, self.steps, self.done = total, steps, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.done = epoch * self.steps

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done >= self.total:
            self.model.stop_training = True


def fit_stage(model: keras.Model, train, *, epochs: float, steps_per_epoch: int,
              optimizer: OptimizerConfig, compile_kwargs: dict, validation: tf.data.Dataset | None = None,
              callbacks=(), jit_compile: bool = False, verbose: int = 0, min_points: int = 1,
              clock: Clock | None = None, backup: str | None = None, tensorboard: str | None = None,
              averaging: AveragingConfig | None = None, select: SelectConfig | None = None,
              monitor: str = "val_accuracy", keep_with_best=None, extra_steps: int = 0) -> StageResult:
    """Compile `model` with a fresh optimizer and fit it (timed as training).

    `train` is a function of the first batch number returning the stage's endless batches from there (or a
    dataset, repeated).  With `backup` (a directory), every finished epoch is backed up and a stage interrupted
    earlier resumes after its last backed-up epoch, on the batches it would have seen (see `StageBackup`).
    Ctrl-C / SIGTERM stop it after the current batch (`interruption.stop_on_signals`).  With `tensorboard` (a
    directory) Keras' TensorBoard callback logs every epoch there, the stage's validation numbers included.
    With `averaging` (ema or polyak) the model ends with the averaged weights and `last_weights` holds the
    trained ones (BN statistics as the callbacks left them); the caller refreshes BN statistics.  With `select`
    best, the model ends with the weights of the best epoch by `select.monitor` (default `monitor`), as logged by
    the validation callbacks, stopping early after `select.patience` validations without improvement, and
    `selected_state` holds what `keep_with_best()` (a function of no arguments) returned at that epoch.
    Polyak averaging's `start_epoch` counts passes over the data (`steps_per_epoch` steps), not Keras epochs.
    `extra_steps` optimizer steps follow `epochs` (a compute-matched scratch): more Keras epochs of the same length,
    the last cut short so that the stage takes exactly that many steps more; the schedule spans the whole stage.
    """
    keras_epochs, steps = epoch_plan(epochs, steps_per_epoch, min_points)
    total = keras_epochs * steps + extra_steps
    keras_epochs += math.ceil(extra_steps / steps)
    if keras_epochs == 0:
        return StageResult()
    found = None
    if optimizer.learning_rate == "auto":  # a range test on the stage's own model and first batches
        with measure(clock, "training"):
            found = lr_range_test(model, train(0) if callable(train) else train.repeat(), compile_kwargs=compile_kwargs,
                                  optimizer=optimizer, settings=optimizer.lr_find, jit_compile=jit_compile)
        optimizer = dataclasses.replace(optimizer, learning_rate=found.suggested_lr)
    method = averaging.method if averaging is not None else "none"
    model.compile(optimizer=create_optimizer(optimizer, steps, total / steps,
                                             ema_momentum=averaging.momentum if method == "ema" else None),
                  jit_compile=jit_compile, **compile_kwargs)
    log = EpochLog()
    board = [keras.callbacks.TensorBoard(log_dir=tensorboard)] if tensorboard else []
    last = LastWeights() if method != "none" else None
    averages = [PolyakAverage(averaging.start_epoch, steps_per_epoch)] if method == "polyak" else []
    best = (BestEpoch(select.monitor or monitor, select.patience, companion=keep_with_best)
            if select is not None and select.mode == "best" else None)
    stage_callbacks = [StopOnSignal(), *callbacks, *averages, *([last] if last else []), *([best] if best else []),
                       *board, log]
    if total < keras_epochs * steps:  # the last Keras epoch is cut short
        stage_callbacks.insert(1, StopAfterSteps(total, steps))
    start_epoch = 0
    if backup is not None:
        saver = StageBackup(backup, stage_callbacks)
        start_epoch = min(saver.resume_epoch(), keras_epochs)
        stage_callbacks.append(saver)
    data = train(start_epoch * steps) if callable(train) else train.repeat().skip(start_epoch * steps)
    start = time.perf_counter()
    with measure(clock, "training"):
        build_state(model, data)
        model.fit(data, epochs=keras_epochs, steps_per_epoch=steps, validation_data=validation,
                  callbacks=stage_callbacks, verbose=verbose, shuffle=False)
    return StageResult(history=log.history, epochs=keras_epochs, steps_per_epoch=steps,
                       wall_time_s=time.perf_counter() - start,
                       data_epochs=[round(min((i + 1) * steps, total) / steps_per_epoch, 4)
                                    for i in range(keras_epochs)],
                       resumed_from=start_epoch, lr_find=found.record() if found else None,
                       last_weights=last.weights if last else None,
                       selected_epoch=best.best_epoch if best and best.best_weights is not None else None,
                       selected_state=best.best_state if best else None)


def predict_classes(model: keras.Model, images: tf.data.Dataset) -> np.ndarray:
    """Arg-max class of every example of a dataset of image batches (or (images, labels))."""
    logits = model.predict(images, verbose=0)
    return np.argmax(logits, axis=-1)


def accuracy(model: keras.Model, images: tf.data.Dataset, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """(accuracy, predicted classes) of `model` on unshuffled `images` whose labels are `labels`."""
    predicted = predict_classes(model, images)
    return float(np.mean(predicted == labels)), predicted
