"""Tracing: a stage whose optimizer and metric variables are built before `fit` (`training.state.build_state`)
against the same stage left to Keras, measured side by side.

Without a distribution strategy Keras creates those variables while tracing the first training step, and
TensorFlow then traces the step a second time.  Each measurement is a fresh process running
`kpretrain run RECIPE --smoke` (every unit traces its own models; the `--smoke` budget makes tracing most of a
unit's time), once as shipped and once with `build_state` replaced by a no-op; the two alternate, and the median
of the run's wall time (`metrics.json` `wall_time_s`, a sweep's included: its units, without start-up) is
compared.  Both must write the same numbers (every `metrics.json` field but timings and paths), else
the script exits 1.

    python benchmarks/tracing.py [--repeats 3] [RECIPE ...]   # default: fashion_overlay (about 1 min a pair)

Any recipe can be given (a sweep too); `recipes/fashion_ssl_methods.yaml`, every self-supervised method on 5 seeds and
2 points, takes over 10 min a run here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from invariant import first_difference, stable  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = ["recipes/fashion_overlay.yaml"]
LEFT_TO_KERAS = ("import kpretrain.training.stages as s, kpretrain.training.lr_finder as f; "
                 "s.build_state = f.build_state = lambda model, batches: None; ")


def smoke_run(recipe: str, built: bool) -> tuple[float, dict]:
    """(wall seconds of the run's units, stable metrics) of `kpretrain run RECIPE --smoke` in a fresh process."""
    with tempfile.TemporaryDirectory() as out:
        code = ("" if built else LEFT_TO_KERAS) + (
            "import sys; from kpretrain.cli import main; "
            f"sys.exit(main(['run', {recipe!r}, '--smoke', '--out', {out!r}, '-q']))")
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # TensorFlow's start-up lines, unless it fails
        if done.returncode:
            sys.exit(f"kpretrain run {recipe} --smoke failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        with open(os.path.join(out, "metrics.json")) as fh:
            metrics = json.load(fh)
    return metrics["wall_time_s"], stable(metrics)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", default=RECIPES)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    failed = 0
    for recipe in args.recipes:
        times = {"left to Keras": [], "built first": []}
        numbers = {}
        for _ in range(args.repeats):  # alternating, so that drifts of a noisy machine hit both alike
            for label, built in (("left to Keras", False), ("built first", True)):
                seconds, numbers[label] = smoke_run(recipe, built)
                times[label].append(seconds)
        medians = {k: statistics.median(v) for k, v in times.items()}
        for label, values in times.items():
            print(f"  {os.path.basename(recipe):26s} {label:14s} median {medians[label]:6.1f} s "
                  f"(runs: {', '.join(f'{t:.1f}' for t in values)} s)")
        difference = first_difference(numbers["left to Keras"], numbers["built first"])
        failed += difference is not None
        print(f"{os.path.basename(recipe)}: built first / left to Keras wall-time ratio: "
              f"{medians['built first'] / medians['left to Keras']:.2f}; numbers "
              + ("equal" if difference is None else f"DIFFER at {difference}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
