"""What a user sees must not change under a refactor: the numbers of a `--smoke` run of every shipped recipe.

`record` runs `kpretrain run RECIPE --smoke` for each recipe in `recipes/` (sweeps included) and stores its
`metrics.json` without what varies from run to run (timings, wall times, the environment, paths) under
`benchmarks/invariant/<recipe>.json`.  `check` runs them again and compares, value by value (numbers exactly:
every run is deterministic); it exits 1 naming the first difference of each recipe that changed.

    python benchmarks/invariant.py record [RECIPE ...]   # on the code before a refactor
    python benchmarks/invariant.py check [RECIPE ...]    # on the code after it
    python benchmarks/invariant.py check --ignore holm   # leaving out a key added on purpose
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
STORE = os.path.join(HERE, "invariant")
VARYING = ("seconds", "wall_time_s", "time_split", "environment", "provenance", "finetune_wall_time_s", "run_dir",
           "dir", "path", "started", "finished", "exported", "created")


def stable(value, ignore=()):
    """`value` without the keys that vary between identical runs (timings, environment, paths) nor `ignore`."""
    if isinstance(value, dict):
        return {k: stable(v, ignore) for k, v in value.items()
                if k not in VARYING and k not in ignore and not k.endswith("_time_s")}
    if isinstance(value, list):
        return [stable(v, ignore) for v in value]
    return value


def smoke_metrics(recipe: str) -> dict:
    """The stable part of the metrics.json a `--smoke` run of `recipe` writes (a fresh directory)."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "kpretrain.cli", "run", recipe, "--smoke", "--out", out, "-q"],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "metrics.json")) as fh:
            return stable(json.load(fh))


def first_difference(a, b, where: str = "") -> str | None:
    """The path of the first value that differs between `a` and `b`, with both values; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}.{key}: only in {'the record' if key in a else 'this run'}"
            found = first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items recorded, {len(b)} now"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: recorded {a!r}, now {b!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("recipes", nargs="*", help="default: every recipes/*.yaml")
    parser.add_argument("--ignore", action="append", default=[],
                        help="check: a key to leave out at any depth (one added on purpose), repeatable")
    args = parser.parse_intermixed_args()
    recipes = args.recipes or sorted(glob.glob(os.path.join(os.path.dirname(HERE), "recipes", "*.yaml")))
    os.makedirs(STORE, exist_ok=True)
    changed = 0
    for recipe in recipes:
        name = os.path.splitext(os.path.basename(recipe))[0]
        if name.endswith("_tune"):  # search recipes: `kpretrain tune` (tests/test_tuning.py), not `run`
            continue
        path = os.path.join(STORE, f"{name}.json")
        try:
            metrics = smoke_metrics(recipe)
        except subprocess.CalledProcessError:  # e.g. cifar10_rotation without its data set (TFDS, online)
            print(f"{name}: not run (kpretrain run --smoke exited non-zero; its error is on the line above)")
            continue
        if args.action == "record":
            with open(path, "w") as fh:
                json.dump(metrics, fh, indent=1, sort_keys=True)
            print(f"{name}: recorded")
            continue
        with open(path) as fh:
            found = first_difference(stable(json.load(fh), args.ignore), stable(json.loads(json.dumps(metrics)),
                                                                                 args.ignore))
        print(f"{name}: {'same numbers' if found is None else 'CHANGED ' + found}")
        changed += found is not None
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
