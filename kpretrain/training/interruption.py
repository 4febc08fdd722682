"""Ctrl-C and SIGTERM stop training at the next batch boundary (a second one stops at once)."""

from __future__ import annotations

import contextlib
import signal

import keras

_requested: int | None = None


class Interrupted(Exception):
    """Training stopped on a signal; `exit_code` is 128 + the signal number (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def _handler(signum, frame):
    global _requested
    if _requested is not None:  # asked twice: stop now, wherever that is
        raise Interrupted(signum)
    _requested = signum


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """While active, SIGINT / SIGTERM only ask to stop; `check()` (called at batch and unit boundaries) stops."""
    global _requested
    _requested = None
    previous = {s: signal.signal(s, _handler) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested = None


def check() -> None:
    """Raise `Interrupted` if a stop was asked for."""
    if _requested is not None:
        raise Interrupted(_requested)


class StopOnSignal(keras.callbacks.Callback):
    """Raises `Interrupted` after the batch during which a stop was asked for (nothing of the epoch is saved)."""

    def on_train_batch_end(self, batch, logs=None):
        check()
