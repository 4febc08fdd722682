"""Where the units of a run are trained: here, one after another (`runtime.executor: local`), or on the workers of
a distributed engine (`dask`), with the same numbers.

A distributed run has two phases.  The units (each shared pre-training, each seed x arm, of every point of a
sweep) become one graph of tasks: a fine-tuning waits for its pre-training, and a pre-training that several sweep
points share is trained once and copied by the later points.  The workers train the tasks and write the units'
records and weights into the run directory (storage every worker sees; the only state they share).  Then the
driver runs the ordinary loop (`Experiment.run`, `Sweep.run`) over those records: it trains nothing more and
writes `metrics.json`, the report and the exports exactly as a local run does.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

from kpretrain.errors import InputError
from kpretrain.experiment.units import UnitStore, finetune_unit, pretrain_unit
from kpretrain.recipe import pretrains

WORKER_LOGS = os.path.join("logs", "workers")  # each worker's log, `<worker>.log`, in the run directory


@dataclasses.dataclass(frozen=True)
class UnitTask:
    """One unit of a distributed run, as a worker receives it.

    Attributes:
        key: unique in the run: `<point directory>/<unit>`.
        run_dir: the run directory the unit belongs to (a sweep point's own).
        recipe: that run's resolved recipe (`Recipe.to_dict()`).
        smoke: `--smoke`.
        stage: "pretrain" (a shared pre-training) or "finetune" (one seed x arm).
        seed: the seed.
        arm: the arm (for a pre-training, the first arm sharing it).
        log_dir: where the worker writes its log.
        after: keys of the tasks this one waits for.
        origin: (record, weights) of the same pre-training at an earlier sweep point, copied instead of trained.
    """

    key: str
    run_dir: str
    recipe: dict
    smoke: bool
    stage: str
    seed: int
    arm: str
    log_dir: str
    after: tuple[str, ...] = ()
    origin: tuple[str, str] | None = None

    @property
    def unit(self) -> str:
        return os.path.basename(self.key)


def run_points(run, out_dir: str) -> list[tuple[str, object]]:
    """The (absolute run directory, `Experiment`) pairs of a run: itself, or every point of a `Sweep`.

    Absolute because a worker's working directory is not the driver's."""
    out_dir = os.path.abspath(out_dir)
    points = getattr(run, "points", None)
    if points is None:
        return [(out_dir, run)]
    return [(os.path.join(out_dir, name), experiment) for _, name, experiment in points]


def unit_tasks(points: list[tuple[str, object]], log_dir: str) -> list[UnitTask]:
    """The tasks of the units not recorded yet, in the order a local run trains them.

    Args:
        points: `run_points(...)`, each `Experiment` prepared.
        log_dir: the workers' log directory.

    Returns:
        The tasks; each task's `after` names tasks earlier in the list.
    """
    tasks: list[UnitTask] = []
    made: dict[str, tuple[str | None, str, str]] = {}  # pre-training source -> (its task key or None, record, weights)
    made_here: dict[str, bool] = {}  # pre-training unit key -> whether a task trains (or copies) it
    for run_dir, experiment in points:
        store, recipe = UnitStore(run_dir), experiment.recipe.to_dict()
        task = dict(run_dir=run_dir, recipe=recipe, smoke=experiment.smoke, log_dir=log_dir)
        for seed in experiment.recipe.seeds:
            for name, arm in experiment.arms.items():
                after: tuple[str, ...] = ()
                if pretrains(arm):
                    first = experiment.prepared.pretraining_arm(arm)
                    unit = pretrain_unit(seed, first)
                    key = os.path.join(run_dir, unit)
                    if name == first:
                        source = experiment.pretraining_source(arm, seed)
                        earlier = made.get(source)
                        recorded = store.has_pretraining(unit)
                        made_here[key] = not recorded
                        if not recorded:
                            tasks.append(UnitTask(key, stage="pretrain", seed=seed, arm=first,
                                                  after=(earlier[0],) if earlier and earlier[0] else (),
                                                  origin=earlier[1:] if earlier else None, **task))
                        made.setdefault(source, (None if recorded else key, store.record(unit), store.weights(unit)))
                    after = (key,) if made_here.get(key) else ()
                if not os.path.exists(store.record(finetune_unit(seed, name))):
                    tasks.append(UnitTask(os.path.join(run_dir, finetune_unit(seed, name)), stage="finetune",
                                          seed=seed, arm=name, after=after, **task))
    return tasks


def execute(run, out_dir: str, executor=None, on_done: Callable[[dict], None] | None = None) -> dict:
    """Run every unit of `run` (an `Experiment` or a `Sweep`, prepared) into `out_dir`; return its metrics.

    Args:
        run: the run.
        out_dir: its run directory (locked by the caller).
        executor: None: the local loop; otherwise an executor (`DaskExecutor`), entered here around its
            `run(tasks, on_done)`: its cluster lives while the workers train, not while the driver reports.
        on_done: called with each finished task's report (default: a line on the run's progress display).

    Returns:
        The run's metrics, as `run.run(out_dir)` returns them.
    """
    if executor is not None:
        run.started = time.perf_counter()
        points = run_points(run, out_dir)
        executor.log_dir = os.path.abspath(os.path.join(out_dir, WORKER_LOGS))
        tasks = unit_tasks(points, executor.log_dir)
        progress = run.progress

        def done(report: dict) -> None:
            progress.unit_done()
            progress.log(f"[{progress.done}/{progress.total}] {os.path.relpath(report['key'], out_dir)}: done by "
                         f"{report['worker']} ({report['seconds']:.0f}s)")

        with executor:
            progress.log(f"executor: dask, {len(tasks)} units on {executor.describe()}; worker logs in "
                         f"{executor.log_dir}/")
            progress.add_units(len(tasks))
            progress.phase(f"{len(tasks)} units on {executor.describe()}")
            executor.require_shared(os.path.abspath(out_dir))
            executor.run(tasks, on_done or done)
        for run_dir, experiment in points:
            experiment.ran_elsewhere = {t.unit for t in tasks if t.run_dir == run_dir}
            experiment.started = run.started
    return run.run(out_dir)


def executor_for(recipe, *, workers: int | None = None, address: str | None = None):
    """The executor of a run: None (the local loop), or a `DaskExecutor` (not started).

    `--workers N` or `--address` choose Dask whatever `runtime.executor` says; `runtime.executor: dask` alone starts a
    local cluster of one worker per GPU, or per two CPU cores.

    Raises:
        InputError: `workers` below 1, both `workers` and `address`, or `runtime.distribute: multi_worker`.
    """
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: give at least 1 worker process (or leave --workers out)")
    if workers is not None and address:
        raise InputError("--workers starts a cluster here and --address joins a running one; give one of them")
    if workers is None and not address and recipe.runtime.executor == "local":
        return None
    if recipe.runtime.distribute == "multi_worker":
        raise InputError("--workers/--address run units on Dask workers, one process each, which "
                         "runtime.distribute=multi_worker cannot use; set runtime.distribute to none or mirrored")
    from kpretrain.experiment.dask_executor import DaskExecutor

    return DaskExecutor(workers=workers, address=address)
