"""`kpretrain lr-find`: the learning-rate range test of one stage of an arm, on the model and data a run trains."""

from __future__ import annotations

import contextlib
from typing import Callable

from kpretrain.errors import RecipeError
from kpretrain.protocol.finetune import classification_compile_kwargs, finetune_batches
from kpretrain.protocol.inputs import SeedData
from kpretrain.protocol.pretrain import pretext_stage
from kpretrain.protocol.unit import build_model, pretrain_and_transfer
from kpretrain.recipe import LRFindConfig, Recipe, pretrains
from kpretrain.training.lr_finder import LRFindResult, lr_range_test


def find_learning_rate(arm: Recipe, inputs: SeedData, stage: str, settings: LRFindConfig | None = None, *,
                       name: str = "", scope: Callable = contextlib.nullcontext) -> LRFindResult:
    """The range test of `arm`'s `stage` ('pretrain' or 'finetune') for one seed; fine-tuning's comes after the
    arm's pre-training and transfer, as in `run_unit`, on the stage's own batches (augmented as the stage
    augments them), as `learning_rate: auto` does.  Nothing is kept: the weights are restored after the test."""
    jit = inputs.recipe.runtime.jit_compile
    with scope():
        model = build_model(arm, inputs)
        if stage == "pretrain":
            if not pretrains(arm):
                raise RecipeError(f"--stage pretrain: arm {name or arm.name!r} has no pre-training "
                                  f"(pretrain.task {arm.pretrain.task}, epochs {arm.pretrain.epochs}); pick an arm "
                                  f"that pre-trains with --arm, or --stage finetune")
            pretext = pretext_stage(model.backbone, arm, inputs)
            return lr_range_test(pretext.model, pretext.train(0), compile_kwargs=pretext.task.compile_kwargs(),
                                 optimizer=arm.pretrain.optimizer, settings=settings or arm.pretrain.optimizer.lr_find,
                                 jit_compile=jit)
        pretrain_and_transfer(model, arm, inputs)
        return lr_range_test(model, finetune_batches(arm, inputs)(0), compile_kwargs=classification_compile_kwargs(),
                             optimizer=arm.finetune.optimizer, settings=settings or arm.finetune.optimizer.lr_find,
                             jit_compile=jit)
