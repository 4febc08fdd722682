"""A run on Dask workers against the same run in one process, side by side in one run of this script.

    python benchmarks/executor.py                 # the main recipe under --smoke, and a small sweep
    python benchmarks/executor.py --full          # the main recipe in full (long)
    python benchmarks/executor.py --workers 1 2 4

For each recipe: `kpretrain run` in one process (`runtime.executor: local`), then with `--workers N` for each N,
each into a fresh directory, timed from start to exit (so start-up, the cluster and the driver's report are in).
Prints whether every `metrics.json` field but timings and paths (`invariant.stable`) equals the local run's, the
wall times, the speed-up of N workers over the local run, and the overhead per unit: (1 worker's wall time - local
wall time) / units.  Then the same recipe with `runtime.threads` = cores / N (the intra-op pool shared as well),
in one process and on the N workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from invariant import stable  # noqa: E402 - metrics.json without timings, wall times, paths


def results(metrics: dict) -> list:
    """What must not change: every point's arms and pre-trainings, without timings."""
    points = metrics.get("points") or [metrics]
    return [stable({"arms": p["arms"], "pretraining": p["pretraining"]}) for p in points]


def timed_run(recipe: str, out: str, extra: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kpretrain.cli", "run", recipe, "--out", out, "-q", *extra],
                          capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{recipe} {' '.join(extra)} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.json")) as fh:
        return wall, json.load(fh)


def units(out: str) -> int:
    return sum(1 for root, _, files in os.walk(out) if root.endswith("units") for f in files if f.endswith(".json"))


def small_sweep(directory: str) -> str:
    """The test suite's tiny sweep (two points, shared pre-training), on data made here."""
    sys.path.insert(0, ROOT)
    from tests.helpers import tiny_npz, tiny_recipe_dict

    recipe = tiny_recipe_dict(tiny_npz(os.path.join(directory, "tiny.npz")))
    recipe.update(finetune={"epochs": 2}, sweep={"data.labels_per_class": [5, 20]})
    path = os.path.join(directory, "sweep.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(recipe, fh)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the main recipe in full, not under --smoke")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--recipe", default="recipes/fashion_overlay.yaml", help="the main recipe")
    parser.add_argument("--no-shared-threads", action="store_true",
                        help="skip the pair with runtime.threads = cores / workers (local and on the workers)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(args.recipe, [] if args.full else ["--smoke"]), (small_sweep(tmp), [])]
        print(f"{os.cpu_count()} cores; wall seconds from start to exit; equal = every field but timings")
        for i, (recipe, extra) in enumerate(cases):
            name = os.path.basename(recipe) + (" --smoke" if extra else "")
            local_dir = os.path.join(tmp, f"{i}-local")
            local, reference = timed_run(recipe, local_dir, extra)
            n_units = units(local_dir)
            print(f"{name}: {n_units} units; local {local:.1f}s")
            walls = {}
            for n in args.workers:
                walls[n], metrics = timed_run(recipe, os.path.join(tmp, f"{i}-w{n}"), [*extra, "--workers", str(n)])
                same = results(metrics) == results(reference)
                print(f"  --workers {n}: {walls[n]:.1f}s, speed-up over local x{local / walls[n]:.2f}, "
                      f"equal: {same}")
            if 1 in walls:
                print(f"  overhead per unit (1 worker - local) / units: {(walls[1] - local) / n_units:+.2f}s")
            n = max(args.workers)
            if n > 1 and not args.no_shared_threads:  # the intra-op pool shared too: a recipe of its own
                threads = ["--set", f"runtime.threads={max(1, (os.cpu_count() or 1) // n)}"]
                local_t, reference_t = timed_run(recipe, os.path.join(tmp, f"{i}-local-t"), [*extra, *threads])
                wall_t, metrics_t = timed_run(recipe, os.path.join(tmp, f"{i}-w{n}-t"),
                                              [*extra, *threads, "--workers", str(n)])
                print(f"  {threads[1]}: local {local_t:.1f}s, --workers {n}: {wall_t:.1f}s, speed-up "
                      f"x{local_t / wall_t:.2f} (over the default local run x{local / wall_t:.2f}), "
                      f"equal: {results(metrics_t) == results(reference_t)}")


if __name__ == "__main__":
    main()
