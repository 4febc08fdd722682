"""Dask distributed against Ray, side by side in one run, for what kpretrain's executor needs of an engine.

    python -m venv /tmp/engines && /tmp/engines/bin/pip install "dask[distributed]" ray
    /tmp/engines/bin/python benchmarks/engines.py [--workers 2] [--tasks 200]

Prints, for each engine: its installed weight (the files of the distributions it pulls in), the seconds to import it
(fresh interpreter), to start a local cluster of N worker processes and shut it down, the round trip of one task
at a time (submit, wait, result: what a unit pays on top of its training) and the time per task when many tiny tasks
are submitted at once.  Ratios are Ray over Dask.  Ray is not a kpretrain dependency: run this in a separate venv.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import subprocess
import sys
import time


def closure_size(root: str) -> tuple[int, int]:
    """(bytes, distributions) of `root` and every distribution it requires (extras off), as installed here."""
    seen, todo, total = set(), [root], 0
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if not name or name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen.add(name)
        total += sum(os.path.getsize(dist.locate_file(f)) for f in dist.files or () if
                     os.path.exists(dist.locate_file(f)))
        todo += [r for r in dist.requires or () if "extra ==" not in r]
    return total, len(seen)


def import_seconds(module: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - started


def _noop(x):
    return x


def dask_times(workers: int, tasks: int) -> dict:
    import distributed

    started = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, host="127.0.0.1")
    client = distributed.Client(cluster)
    client.submit(_noop, 0, pure=False).result()  # every worker up and a first task through
    start = time.perf_counter() - started
    t0 = time.perf_counter()
    for i in range(50):
        client.submit(_noop, i, pure=False).result()
    round_trip = (time.perf_counter() - t0) / 50
    t0 = time.perf_counter()
    client.gather(client.map(_noop, range(tasks), pure=False))
    per_task = (time.perf_counter() - t0) / tasks
    t0 = time.perf_counter()
    client.close()
    cluster.close()
    return {"start": start, "round_trip": round_trip, "per_task": per_task, "stop": time.perf_counter() - t0}


def ray_times(workers: int, tasks: int) -> dict:
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    noop = ray.remote(num_cpus=1)(_noop)
    ray.get(noop.remote(0))
    start = time.perf_counter() - started
    t0 = time.perf_counter()
    for i in range(50):
        ray.get(noop.remote(i))
    round_trip = (time.perf_counter() - t0) / 50
    t0 = time.perf_counter()
    ray.get([noop.remote(i) for i in range(tasks)])
    per_task = (time.perf_counter() - t0) / tasks
    t0 = time.perf_counter()
    ray.shutdown()
    return {"start": start, "round_trip": round_trip, "per_task": per_task, "stop": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    rows = {}
    for engine, root, module, times in (("dask", "distributed", "distributed", dask_times),
                                        ("ray", "ray", "ray", ray_times)):
        size, dists = closure_size(root)
        rows[engine] = {"MB": size / 1e6, "dists": dists, "import": import_seconds(module),
                        **times(args.workers, args.tasks)}
    print(f"{args.workers} worker processes, {os.cpu_count()} cores; seconds unless said")
    print(f"{'':24}{'dask':>12}{'ray':>12}{'ray/dask':>10}")
    for key, label in (("MB", "installed MB (closure)"), ("dists", "distributions"), ("import", "import"),
                       ("start", "start cluster"), ("stop", "shut down"), ("round_trip", "one task round trip"),
                       ("per_task", "per task, many at once")):
        d, r = rows["dask"][key], rows["ray"][key]
        print(f"{label:24}{d:12.4g}{r:12.4g}{r / d:10.2f}")


if __name__ == "__main__":
    main()
