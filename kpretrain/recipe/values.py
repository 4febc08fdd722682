"""Recipe YAML and recipe values as text: one loader, one dumper, one `--set` encoding.

PyYAML reads YAML 1.1, where a number with an exponent but no dot (`1e-3`, `5E-4`, `1e+2`) is a string.
Recipes are read as YAML 1.2 reads numbers: a plain (unquoted) scalar of the float pattern is a float, a
quoted one stays a string.  `RecipeLoader` is `yaml.SafeLoader` with that float pattern (nothing else changes:
safe tags only), and `RecipeDumper` is `yaml.SafeDumper` with the same pattern, so a string that now reads as a
number (`'1e3'`) is written quoted.  Every recipe file, `--set` value, stored `recipe.yaml`, `best_recipe.yaml`
and `final_recipe.yaml` goes through them.

`format_value` turns a Python value into the text of `--set KEY=TEXT` (sweep points, tuner values, arms'
dotted keys and the Python API's `{key: value}` overrides all use it) and `parse_value` reads it back:
`parse_value(format_value(v)) == v` for floats (1e-05), ints, bools, None, strings, lists and dicts.
"""

from __future__ import annotations

import re

import yaml

from kpretrain.errors import RecipeError

FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.1's float pattern (underscores, sexagesimal, .inf, .nan) with YAML 1.2's exponents: without a dot, and
# with an optional sign
FLOAT_PATTERN = re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


def _resolvers() -> dict:
    """The safe implicit resolvers with the float pattern replaced (same first characters, same order)."""
    return {first: [(tag, FLOAT_PATTERN if tag == FLOAT_TAG else pattern) for tag, pattern in entries]
            for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` reading `1e-3` as a number, as YAML 1.2 does."""

    yaml_implicit_resolvers = _resolvers()


class RecipeDumper(yaml.SafeDumper):
    """`yaml.SafeDumper` quoting the strings that `RecipeLoader` would read as numbers; tuples as lists."""

    yaml_implicit_resolvers = _resolvers()


RecipeDumper.add_representer(tuple, yaml.SafeDumper.represent_list)


def load_yaml(stream):
    """A YAML document (text or file) read with `RecipeLoader`; raises `yaml.YAMLError` as `yaml.safe_load` does."""
    return yaml.load(stream, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def dump_yaml(data, **options) -> str:
    """`data` as YAML text that `load_yaml` reads back unchanged (keys in their order unless `sort_keys=True`)."""
    return yaml.dump(data, Dumper=RecipeDumper, **{"sort_keys": False, **options})


def format_value(value) -> str:
    """`value` as the TEXT of `--set KEY=TEXT`: one line of flow-style YAML, e.g. `1.0e-05`, `null`, `'null'`,
    `[1, 2]`, `{method: ema}`; `parse_value` reads it back as `value`."""
    options = {"default_flow_style": True, "allow_unicode": True, "width": float("inf")}
    try:
        text = dump_yaml(value, **options).removesuffix("\n...\n").strip()  # a bare scalar ends with `...`
        if "\n" in text:  # a string with a line break: double quotes keep it on one line
            text = dump_yaml(value, default_style='"', **options).strip()
    except yaml.YAMLError:
        raise RecipeError(f"value {value!r}: a {type(value).__name__} has no recipe text; use numbers, strings, "
                          f"true/false, null, lists and mappings") from None
    return text


def parse_value(text: str):
    """The value of `--set` TEXT, read as YAML with `RecipeLoader` (empty text is null); raises `yaml.YAMLError`."""
    return load_yaml(text) if text.strip() else None
