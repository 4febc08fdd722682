"""The search space of `kpretrain tune`: `tune.space` parsed into dimensions, the default space of a recipe that
declares none, the searched arm, and a trial's recipe (the values set as recipe keys)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kpretrain.errors import RecipeError
from kpretrain.models.backbones import block_names
from kpretrain.recipe import Recipe, apply_overrides, pretrains, recipe_from_dict
from kpretrain.recipe.values import format_value

if TYPE_CHECKING:
    import keras_tuner

    from kpretrain.experiment import Prepared

SPEC_OPTIONS = {"int": ("step", "sampling"), "float": ("step", "sampling"), "choice": ()}
UNSEARCHABLE = ("name", "seeds", "baselines", "tune", "runtime")  # identity, the plan, or how (not what) trains
SPEC_HINT = "{int: [lo, hi]}, {float: [lo, hi], sampling: log} or {choice: [a, b, ...]}"


@dataclass(frozen=True)
class Dimension:
    """One searched recipe key: an int or float range (optional `step`, `sampling`) or a list of choices; a key
    that matters only in some trials is active only when the key `parent` takes one of the values `active_when`."""

    key: str
    kind: str
    values: tuple  # (lo, hi) for int and float; the candidates for choice
    step: float | None = None
    sampling: str = "linear"
    parent: str | None = None  # KerasTuner's conditional_scope: active when `parent`'s stored value is in `active_when`
    active_when: tuple = ()
    enumerated: bool = False  # a range declared as a choice of its values (a parent of a condition must be a choice)

    @classmethod
    def parse(cls, key, spec) -> "Dimension":
        """Validate one `tune.space` entry into a dimension.

        Args:
            key: the searched recipe key, dotted (not under `name`, `seeds`, `baselines`, `tune` or `runtime`).
            spec: `{int: [lo, hi]}`, `{float: [lo, hi]}` (each with optional `step` and `sampling: linear | log`)
                or `{choice: [a, b, ...]}`.

        Returns:
            The `Dimension`.

        Raises:
            RecipeError: the key cannot be searched or the spec is malformed; the message names
                `tune.space.<key>`.
        """
        where = f"recipe key 'tune.space.{key}'"
        if not isinstance(key, str) or not all(key.split(".")):
            raise RecipeError(f"{where}: expected a dotted recipe key, e.g. pretrain.epochs")
        if key.split(".")[0] in UNSEARCHABLE:
            raise RecipeError(f"{where}: '{key.split('.')[0]}' cannot be searched; allowed: keys of data, backbone, "
                              f"pretrain, transfer, finetune, evaluation or arms")
        kinds = [kind for kind in SPEC_OPTIONS if isinstance(spec, dict) and kind in spec]
        if len(kinds) != 1:
            raise RecipeError(f"{where}: expected {SPEC_HINT}, got {spec!r}")
        kind = kinds[0]
        extra = sorted(set(spec) - {kind, *SPEC_OPTIONS[kind]})
        if extra:
            raise RecipeError(f"{where}: unknown option {extra[0]!r} for {kind}; allowed: "
                              f"{', '.join(SPEC_OPTIONS[kind]) or 'none'}")
        if kind == "choice":
            values = spec["choice"]
            if not isinstance(values, list) or not values or len({str(v) for v in values}) != len(values):
                raise RecipeError(f"{where}: choice must be a non-empty list of distinct values, got {values!r}")
            return cls(key, kind, tuple(values))
        number = int if kind == "int" else (int, float)
        bounds, step, sampling = spec[kind], spec.get("step"), spec.get("sampling", "linear")
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(_is(b, number) for b in bounds)
                and bounds[0] < bounds[1]):
            hint = " (text, not a number: write 1e-4 without quotes)" if isinstance(bounds, list) and any(
                isinstance(b, str) for b in bounds) else ""
            raise RecipeError(f"{where}: expected [lo, hi], {'integers' if kind == 'int' else 'numbers'} with "
                              f"lo < hi, got {bounds!r}{hint}")
        if sampling not in ("linear", "log") or (sampling == "log" and bounds[0] <= 0):
            raise RecipeError(f"{where}: sampling {sampling!r} with lo {bounds[0]}; allowed: linear, or log with lo > 0")
        if step is not None and not (_is(step, number) and step > (1 if sampling == "log" else 0)):
            raise RecipeError(f"{where}: step {step!r}; allowed: a positive {kind}, above 1 with log sampling")
        return cls(key, kind, tuple(bounds), step, sampling)

    @property
    def by_label(self) -> bool:
        """Whether this choice is searched by its values' labels (`str(value)`) rather than the values.

        KerasTuner choices hold one type of int, float or str: other choices are searched by their labels.
        """
        return self.kind == "choice" and (len({type(v) for v in self.values}) > 1
                                          or type(self.values[0]) not in (int, float, str))

    def declare(self, hp: keras_tuner.HyperParameters):
        """Register this dimension in `hp`.

        Args:
            hp: the trial's KerasTuner hyperparameters.

        Returns:
            The trial's recipe value of this key; None when the trial leaves it inactive (see `parent`).
        """
        with (hp.conditional_scope(self.parent, list(self.active_when)) if self.parent
              else contextlib.nullcontext()):
            if self.enumerated:
                return hp.Choice(self.key, self.grid())
            if self.kind == "int":
                return hp.Int(self.key, *self.values, step=self.step, sampling=self.sampling)
            if self.kind == "float":
                return hp.Float(self.key, *map(float, self.values), step=self.step, sampling=self.sampling)
            stored = hp.Choice(self.key, self.stored_values())
            return None if stored is None else self.value_of(stored)

    def stored_values(self) -> list:
        """A choice's values as KerasTuner stores them: the values, or their labels when `by_label`."""
        return [str(v) for v in self.values] if self.by_label else list(self.values)

    def grid(self) -> list:
        """The values of a linear int range, or of a float range with a step: `lo`, `lo + step`, ... up to `hi`."""
        lo, hi = self.values
        if self.kind == "int":
            return list(range(lo, hi + 1, self.step or 1))
        return [round(lo + k * self.step, 12) for k in range(int(math.floor((hi - lo) / self.step + 1e-9)) + 1)]

    def value_of(self, stored):
        """The recipe value of a value stored by KerasTuner.

        Args:
            stored: the value KerasTuner stored for this key (a label when `by_label`).

        Returns:
            The recipe value.
        """
        return self.values[[str(v) for v in self.values].index(stored)] if self.by_label else stored

    def corners(self) -> list:
        """The values checked before any trial: both bounds, or every choice.

        Returns:
            A list of recipe values of this key.
        """
        return list(self.values)


def _is(value, types) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


def parse_space(space: dict) -> list[Dimension]:
    """`tune.space` as dimensions, in the recipe's order.

    Args:
        space: the `tune.space` mapping, recipe key -> spec (see `Dimension.parse`).

    Returns:
        A list of `Dimension`.

    Raises:
        RecipeError: the space is empty, or an entry is malformed.
    """
    if not space:
        raise RecipeError("recipe key 'tune.space': empty; declare the keys to search, e.g. "
                          "tune: {space: {pretrain.epochs: {int: [0, 3]}}}")
    return [Dimension.parse(key, spec) for key, spec in space.items()]


def check_space(recipe: Recipe, dims: list[Dimension]) -> None:
    """Check what a space needs of the rest of the recipe: an `arms.<arm>.` key names one of its arms, and the grid
    tuner has a step for every float range.

    Args:
        recipe: the validated recipe.
        dims: its space (`parse_space(recipe.tune.space)`).

    Raises:
        RecipeError: a need is not met; the message names `tune.space.<key>`.
    """
    for dim in dims:
        if dim.key.startswith("arms.") and dim.key.split(".")[1] not in (recipe.arms or {}):
            raise RecipeError(f"recipe key 'tune.space.{dim.key}': the recipe has no arm "
                              f"{dim.key.split('.')[1]!r}; allowed arms: {', '.join(recipe.arms or {}) or 'none'}")
    if recipe.tune.tuner == "grid":
        for dim in dims:
            if dim.kind == "float" and dim.step is None:
                raise RecipeError(f"recipe key 'tune.space.{dim.key}': the grid tuner needs a step for a float "
                                  f"range; add step: or list the values with choice:")


def with_values(raw: dict, values: dict) -> dict:
    """The raw recipe with `values` (recipe key -> value) set as keys, each as `--set` would set it.

    Args:
        raw: a raw recipe dict; it is not modified.
        values: recipe key (dotted) -> value.

    Returns:
        A new raw recipe dict (not validated).
    """
    return apply_overrides(raw, [f"{k}={format_value(v)}" for k, v in values.items()])


def trial_recipe(raw: dict, values: dict) -> Recipe:
    """The recipe `raw` with `values` set, validated.

    Args:
        raw: a raw recipe dict; it is not modified.
        values: recipe key (dotted) -> value, e.g. a trial's values.

    Returns:
        The validated `Recipe`.

    Raises:
        RecipeError: the recipe with these values does not validate.
    """
    return recipe_from_dict(with_values(raw, values))


def searched_arm(recipe: Recipe) -> str:
    """The searched arm: `tune.arm`, else the first that is no baseline (its name may change with the values:
    an arm without `arms:` is named after its task).

    Args:
        recipe: the validated recipe.

    Returns:
        The arm's name.

    Raises:
        RecipeError: `tune.arm` (or the recipe's first arm that is no baseline) is not an arm of the recipe.
    """
    names = list(recipe.arm_recipes())
    arm = recipe.tune.arm or next(iter(_protocol_arms(recipe)), None)
    if arm not in names:
        raise RecipeError(f"recipe key 'tune.arm': {arm!r} is not an arm of this recipe; allowed: {', '.join(names)}")
    if arm in recipe.compute_baselines():  # its extra steps come from a pre-training that a trial does not run
        raise RecipeError(f"recipe key 'tune.arm': {arm!r} is a compute-matched scratch (baselines: scratch_compute), "
                          f"which a trial cannot run; search scratch or a pre-training arm")
    return arm


def _protocol_arms(recipe: Recipe) -> list[str]:
    baselines = {*recipe.baselines, *recipe.baseline_pairs().values(), *recipe.compute_baselines()}
    return [name for name in recipe.arm_recipes() if name not in baselines]


def learning_rates(lr: float, tuner: str) -> dict:
    """A tenth to ten times `lr` (1e-3 for `auto`), log scale (five values for the grid tuner).

    Args:
        lr: a learning rate, or "auto".
        tuner: the tuner (`tune.tuner`).

    Returns:
        A `tune.space` spec: `{choice: [lr/10, lr/3, lr, 3 lr, 10 lr]}` for the grid tuner, else
        `{float: [lr/10, 10 lr], sampling: log}`.
    """
    lr = 1e-3 if lr == "auto" else lr
    if tuner == "grid":
        return {"choice": [lr / 10, lr / 3, lr, lr * 3, lr * 10]}
    return {"float": [lr / 10, lr * 10], "sampling": "log"}


def default_space(recipe: Recipe, prepared: Prepared) -> dict:
    """The space of a recipe that declares none: the searched arm's pre-training epochs (0 = none) and learning
    rate, and its frozen depth (0 to every block of the backbone).

    Args:
        recipe: the validated recipe.
        prepared: the recipe as `kpretrain.experiment.prepare` prepared it (its first seed's initial backbone of
            the searched arm gives the depth).

    Returns:
        A `tune.space` mapping: pre-training epochs from 0 to twice the arm's (rounded up, at least 2), the
        pre-training learning rate (`learning_rates`), and the frozen depth from 0 to the backbone's blocks; its
        keys are under `arms.<arm>.` when the arm is one of `arms`.

    Raises:
        RecipeError: the searched arm does not pre-train (there is no default space).
    """
    name = searched_arm(recipe)
    arm = recipe.arm_recipes()[name]
    if not pretrains(arm):
        raise RecipeError(f"recipe key 'tune.space': empty, and the searched arm {name!r} does not pre-train, so "
                          f"there is no default space; declare the keys to search, e.g. "
                          f"tune: {{space: {{finetune.optimizer.learning_rate: {{float: [1.0e-4, 1.0e-2], sampling: log}}}}}}")
    depth = len(block_names(prepared.initial[name]))  # the first seed's initial backbone
    prefix = f"arms.{name}." if recipe.arms and name in recipe.arms else ""
    return {f"{prefix}pretrain.epochs": {"int": [0, max(2, 2 * math.ceil(arm.pretrain.epochs))]},
            f"{prefix}pretrain.optimizer.learning_rate": learning_rates(arm.pretrain.optimizer.learning_rate,
                                                                        recipe.tune.tuner),
            f"{prefix}transfer.frozen_depth": {"int": [0, depth]}}
