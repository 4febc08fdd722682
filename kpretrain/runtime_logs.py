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


def use_threads(threads: int | None) -> None:
    """TensorFlow's intra-op pool of this process: `threads` (`runtime.threads`), or its default for None.

    The pool is made when TensorFlow runs its first op; a count asked for later must be the one it has.

    Raises:
        InputError: TensorFlow already runs in this process with another intra-op thread count.
    """
    import tensorflow as tf

    if threads is None:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime is up: its pool is fixed
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if current != threads:
            from kpretrain.errors import InputError

            raise InputError(f"recipe key 'runtime.threads': {threads}, but TensorFlow already runs in this process "
                             f"with {current or 'its default number of'} intra-op threads; run it in a new process "
                             f"(the command line does), or leave runtime.threads as it was") from None


def start_tensorflow(debug: bool = False, distribute: str = "none", threads: int | None = None) -> None:
    """Import TensorFlow and initialise its devices (and the distribution strategy) with native stderr muted, then
    set TensorFlow's and absl's Python loggers to errors only (retracing warnings included).

    MultiWorkerMirroredStrategy must exist before TensorFlow runs its first op, hence `distribute` here, and so
    must the size of the intra-op pool (`threads`).

    Args:
        debug: leave native stderr alone and keep Keras' whole tracebacks (`--debug`).
        distribute: `runtime.distribute`; a strategy other than "none" is made now.
        threads: `runtime.threads` (see `use_threads`).

    Example:
        >>> start_tensorflow()  # before kpretrain.run trains: no oneDNN lines, no retracing warnings
    """
    with contextlib.nullcontext() if debug else native_stderr_muted():
        import tensorflow as tf

        use_threads(threads)
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
