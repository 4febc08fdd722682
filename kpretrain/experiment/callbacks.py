"""The user's own Keras callbacks of a run, per stage (`kpretrain.run(..., callbacks=...)`)."""

from __future__ import annotations

import keras

from kpretrain.errors import InputError

STAGES = ("pretrain", "finetune")


def stage_callbacks(callbacks) -> dict[str, list]:
    """The user's Keras callbacks per stage.

    Args:
        callbacks: None, a callback, a list of them (for every stage), or {stage: callbacks}.

    Returns:
        {stage: [callbacks]} for every stage of `STAGES`.

    Raises:
        InputError: an unknown stage, or something that is not a `keras.callbacks.Callback`.

    Example:
        >>> stage_callbacks({"finetune": keras.callbacks.CSVLogger("log.csv")})["pretrain"]
        []
    """
    if callbacks is None:
        return {stage: [] for stage in STAGES}
    if isinstance(callbacks, dict):
        unknown = sorted(set(callbacks) - set(STAGES))
        if unknown:
            raise InputError(f"callbacks: unknown stage {unknown[0]!r}; allowed: {', '.join(STAGES)}")
        return {stage: _callback_list(callbacks.get(stage)) for stage in STAGES}
    return {stage: _callback_list(callbacks) for stage in STAGES}


def _callback_list(callbacks) -> list:
    found = [] if callbacks is None else [callbacks] if isinstance(callbacks, keras.callbacks.Callback) else list(callbacks)
    for cb in found:
        if not isinstance(cb, keras.callbacks.Callback):
            raise InputError(f"callbacks: {cb!r} is not a keras.callbacks.Callback")
    return found
