"""Pre-training stage: the arm's pretext task on unlabelled images (never validation or test images)."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np

from kpretrain.data import image_batches, labelled_batches
from kpretrain.models.freezing import freeze_to_depth
from kpretrain.pretext import create_task
from kpretrain.protocol.inputs import SeedData
from kpretrain.protocol.results import PretrainResult
from kpretrain.recipe import Recipe
from kpretrain.protocol.evaluate import KNN_K, all_statistics_refreshed, confusion_matrix
from kpretrain.training.bn_refresh import refresh_batch_norm
from kpretrain.training.head_init import fit_logistic_regression
from kpretrain.training.knn import backbone_features, knn_predict
from kpretrain.training.probes import ProbeCallback, balanced_subset
from kpretrain.training.callbacks import RefreshedEvaluation
from kpretrain.training.stages import epoch_plan, fit_stage
from kpretrain.training.timing import Clock, measure

PRETEXT_CURVE_POINTS = 4  # a short pre-training stage is validated at least this often


PRETRAINING_EVALUATION = ("bn_refresh", "bn_refresh_batches", "raw")  # what pre-training's validation reads


def pretraining_key(arm: Recipe, recipe: Recipe) -> str:
    """What makes two pre-trainings of a seed identical: the one definition that a run (arms sharing weights), a
    sweep (points sharing them) and a tuner search (trials sharing them) all read.

    The arm's pre-training and backbone sections; the run's data (pre-training reads the labelled subset and the
    unlabelled pool together, which `labels_per_class` does not change, unless a probe reads the labelled subset);
    and the evaluation settings its validation reads (with `select: best` they choose the checkpoint)."""
    plain, run = arm.to_dict(), recipe.to_dict()
    data = {k: v for k, v in run["data"].items() if k != "labels_per_class" or arm.pretrain.probe is not None}
    evaluation = {k: run["evaluation"][k] for k in PRETRAINING_EVALUATION}
    return json.dumps({"pretrain": plain["pretrain"], "backbone": plain["backbone"], "data": data,
                       "evaluation": evaluation}, sort_keys=True, default=str)


def pretraining_images(arm: Recipe, inputs: SeedData):
    """(train images, validation images, train labels, validation labels, source name, num_classes).

    On the downstream data set: the labelled subset and the unlabelled pool (validation held out as it is
    downstream).  On another data set: a seeded 10 % (at most 1,000) validation hold-out of its train split.
    """
    r, split, seed = inputs.recipe, inputs.split, inputs.seed
    source = arm.pretrain.dataset or r.data.dataset
    if source == r.data.dataset:
        pool = np.sort(np.concatenate([split.labelled, split.unlabelled]))
        d = inputs.data
        return d.x_train[pool], d.x_train[split.validation], None, None, source, d.num_classes
    other = inputs.pretrain_data[source]
    held = np.random.default_rng(seed).permutation(len(other.y_train))
    n_val = _held_out(len(held))
    train, val = np.sort(held[n_val:]), np.sort(held[:n_val])
    return (other.x_train[train], other.x_train[val], other.y_train[train], other.y_train[val], source,
            other.num_classes)


def _held_out(n: int) -> int:
    """Validation images held out of another data set's `n` train images for pre-training."""
    return min(1000, n // 10)


def pretraining_steps(arm: Recipe, inputs: SeedData) -> int:
    """The optimizer steps the arm's pre-training stage takes, known before it runs (what a compute-matched scratch
    adds to its fine-tuning).

    As `pretrain` plans them: its epochs (capped by the budget) of batches of `data.batch_size` images drawn from
    `pretraining_images`' pool (or a synthetic task's `images_per_epoch`), cut into Keras epochs by `epoch_plan`.  A
    step is one batch and one optimizer update, whatever the task makes of the batch (two views of each image, say).
    An early stop (`pretrain.select.patience`) and the range test of `learning_rate: auto` are not counted.

    Args:
        arm: an arm's resolved recipe that pre-trains.
        inputs: the seed's data.

    Returns:
        The number of steps.
    """
    task = create_task(arm.pretrain.task, arm.pretrain.options, seed=inputs.seed, num_classes=inputs.data.num_classes)
    keras_epochs, steps = epoch_plan(inputs.epochs(arm.pretrain.epochs),
                                     inputs.steps(epoch_images(arm, inputs, task), True), PRETEXT_CURVE_POINTS)
    return keras_epochs * steps


def epoch_images(arm: Recipe, inputs: SeedData, task) -> int:
    """Images in one pass of pre-training: a synthetic task's `images_per_epoch`, else the size of the pool that
    `pretraining_images` draws (counted without loading it)."""
    r, split = inputs.recipe, inputs.split
    source = arm.pretrain.dataset or r.data.dataset
    if source == r.data.dataset:
        pool = len(split.labelled) + len(split.unlabelled)
    else:
        n = len(inputs.pretrain_data[source].y_train)
        pool = n - _held_out(n)
    return getattr(task, "images_per_epoch", None) or pool


@dataclasses.dataclass
class PretextStage:
    """What pre-training trains: the pretext model on the backbone, its endless batches from batch `start` on
    (`train(start)`), its validation batches, and where the images come from."""

    task: object
    model: keras.Model
    train: object
    validation: object
    source: str
    images: int
    steps_per_epoch: int


def pretext_stage(backbone: keras.Model, arm: Recipe, inputs: SeedData) -> PretextStage:
    """The arm's pretext task on `backbone` (every block trainable) and its data, ready to fit."""
    seed, batch = inputs.seed, inputs.batch_size
    freeze_to_depth(backbone, 0)
    keras.utils.set_random_seed(seed)
    x_pre, x_val, y_pre, y_val, source, num_classes = pretraining_images(arm, inputs)
    task = create_task(arm.pretrain.task, arm.pretrain.options, seed=seed, num_classes=num_classes)
    model = task.build_model(backbone, seed=seed, **({"head": arm.pretrain.head} if arm.pretrain.head else {}))
    if task.needs_labels:
        def train(start):
            return task.make_dataset(labelled_batches(x_pre, y_pre, batch, shuffle=True, seed=seed, drop_remainder=True,
                                                      start=start, repeat=True), start)
        validation = task.make_dataset(labelled_batches(x_val, y_val, batch, shuffle=False, seed=seed)).cache()
    elif task.generates_images:  # synthetic: draws its own images, of the data's shape
        def train(start):
            return task.generated_batches(batch, x_pre.shape[1:], start)
        validation = task.validation_batches(batch, x_pre.shape[1:], max(1, -(-len(x_val) // batch))).cache()
    else:
        def train(start):
            return task.make_dataset(image_batches(x_pre, batch, shuffle=True, seed=seed, drop_remainder=True,
                                                   start=start, repeat=True), start)
        # other labels than training's (another seed), the same meaning of each label (jigsaw's permutations)
        val_task = create_task(arm.pretrain.task, arm.pretrain.options, seed=seed + 10_000).match_labels(task)
        validation = val_task.make_dataset(image_batches(x_val, batch, shuffle=False, seed=seed,
                                                         drop_remainder=len(x_val) >= batch)).cache()
    images = epoch_images(arm, inputs, task)
    return PretextStage(task, model, train, validation, source, images, inputs.steps(images, True))


def backbone_probe(backbone: keras.Model, arm: Recipe, inputs: SeedData):
    """`pretrain.probe` as a function: {linear and/or knn: (validation accuracy, validation confusion matrix)} of a
    classifier on the backbone's frozen features (every BN layer refreshed on the labelled images, restored after)
    of the labelled subset."""
    cfg, num_classes = arm.pretrain.probe, inputs.data.num_classes
    x, y = inputs.labelled
    keep = balanced_subset(y, cfg.labels_per_class)
    images = image_batches(x[keep], inputs.batch_size, shuffle=False, seed=inputs.seed)

    def probe() -> dict:
        with all_statistics_refreshed(backbone, inputs):
            memory = backbone_features(backbone, images)
            queries = backbone_features(backbone, inputs.validation)
        predicted = {}
        if cfg.method in ("linear", "both"):
            kernel, bias = fit_logistic_regression(memory, y[keep], num_classes)
            predicted["linear"] = np.argmax(queries @ kernel + bias, axis=1)
        if cfg.method in ("knn", "both"):
            predicted["knn"] = knn_predict(memory, y[keep], queries, num_classes=num_classes, k=min(KNN_K, len(keep)))
        truth = inputs.y_validation
        return {name: (float(np.mean(guess == truth)), confusion_matrix(truth, guess, num_classes).tolist())
                for name, guess in predicted.items()}

    return probe


def pretrain(backbone: keras.Model, arm: Recipe, inputs: SeedData, *, epochs: float | None = None,
             clock: Clock | None = None, backup: str | None = None, callbacks=()) -> PretrainResult:
    """Train the whole `backbone` (in place) with the arm's pretext task; returns its curve and the trained weights.

    `backup`: a directory where the stage backs up every epoch and from which an interrupted one resumes;
    `callbacks`: the user's own Keras callbacks (and the loggers')."""
    r = inputs.recipe
    stage = pretext_stage(backbone, arm, inputs)
    task, model, train, validation, source = stage.task, stage.model, stage.train, stage.validation, stage.source
    epochs = inputs.epochs(arm.pretrain.epochs if epochs is None else epochs)
    evaluation = RefreshedEvaluation(validation, train(0) if r.evaluation.bn_refresh else None, inputs.bn_batches,
                                     raw=r.evaluation.raw, clock=clock)
    stage_callbacks, select, probing = [evaluation], arm.pretrain.select, None
    if arm.pretrain.probe is not None:
        probing = ProbeCallback(backbone_probe(backbone, arm, inputs), arm.pretrain.probe.every,
                                stage.steps_per_epoch, clock=clock)
        stage_callbacks.append(probing)
        if select.mode == "probe":  # the checkpoint with the best probe score: `best` on the probe's log
            probed = "knn" if arm.pretrain.probe.method == "knn" else "linear"
            select = dataclasses.replace(select, mode="best", monitor=select.monitor or f"val_probe_{probed}")
    result = fit_stage(model, train, epochs=epochs, steps_per_epoch=stage.steps_per_epoch,
                       optimizer=arm.pretrain.optimizer, compile_kwargs=task.compile_kwargs(),
                       callbacks=[*stage_callbacks, *callbacks],
                       jit_compile=r.runtime.jit_compile, verbose=r.runtime.verbose, min_points=PRETEXT_CURVE_POINTS,
                       clock=clock, backup=backup, averaging=arm.pretrain.averaging,
                       select=select, monitor=f"val_{task.monitor}")
    monitor = task.monitor
    history = {**{k: v for k, v in result.history.items() if not k.startswith("val_")}, **evaluation.records,
               **(probing.records if probing is not None else {})}
    finals = [v for v in history.get(f"val_{monitor}", []) if v is not None]
    selected = result.selected_epoch
    if selected is not None:  # the best epoch's weights (its training statistics): what transfers
        finals.append(history[f"val_{monitor}"][selected])
    averaging = None
    if result.last_weights is not None:  # averaged weights: BN statistics refreshed for them, then validated
        with measure(clock, "evaluation"):
            refresh_batch_norm(model, train(0), inputs.bn_batches)
            averaged = evaluation.measure()[monitor]
        averaging = {"method": arm.pretrain.averaging.method, f"val_{monitor}_last": finals[-1] if finals else None,
                     f"val_{monitor}_averaged": averaged}
        finals.append(averaged)
    return PretrainResult(
        task=arm.pretrain.task, dataset=source, images=stage.images, epochs=epochs,
        steps_per_epoch=result.steps_per_epoch, monitor=monitor, history={"epoch": result.data_epochs, **history},
        final_val_accuracy=finals[-1] if finals else float("nan"), wall_time_s=result.wall_time_s,
        seconds=clock.split() if clock is not None else {}, weights=tuple(backbone.get_weights()),
        resumed_from=result.resumed_from, lr_find=result.lr_find, averaging=averaging,
        selected_epoch=None if selected is None else result.data_epochs[selected],
        probe_confusion=probing.confusions if probing is not None else None)


def shared(result: PretrainResult, unit: str, arms) -> PretrainResult:
    """`result` named as the pre-training unit `unit`, used by `arms`."""
    return dataclasses.replace(result, unit=unit, arms=tuple(arms))
