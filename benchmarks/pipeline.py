"""Pretext pipeline cost: images/s of each task's tf.data pipeline alone, and training step time of each
pretext task against plain supervised training on the same backbone and model batch size.

Tasks whose output batch is m times their input batch (rotation with all_rotations, contrastive) get B/m
input images per step, so every model sees B images per step and step times compare directly.
After a warm-up, each repeat trains every task arm for a short burst between two supervised bursts; a task's
ratio is the median over repeats of its step time over the mean of the two neighbouring supervised ones, which
cancels slow drifts in machine load.  Ends with `worst step-time ratio: X.XX` (the worst task's ratio).
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kpretrain.models.backbones import create_backbone  # noqa: E402
from kpretrain.models.heads import attach_head, create_head  # noqa: E402
from kpretrain.pretext import create_task  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TASK_ARMS = {
    "rotation": ("rotation", {}),
    "rotation_all": ("rotation", {"all_rotations": True}),
    "noise": ("noise", {}),
    "overlay": ("overlay", {}),
    "jigsaw": ("jigsaw", {}),
    "mixed": ("mixed", {}),
    "contrastive": ("contrastive", {}),
}


def load_images(limit: int) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 [N,28,28,1] images and int labels: Fashion-MNIST train if present, else random arrays."""
    images_path = FASHION_MNIST / "train-images-idx3-ubyte.gz"
    labels_path = FASHION_MNIST / "train-labels-idx1-ubyte.gz"
    if images_path.exists() and labels_path.exists():
        with gzip.open(images_path) as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:limit]
        with gzip.open(labels_path) as f:
            labels = np.frombuffer(f.read(), np.uint8, offset=8)[:limit].astype(np.int32)
        return images, labels, "Fashion-MNIST train"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (limit, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, limit, dtype=np.int32),
            "random uint8")


def float_batches(images: np.ndarray, batch: int, labels: np.ndarray | None = None) -> tf.data.Dataset:
    """Endless batches of float32 images in [0, 1] (with labels if given), as a training pipeline would."""
    ds = tf.data.Dataset.from_tensor_slices(images if labels is None else (images, labels)).repeat()
    ds = ds.batch(batch, drop_remainder=True)
    if labels is None:
        return ds.map(lambda x: tf.cast(x, tf.float32) / 255.0, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)


def pipeline_cost(ds: tf.data.Dataset, input_batch: int, batches: int) -> tuple[float, float]:
    """Iterating `ds` alone, after a warm-up: (input images per second, process CPU seconds per batch)."""
    iterator = iter(ds)
    for _ in range(3):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    return batches * input_batch / (time.perf_counter() - wall), (time.process_time() - cpu) / batches


class StepTimes(keras.callbacks.Callback):
    """Wall and process CPU time between consecutive training steps (data wait and pipeline work included);
    the first step of each fit is dropped."""

    def __init__(self):
        super().__init__()
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._last = None

    def on_train_begin(self, logs=None):
        self.wall, self.cpu, self._last = [], [], None

    def on_train_batch_end(self, batch, logs=None):
        now = (time.perf_counter(), time.process_time())
        if self._last is not None:
            self.wall.append(now[0] - self._last[0])
            self.cpu.append(now[1] - self._last[1])
        self._last = now


class Arm:
    """One model with its endless dataset, trained in short bursts."""

    def __init__(self, name: str, model: keras.Model, compile_kwargs: dict, ds: tf.data.Dataset, input_batch: int):
        self.name, self.model, self.ds, self.input_batch = name, model, ds, input_batch
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), **compile_kwargs)
        self.timer = StepTimes()
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, steps: int) -> tuple[float, float]:
        """Train `steps` + 1 steps; records and returns the median wall and CPU time of the last `steps`."""
        self.model.fit(self.ds, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[self.timer])
        self.wall.append(statistics.median(self.timer.wall))
        self.cpu.append(statistics.median(self.timer.cpu))
        return self.wall[-1], self.cpu[-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a few minutes on 2 cores)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per training step seen by the model")
    parser.add_argument("--steps", type=int, help="timed steps per burst")
    parser.add_argument("--repeats", type=int, help="turns over all arms")
    args = parser.parse_args(argv)
    steps = args.steps or (4 if args.quick else 10)
    repeats = args.repeats or (9 if args.quick else 15)
    batch = args.batch_size
    keras.utils.set_random_seed(0)
    images, labels, source = load_images(8192 if args.quick else 60000)
    print(f"data: {source}, {len(images)} images 28x28x1; model batch {batch}; backbone small_cnn; "
          f"{steps} steps x {repeats} repeats per arm; {os.cpu_count()} CPU cores")

    supervised_model = attach_head(create_backbone("small_cnn", (28, 28, 1), seed=0),
                                   create_head("linear", 128, 10, seed=0))
    supervised = Arm("supervised", supervised_model,
                     {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]},
                     float_batches(images, batch, labels).prefetch(tf.data.AUTOTUNE), batch)
    arms = [supervised]
    for name, (task_name, options) in TASK_ARMS.items():
        task = create_task(task_name, options, seed=0)
        input_batch = batch // task.batch_multiplier
        model = task.build_model(create_backbone("small_cnn", (28, 28, 1), seed=0), seed=0)
        arms.append(Arm(name, model, task.compile_kwargs(), task.make_dataset(float_batches(images, input_batch)),
                        input_batch))
    costs = {arm.name: pipeline_cost(arm.ds, arm.input_batch, 20 if args.quick else 100) for arm in arms}

    for arm in arms:  # warm-up: tracing, first iterators, autotuning
        arm.run(2)
        arm.wall.clear(), arm.cpu.clear()
    wall_ratios = {arm.name: [] for arm in arms[1:]}
    cpu_ratios = {arm.name: [] for arm in arms[1:]}
    tasks = arms[1:]
    for repeat in range(repeats):
        before = supervised.run(steps)
        for arm in tasks[repeat % len(tasks):] + tasks[:repeat % len(tasks)]:
            own, after = arm.run(steps), supervised.run(steps)
            wall_ratios[arm.name].append(own[0] / ((before[0] + after[0]) / 2))
            cpu_ratios[arm.name].append(own[1] / ((before[1] + after[1]) / 2))
            before = after

    median = statistics.median
    print(f"\n{'arm':<13}{'input img':>10}{'pipeline':>11}{'pipeline':>10}{'step':>8}{'step':>8}"
          f"{'wall':>7}{'wall ratio':>13}{'CPU':>7}")
    print(f"{'':<13}{'per step':>10}{'img/s':>11}{'CPU ms':>10}{'ms':>8}{'CPU ms':>8}{'ratio':>7}"
          f"{'range':>13}{'ratio':>7}")
    for arm in arms:
        rate, cpu = costs[arm.name]
        walls = wall_ratios.get(arm.name, [1.0])
        print(f"{arm.name:<13}{arm.input_batch:>10}{rate:>11,.0f}{1000 * cpu:>10.2f}{1000 * median(arm.wall):>8.1f}"
              f"{1000 * median(arm.cpu):>8.1f}{median(walls):>7.2f}{min(walls):>7.2f}-{max(walls):<5.2f}"
              f"{median(cpu_ratios.get(arm.name, [1.0])):>7.2f}")
    print(f"compared: one training step at the same model batch ({batch} images; rotation_all and contrastive take "
          f"{batch // 4} and {batch // 2} input images and make 4 and 2 views of each).  wall/CPU ratio: median over "
          "repeats of the arm's step time over the mean of the supervised bursts just before and after it; CPU "
          "time is this process's, so it does not count other programs' load.  pipeline columns: the task's "
          "tf.data pipeline iterated alone.")
    print(f"worst step-time ratio: {max(median(v) for v in wall_ratios.values()):.2f}")


if __name__ == "__main__":
    main()
