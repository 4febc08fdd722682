"""A recipe field's validation metadata: `_spec`, read by `kpretrain.recipe.coerce`."""

from __future__ import annotations

from dataclasses import field


def _spec(*, choices=None, minimum=None, maximum=None, doc: str = "", finish=None, **kw):
    """Field with validation metadata: allowed `choices`, numeric `minimum`/`maximum`; `finish(value)`, when given,
    checks and normalises the value once the section is built (a list field then takes the raw value as it is)."""
    metadata = {"choices": choices, "minimum": minimum, "maximum": maximum, "doc": doc}
    if finish is not None:
        metadata["finish"] = finish
    return field(metadata=metadata, **kw)
