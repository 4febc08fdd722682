"""Fine-tuning stage: the downstream head (and unfrozen blocks) on the labelled subset, validated as it goes."""

from __future__ import annotations

import keras

from kpretrain.data.augment import augment_batches
from kpretrain.models.heads import HeadedModel
from kpretrain.protocol.inputs import SeedData
from kpretrain.protocol.results import FinetuneResult
from kpretrain.recipe import Recipe
from kpretrain.training.bn_refresh import bn_state, refresh_batch_norm, set_bn_state
from kpretrain.training.callbacks import RefreshedValidation
from kpretrain.training.stages import accuracy, fit_stage
from kpretrain.training.timing import Clock, measure
from kpretrain.training.unfreezing import GradualUnfreezing


def classification_compile_kwargs() -> dict:
    import keras

    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


def finetune(model: HeadedModel, arm: Recipe, inputs: SeedData, *, callbacks=(), epochs: int | None = None,
             clock: Clock | None = None, backup: str | None = None, tensorboard: str | None = None,
             train=None, compile_kwargs: dict | None = None) -> FinetuneResult:
    """Fit `model` on the labelled subset (augmented as `finetune.augment` says); refreshed validation every
    `evaluation.validate_every` epochs.

    Gradual unfreezing (`transfer.unfreeze`) and validation are set up here, so every caller gets them.  Ends
    with refreshed BN statistics in the model (when `evaluation.bn_refresh`); the test split is not touched.
    `backup`: a directory where the stage backs up every epoch and from which an interrupted one resumes;
    `tensorboard`: a directory for its TensorBoard logs.  `train` (a function of the first batch number) and
    `compile_kwargs` replace the labelled batches and the loss (a self-training student's mixed batches).
    """
    r = inputs.recipe
    ev = r.evaluation
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
    examples = max(len(inputs.labelled[1]), arm.finetune.min_steps_per_epoch * inputs.batch_size)
    train = train or inputs.train_batches
    result = fit_stage(model, lambda start: augment_batches(train(start), arm.finetune.augment, inputs.seed, start),
                       epochs=epochs, steps_per_epoch=inputs.steps(examples), optimizer=arm.finetune.optimizer,
                       compile_kwargs=compile_kwargs or classification_compile_kwargs(),
                       callbacks=[*stage_callbacks, *callbacks], jit_compile=r.runtime.jit_compile,
                       verbose=r.runtime.verbose, clock=clock, backup=backup, tensorboard=tensorboard,
                       averaging=arm.finetune.averaging, select=arm.finetune.select, monitor="val_accuracy")
    history = {**{k: v for k, v in result.history.items() if not k.startswith("val_")}, **validation.records}
    last = {k: v[-1] for k, v in validation.records.items()}
    raw_bn = validation.raw_bn or []
    selected = result.selected_epoch
    if selected is not None and selected + 1 < len(validation.records["val_accuracy"]):
        # the model holds an earlier epoch's weights with the statistics training had then: refresh them as its
        # validation did, and validate again (the same number as recorded for that epoch)
        raw_bn = bn_state(model)
        with measure(clock, "evaluation"):
            if ev.bn_refresh:
                refresh_batch_norm(model, inputs.refresh_images(), inputs.bn_batches)
            measured = accuracy(model, inputs.validation, inputs.y_validation)[0]
            kept = bn_state(model)
            set_bn_state(model, raw_bn)
            raw = accuracy(model, inputs.validation, inputs.y_validation)[0]
            set_bn_state(model, kept)
        last = {"val_accuracy": measured, "val_accuracy_raw": raw,
                "val_accuracy_refreshed": measured if ev.bn_refresh else None}
    averaging = None
    if result.last_weights is not None:  # the model holds the averaged weights: refresh BN for them, validate them
        with measure(clock, "evaluation"):
            refresh_batch_norm(model, inputs.refresh_images(), inputs.bn_batches)
            refreshed = accuracy(model, inputs.validation, inputs.y_validation)[0]
            kept = bn_state(model)
            set_bn_state(model, validation.raw_bn or kept)
            raw = accuracy(model, inputs.validation, inputs.y_validation)[0]
            set_bn_state(model, kept)
        averaging = {"method": arm.finetune.averaging.method, "val_accuracy_last": last["val_accuracy"],
                     "val_accuracy_averaged_raw": raw, "val_accuracy_averaged": refreshed}
        last = {**last, "val_accuracy": refreshed, "val_accuracy_raw": raw,
                "val_accuracy_refreshed": refreshed if ev.bn_refresh else None}
    return FinetuneResult(
        history=history, epochs=epochs, val_accuracy=last["val_accuracy"], val_accuracy_raw=last["val_accuracy_raw"],
        val_accuracy_refreshed=last.get("val_accuracy_refreshed"), wall_time_s=result.wall_time_s,
        unfreeze_schedule=[[int(e), list(b)] for e, b in unfreezing.schedule] if unfreezing else None,
        steps_per_epoch=result.steps_per_epoch, lr_find=result.lr_find, averaging=averaging,
        last_weights=result.last_weights, selected_epoch=None if selected is None else selected + 1, raw_bn=raw_bn, resumed_from=result.resumed_from)
