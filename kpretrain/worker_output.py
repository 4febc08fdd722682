"""A Dask worker preload (`DaskExecutor` names it): the worker process's own output, native lines of TensorFlow
included, goes to its log file in the run directory (`KPRETRAIN_WORKER_LOG`), not to the driver's terminal.

Kept outside `kpretrain.experiment`, whose import loads TensorFlow: this runs before the worker imports anything.
"""

from __future__ import annotations

import os
import sys

LOG_ENV = "KPRETRAIN_WORKER_LOG"


def dask_setup(worker=None) -> None:
    """Point file descriptors 1 and 2 (and Python's stdout and stderr) at `$KPRETRAIN_WORKER_LOG`, appending."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
