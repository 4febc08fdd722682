"""`--set KEY=VALUE` overrides on a raw recipe dict, and merging an arm's overrides into the top level."""

from __future__ import annotations

import copy
import difflib

import yaml

from kpretrain.errors import RecipeError
from kpretrain.recipe.schema import RECIPE_KEYS
from kpretrain.recipe.values import format_value, parse_value


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply `--set` overrides, `key.path=value` strings, to a raw recipe dict.

    Each value is read by `parse_value` (YAML, with `1e-3` a number; empty text is null).  Sections on the way to
    a key are created when missing or null.  Nothing is validated: `recipe_from_dict` does that.  On a recipe
    without `arms:`, an `arms.<name>...` key adds that arm beside the recipe's own one (named as `kpretrain run`
    names it alone: its pretext task, `transfer` or `model`), which stays.

    Args:
        raw: a raw recipe dict (as `read_yaml` gives it); it is not modified.
        overrides: the `key.path=value` strings, applied in order (a later one wins); None or empty for none.

    Returns:
        A deep copy of `raw` with the overrides applied.

    Raises:
        RecipeError: an override has no `=`, its key is not a dotted key, its value is not valid YAML, or a
            key on its path holds a value that is not a section.

    Example:

    >>> from kpretrain.recipe import apply_overrides
    >>> apply_overrides({"name": "demo"}, ["pretrain.task=rotation", "pretrain.optimizer.learning_rate=1e-3"])
    {'name': 'demo', 'pretrain': {'task': 'rotation', 'optimizer': {'learning_rate': 0.001}}}
    >>> apply_overrides({"name": "demo"}, ["pretrain.epochs"])
    Traceback (most recent call last):
    ...
    kpretrain.errors.RecipeError: --set 'pretrain.epochs': expected KEY=VALUE, e.g. --set pretrain.epochs=2
    """
    raw = copy.deepcopy(raw)
    _keep_implicit_arm(raw, overrides)
    for item in overrides or ():
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set pretrain.epochs=2")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise RecipeError(f"--set {item!r}: the key must be a dotted recipe key, e.g. transfer.frozen_depth")
        try:
            value = parse_value(text)
        except yaml.YAMLError:
            raise RecipeError(f"--set {key}: value {text!r} is not valid YAML; quote it, e.g. --set '{key}=[0,1]'") from None
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"--set {key}: '{'.'.join(parts[:i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def _keep_implicit_arm(raw: dict, overrides) -> None:
    """A `--set arms.<name>...` on a recipe without `arms:` adds that arm beside the recipe's own one (which is
    named as when it runs alone: its pretext task, `transfer` or `model`) instead of replacing it."""
    if raw.get("arms") or not any(str(item).split("=", 1)[0].strip().startswith("arms.") for item in overrides or ()):
        return
    from kpretrain.recipe.arms import default_arm_name  # arms imports this module

    try:
        name = default_arm_name(raw)
    except RecipeError:
        return  # the recipe itself is invalid: validating it later says why
    raw["arms"] = {name: {}}


def _deep_merge(base: dict, overrides: dict, prefix: str) -> dict:
    """`overrides` (an arm's, keyed `prefix`) merged into `base` in place: sections key by key (`options` whole),
    dotted keys as `--set` would apply them; an unknown new section is a RecipeError."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in ("options",):
            _deep_merge(base[key], value, f"{prefix}.{key}")
        elif isinstance(value, dict) and key not in base and "." not in key:
            if key not in RECIPE_KEYS:
                near = difflib.get_close_matches(key, list(RECIPE_KEYS), n=1)
                hint = f"; did you mean '{prefix}.{near[0]}'?" if near else ""
                raise RecipeError(f"recipe key '{prefix}.{key}': unknown key{hint}")
            base[key] = value
        elif "." in key:
            _deep_merge(base, apply_overrides({}, [f"{key}={format_value(value)}"]), prefix)
        else:
            base[key] = value
    return base
