"""Reading recipe files: the YAML as a dict, `--set` applied, validated into a `Recipe`; stored recipes completed."""

from __future__ import annotations

import os

import yaml

from kpretrain.errors import RecipeError
from kpretrain.recipe.overrides import apply_overrides
from kpretrain.recipe.rules import recipe_from_dict
from kpretrain.recipe.schema import RECIPE_KEYS, Recipe
from kpretrain.recipe.values import load_yaml


def load_recipe(path: str, overrides: list[str] | tuple = ()) -> Recipe:
    """Read `path` with `load_yaml` (a `yaml.SafeLoader`), apply `--set` overrides, validate; raise RecipeError."""
    return recipe_from_dict(load_raw(path, overrides))


def load_raw(path: str, overrides: list[str] | tuple = ()) -> dict:
    """The recipe as a plain dict, `--set` overrides applied and `name` defaulting to the file name."""
    raw = apply_overrides(read_yaml(path), overrides)
    if not raw.get("name"):
        raw["name"] = os.path.splitext(os.path.basename(path))[0]
    return raw


def read_yaml(path: str) -> dict:
    """The recipe file as a dict; every way it can be unreadable is a one-line RecipeError."""
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
    """A stored recipe dict with every key a newer kpretrain added filled in with its default (as it was before
    the key existed); `plain` unchanged when it no longer validates."""
    extra = {k: plain[k] for k in plain if k not in RECIPE_KEYS}
    try:
        return {**recipe_from_dict({k: v for k, v in plain.items() if k not in extra}).to_dict(), **extra}
    except RecipeError:
        return plain
