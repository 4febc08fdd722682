"""Cost of `runtime.deterministic: true` (TensorFlow op determinism), measured side by side in one process.

The same recipe (recipes/fashion_overlay.yaml, one seed: overlay pre-training on the unlabelled pool, then both
arms fine-tuned and evaluated, exactly as `kpretrain run` does) runs with op determinism on and off, interleaved
(on, off, off, on, ...); the medians of the two wall times are compared.  Goal: at most 1.05, the condition for
determinism being the default.  It also checks what determinism buys: the repeats with it on give identical test
accuracies.

    python benchmarks/determinism.py [--quick | --smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kpretrain.experiment import Experiment  # noqa: E402
from kpretrain.recipe import load_recipe  # noqa: E402


def one_run(deterministic: bool, overrides: list[str], smoke: bool = False) -> tuple[float, dict]:
    recipe = load_recipe("recipes/fashion_overlay.yaml",
                         [*overrides, f"runtime.deterministic={'true' if deterministic else 'false'}"])
    experiment = Experiment(recipe, smoke=smoke, log=lambda line: None)
    experiment.prepare()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        metrics = experiment.run(out)
        wall = time.perf_counter() - start
    return wall, {name: arm["test_accuracy"][0] for name, arm in metrics["arms"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats (a few minutes on 2 cores)")
    parser.add_argument("--smoke", action="store_true", help="`kpretrain run --smoke` sized runs: checks the script "
                        "(seconds), the ratio means little")
    args = parser.parse_args()
    repeats = 1 if args.smoke else 2 if args.quick else 4
    overrides = ["seeds=[0]", "finetune.epochs=5" if args.quick else "finetune.epochs=15",
                 "data.validation=2000" if args.quick else "data.validation=5000"]
    print(f"recipes/fashion_overlay.yaml with {' '.join(overrides)}, {repeats} repeats each, interleaved")
    if not args.smoke:
        one_run(False, overrides)  # warm-up: first imports and traces are not part of either side
    times: dict[bool, list[float]] = {True: [], False: []}
    accuracies: dict[bool, list[dict]] = {True: [], False: []}
    for i in range(repeats):
        for deterministic in ((True, False) if i % 2 == 0 else (False, True)):
            wall, acc = one_run(deterministic, overrides, args.smoke)
            times[deterministic].append(wall)
            accuracies[deterministic].append(acc)
            print(f"  deterministic={str(deterministic).lower():5s} {wall:6.1f} s  test accuracy {acc}")
    on, off = statistics.median(times[True]), statistics.median(times[False])
    if repeats > 1:
        same = all(a == accuracies[True][0] for a in accuracies[True])
        print(f"deterministic repeats give identical test accuracies: {'yes' if same else 'NO'}")
        print(f"default (non-deterministic) repeats differ: "
              f"{'yes' if any(a != accuracies[False][0] for a in accuracies[False]) else 'no'}")
    print(f"deterministic/default wall-time ratio: {on / off:.2f}")


if __name__ == "__main__":
    main()
