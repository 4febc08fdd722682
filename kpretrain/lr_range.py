"""`kpretrain lr-find` and `kpretrain.lr_find`: the learning-rate range test of one stage of one arm, as the command
runs it.  `plan_lr_find` picks the arm and the settings and checks them (no TensorFlow: bad input is found before
it starts); `run_lr_find` tests the stage's real model on its own batches for the recipe's first seed
(`protocol.lr_find.find_learning_rate`) and writes `lr_find.json` and `lr_find.png`.

Not named `lr_find`: a submodule `kpretrain/lr_find.py` would shadow the API function `kpretrain.lr_find` once
imported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING, Callable

from kpretrain.errors import InputError
from kpretrain.recipe import LRFindConfig, Recipe, pretrains
from kpretrain.recipe.values import format_value

if TYPE_CHECKING:  # imports Keras
    from kpretrain.training.lr_finder import LRFindResult

STAGES = ("pretrain", "finetune")
SUGGESTIONS = ("steepest", "valley", "minimum")
SMOKE_STEPS = 50  # with smoke: at most this many steps, unless `steps` is given


@dataclasses.dataclass(frozen=True)
class LRFindPlan:
    """A range test, checked and not yet run: what `run_lr_find` does.

    Attributes:
        recipe: the validated recipe.
        arm: the name of the arm tested.
        stage: "pretrain" or "finetune" (fine-tuning comes after the arm's pre-training and transfer).
        seed: the seed whose data and initialisation are used (the recipe's first).
        settings: the stage's `optimizer.lr_find` with the values given.
        smoke: tiny data (the recipe's `--smoke` data).
        out: the directory `lr_find.json` and `lr_find.png` are written to.
    """

    recipe: Recipe
    arm: str
    stage: str
    seed: int
    settings: LRFindConfig
    smoke: bool
    out: str

    def describe(self) -> str:
        """The line `kpretrain lr-find` prints before the test starts."""
        s, after = self.settings, ""
        if self.stage == "finetune" and pretrains(self.recipe.arm_recipes()[self.arm]):
            after = " (after the arm's pre-training)"
        return (f"lr-find {self.recipe.name}: arm {self.arm}, stage {self.stage}, seed {self.seed}: {s.steps} steps "
                f"from {s.start_lr:g} to {s.end_lr:g}{after}")


@dataclasses.dataclass(frozen=True)
class LRFindRun:
    """A finished range test, as `lr_find.json` records it.

    Attributes:
        recipe: the recipe's name.
        arm: the name of the arm tested.
        stage: "pretrain" or "finetune".
        seed: the seed used (the recipe's first).
        settings: the `LRFindConfig` the test ran with (start_lr, end_lr, steps, suggestion, beta, diverge).
        result: the `LRFindResult` (`kpretrain.training.lr_finder`): the curve (`learning_rates`, `losses`,
            `smoothed`), `suggestions` (name -> learning rate), `method`, `suggested_lr`, and why it `stopped`
            ("diverged" or "end").
        out_dir: the directory holding `lr_find.json` and `lr_find.png`.
    """

    recipe: str
    arm: str
    stage: str
    seed: int
    settings: LRFindConfig
    result: LRFindResult
    out_dir: str

    @property
    def suggested_lr(self) -> float:
        """The suggestion `settings.suggestion` names."""
        return self.result.suggested_lr


def plan_lr_find(recipe: Recipe, *, stage: str = "finetune", arm: str | None = None, out: str | None = None,
                 start_lr: float | None = None, end_lr: float | None = None, steps: int | None = None,
                 suggestion: str | None = None, smoke: bool = False) -> LRFindPlan:
    """Choose and check what a range test does, without TensorFlow.

    Args:
        recipe: a validated recipe, not a sweep.
        stage: "pretrain" or "finetune".
        arm: the arm tested; default the first arm that is not a baseline (or the first arm).
        out: default `runs/<name>-lr-find/<UTC timestamp>/`.
        start_lr, end_lr, steps, suggestion: replace the stage's `optimizer.lr_find` values.
        smoke: tiny data, and at most 50 steps unless `steps` is given.

    Returns:
        An `LRFindPlan`.

    Raises:
        InputError: a sweep, an unknown arm or stage, or a range that is not 0 < start < end with 3 steps or more.
    """
    if recipe.sweep:
        first = next(iter(recipe.sweep))
        raise InputError(f"kpretrain lr-find tests one recipe, not a sweep; pick one of its points, e.g. "
                         f"--set sweep=null --set {first}={format_value(recipe.sweep[first][0])}")
    if stage not in STAGES:
        raise InputError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    if suggestion not in (None, *SUGGESTIONS):
        raise InputError(f"suggestion {suggestion!r}: expected one of {', '.join(SUGGESTIONS)}")
    arms = recipe.arm_recipes()
    baselines = {*recipe.baselines, *recipe.baseline_pairs().values(), *recipe.compute_baselines()}
    name = arm or next((a for a in arms if a not in baselines), next(iter(arms)))
    if name not in arms:
        raise InputError(f"--arm {name!r}: not an arm of recipe {recipe.name}; allowed: {', '.join(arms)}")
    given = {k: v for k, v in (("start_lr", start_lr), ("end_lr", end_lr), ("steps", steps),
                               ("suggestion", suggestion)) if v is not None}
    settings = dataclasses.replace(getattr(arms[name], stage).optimizer.lr_find, **given)
    if smoke and steps is None:
        settings = dataclasses.replace(settings, steps=min(settings.steps, SMOKE_STEPS))
    if not 0 < settings.start_lr < settings.end_lr or settings.steps < 3:
        raise InputError(f"--start-lr {settings.start_lr}, --end-lr {settings.end_lr}, --steps {settings.steps}: "
                         f"need 0 < start < end and at least 3 steps")
    from kpretrain.rundir import default_out_dir

    return LRFindPlan(recipe, name, stage, recipe.seeds[0], settings, smoke,
                      out or default_out_dir(f"{recipe.name}-lr-find"))


def run_lr_find(plan: LRFindPlan, *, log: Callable[[str], None] | None = None) -> LRFindRun:
    """Prepare the recipe's data, run the range test of `plan` and write `lr_find.json` and `lr_find.png`.

    Args:
        plan: from `plan_lr_find`.
        log: called with `plan.describe()` once the data is ready, before the test starts.

    Returns:
        An `LRFindRun`.

    Raises:
        InputError: the data cannot be read, or `plan.stage` is "pretrain" and the arm has no pre-training.
        Exception: whatever training raised (the command line's "lr-find failed", exit 1).
    """
    from kpretrain import io
    from kpretrain.experiment import prepare
    from kpretrain.protocol.lr_find import find_learning_rate
    from kpretrain.training.lr_finder import plot_lr_find
    from kpretrain.training.runtime import distribution_strategy

    recipe = plan.recipe
    prepared = prepare(recipe, smoke=plan.smoke)
    strategy = distribution_strategy(recipe.runtime.distribute)
    if log is not None:
        log(plan.describe())
    result = find_learning_rate(prepared.arms[plan.arm], prepared.seed_data(plan.seed), plan.stage, plan.settings,
                                name=plan.arm, scope=strategy.scope if strategy is not None else contextlib.nullcontext)
    os.makedirs(plan.out, exist_ok=True)
    io.write_json(os.path.join(plan.out, "lr_find.json"),
                  {"recipe": recipe.name, "arm": plan.arm, "stage": plan.stage, "seed": plan.seed, "smoke": plan.smoke,
                   "settings": dataclasses.asdict(plan.settings), **result.record()})
    plot_lr_find(result, os.path.join(plan.out, "lr_find.png"), title=f"{recipe.name}: {plan.arm}, {plan.stage}"
                 + (" (smoke run: numbers mean nothing)" if plan.smoke else ""))
    return LRFindRun(recipe.name, plan.arm, plan.stage, plan.seed, plan.settings, result, plan.out)
