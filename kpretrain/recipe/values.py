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
    """A YAML document read with `RecipeLoader` (`yaml.SafeLoader` reading `1e-3` as a number).

    Args:
        stream: the YAML text, or an open file.

    Returns:
        The document's value (None for an empty document).

    Raises:
        yaml.YAMLError: as `yaml.safe_load` raises it.
    """
    return yaml.load(stream, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def dump_yaml(data, **options) -> str:
    """`data` as YAML text that `load_yaml` reads back unchanged.

    Written with `RecipeDumper`: strings that `RecipeLoader` would read as numbers are quoted, tuples become lists.

    Args:
        data: plain values (dicts, lists, tuples, strings, numbers, bools, None).
        **options: keyword arguments of `yaml.dump`; `sort_keys` defaults to False (keys stay in their order).

    Returns:
        The YAML text.
    """
    return yaml.dump(data, Dumper=RecipeDumper, **{"sort_keys": False, **options})


def format_value(value) -> str:
    """`value` as the TEXT of `--set KEY=TEXT`: one line of flow-style YAML that `parse_value` reads back as `value`.

    Sweep points, tuner values, arms' dotted keys and the Python API's `{key: value}` overrides all use it.

    Args:
        value: a number, string, bool, None, list or mapping (nested).

    Returns:
        One line of text, e.g. `1.0e-05`, `null`, `'null'`, `[1, 2]`, `{method: ema}`.

    Raises:
        RecipeError: `value` has no YAML text (an object that is none of the types above).

    Example:

    >>> from kpretrain.recipe import format_value, parse_value
    >>> format_value(1e-5), format_value(None), format_value("null"), format_value({"method": "ema"})
    ('1.0e-05', 'null', "'null'", '{method: ema}')
    >>> parse_value(format_value(1e-5))
    1e-05
    """
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
    """The value of `--set` TEXT, read as YAML with `RecipeLoader`.

    Args:
        text: the text after `=` of `--set KEY=TEXT`.

    Returns:
        The value: `1e-3` is a number, a quoted `'1e-3'` a string; empty (or blank) text is None.

    Raises:
        yaml.YAMLError: `text` is not valid YAML.

    Example:

    >>> from kpretrain.recipe import parse_value
    >>> parse_value("1e-3"), parse_value("'1e-3'"), parse_value(""), parse_value("[0, 1]")
    (0.001, '1e-3', None, [0, 1])
    """
    return load_yaml(text) if text.strip() else None
