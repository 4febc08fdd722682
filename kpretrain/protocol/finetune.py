"""Fine-tuning stage: the downstream head (and unfrozen blocks) on the labelled subset, validated as it goes."""

from __future__ import annotations

import keras

from kpretrain.data.augment import augment_batches
from kpretrain.models.heads import HeadedModel
from kpretrain.protocol.inputs import SeedData
from kpretrain.protocol.results import FinetuneResult
from kpretrain.recipe import Recipe
from kpretrain.training.bn_refresh import bn_state, refresh_batch_norm, set_bn_state, statistics_swapped
from kpretrain.training.callbacks import RefreshedValidation
from kpretrain.training.stages import accuracy, fit_stage
from kpretrain.training.timing import Clock, measure
from kpretrain.training.unfreezing import GradualUnfreezing


def classification_compile_kwargs() -> dict:
    import keras

    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


def finetune_batches(arm: Recipe, inputs: SeedData, train=None):
    """The fine-tuning stage's training batches as a function of the first batch number: the labelled batches (or
    `train`'s), augmented as `finetune.augment` says.  `finetune` and `kpretrain lr-find` both train on these."""
    train = train or inputs.train_batches
    return lambda start: augment_batches(train(start), arm.finetune.augment, inputs.seed, start)


def finetune_steps_per_epoch(arm: Recipe, inputs: SeedData) -> int:
    """Batches per fine-tuning epoch: the labelled subset, at least `finetune.min_steps_per_epoch` batches (capped by
    the budget)."""
    return inputs.steps(max(len(inputs.labelled[1]), arm.finetune.min_steps_per_epoch * inputs.batch_size))


def finetune(model: HeadedModel, arm: Recipe, inputs: SeedData, *, callbacks=(), epochs: int | None = None,
             clock: Clock | None = None, backup: str | None = None, tensorboard: str | None = None,
             train=None, compile_kwargs: dict | None = None, extra_steps: int = 0) -> FinetuneResult:
    """Fit `model` on the labelled subset (augmented as `finetune.augment` says); refreshed validation every
    `evaluation.validate_every` epochs.

    Gradual unfreezing (`transfer.unfreeze`) and validation are set up here, so every caller gets them.  Ends
    with refreshed BN statistics in the model (when `evaluation.bn_refresh`, and always after averaging); the
    result's `raw_bn` holds the statistics training left, and its validation numbers are measured on the model it
    leaves (with `select: best`, the kept epoch's weights with the statistics that epoch was validated with).
    The test split is not touched.
    `backup`: a directory where the stage backs up every epoch and from which an interrupted one resumes;
    `tensorboard`: a directory for its TensorBoard logs.  `train` (a function of the first batch number) and
    `compile_kwargs` replace the labelled batches and the loss (a self-training student's mixed batches).
    `extra_steps`: optimizer steps added after `epochs` (a compute-matched scratch; see `fit_stage`); its history
    then has `epoch`, each validation's position in passes over the labelled subset.
    """
    ev = inputs.recipe.evaluation
    validation = RefreshedValidation(inputs.validation, inputs.y_validation,
                                     inputs.refresh_images() if ev.bn_refresh else None, inputs.bn_batches,
                                     every=ev.validate_every, raw=ev.raw, clock=clock)
    stage_callbacks = [validation]
    unfreezing = None
    if arm.transfer.unfreeze is not None:
        unfreezing = GradualUnfreezing(model.backbone, arm.transfer.frozen_depth, every=arm.transfer.unfreeze.every,
                                       bn=arm.transfer.bn, backbone_lr_factor=arm.transfer.unfreeze.backbone_lr_factor)
        stage_callbacks.insert(0, unfreezing)
    epochs = inputs.epochs(arm.finetune.epochs if epochs is None else epochs)
    keras.utils.set_random_seed(inputs.seed)
    r = inputs.recipe
    result = fit_stage(model, finetune_batches(arm, inputs, train),
                       epochs=epochs, steps_per_epoch=finetune_steps_per_epoch(arm, inputs),
                       optimizer=arm.finetune.optimizer, extra_steps=extra_steps,
                       compile_kwargs=compile_kwargs or classification_compile_kwargs(),
                       callbacks=[*stage_callbacks, *callbacks], jit_compile=r.runtime.jit_compile,
                       verbose=r.runtime.verbose, clock=clock, backup=backup, tensorboard=tensorboard,
                       averaging=arm.finetune.averaging, select=arm.finetune.select, monitor="val_accuracy",
                       keep_with_best=lambda: validation.measured_bn)
    history = {**({"epoch": result.data_epochs} if extra_steps else {}),
               **{k: v for k, v in result.history.items() if not k.startswith("val_")}, **validation.records}
    last = {k: v[-1] for k, v in validation.records.items()}
    raw_bn = validation.raw_bn or []
    selected = result.selected_epoch
    if selected is not None and selected + 1 < len(validation.records["val_accuracy"]):
        last, raw_bn = _selected(model, inputs, result.selected_state, clock)
    averaging = None
    if result.last_weights is not None:
        last, averaging, raw_bn = _averaged(model, inputs, arm, last, validation.raw_bn, result.last_weights, clock)
    return FinetuneResult(
        history=history, epochs=epochs, val_accuracy=last["val_accuracy"], val_accuracy_raw=last["val_accuracy_raw"],
        val_accuracy_refreshed=last.get("val_accuracy_refreshed"), wall_time_s=result.wall_time_s,
        unfreeze_schedule=[[int(e), list(b)] for e, b in unfreezing.schedule] if unfreezing else None,
        steps_per_epoch=result.steps_per_epoch, lr_find=result.lr_find, averaging=averaging,
        last_weights=result.last_weights, selected_epoch=None if selected is None else selected + 1, raw_bn=raw_bn,
        resumed_from=result.resumed_from, extra_steps=extra_steps or None)


def _selected(model: HeadedModel, inputs: SeedData, measured_bn: list | None, clock: Clock | None):
    """The model holds an earlier epoch's weights with the statistics training had then (`select: best`): give it
    the statistics that epoch's validation measured with (`measured_bn`, None when it measured with the model's
    own), and validate it again (the number recorded for that epoch).  Returns (validation numbers, raw BN)."""
    raw_bn = bn_state(model)
    with measure(clock, "evaluation"):
        if measured_bn is None and inputs.recipe.evaluation.bn_refresh:  # a backup from before 0.5.1 lacks them
            refresh_batch_norm(model, inputs.refresh_images(), inputs.bn_batches)
            measured_bn = bn_state(model)
        if measured_bn is not None:
            set_bn_state(model, measured_bn)
        measured = accuracy(model, inputs.validation, inputs.y_validation)[0]
        if measured_bn is None:
            return {"val_accuracy": measured, "val_accuracy_raw": measured, "val_accuracy_refreshed": None}, raw_bn
        with statistics_swapped(model, raw_bn):
            raw = accuracy(model, inputs.validation, inputs.y_validation)[0]
    return {"val_accuracy": measured, "val_accuracy_raw": raw, "val_accuracy_refreshed": measured}, raw_bn


def _averaged(model: HeadedModel, inputs: SeedData, arm: Recipe, last: dict, raw_bn: list | None,
              last_weights: list, clock: Clock | None):
    """The model holds averaged weights: refresh BN for them (always: averages of weights do not match the
    statistics training left) and validate them, with the stale statistics too; the last trained weights are
    validated refreshed as well, so the three numbers compare weights, not statistics.
    Returns (validation numbers, the `averaging` record, raw BN)."""
    with measure(clock, "evaluation"):
        stale = raw_bn or bn_state(model)  # the statistics training left (the validation refreshed after them)
        last_accuracy = last["val_accuracy"]
        if raw_bn is None:  # `evaluation.bn_refresh: false`: the last weights were validated with stale statistics
            averaged = model.get_weights()
            model.set_weights(last_weights)
            refresh_batch_norm(model, inputs.refresh_images(), inputs.bn_batches)
            last_accuracy = accuracy(model, inputs.validation, inputs.y_validation)[0]
            model.set_weights(averaged)
        set_bn_state(model, stale)
        raw = accuracy(model, inputs.validation, inputs.y_validation)[0]
        refresh_batch_norm(model, inputs.refresh_images(), inputs.bn_batches)
        refreshed = accuracy(model, inputs.validation, inputs.y_validation)[0]
    record = {"method": arm.finetune.averaging.method, "val_accuracy_last": last_accuracy,
              "val_accuracy_averaged_raw": raw, "val_accuracy_averaged": refreshed}
    return {"val_accuracy": refreshed, "val_accuracy_raw": raw, "val_accuracy_refreshed": refreshed}, record, stale
