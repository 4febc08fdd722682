"""Reading recipe files: the YAML as a dict, `--set` applied, validated into a `Recipe`; stored recipes completed."""

from __future__ import annotations

import json
import os

import yaml

from kpretrain.errors import InputError, RecipeError
from kpretrain.recipe.overrides import apply_overrides
from kpretrain.recipe.rules import recipe_from_dict
from kpretrain.recipe.schema import RECIPE_KEYS, Recipe
from kpretrain.recipe.values import format_value, load_yaml


def load_recipe(path: str, overrides: list[str] | tuple = ()) -> Recipe:
    """Read a recipe file into a validated `Recipe`.

    The file is read with `load_yaml` (a `yaml.SafeLoader`), the `--set` overrides are applied, `name` defaults to
    the file name (`load_raw`), and the result is validated with `recipe_from_dict`.

    Args:
        path: path of the YAML recipe file.
        overrides: `--set` overrides, `key.path=value` strings (see `apply_overrides`); empty for none.

    Returns:
        The validated `Recipe`.

    Raises:
        RecipeError: the file cannot be read or parsed, an override is malformed, or a key has a wrong name, type
            or value; the one-line message names the key.

    Example:

    >>> from kpretrain.recipe import load_recipe
    >>> recipe = load_recipe("recipes/fashion_overlay.yaml", ["finetune.epochs=3"])
    >>> recipe.name, recipe.finetune.epochs
    ('fashion_overlay', 3)
    >>> list(recipe.arm_recipes())
    ['scratch', 'overlay']
    """
    return recipe_from_dict(load_raw(path, overrides))


def load_raw(path: str, overrides: list[str] | tuple = ()) -> dict:
    """The recipe file as a plain dict, `--set` overrides applied and `name` defaulting to the file name.

    Nothing is validated beyond what `read_yaml` and `apply_overrides` check; `recipe_from_dict` validates.

    Args:
        path: path of the YAML recipe file.
        overrides: `--set` overrides, `key.path=value` strings; empty for none.

    Returns:
        A new dict (the file's mapping with the overrides applied); `name` is the file name without its extension
        when the file sets none.

    Raises:
        RecipeError: the file cannot be read or parsed (`read_yaml`), or an override is malformed.
    """
    raw = apply_overrides(read_yaml(path), overrides)
    if not raw.get("name"):
        raw["name"] = os.path.splitext(os.path.basename(path))[0]
    return raw


def read_yaml(path: str) -> dict:
    """The recipe file as a dict; every way it can be unreadable is a one-line RecipeError.

    Args:
        path: path of the YAML recipe file.

    Returns:
        The file's top-level mapping, read with `load_yaml`.

    Raises:
        RecipeError: the file is missing, a directory, not UTF-8 or unreadable; it has a YAML syntax error or a tag
            that constructs objects; it is empty; or its top level is not a mapping.
    """
    if not os.path.exists(path):
        raise RecipeError(f"recipe file {path!r} not found; pass the path of a YAML recipe, e.g. recipes/fashion_overlay.yaml")
    if os.path.isdir(path):
        raise RecipeError(f"recipe file {path!r} is a directory; pass the path of a YAML recipe file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"recipe file {path!r} is not UTF-8 text; a recipe is a YAML file") from None
    except OSError as exc:
        raise RecipeError(f"recipe file {path!r} cannot be read ({exc.strerror}); check its permissions") from None
    try:
        raw = load_yaml(text)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"recipe file {path!r}{where}: YAML tags that construct objects are not allowed ({exc.problem})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"recipe file {path!r}: YAML syntax error at{where}: {problem}") from None
    if raw is None:
        raise RecipeError(f"recipe file {path!r} is empty; a recipe needs at least 'name' and 'data.dataset'")
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe file {path!r}: the top level must be a mapping of keys, got a {type(raw).__name__}")
    return raw


def with_defaults(plain: dict) -> dict:
    """A stored recipe dict with every key a newer kpretrain added filled in with its default.

    A key's default is what kpretrain did before the key existed, so a stored recipe (a run directory's
    `recipe.yaml`, a search's `search.json`) compares equal to the same recipe written by this version.

    Args:
        plain: a recipe as a plain dict, e.g. read back from a stored file.  Top-level keys that are not recipe keys
            are kept as they are.

    Returns:
        A new dict: the validated recipe's `to_dict()` with the extra keys added back; `plain` itself, unchanged,
        when it no longer validates.
    """
    extra = {k: plain[k] for k in plain if k not in RECIPE_KEYS}
    try:
        return {**recipe_from_dict({k: v for k, v in plain.items() if k not in extra}).to_dict(), **extra}
    except RecipeError:
        return plain


def arms_added_by_overrides(path: str, overrides) -> str | None:
    """The plan's sentence for arms that `--set arms.<name>...` adds to a recipe file, or None when it adds none.

    Example: `--set arms.rotation.pretrain.task=rotation` on a recipe without `arms:` gives "--set added arm
    rotation; the recipe's own arm runs beside it as overlay".
    """
    declared = read_yaml(path).get("arms") or {}
    raw = load_raw(path, overrides)
    added = [name for name in raw.get("arms") or {} if name not in declared and (raw["arms"][name] or declared)]
    if not added:
        return None
    own = [name for name in raw["arms"] if name not in declared and name not in added]
    return (f"--set added arm{'s' * (len(added) > 1)} {', '.join(added)}"
            + (f"; the recipe's own arm runs beside {'them' if len(added) > 1 else 'it'} as {own[0]}" if own else ""))


def override_strings(overrides) -> list[str]:
    """`--set` strings from a list of them or a {key: value} mapping (values as `format_value` writes them)."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={format_value(v)}" for k, v in overrides.items()]
    return list(overrides)


def raw_recipe(recipe, overrides=None) -> dict:
    """The raw recipe (plain dict) of a path, a dict or a `Recipe`, with `overrides` applied."""
    if isinstance(recipe, Recipe):
        recipe = recipe.to_dict()
    if isinstance(recipe, dict):
        return apply_overrides(json.loads(json.dumps(recipe)), override_strings(overrides))
    if isinstance(recipe, (str, os.PathLike)):
        return load_raw(os.fspath(recipe), override_strings(overrides))
    raise InputError(f"recipe: expected a path, a dict or a kpretrain Recipe, got {type(recipe).__name__}")
