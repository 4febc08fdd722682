"""Arms: each arm's resolved recipe, the baselines, and every arm's matched scratch.

`Recipe.arm_recipes()` and `Recipe.baseline_pairs()` delegate to `resolve_arms`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Optional

from kpretrain.errors import RecipeError
from kpretrain.recipe.coerce import _build
from kpretrain.recipe.overrides import _deep_merge
from kpretrain.recipe.schema import Recipe


COMPUTE = "scratch_compute"  # the compute-matched scratch (`baselines: [scratch, scratch_compute]`)


@dataclasses.dataclass(frozen=True)
class ComputeMatch:
    """A compute-matched scratch: a matched scratch fine-tuned for as many more optimizer steps as the pre-training
    of `arms` took (they share one pre-training budget and one matched scratch; the first is the one counted).

    Attributes:
        arms: the pre-training arms compared with it, in run order.
        extends: the run's matched scratch it lengthens (`scratch`, `scratch-<arm>`), or None when the run has
            none of its settings (its arms name another `baseline:`).
    """

    arms: tuple
    extends: Optional[str] = None


def resolve_arms(recipe: Recipe) -> tuple[dict[str, Recipe], dict[str, str], dict[str, ComputeMatch]]:
    """Every arm's resolved recipe, the baseline each arm is compared with, and the compute-matched scratches.

    Every non-baseline arm gets a matched scratch: `scratch` when its backbone, data and fine-tuning are the top
    level's, else `scratch-<arm>`; an arm with `baseline:` is compared with that arm instead.  With
    `scratch_compute` in `baselines`, every pre-training arm also gets a compute-matched scratch (see
    `compute_scratches`).  `Recipe.arm_recipes()`, `Recipe.baseline_pairs()` and `Recipe.compute_baselines()`
    return the three parts.

    Args:
        recipe: a `Recipe` (its arms need not have been validated yet).

    Returns:
        A tuple `(arms, pairs, compute)`: `arms` maps arm name -> resolved recipe, baselines (matched scratches,
        then compute-matched scratches) first, in run order; `pairs` maps each non-baseline arm's name -> its
        baseline's name (empty when the recipe has no `scratch` baseline); `compute` maps each compute-matched
        scratch's name -> its `ComputeMatch`.

    Raises:
        RecipeError: an arm's overrides do not validate, or an arm is named like another arm's matched scratch.
    """
    arms = declared_arms(recipe)
    if "scratch" not in recipe.baselines or "scratch" not in arms:
        return arms, {}, {}
    named = {arm.baseline for arm in arms.values() if arm.baseline}  # baselines chosen by arms.<name>.baseline
    baselines = {name: arm for name, arm in arms.items() if name in recipe.baselines or name in named}
    signatures = {_signature(arms["scratch"]): "scratch"}
    pairs = {}
    for name, arm in arms.items():
        if name in baselines:
            continue
        if arm.baseline:
            pairs[name] = arm.baseline
            continue
        matched = matched_scratch(arm)
        key = _signature(matched)
        if key not in signatures:
            signatures[key] = _unused(f"scratch-{name}", arms, f"the matched scratch of arm {name!r} (its backbone "
                                                              f"or fine-tuning differ from the top level)")
            baselines[signatures[key]] = matched
        pairs[name] = signatures[key]
    computed, compute = (compute_scratches(recipe, {name: arms[name] for name in pairs}, signatures)
                         if COMPUTE in recipe.baselines else ({}, {}))
    for name in computed:
        _unused(name, arms, f"the compute-matched scratch of arm {compute[name].arms[0]!r}")
    return {**baselines, **computed, **{n: a for n, a in arms.items() if n not in baselines}}, pairs, compute


def compute_scratches(recipe: Recipe, compared: dict[str, Recipe], signatures: dict[str, str]):
    """The compute-matched scratches of the compared arms that pre-train: each is the arm's matched scratch, fine-tuned
    for as many more optimizer steps as the arm's pre-training takes (counted when the run is prepared).

    Arms with one matched scratch and one pre-training budget (epochs, data set, a synthetic task's images per
    epoch) share one.  It is named `scratch_compute` when the run needs one, else `scratch_compute-<arm>` after
    the first arm of each.

    Args:
        recipe: the recipe.
        compared: the non-baseline arms, in run order.
        signatures: matched scratch settings (`_signature`) -> the name of the run's baseline that has them.

    Returns:
        `(arms, compute)`: name -> the compute-matched scratch's recipe, and name -> its `ComputeMatch`.
    """
    groups: dict[tuple, list[str]] = {}
    scratches = {}
    for name, arm in compared.items():
        if pretrains(arm):
            scratch = matched_scratch(arm)
            key = (_signature(scratch), json.dumps([arm.pretrain.epochs, arm.pretrain.dataset or recipe.data.dataset,
                                                    arm.pretrain.options.get("images_per_epoch")]))
            groups.setdefault(key, []).append(name)
            scratches.setdefault(key, scratch)
    names = {key: COMPUTE if len(groups) == 1 else f"{COMPUTE}-{users[0]}" for key, users in groups.items()}
    return ({names[key]: scratches[key] for key in groups},
            {names[key]: ComputeMatch(tuple(users), signatures.get(key[0])) for key, users in groups.items()})


def matched_scratch(arm: Recipe) -> Recipe:
    """The arm's matched scratch: its backbone (re-initialised), data and fine-tuning, no pre-training or transfer."""
    return _baseline("scratch", {k: v for k, v in arm.to_dict().items() if k != "arms"})


def _signature(arm: Recipe) -> str:
    return json.dumps(arm.to_dict(), sort_keys=True)


def _unused(name: str, arms: dict, what: str) -> str:
    """`name`, unless a declared arm has it (a RecipeError naming `what` takes it)."""
    if name in arms:
        raise RecipeError(f"recipe key 'arms.{name}': the name is taken by {what}; rename the arm")
    return name


def declared_arms(recipe: Recipe) -> dict[str, Recipe]:
    """The arms a recipe declares, each resolved (its overrides merged into the top level), matched scratches aside.

    Args:
        recipe: a `Recipe`.

    Returns:
        A dict arm name -> resolved recipe: the baselines named in `baselines` (unless `arms` defines them), then
        the arms of `arms`, or the one default arm (named `transfer`, after its pretext task, or `model`).

    Raises:
        RecipeError: an arm's overrides do not validate; the message names the key as `arms.<name>.<key>`.
    """
    base = recipe.to_dict()
    base.pop("arms", None)
    base.pop("sweep", None)
    arms: dict[str, Recipe] = {}
    for name in recipe.baselines:
        if (recipe.arms and name in recipe.arms) or name == COMPUTE:  # compute-matched: made by `resolve_arms`
            continue
        arms[name] = _baseline(name, base)
    if recipe.arms:
        for name, overrides in recipe.arms.items():
            merged = _deep_merge(copy.deepcopy(base), overrides or {}, prefix=f"arms.{name}")
            if _other_task_options(base, merged, overrides or {}):
                merged["pretrain"]["options"] = {}
            try:
                arm = _build(Recipe, merged, "")
            except RecipeError as exc:
                raise RecipeError(str(exc).replace("recipe key '", f"recipe key 'arms.{name}.", 1)) from None
            arm.arms = None
            arms[name] = arm
    else:
        arm = _build(Recipe, copy.deepcopy(base), "")
        arms[_default_arm_name(arm)] = arm
    return arms


def _other_task_options(base: dict, merged: dict, overrides: dict) -> bool:
    """Whether an arm changed `pretrain.task` without giving `pretrain.options`: the top level's options belong
    to the top level's task, so the arm's task starts from its own defaults."""
    task = (base.get("pretrain") or {}).get("task"), (merged.get("pretrain") or {}).get("task")
    if task[0] == task[1] or not (base.get("pretrain") or {}).get("options"):
        return False
    given = overrides.get("pretrain") if isinstance(overrides.get("pretrain"), dict) else {}
    return "options" not in given and not any(k == "pretrain.options" or k.startswith("pretrain.options.")
                                              for k in overrides)


def _baseline(name: str, base: dict) -> Recipe:
    """`scratch`: the backbone, data and fine-tuning of `base`; no pre-training, no loaded weights, default transfer."""
    raw = copy.deepcopy(base)
    raw.pop("reference", None)  # a baseline is never the natural reference (nor the matched scratch of one)
    raw.pop("baseline", None)  # nor compared with another (the matched scratch of an arm with `baseline:`)
    if name == "scratch":
        raw["pretrain"] = {"epochs": 0}
        student = (raw.get("selftrain") or {}).get("student_augment")
        if student:  # the arm's model is a student trained so: its scratch is trained so too
            raw["finetune"] = {**raw.get("finetune", {}), "augment": student}
        raw["selftrain"] = None
        # the same architecture, re-initialised: no loaded weights, no weights file, no file's own weights
        raw["backbone"] = {**raw["backbone"], "from": None, "weights": None, "init": "random"}
        raw["transfer"] = {}
    arm = _build(Recipe, raw, "")
    arm.arms = None
    return arm


def default_arm_name(raw: dict) -> str:
    """The name the one arm of a raw recipe without `arms` runs under (`transfer`, its pretext task, or `model`).

    Raises:
        RecipeError: the raw recipe does not validate.
    """
    base = {k: v for k, v in copy.deepcopy(raw).items() if k not in ("arms", "sweep")}
    return _default_arm_name(_build(Recipe, base, ""))


def _default_arm_name(arm: Recipe) -> str:
    """The name of a recipe's one arm when it has no `arms`: `transfer`, the pretext task, or `model`."""
    if arm.backbone.from_ or (transfers(arm) and not pretrains(arm)):  # loaded weights, a weights file
        return "transfer"
    return arm.pretrain.task if pretrains(arm) else "model"


def pretrains(arm: Recipe) -> bool:
    """Whether this arm runs a pre-training stage.

    Args:
        arm: an arm's resolved recipe (from `Recipe.arm_recipes()`).

    Returns:
        True when `pretrain.task` is not `none` and `pretrain.epochs` is above 0.
    """
    return arm.pretrain.task != "none" and arm.pretrain.epochs > 0


def transfers(arm: Recipe) -> bool:
    """Whether this arm starts from trained weights (pre-trained here or loaded with backbone.from).

    Args:
        arm: an arm's resolved recipe (from `Recipe.arm_recipes()`).

    Returns:
        True when the arm pre-trains (`pretrains`), sets `backbone.from`, starts from a weights file
        (`backbone.weights`) or from a `.keras` backbone's own weights (`backbone.init: file`).
    """
    b = arm.backbone
    return pretrains(arm) or bool(b.from_) or bool(b.weights) or b.init == "file"
