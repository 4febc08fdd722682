"""Building a config dataclass from raw (YAML) values: coercion, range and choice checks, one-line errors.

Nothing here knows the recipe's sections: a field's `_spec` metadata (`choices`, `minimum`, `maximum`,
`finish`) and its type say what it accepts, and every error names the key as the user wrote it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Literal, Union

from kpretrain.errors import RecipeError


def _yaml_key(f: dataclasses.Field) -> str:
    """The field's key in YAML: a trailing `_` dropped (`from_` is `from`)."""
    return f.name[:-1] if f.name.endswith("_") else f.name


def _build(cls, raw, prefix: str):
    """An instance of dataclass `cls` from the mapping `raw` (None = all defaults); `prefix` is its dotted key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe key '{prefix.rstrip('.') or '<top>'}': expected a mapping, got {raw!r}")
    fields = {_yaml_key(f): f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else f"; allowed: {', '.join(fields)}"
            raise RecipeError(f"recipe key '{prefix}{key}': unknown key{hint}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, f in fields.items():
        if key in raw:
            values[f.name] = _coerce(raw[key], hints[f.name], f, prefix + key)
        elif dataclasses.is_dataclass(hints[f.name]):
            values[f.name] = _build(hints[f.name], {}, prefix + key + ".")
    obj = cls(**values)
    for f in fields.values():  # e.g. Recipe.seeds: a count n is [0..n-1]
        finish = (f.metadata or {}).get("finish")
        if finish is not None:
            setattr(obj, f.name, finish(getattr(obj, f.name)))
    return obj


def _seeds(value) -> list[int]:
    """`seeds` as a list: a count n is [0..n-1]; a list must hold distinct non-negative ints."""
    if isinstance(value, bool):
        raise RecipeError(f"recipe key 'seeds': expected a list of ints or a count, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise RecipeError(f"recipe key 'seeds': a count must be >= 1, got {value}")
        return list(range(value))
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise RecipeError(f"recipe key 'seeds': expected a non-empty list of non-negative ints or a count, got {value!r}")
    if len(set(value)) != len(value):
        raise RecipeError(f"recipe key 'seeds': seeds must be distinct, got {value!r}")
    return list(value)


def _describe(tp) -> str:
    """Type `tp` in words for an error, e.g. 'an integer', 'a mapping of ...'."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping of " + ", ".join(_yaml_key(f) for f in dataclasses.fields(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
            list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value, tp, f: dataclasses.Field, key: str):
    """`value` checked and converted to type `tp` of field `f` (its `_spec` limits); `key` names it in errors."""
    meta = f.metadata or {}
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and hasattr(tp, "SHORTHAND"):  # `averaging: ema` = `averaging: {method: ema}`
            value = {tp.SHORTHAND: value}
        return _build(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, f, key)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise RecipeError(f"recipe key '{key}': expected {_describe(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"recipe key '{key}': expected true or false, got {value!r}")
    if tp in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if tp is int:
            ok = ok and float(value).is_integer()
        if not ok:
            raise RecipeError(f"recipe key '{key}': expected {_describe(tp)}{_range_text(meta)}, got {value!r}")
        value = tp(value)
        if meta.get("minimum") is not None and value < meta["minimum"] or (
                meta.get("maximum") is not None and value > meta["maximum"]):
            raise RecipeError(f"recipe key '{key}': {value!r} is out of range; allowed{_range_text(meta)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"recipe key '{key}': expected a string, got {value!r}")
        _check_choice(value, meta, key)
        return value
    if tp is list:
        if meta.get("finish") is not None:  # checked by the field's finish once the section is built (seeds)
            return value
        if not isinstance(value, list):
            raise RecipeError(f"recipe key '{key}': expected a list, got {value!r}")
        for item in value:
            _check_choice(item, meta, key)
        return list(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"recipe key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported recipe type {tp} for {key}")  # a bug in the schema, not bad input


def _coerce_union(value, tp, f: dataclasses.Field, key: str):
    """`value` as the first of `tp`'s alternatives that takes it (None for Optional, a mapping for a section)."""
    meta = f.metadata or {}
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    sections = [a for a in args if dataclasses.is_dataclass(a)]
    if sections and isinstance(value, dict):
        return _build(sections[0], value, key + ".")
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, f, key)
        except RecipeError:
            continue
    parts = [_describe(a) + (_range_text(meta) if a in (int, float) else "") for a in args if a is not type(None)]
    allowed = " or ".join(parts) + (" or null" if type(None) in args else "")
    raise RecipeError(f"recipe key '{key}': expected {allowed}, got {value!r}")


def _check_choice(value, meta, key):
    """Raise a RecipeError when `value` is not one of the field's `choices` (with a did-you-mean hint)."""
    choices = meta.get("choices")
    if choices and value not in choices:
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise RecipeError(f"recipe key '{key}': {value!r} is not allowed; allowed: {', '.join(map(str, choices))}{hint}")


def _range_text(meta) -> str:
    """The field's limits as text: ' in [lo, hi]', ' >= lo', ' <= hi' or ''."""
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def _to_plain(obj):
    """A dataclass (nested) as plain dicts and lists, with YAML key names."""
    if dataclasses.is_dataclass(obj):
        return {_yaml_key(f): _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj
