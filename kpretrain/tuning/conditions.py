"""Conditional hyperparameters: the keys of `tune.space` that matter only in some trials (pre-training's, when the
trial does not pre-train) are KerasTuner conditional hyperparameters, absent from the trials that leave them
inactive (their recipe values, their table cells and the Bayesian model's data)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from kpretrain.errors import RecipeError
from kpretrain.tuning.space import Dimension, _is

if TYPE_CHECKING:
    import keras_tuner

EPOCHS = "pretrain.epochs"  # 0 skips pre-training: the parent of the space's other pre-training keys


def conditional(dims: list[Dimension], arm: str) -> list[Dimension]:
    """The space with its pre-training-only keys active only in trials that pre-train.

    When the searched arm's `pretrain.epochs` is searched and can be 0 (a choice with 0, or a linear range from 0:
    an int range, or a float range with a step), every other searched `pretrain.*` key of that arm (learning rate,
    averaging, task, options, ...) is a KerasTuner conditional hyperparameter, active only when the trial's epochs
    are above 0; such a range is declared as a choice of its values (a condition's parent must be a choice).  A float
    range without a step is left as it is (0 is a single point of it).

    Args:
        dims: the space (`parse_space(recipe.tune.space)`).
        arm: the searched arm (`searched_arm(recipe)`).

    Returns:
        The dimensions, in the same order, with `parent` and `active_when` set on the pre-training-only keys.

    Raises:
        RecipeError: `pretrain.epochs` is searched but never above 0, so the other pre-training keys change nothing.
    """
    def local(key: str) -> str:
        return key.removeprefix(f"arms.{arm}.")

    parents = sorted((d for d in dims if local(d.key) == EPOCHS), key=lambda d: d.key.startswith("arms."))
    children = {d.key for d in dims if local(d.key).startswith("pretrain.") and local(d.key) != EPOCHS}
    if not parents or not children:
        return dims
    parent = parents[-1]  # the arm's own key over the top-level one
    if parent.kind == "choice":
        values, stored = parent.values, parent.stored_values()
    elif parent.values[0] <= 0 and parent.sampling == "linear" and (parent.kind == "int" or parent.step):
        values = stored = parent.grid()
    else:  # every trial pre-trains, or 0 is a single point of a continuous range
        return dims
    active = tuple(s for v, s in zip(values, stored) if _is(v, (int, float)) and v > 0)
    if not active:
        raise RecipeError(f"recipe key 'tune.space.{sorted(children)[0]}': no trial pre-trains ({parent.key} is "
                          f"never above 0), so it changes nothing; remove it, or let {parent.key} go above 0")
    if len(active) == len(values):
        return dims
    return [replace(d, enumerated=parent.kind != "choice") if d is parent else
            replace(d, parent=parent.key, active_when=active) if d.key in children else d for d in dims]


def declare_space(dims: list[Dimension], hp: keras_tuner.HyperParameters) -> dict:
    """Register every dimension in `hp`, the parents of conditions first.

    Args:
        dims: the space (from `conditional`).
        hp: the trial's KerasTuner hyperparameters.

    Returns:
        The trial's values by recipe key, in the space's order; a key the trial leaves inactive is absent.
    """
    for dim in sorted(dims, key=lambda d: d.parent is not None):
        dim.declare(hp)
    return trial_values(dims, hp.values)


def trial_values(dims: list[Dimension], stored: dict) -> dict:
    """A trial's recipe values from the values KerasTuner stored (`trial.hyperparameters.values`).

    Args:
        dims: the space.
        stored: KerasTuner's values of the trial: the active hyperparameters only (and Hyperband's `tuner/...`).

    Returns:
        Recipe key -> value, in the space's order; a key the trial leaves inactive is absent.
    """
    return {d.key: d.value_of(stored[d.key]) for d in dims if d.key in stored}
