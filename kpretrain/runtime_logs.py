"""TensorFlow's own output kept out of kpretrain's, for the command line and the Python API alike.

TensorFlow writes C++ start-up lines (oneDNN, CUDA probing) straight to file descriptor 2 before its log settings
apply, and Python warnings ("triggered tf.function retracing") through the `tensorflow` and absl loggers.  They
would bury the one-line messages kpretrain prints.  `quiet_native_logs` runs when `kpretrain` is imported (before
anything imports TensorFlow); `start_tensorflow` runs before a command or an API call trains.  Nothing here imports
TensorFlow at module level: `import kpretrain` stays light.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

NATIVE_LOG_LEVEL = "2"  # TF_CPP_MIN_LOG_LEVEL: TensorFlow's C++ errors only


def quiet_native_logs() -> None:
    """`TF_CPP_MIN_LOG_LEVEL=2` (C++ errors only), unless it is set already: the user's value is kept.

    It takes effect only if TensorFlow has not been imported yet in this process.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", NATIVE_LOG_LEVEL)


@contextlib.contextmanager
def native_stderr_muted():
    """Redirect file descriptor 2 to /dev/null for the duration (Python's `sys.stderr` is flushed first)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow(debug: bool = False, distribute: str = "none") -> None:
    """Import TensorFlow and initialise its devices (and the distribution strategy) with native stderr muted, then
    set TensorFlow's and absl's Python loggers to errors only (retracing warnings included).

    MultiWorkerMirroredStrategy must exist before TensorFlow runs its first op, hence `distribute` here.

    Args:
        debug: leave native stderr alone and keep Keras' whole tracebacks (`--debug`).
        distribute: `runtime.distribute`; a strategy other than "none" is made now.

    Example:
        >>> start_tensorflow()  # before kpretrain.run trains: no oneDNN lines, no retracing warnings
    """
    with contextlib.nullcontext() if debug else native_stderr_muted():
        import tensorflow as tf

        if distribute != "none":
            from kpretrain.training.runtime import distribution_strategy

            distribution_strategy(distribute)
        tf.config.list_physical_devices()
        tf.constant(0)
    if debug:
        import keras

        keras.config.disable_traceback_filtering()  # --debug shows the whole traceback, Keras frames included
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TensorFlow
        pass
