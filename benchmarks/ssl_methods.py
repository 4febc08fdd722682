"""Does each self-supervised method learn?  A short pre-training of one backbone per method on Fashion-MNIST's train
images, then a linear probe and a kNN classifier on its frozen features (batch-norm statistics refreshed) of 100
labelled images per class, scored on 5,000 held-out validation images; beside them the same backbone untrained
(random features), measured in the same run.

    python benchmarks/ssl_methods.py                 # every method, 1 epoch each (about 45 min on 2 cores)
    python benchmarks/ssl_methods.py --epochs 2 --methods byol moco
    python benchmarks/ssl_methods.py --quick         # 0.1 epoch each: does everything run (minutes)

Prints one Markdown row per method: pre-training minutes, linear probe and kNN accuracy, and their gain over random
features (the table in docs/guide/pretext-tasks.md).  Nothing is chosen on the test split: it is not read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ("contrastive", "simsiam", "barlow_twins", "vicreg", "byol", "moco", "dino", "masked_image", "rotation")


def features_scores(backbone, x_pool, x_labelled, y_labelled, x_val, y_val, batch: int) -> tuple[float, float]:
    """(linear probe, kNN) validation accuracy of `backbone`'s frozen features, BN statistics refreshed on the pool."""
    import numpy as np

    from kpretrain.data import image_batches
    from kpretrain.training.bn_refresh import refresh_batch_norm, statistics_restored
    from kpretrain.training.head_init import fit_logistic_regression
    from kpretrain.training.knn import backbone_features, knn_predict

    with statistics_restored(backbone):
        refresh_batch_norm(backbone, image_batches(x_pool, batch, shuffle=True, seed=0, drop_remainder=True), 100)
        memory = backbone_features(backbone, image_batches(x_labelled, batch, shuffle=False, seed=0))
        queries = backbone_features(backbone, image_batches(x_val, batch, shuffle=False, seed=0))
    kernel, bias = fit_logistic_regression(memory, y_labelled, 10)
    linear = float(np.mean(np.argmax(queries @ kernel + bias, axis=1) == y_val))
    knn = float(np.mean(knn_predict(memory, y_labelled, queries, num_classes=10, k=20) == y_val))
    return linear, knn


def pretrain(method: str, backbone, x_pool, epochs: float, batch: int, learning_rate: float) -> float:
    """Pre-train `backbone` in place with `method` for `epochs` passes over `x_pool`; returns the minutes taken."""
    from kpretrain.data import image_batches
    from kpretrain.pretext import create_task
    from kpretrain.recipe import OptimizerConfig
    from kpretrain.training.stages import fit_stage

    task = create_task(method, seed=0)
    model = task.build_model(backbone, seed=0)

    def train(start):
        return task.make_dataset(image_batches(x_pool, batch, shuffle=True, seed=0, drop_remainder=True, start=start,
                                               repeat=True), start)

    start = time.perf_counter()
    fit_stage(model, train, epochs=epochs, steps_per_epoch=len(x_pool) // batch,
              optimizer=OptimizerConfig(learning_rate=learning_rate), compile_kwargs=task.compile_kwargs())
    return (time.perf_counter() - start) / 60


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--epochs", type=float, default=1.0, help="pre-training passes over the train images")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--quick", action="store_true", help="0.1 epoch per method")
    args = parser.parse_args(argv)

    import numpy as np

    from kpretrain.data import load_dataset
    import tensorflow as tf

    from kpretrain.models.backbones import small_cnn

    tf.config.experimental.enable_op_determinism()  # as kpretrain runs do

    data = load_dataset("fashion_mnist")
    order = np.random.default_rng(0).permutation(len(data.y_train))
    val, pool = order[:5000], order[5000:]
    labelled = np.sort(np.concatenate([pool[data.y_train[pool] == c][:100] for c in range(10)]))
    x_pool, (x_lab, y_lab), (x_val, y_val) = data.x_train[pool], (data.x_train[labelled], data.y_train[labelled]), \
        (data.x_train[val], data.y_train[val])
    epochs = 0.1 if args.quick else args.epochs

    def fresh():
        return small_cnn(x_pool.shape[1:], seed=0, widths=(16, 32, 64))

    base = features_scores(fresh(), x_pool, x_lab, y_lab, x_val, y_val, args.batch_size)
    print(f"Fashion-MNIST, small_cnn [16, 32, 64], {epochs:g} epoch(s) of pre-training on {len(x_pool):,} images, "
          f"batch {args.batch_size}, adam {args.learning_rate:g}; probes: 100 labels per class, 5,000 validation")
    print("| method | pre-training min | linear probe | kNN | linear - random | kNN - random |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| random features | 0 | {base[0]:.3f} | {base[1]:.3f} | | |", flush=True)
    for method in args.methods:
        backbone = fresh()
        minutes = pretrain(method, backbone, x_pool, epochs, args.batch_size, args.learning_rate)
        linear, knn = features_scores(backbone, x_pool, x_lab, y_lab, x_val, y_val, args.batch_size)
        print(f"| {method} | {minutes:.1f} | {linear:.3f} | {knn:.3f} | {linear - base[0]:+.3f} | "
              f"{knn - base[1]:+.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
