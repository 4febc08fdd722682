"""The one place that orders the stages of a unit (seed x arm): `kpretrain run` and tuner trials both call it."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import keras
import numpy as np

from kpretrain.models.backbones import configured_backbone
from kpretrain.models.heads import HeadedModel, attach_head, create_head
from kpretrain.models.loading import load_backbone
from kpretrain.protocol.evaluate import evaluate_test, knn_test_accuracy
from kpretrain.protocol.finetune import finetune
from kpretrain.protocol.inputs import SeedData
from kpretrain.protocol.pretrain import pretrain
from kpretrain.protocol.results import PretrainResult, UnitResult
from kpretrain.protocol.selftrain import self_train
from kpretrain.protocol.transfer import transfer
from kpretrain.recipe import Recipe, TransferConfig, pretrains
from kpretrain.training import interruption
from kpretrain.training.timing import Clock


def initial_backbone(arm: Recipe, inputs: SeedData) -> keras.Model:
    """The arm's backbone before pre-training: loaded from `backbone.from`, or random weights of the seed."""
    if arm.backbone.from_:
        backbone, info = load_backbone(arm.backbone.from_, inputs.data.image_shape)
        inputs.sources[arm.backbone.from_] = info
        return backbone
    return configured_backbone(arm.backbone, inputs.data.image_shape, seed=inputs.seed)


def backbone_source(arm: Recipe, inputs: SeedData) -> dict | None:
    """What loading the arm's `backbone.from` found (format, depth choices, metadata), once `initial_backbone` loaded
    it for `inputs`; None for an arm without `backbone.from`."""
    return inputs.sources.get(arm.backbone.from_) if arm.backbone.from_ else None


def build_model(arm: Recipe, inputs: SeedData) -> HeadedModel:
    """The downstream model before any stage: initial backbone and a fresh head (the same head in every arm)."""
    keras.utils.set_random_seed(inputs.seed)
    backbone = initial_backbone(arm, inputs)
    head = create_head(arm.finetune.head, backbone.output_shape[-1], inputs.data.num_classes, seed=inputs.seed,
                       name="downstream_head")
    return attach_head(backbone, head)


def run_unit(arm: Recipe, inputs: SeedData, *, name: str = "", model: HeadedModel | None = None,
             pretrained: PretrainResult | None = None, callbacks=(), test: bool = True,
             scope: Callable = contextlib.nullcontext, backup: str | None = None, pretrain_callbacks=(),
             extra_steps: int = 0) -> UnitResult:
    """Pre-train (or take `pretrained` weights), transfer, fine-tune, evaluate one arm for one seed.

    `model` (from `build_model`, nothing trained yet) is trained in place.
    `test=False` (tuner trials) touches neither the test split nor kNN.  `callbacks` go to fine-tuning,
    `pretrain_callbacks` to pre-training.
    `backup`: path prefix of the stages' backup directories (`<backup>.pretrain.backup`, `<backup>.finetune.backup`),
    from which stages interrupted earlier resume.  `extra_steps`: optimizer steps added to fine-tuning (a
    compute-matched scratch, which never self-trains).
    """
    clock = Clock()
    with scope():
        model = model if model is not None else build_model(arm, inputs)
        backbone = model.backbone
        pretrained, transferred = pretrain_and_transfer(model, arm, inputs, pretrained=pretrained, clock=clock,
                                                        backup=backup, callbacks=pretrain_callbacks)
        knn = knn_test_accuracy(backbone, inputs, clock=clock) if test and inputs.recipe.evaluation.knn else None
        interruption.check()
        selftrained = None
        if arm.selftrain is None:
            finetuned = finetune(model, arm, inputs, callbacks=callbacks, clock=clock,
                                 backup=_stage(backup, "finetune"), extra_steps=extra_steps)
        else:
            def make_model(init: str) -> HeadedModel:
                return starting_model(arm, inputs, init, pretrained, clock=clock)

            teacher = model if arm.selftrain.teacher_init == "pretrained" else make_model("scratch")
            model, finetuned, selftrained = self_train(teacher, arm, inputs, make_model=make_model,
                                                       callbacks=callbacks, clock=clock,
                                                       backup=lambda stage: _stage(backup, stage))
        trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        tested = evaluate_test(model, inputs, finetuned, clock=clock) if test else None
    return UnitResult(seed=inputs.seed, arm=name, transfer=transferred, finetune=finetuned, trainable_params=trainable,
                      seconds=clock.split(), pretrain=pretrained, test=tested, knn_accuracy=knn, model=model,
                      selftrain=selftrained)


def starting_model(arm: Recipe, inputs: SeedData, init: str, pretrained: PretrainResult | None, *,
                   clock: Clock | None = None) -> HeadedModel:
    """A new downstream model: `pretrained` = the arm's backbone as transfer hands it over (pre-trained weights,
    or `backbone.from`), `scratch` = random weights of the seed, nothing frozen (the matched scratch's start)."""
    if init == "scratch":
        arm = dataclasses.replace(arm, backbone=dataclasses.replace(arm.backbone, from_=None),
                                  transfer=TransferConfig())
    elif pretrains(arm) and pretrained is None:
        raise ValueError("a pre-trained starting model needs the arm's pre-training result")
    model = build_model(arm, inputs)
    if init == "pretrained" and pretrains(arm):
        model.backbone.set_weights(list(pretrained.weights))
    transfer(model, arm, inputs, clock=clock)
    return model



def pretrain_and_transfer(model: HeadedModel, arm: Recipe, inputs: SeedData, *,
                          pretrained: PretrainResult | None = None, clock: Clock | None = None,
                          backup: str | None = None, callbacks=()):
    """What comes before fine-tuning: the arm's pre-training (or the `pretrained` weights given), then transfer.
    Returns (PretrainResult or None, TransferResult)."""
    if pretrains(arm):
        if pretrained is None:
            pretrained = pretrain(model.backbone, arm, inputs, clock=clock, backup=_stage(backup, "pretrain"),
                                  callbacks=callbacks)
        else:
            model.backbone.set_weights(list(pretrained.weights))
    return pretrained, transfer(model, arm, inputs, clock=clock)


def _stage(backup: str | None, stage: str) -> str | None:
    return None if backup is None else f"{backup}.{stage}.backup"
