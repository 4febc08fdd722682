"""The units of a run on a Dask cluster (`runtime.executor: dask`): a local one of N worker processes, or a
running one at an address.  Dask schedules the graph of `executor.unit_tasks`, re-runs a task whose worker died
on another worker (Dask's `allowed-failures`; the unit resumes from its stage backup in the run directory) and
hands each worker one unit at a time.  Why Dask rather than Ray: docs/guide/distributed.md.
"""

from __future__ import annotations

import logging
import os
import uuid

from kpretrain.errors import InputError
from kpretrain.training import interruption

INSTALL_HINT = "pip install 'kpretrain[distributed]'"


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, as `CUDA_VISIBLE_DEVICES` names them (all of them when it is unset)."""
    import tensorflow as tf

    count = len(tf.config.list_physical_devices("GPU"))
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (listed or [str(i) for i in range(count)])[:count]


def worker_environments(workers: int | None, gpus: list[str], cores: int, log_dir: str | None = None
                        ) -> list[dict[str, str]]:
    """Each local worker's environment: one GPU each (`CUDA_VISIBLE_DEVICES`, in turn when there are more workers
    than GPUs, then with memory growth so they can share), and an equal share of the CPU threads for TensorFlow's
    inter-op pool (`worker.share_cpu`: not the intra-op pool, whose size changes the last bits of results);
    the worker's own output into `<log_dir>/worker-<i>.log` (`kpretrain.worker_output`).

    Args:
        workers: how many (None: one per GPU, or one per two CPU cores without GPUs).
        gpus: `visible_gpus()`.
        cores: CPU cores of the machine.
        log_dir: the run's worker log directory (None: the worker's output stays on the driver's terminal).

    Returns:
        One dict of environment variables per worker.

    Example:
        >>> worker_environments(2, ["0", "1"], 16)[1]
        {'KPRETRAIN_WORKER_THREADS': '8', 'CUDA_VISIBLE_DEVICES': '1'}
    """
    from kpretrain.experiment.worker import THREADS_ENV
    from kpretrain.worker_output import LOG_ENV

    n = workers or len(gpus) or max(1, cores // 2)
    threads = str(max(1, cores // n))
    envs = []
    for i in range(n):
        env = {THREADS_ENV: threads}
        if log_dir:
            env[LOG_ENV] = os.path.join(log_dir, f"worker-{i}.log")
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            if n > len(gpus):
                env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        envs.append(env)
    return envs


class DaskExecutor:
    """Trains the units of a run on Dask workers.  Use it as a context manager around `executor.execute`.

    Args:
        workers: start a local cluster of this many worker processes on 127.0.0.1 (see `worker_environments`).
        address: join the running cluster whose scheduler is there instead (e.g. `tcp://10.0.0.5:8786`); its
            workers must see the run directory at the same path, and run one task at a time (`--nthreads 1`).
        timeout: seconds to wait for the scheduler at `address`.

    Example:
        >>> with DaskExecutor(workers=2) as executor:
        ...     metrics = execute(make_run(recipe), "runs/x", executor)
    """

    def __init__(self, workers: int | None = None, address: str | None = None, timeout: float = 10.0):
        self.workers, self.address, self.timeout = workers, address, timeout
        self.log_dir: str | None = None  # set by `executor.execute` before the cluster starts
        self.client = self.cluster = None
        self.environments: list[dict] = []

    def describe(self) -> str:
        if self.address:
            return f"the Dask cluster at {self.address}"
        envs = self.environments or worker_environments(self.workers, visible_gpus(), os.cpu_count() or 1)
        gpus = [e["CUDA_VISIBLE_DEVICES"] for e in envs if "CUDA_VISIBLE_DEVICES" in e]
        threads = envs[0]["KPRETRAIN_WORKER_THREADS"]
        each = f"GPU {', '.join(gpus)} in turn" if gpus else f"{threads} inter-op CPU thread{'s' * (threads != '1')} each"
        return f"a local Dask cluster of {len(envs)} worker process{'es' * (len(envs) > 1)} ({each})"

    def __enter__(self) -> "DaskExecutor":
        try:
            import distributed
        except ImportError:
            raise InputError(f"runtime.executor=dask (--workers, --address) needs Dask: {INSTALL_HINT}") from None
        for name in ("distributed", "tornado"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if self.address:
            try:
                self.client = distributed.Client(self.address, timeout=f"{self.timeout}s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"--address {self.address!r}: no Dask scheduler answers there ({_first_line(exc)}); "
                                 f"start one (`dask scheduler`, then `dask worker {self.address} --nthreads 1`) or "
                                 f"leave --address out to run here") from None
            return self
        self.environments = worker_environments(self.workers, visible_gpus(), os.cpu_count() or 1, self.log_dir)
        specs = {str(i): {"cls": distributed.Nanny, "options": {
            "nthreads": 1, "memory_limit": 0, "env": env, "host": "127.0.0.1", "silence_logs": logging.ERROR,
            "preload": ["kpretrain.worker_output"]}}
            for i, env in enumerate(self.environments)}
        scheduler = {"cls": distributed.Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
        self.cluster = distributed.SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.ERROR)
        self.client = distributed.Client(self.cluster)
        return self

    def __exit__(self, *exc) -> bool:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None
        return False

    def require_shared(self, run_dir: str) -> None:
        """Every worker can write `run_dir` (at the same path), or an InputError naming those that cannot."""
        writable = self.client.run(os.access, run_dir, os.W_OK)
        blind = sorted(str(worker) for worker, ok in writable.items() if not ok)
        if blind:
            raise InputError(f"run directory {run_dir!r}: {len(blind)} of {len(writable)} Dask workers cannot write "
                             f"there ({', '.join(blind[:3])}{', ...' if len(blind) > 3 else ''}); put it on storage "
                             f"every worker sees at the same path (--out)")

    def run(self, tasks: list, on_done) -> None:
        """Submit `tasks` (each after the tasks it names), call `on_done(report)` as each finishes.

        Raises:
            Whatever a task raised (training failure, bad input found on a worker); `Interrupted` on a signal.
            The tasks still pending are cancelled.
        """
        import distributed

        futures: dict = {}
        for task in tasks:
            futures[task.key] = self.client.submit(  # pre-trainings first: fine-tunings wait for them
                _on_worker, task, [futures[k] for k in task.after], key=f"{task.unit}-{uuid.uuid4().hex[:8]}",
                pure=False, priority=int(task.stage == "pretrain"))
        pending = set(futures.values())
        try:
            while pending:
                try:
                    done, pending = distributed.wait(pending, timeout=1, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = ()
                for future in done:
                    on_done(future.result())
                interruption.check()
        finally:
            if pending:
                self.client.cancel(list(pending))


def _on_worker(task, _after: list) -> dict:
    """The task as a Dask worker runs it (`_after`: the reports of the tasks it waited for)."""
    from distributed import get_worker

    from kpretrain.experiment.worker import run_task

    return run_task(task, f"worker-{get_worker().name}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
