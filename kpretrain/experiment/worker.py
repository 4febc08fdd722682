"""What a worker process of a distributed run does: one unit (a task of `executor.unit_tasks`) at a time.

A worker keeps the runs it prepared (data loaded, splits made) for its later units, trains the unit exactly as
`Experiment.run` would (the same `Experiment` methods, so the same numbers), and writes the unit's record and
weights into the run directory, on storage every worker and the driver see.  Its lines go to its own log,
`logs/workers/<worker>.log` in the run directory.  Nothing here knows which engine called it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

THREADS_ENV = "KPRETRAIN_WORKER_THREADS"  # inter-op threads of one worker, set by the executor for each worker process
_prepared: dict = {}  # (recipe JSON, smoke) -> Experiment, kept for the worker's later units
_datasets: dict = {}  # loaded data sets, shared by every run this worker prepared


def share_cpu() -> int | None:
    """Give TensorFlow's inter-op pool the worker's share of the CPU threads (`KPRETRAIN_WORKER_THREADS`), before
    TensorFlow starts.

    Only the inter-op pool (independent ops side by side) is shared: the intra-op pool's size decides how a sum is
    split between threads on the CPU, so changing it changes the last bits of results, and a distributed run must
    give a local run's numbers.  Measured in benchmarks/executor.py.

    Returns:
        The thread count applied, or None when the variable is not set or TensorFlow already started.
    """
    threads = os.environ.get(THREADS_ENV)
    if not threads:
        return None
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    except RuntimeError:  # TensorFlow's runtime is up already (an earlier unit of this process): it keeps its pool
        return None
    return int(threads)


def run_task(task, worker: str) -> dict:
    """Run one unit of a distributed run into its run directory; return what the driver reports.

    Args:
        task: a `UnitTask` (its run directory, resolved recipe, `--smoke`, stage, seed, arm, and where an earlier
            sweep point recorded the same pre-training).
        worker: the worker's name, for its log file and the driver's lines.

    Returns:
        {"key", "unit", "worker", "pid", "seconds"}: the task's key, the unit's name, who ran it and how long it took.

    Raises:
        Whatever training raises; the executor re-raises it in the driver.
    """
    started = time.perf_counter()
    log_path = os.path.join(task.log_dir, f"{worker}.log")
    os.makedirs(task.log_dir, exist_ok=True)
    with open(log_path, "a", buffering=1) as log_file:
        def log(text: str) -> None:
            log_file.write(f"{time.strftime('%H:%M:%S')} {text}\n")

        log(f"unit {task.key} started (pid {os.getpid()})")
        with contextlib.redirect_stdout(log_file):
            unit = _experiment(task, log).run_one(task.run_dir, task.stage, task.seed, task.arm, origin=task.origin)
        seconds = time.perf_counter() - started
        log(f"unit {task.key} done (pid {os.getpid()}, {seconds:.1f}s)")
    return {"key": task.key, "unit": unit, "worker": worker, "pid": os.getpid(), "seconds": seconds}


def _experiment(task, log):
    """The worker's `Experiment` of the task's recipe, prepared once per process and recipe."""
    key = (json.dumps(task.recipe, sort_keys=True), task.smoke)
    experiment = _prepared.get(key)
    if experiment is None:
        share_cpu()
        from kpretrain.runtime_logs import use_threads

        use_threads(task.recipe["runtime"]["threads"])  # the intra-op pool a local run of the recipe has
        from kpretrain.experiment.loop import Experiment
        from kpretrain.experiment.progress import Progress
        from kpretrain.recipe import recipe_from_dict

        experiment = Experiment(recipe_from_dict(task.recipe), smoke=task.smoke, log=log,
                                shared_with={"datasets": _datasets, "pretrained": {}},
                                progress=Progress(quiet=True, live=False))
        experiment.prepare()
        _prepared[key] = experiment
    experiment.log = log
    return experiment
