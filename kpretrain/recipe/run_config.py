"""The recipe sections on how a run is evaluated (`evaluation`), executed (`runtime`) and searched (`tune`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from kpretrain.recipe.fields import _spec

LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")  # runtime.loggers (kpretrain/training/loggers.py)
EXECUTORS = ("local", "dask")  # runtime.executor (kpretrain/experiment/executor.py)


@dataclass
class EvaluationConfig:
    """How the final evaluation is made."""

    knn: bool = _spec(default=True, doc="kNN accuracy (k=20, cosine) of the transferred backbone's features")
    bn_refresh: bool = _spec(default=True, doc="recompute BN moving statistics on training batches before the final evaluation")
    bn_refresh_batches: int = _spec(default=50, minimum=1, doc="at most this many training batches for the refresh")
    bn_warn_points: float = _spec(default=2.0, minimum=0.0, doc="warn when raw and refreshed accuracy differ by more (points)")
    raw: str = _spec(default="final", choices=("final", "every_epoch"),
                     doc="stale-BN (raw) accuracy: at the last epoch (validation and test) or at every validation")
    validate_every: int = _spec(default=1, minimum=1, doc="validate every k fine-tuning epochs; the last always")


@dataclass
class RuntimeConfig:
    """How training runs."""

    deterministic: Optional[bool] = _spec(default=None, doc="TensorFlow op determinism; null = on, unless jit_compile")
    mixed_precision: bool = _spec(default=False)
    jit_compile: bool = _spec(default=False)
    distribute: str = _spec(default="none", choices=("none", "mirrored", "multi_worker"))
    threads: Optional[int] = _spec(default=None, minimum=1,
                                   doc="TensorFlow's intra-op threads in every process of the run (null: its default, "
                                       "every core); on the CPU the count changes the last bits of results")
    executor: str = _spec(default="local", choices=EXECUTORS,
                          doc="local: units one after another in this process; dask: units spread over the workers "
                              "of a Dask cluster (`--workers N` starts one here, `--address` joins one), same numbers")
    verbose: int = _spec(default=0, minimum=0, maximum=2, doc="Keras fit verbosity")
    tensorboard: bool = _spec(default=False, doc="deprecated: true means runtime.loggers includes tensorboard")
    loggers: list = _spec(default_factory=list, choices=LOGGERS,
                          doc="per unit and stage: csv (logs/<seed>/<arm>/<stage>.csv), tensorboard "
                              "(tb/<seed>/<arm>/<stage>/, with HParams and test metrics), mlflow (one MLflow run), "
                              "wandb (one W&B run, grouped by arm)")

    @property
    def op_determinism(self) -> bool:
        """Whether reruns are made identical: `deterministic`, by default on unless `jit_compile` (XLA is off
        under op determinism)."""
        return (not self.jit_compile) if self.deterministic is None else self.deterministic

    @property
    def active_loggers(self) -> tuple[str, ...]:
        """The loggers every unit and stage gets: `loggers` in order without repeats, and tensorboard when the
        deprecated `tensorboard: true` asks for it."""
        names = [*self.loggers, *(["tensorboard"] if self.tensorboard else [])]
        return tuple(dict.fromkeys(names))


@dataclass
class TuneConfig:
    """What `kpretrain tune` searches (KerasTuner): space over any recipe key, objective on validation."""

    objective: str = _spec(default="val_accuracy", choices=("val_accuracy",), doc="downstream validation metric, maximised")
    space: dict = _spec(default_factory=dict, doc="recipe key -> {int: [lo, hi]} | {float: [lo, hi], sampling: log} | {choice: [...]}")
    tuner: str = _spec(default="random", choices=("random", "bayesian", "hyperband", "grid"),
                       doc="grid: every combination (int and choice dimensions, floats with a step), in order")
    max_trials: int = _spec(default=10, minimum=1)
    arm: Optional[str] = _spec(default=None, doc="arm whose protocol is searched; null = the first non-baseline arm")
