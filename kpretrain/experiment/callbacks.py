"""The callbacks of a run: the user's own, per stage (`kpretrain.run(..., callbacks=...)`), and those of
`runtime.loggers`, each told its context (stage, arm, seed) before every stage it watches."""

from __future__ import annotations

import contextlib

import keras

from kpretrain.callback_context import CallbackContext
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


@contextlib.contextmanager
def stage_in_context(context: CallbackContext, callbacks, *, loggers=(), settings: dict | None = None):
    """The callbacks of one unit and stage: `callbacks` and those of the `loggers` opened for it, each told
    `context`; the loggers are closed when the block ends (as failed if it raised).

    Args:
        context: the stage's `CallbackContext`.
        callbacks: the user's callbacks of the stage (and the progress display's).
        loggers: `runtime.loggers` names (`RuntimeConfig.active_loggers`).
        settings: the unit's settings as the loggers record them (the arm's recipe as a plain dict).

    Yields:
        (every callback of the stage, `finish(metrics)`: the stage's final numbers to the loggers).

    Example:
        >>> with stage_in_context(context, user_callbacks, loggers=("csv",)) as (callbacks, finish):
        ...     result = pretrain(backbone, arm, inputs, callbacks=callbacks)
        ...     finish({"pretext_val_accuracy": result.final_val_accuracy})
    """
    from kpretrain.training.loggers import StageLoggers, flat_settings

    opened = StageLoggers(loggers, context, flat_settings(settings or {}))
    every = [*callbacks, *opened.callbacks]
    failed = True
    try:
        for callback in every:
            callback.kpretrain_context = context
            if callable(getattr(callback, "set_context", None)):
                callback.set_context(context)
        yield every, opened.finish
        failed = False
    finally:
        opened.close(failed)
