"""`sweep:`: which keys may be swept, the check of the mapping, and the expansion into grid points."""

from __future__ import annotations

import itertools
from typing import Callable

from kpretrain.errors import RecipeError
from kpretrain.recipe.overrides import apply_overrides
from kpretrain.recipe.schema import Recipe
from kpretrain.recipe.values import format_value

SWEEP_FIXED = ("name", "seeds", "sweep", "tune", "runtime", "baselines")  # the plan itself, or how (not what) runs


def _check_sweep(sweep) -> None:
    """Raise a RecipeError unless `sweep` maps sweepable dotted keys to non-empty lists of distinct values."""
    if not isinstance(sweep, dict) or not sweep:
        raise RecipeError("recipe key 'sweep': expected a mapping of recipe key -> list of values, "
                          "e.g. sweep: {data.labels_per_class: [10, 100, 1000]}")
    for key, values in sweep.items():
        if not isinstance(key, str) or not all(key.split(".")) or key.split(".")[0] in SWEEP_FIXED:
            raise RecipeError(f"recipe key 'sweep.{key}': cannot be swept; allowed: keys of data, backbone, pretrain, "
                              f"transfer, finetune, evaluation or arms")
        if not isinstance(values, list) or not values or len({format_value(v) for v in values}) != len(values):
            raise RecipeError(f"recipe key 'sweep.{key}': expected a non-empty list of distinct values, got {values!r}")


def sweep_points(recipe: Recipe, validate: Callable[[dict], Recipe]) -> list[tuple[dict, Recipe]]:
    """({key: value}, the recipe at that point) for every point of `recipe.sweep`'s grid, in order (first key
    slowest); a recipe without `sweep` is its own single point `({}, recipe)`.

    Args:
        recipe: a validated `Recipe`.
        validate: turns a point's raw dict into its `Recipe` (`recipe_from_dict`); its RecipeError is re-raised
            naming the point.

    Returns:
        A list of `(point, Recipe)` pairs.

    Raises:
        RecipeError: a point's recipe does not validate; the message names the point.
    """
    if not recipe.sweep:
        return [({}, recipe)]
    keys = list(recipe.sweep)
    points = []
    for values in itertools.product(*(recipe.sweep[k] for k in keys)):
        at = dict(zip(keys, values))
        raw = apply_overrides({k: v for k, v in recipe.to_dict().items() if k != "sweep"},
                              [f"{k}={format_value(v)}" for k, v in at.items()])
        try:
            point = validate(raw)
        except RecipeError as exc:
            where = ", ".join(f"{k}={v!r}" for k, v in at.items())
            raise RecipeError(f"{exc} (at sweep point {where})") from None
        points.append((at, point))
    return points
