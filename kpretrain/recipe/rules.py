"""The rules across keys that a valid recipe keeps, checked in order by `recipe_from_dict` (the first broken
rule is the one-line error)."""

from __future__ import annotations

from kpretrain.errors import RecipeError
from kpretrain.recipe.arms import COMPUTE
from kpretrain.recipe.coerce import _build, _check_choice
from kpretrain.recipe.schema import Recipe
from kpretrain.recipe.sweep import _check_sweep

ARM_SHARED = ("name", "seeds", "data", "arms", "baselines", "evaluation", "runtime", "tune", "sweep")  # not per arm


def recipe_from_dict(raw: dict) -> Recipe:
    """Validate a raw recipe dict into a `Recipe`, every arm and sweep point included.

    Each section is built from its raw values (types, ranges and choices checked), then the rules across keys
    (`RULES`) are checked in order: the first broken rule is the error.

    Args:
        raw: a raw recipe dict, as `read_yaml` or `load_raw` gives it (`--set` overrides applied).

    Returns:
        The validated `Recipe`.

    Raises:
        RecipeError: a key has a wrong name, type or value, or a rule across keys is broken; the one-line message
            names the key as the user wrote it (`arms.<name>.` for a key of an arm).

    Example:

    >>> from kpretrain.recipe import recipe_from_dict
    >>> recipe = recipe_from_dict({"name": "demo", "pretrain": {"task": "rotation", "epochs": 2}})
    >>> list(recipe.arm_recipes()), recipe.baseline_pairs()
    (['scratch', 'rotation'], {'rotation': 'scratch'})
    >>> recipe_from_dict({"name": "demo", "finetune": {"epoch": 3}})
    Traceback (most recent call last):
    ...
    kpretrain.errors.RecipeError: recipe key 'finetune.epoch': unknown key; did you mean 'finetune.epochs'?
    """
    recipe = _build(Recipe, raw, "")
    for rule in RULES:
        rule(recipe)
    return recipe


def _check_name(recipe: Recipe) -> None:
    """`name` is set."""
    if not recipe.name or not isinstance(recipe.name, str):
        raise RecipeError("recipe key 'name': missing; give the recipe a name, e.g. name: fashion_overlay")


def _check_arms(recipe: Recipe) -> None:
    """`arms` maps well-formed names to mappings of overrides that leave the shared keys alone."""
    if recipe.arms is None:
        return
    if not isinstance(recipe.arms, dict) or not recipe.arms:
        raise RecipeError("recipe key 'arms': expected a mapping of arm name -> overrides, e.g. arms: {overlay: {pretrain: {task: overlay}}}")
    for name, overrides in recipe.arms.items():
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise RecipeError(f"recipe key 'arms': arm name {name!r} must be letters, digits, '_' or '-'")
        if overrides is not None and not isinstance(overrides, dict):
            raise RecipeError(f"recipe key 'arms.{name}': expected a mapping of overrides, got {overrides!r}")
        for forbidden in ARM_SHARED:
            if overrides and forbidden in overrides:
                raise RecipeError(f"recipe key 'arms.{name}.{forbidden}': arms share {forbidden}; set it at the top level")


def _check_data(recipe: Recipe) -> None:
    """`data.image_size` is [H, W], `data.split` names TFDS splits, `data.channels` is not 2."""
    size = recipe.data.image_size
    if size is not None and not (len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                        for v in size)):
        raise RecipeError(f"recipe key 'data.image_size': expected [height, width] in pixels, e.g. [32, 32], got {size!r}")
    if recipe.data.split is not None and (set(recipe.data.split) - {"train", "test"} or not all(
            isinstance(v, str) and v for v in recipe.data.split.values())):
        raise RecipeError(f"recipe key 'data.split': expected {{train: <split>, test: <split>}} (TFDS split names, "
                          f"e.g. {{test: validation}}), got {recipe.data.split!r}")
    if recipe.data.channels == 2:
        raise RecipeError("recipe key 'data.channels': 2 is not an image mode; allowed: 1 (grayscale), 3 (RGB) or null")


def _check_baselines(recipe: Recipe) -> None:
    """Only an arm names its baseline, and that is another arm without a baseline of its own."""
    if recipe.baseline is not None:
        raise RecipeError("recipe key 'baseline': only an arm names its baseline; set arms.<name>.baseline")
    for name, overrides in (recipe.arms or {}).items():
        target = (overrides or {}).get("baseline")
        others = [*(b for b in recipe.baselines if b != COMPUTE),
                  *(a for a in recipe.arms if a != name and a not in recipe.baselines
                    and not (recipe.arms[a] or {}).get("baseline"))]
        if target is not None and target not in others:
            raise RecipeError(f"recipe key 'arms.{name}.baseline': {target!r} is not another arm without a baseline "
                              f"of its own; allowed: {', '.join(others) or 'none'}")


def _check_compute(recipe: Recipe) -> None:
    """`scratch_compute` comes with `scratch`, and no arm of `arms` takes its name.  (A recipe where no arm
    pre-trains is valid: there is nothing to match, and the plan and metrics.json's warnings say so.)"""
    if COMPUTE not in recipe.baselines:
        return
    if "scratch" not in recipe.baselines:
        raise RecipeError("recipe key 'baselines': scratch_compute is scratch given its arm's pre-training steps, "
                          "compared beside scratch; add scratch, e.g. baselines: [scratch, scratch_compute]")
    if recipe.arms and COMPUTE in recipe.arms:
        raise RecipeError("recipe key 'arms.scratch_compute': the name is taken by the compute-matched scratch "
                          "(baselines: scratch_compute), made from each arm's matched scratch; rename the arm")


def _check_reference(recipe: Recipe) -> None:
    """At most one arm, not a baseline, is `reference: natural`; never the top level."""
    if recipe.reference is not None:
        raise RecipeError("recipe key 'reference': only an arm is the natural reference; "
                          "set arms.<name>.reference: natural")
    natural = [name for name, overrides in (recipe.arms or {}).items() if (overrides or {}).get("reference") is not None]
    for name in natural:
        _check_choice(recipe.arms[name]["reference"], {"choices": ("natural",)}, f"arms.{name}.reference")
        named = {(o or {}).get("baseline") for o in recipe.arms.values()}
        if name in recipe.baselines or name in named:
            raise RecipeError(f"recipe key 'arms.{name}.reference': {name!r} is a baseline; mark the arm whose "
                              f"pre-training is the natural one")
    if len(natural) > 1:
        raise RecipeError(f"recipe key 'arms.{natural[1]}.reference': only one arm may be the natural reference "
                          f"({natural[0]!r} is already); remove it from all but one of {', '.join(natural)}")


def _check_sweep_points(recipe: Recipe) -> None:
    """`sweep` is well formed and every point of its grid is a valid recipe."""
    if recipe.sweep is not None:
        _check_sweep(recipe.sweep)
        recipe.sweep_points()  # validates every point


def _check_runtime(recipe: Recipe) -> None:
    """`runtime.deterministic` and `runtime.jit_compile` are not both on; `runtime.executor: dask` does not meet
    `runtime.distribute: multi_worker` (a unit on a Dask worker is one process)."""
    if recipe.runtime.deterministic and recipe.runtime.jit_compile:
        raise RecipeError("recipe key 'runtime.jit_compile': XLA is off under op determinism (Keras falls back "
                          "silently); set runtime.deterministic=false or runtime.jit_compile=false")
    if recipe.runtime.executor != "local" and recipe.runtime.distribute == "multi_worker":
        raise RecipeError("recipe key 'runtime.executor': a Dask worker runs each unit in one process, so "
                          "runtime.distribute=multi_worker cannot run there; set runtime.distribute to none or "
                          "mirrored, or runtime.executor=local")


def _check_arm_stages(recipe: Recipe) -> None:
    """Every arm resolves, and each of its stages keeps the stage rules (`_check_stage`)."""
    for name, arm in recipe.arm_recipes().items():  # validates every arm
        where = f"arms.{name}." if recipe.arms and name in recipe.arms else ""  # the key as the user wrote it
        for stage in ("pretrain", "finetune"):
            _check_stage(arm, stage, where)


def _check_stage(arm: Recipe, stage: str, where: str) -> None:
    """Selection, probes, averaging and the LR range of one stage of one arm agree; `where` prefixes its keys."""
    averaging = getattr(arm, stage).averaging
    select = getattr(arm, stage).select
    if select.mode == "last" and select.patience is not None:
        raise RecipeError(f"recipe key '{where}{stage}.select.patience': early stopping keeps the best epoch; "
                          f"set {stage}.select.mode=best, or drop patience")
    if stage == "pretrain" and arm.pretrain.probe is not None and arm.pretrain.probe.every <= 0:
        raise RecipeError(f"recipe key '{where}pretrain.probe.every': must be above 0 (data epochs between "
                          f"probes), e.g. 1 or 0.5")
    if select.mode == "probe" and (stage == "finetune" or arm.pretrain.probe is None):
        raise RecipeError(f"recipe key '{where}{stage}.select.mode': probe picks the pre-training checkpoint "
                          f"with the best probe score; it needs pretrain.probe (e.g. pretrain.probe: "
                          f"{{every: 1}}) and is for pretrain.select only")
    if select.mode != "last" and averaging.method != "none":
        raise RecipeError(f"recipe key '{where}{stage}.select.mode': {select.mode} picks one epoch's weights, "
                          f"{stage}.averaging ({averaging.method}) replaces them with an average; use one of the two")
    if averaging.method == "ema" and averaging.start_epoch:
        raise RecipeError(f"recipe key '{where}{stage}.averaging.start_epoch': Keras optimizer EMA averages from "
                          f"the first step; start_epoch is for {stage}.averaging.method polyak (here ema)")
    found = getattr(arm, stage).optimizer.lr_find
    if not 0 < found.start_lr < found.end_lr:
        raise RecipeError(f"recipe key '{where}{stage}.optimizer.lr_find.start_lr': {found.start_lr} must be "
                          f"above 0 and below end_lr ({found.end_lr})")


RULES = (_check_name, _check_arms, _check_data, _check_baselines, _check_compute, _check_reference,
         _check_sweep_points, _check_runtime, _check_arm_stages)  # in this order: the first broken rule is the error
