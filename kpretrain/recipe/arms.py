"""Arms: each arm's resolved recipe, the baselines, and every arm's matched scratch.

`Recipe.arm_recipes()` and `Recipe.baseline_pairs()` delegate to `resolve_arms`.
"""

from __future__ import annotations

import copy
import json

from kpretrain.errors import RecipeError
from kpretrain.recipe.coerce import _build
from kpretrain.recipe.overrides import _deep_merge
from kpretrain.recipe.schema import Recipe


def resolve_arms(recipe: Recipe) -> tuple[dict[str, Recipe], dict[str, str]]:
    """Every arm's resolved recipe, and the baseline each arm is compared with.

    Every non-baseline arm gets a matched scratch: `scratch` when its backbone, data and fine-tuning are the top
    level's, else `scratch-<arm>`; an arm with `baseline:` is compared with that arm instead.
    `Recipe.arm_recipes()` and `Recipe.baseline_pairs()` return the two parts.

    Args:
        recipe: a `Recipe` (its arms need not have been validated yet).

    Returns:
        A tuple `(arms, pairs)`: `arms` maps arm name -> resolved recipe, baselines (matched scratches included)
        first, in run order; `pairs` maps each non-baseline arm's name -> its baseline's name (empty when the
        recipe has no `scratch` baseline).

    Raises:
        RecipeError: an arm's overrides do not validate, or an arm is named like another arm's matched scratch.
    """
    arms = declared_arms(recipe)
    if "scratch" not in recipe.baselines or "scratch" not in arms:
        return arms, {}
    named = {arm.baseline for arm in arms.values() if arm.baseline}  # baselines chosen by arms.<name>.baseline
    baselines = {name: arm for name, arm in arms.items() if name in recipe.baselines or name in named}
    signatures = {json.dumps(arms["scratch"].to_dict(), sort_keys=True): "scratch"}
    pairs = {}
    for name, arm in arms.items():
        if name in baselines:
            continue
        if arm.baseline:
            pairs[name] = arm.baseline
            continue
        matched = _baseline("scratch", {k: v for k, v in arm.to_dict().items() if k != "arms"})
        key = json.dumps(matched.to_dict(), sort_keys=True)
        if key not in signatures:
            signatures[key] = f"scratch-{name}"
            if signatures[key] in arms:
                raise RecipeError(f"recipe key 'arms.{signatures[key]}': the name is taken by the matched scratch of "
                                  f"arm {name!r} (its backbone or fine-tuning differ from the top level); rename the arm")
            baselines[signatures[key]] = matched
        pairs[name] = signatures[key]
    return {**baselines, **{n: a for n, a in arms.items() if n not in baselines}}, pairs


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
        if recipe.arms and name in recipe.arms:
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
