"""The recipe settings every training stage has (`pretrain.X` and `finetune.X`): the optimizer with its
learning-rate range test (`optimizer`, `optimizer.lr_find`), weight averaging (`averaging`) and which epoch's weights
the stage ends with (`select`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from kpretrain.recipe.fields import _spec


@dataclass
class LRFindConfig:
    """The learning-rate range test (`kpretrain lr-find`, and `learning_rate: auto`)."""

    start_lr: float = _spec(default=1e-7, minimum=0.0, doc="first learning rate")
    end_lr: float = _spec(default=10.0, minimum=0.0, doc="last learning rate (the test stops earlier once the loss diverges)")
    steps: int = _spec(default=200, minimum=3, doc="batches, the learning rate growing exponentially")
    suggestion: str = _spec(default="steepest", choices=("steepest", "valley", "minimum"),
                            doc="steepest descent of the smoothed loss | fastai's valley | minimum / 10")
    beta: float = _spec(default=0.98, minimum=0.0, maximum=0.999, doc="smoothing of the loss (bias-corrected EMA)")
    diverge: float = _spec(default=4.0, minimum=1.0, doc="stop once the smoothed loss exceeds this x its minimum")


@dataclass
class OptimizerConfig:
    """Optimizer and learning-rate schedule of one stage."""

    name: str = _spec(default="adam", choices=("adam", "adamw", "sgd", "rmsprop"))
    learning_rate: Union[float, Literal["auto"]] = _spec(default=1e-3, minimum=0.0, maximum=10.0,
                                                         doc="or auto: a range test just before the stage picks it")
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    schedule: str = _spec(default="constant", choices=("constant", "cosine"))
    warmup_epochs: float = _spec(default=0.0, minimum=0.0)
    weight_decay: float = _spec(default=0.0, minimum=0.0)
    momentum: float = _spec(default=0.9, minimum=0.0, maximum=1.0, doc="for sgd and rmsprop")


@dataclass
class AveragingConfig:
    """Weight averaging of a stage, followed by a batch-norm refresh; a bare string is shorthand for `method`."""

    SHORTHAND = "method"
    method: str = _spec(default="none", choices=("none", "ema", "polyak"),
                        doc="ema: Keras optimizer EMA | polyak: uniform average from start_epoch on")
    momentum: float = _spec(default=0.99, minimum=0.0, maximum=1.0, doc="ema only")
    start_epoch: float = _spec(default=0.0, minimum=0.0, doc="polyak only: average after this many passes over the data")


@dataclass
class SelectConfig:
    """Which epoch's weights a stage ends with; a bare string is shorthand for `mode`."""

    SHORTHAND = "mode"
    mode: str = _spec(default="last", choices=("last", "best", "probe"),
                      doc="best: the best validated epoch | probe (pre-training): the best probe score; never test")
    monitor: Optional[str] = _spec(default=None, doc="logged validation metric; null = refreshed validation accuracy "
                                                     "(fine-tuning), the task's validation metric (pre-training)")
    patience: Optional[int] = _spec(default=None, minimum=1, doc="stop after this many validations without a new best")
