"""Overhead of kpretrain's supervised stage against a hand-written `model.fit`, measured side by side.

Both train the same architecture from the same initial weights on the same Fashion-MNIST images for the
same number of epochs; runs are interleaved and repeated, and the median of each is compared.  The first
ratio is the training stage alone (goal <= 1.05); the second adds kpretrain's per-epoch validation with
BN-refreshed accuracy (raw accuracy after the last epoch, as `finetune` does by default) against Keras' plain
`validation_data` (goal <= 1.10).

A third figure is kpretrain's training throughput (images/s of the training-only stage's epochs after the first,
so without tracing) as a fraction of the same model's compute ceiling on this machine: the
tight-loop rate of a train step on one in-memory float32 batch (`tf.constant`), timed after warm-up as the
faster of a `tf.function` GradientTape step and `model.train_on_batch` (goal >= 0.9).  The tight loops run
interleaved with the training-only repeats, one epoch's worth of steps each, and their medians are used.

    python benchmarks/overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kpretrain.data import labelled_batches, load_dataset  # noqa: E402
from kpretrain.models.backbones import create_backbone  # noqa: E402
from kpretrain.models.heads import attach_head, create_head  # noqa: E402
from kpretrain.recipe import OptimizerConfig  # noqa: E402
from kpretrain.training.callbacks import RefreshedValidation  # noqa: E402
from kpretrain.training.stages import fit_stage  # noqa: E402
from kpretrain.data import image_batches  # noqa: E402



def build(seed=0):
    backbone = create_backbone("small_cnn", (28, 28, 1), seed=seed, widths=(16, 32, 64))
    return attach_head(backbone, create_head("linear", backbone.output_shape[-1], 10, seed=seed))


def compile_kwargs():
    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


def hand_written(x, y, xv, yv, epochs, batch, validate):
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), **compile_kwargs())
    start = time.perf_counter()
    model.fit(x.astype("float32") / 255.0, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0,
              validation_data=(xv.astype("float32") / 255.0, yv) if validate else None)
    return time.perf_counter() - start


class EpochTimes(keras.callbacks.Callback):
    """Wall time of every epoch (the first includes tracing)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def kpretrain_stage(x, y, xv, yv, epochs, batch, validate, epoch_times=None):
    """Seconds of kpretrain's fine-tuning stage (fit_stage + RefreshedValidation as `finetune` sets them up)."""
    model = build()
    start = time.perf_counter()
    callbacks = [epoch_times] if epoch_times is not None else []
    if validate:
        callbacks.insert(0, RefreshedValidation(labelled_batches(xv, yv, batch, shuffle=False, seed=0), yv,
                                                image_batches(x, batch, shuffle=True, seed=0), 50))
    fit_stage(model, labelled_batches(x, y, batch, shuffle=True, seed=0), epochs=epochs,
              steps_per_epoch=int(np.ceil(len(y) / batch)), optimizer=OptimizerConfig(learning_rate=1e-3),
              compile_kwargs=compile_kwargs(), callbacks=callbacks)
    return time.perf_counter() - start


def tight_loops(x, y, batch, warmup=10):
    """{name: time(steps) -> seconds} for train steps on one batch already in memory, both variants traced.

    Each variant gets its own model, built and compiled like the others (Adam 1e-3, same loss and metric).
    """
    xb = tf.constant(x[:batch].astype("float32") / 255.0)
    yb = tf.constant(y[:batch].astype("int32"))

    tape_model = build()
    kwargs = compile_kwargs()
    tape_model.compile(optimizer=keras.optimizers.Adam(1e-3), **kwargs)
    loss_fn, metric, optimizer = kwargs["loss"], kwargs["metrics"][0], tape_model.optimizer

    @tf.function
    def tape_step(images, labels):
        with tf.GradientTape() as tape:
            logits = tape_model(images, training=True)
            loss = loss_fn(labels, logits)
        grads = tape.gradient(loss, tape_model.trainable_variables)
        optimizer.apply_gradients(zip(grads, tape_model.trainable_variables))
        metric.update_state(labels, logits)
        return loss

    def time_tape(steps):
        start = time.perf_counter()
        for _ in range(steps):
            loss = tape_step(xb, yb)
        loss.numpy()  # wait for the last step
        return time.perf_counter() - start

    tob_model = build()
    tob_model.compile(optimizer=keras.optimizers.Adam(1e-3), **compile_kwargs())

    def time_train_on_batch(steps):
        start = time.perf_counter()
        for _ in range(steps):
            tob_model.train_on_batch(xb, yb)  # returns numpy values, so each step has finished
        return time.perf_counter() - start

    loops = {"tf.function GradientTape": time_tape, "train_on_batch": time_train_on_batch}
    for timed in loops.values():
        timed(warmup)  # tracing and first-step costs are not timed
    return loops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (a few minutes on 2 cores)")
    args = parser.parse_args()
    data = load_dataset("fashion_mnist")
    n, repeats, epochs = (12_000, 3, 2) if args.quick else (50_000, 5, 3)
    x, y = data.x_train[:n], data.y_train[:n]
    xv, yv = data.x_train[-5000:], data.y_train[-5000:]
    batch = 128
    print(f"{n} Fashion-MNIST images, batch {batch}, {epochs} epochs per measurement, {repeats} repeats, "
          f"interleaved")
    steps_per_epoch = int(np.ceil(n / batch))
    results = {}
    loops = tight_loops(x, y, batch)
    loop_times = {name: [] for name in loops}
    steady = []
    for validate in (False, True):
        times = {"hand-written fit": [], "kpretrain stage": []}
        hand_written(x[:1024], y[:1024], xv[:256], yv[:256], 1, batch, validate)  # warm up both paths
        kpretrain_stage(x[:1024], y[:1024], xv[:256], yv[:256], 1, batch, validate)
        for _ in range(repeats):
            times["hand-written fit"].append(hand_written(x, y, xv, yv, epochs, batch, validate))
            epoch_times = EpochTimes()
            times["kpretrain stage"].append(kpretrain_stage(x, y, xv, yv, epochs, batch, validate, epoch_times))
            if not validate:
                steady.extend(epoch_times.seconds[1:])  # epochs after the first: no tracing
            if not validate:  # the compute ceiling, side by side with the training-only runs
                for name, timed in loops.items():
                    loop_times[name].append(timed(steps_per_epoch))
        label = "with validation" if validate else "training only"
        medians = {k: statistics.median(v) for k, v in times.items()}
        for k, v in times.items():
            print(f"  {label:16s} {k:17s} median {medians[k] / epochs:6.2f} s/epoch  "
                  f"(runs: {', '.join(f'{t:.1f}' for t in v)} s)")
        results[label] = medians["kpretrain stage"] / medians["hand-written fit"]
        if not validate:
            results["kpretrain images/s"] = n / statistics.median(steady)
            loop_rates = {}
            for name, v in loop_times.items():
                rates = [steps_per_epoch * batch / t for t in v]
                loop_rates[name] = statistics.median(rates)
                print(f"  {label:16s} tight loop, {name:24s} median {loop_rates[name]:6.0f} images/s  "
                      f"(runs: {', '.join(f'{r:.0f}' for r in rates)} images/s, {steps_per_epoch} steps each)")
            results["tight loop"] = max(loop_rates.items(), key=lambda item: item[1])
    print(f"ratio with validation (BN-refreshed every epoch + raw at the end vs Keras validation_data): "
          f"{results['with validation']:.2f}")
    print(f"epoch-time ratio kpretrain/hand-written: {results['training only']:.2f}")
    loop_name, loop_rate = results["tight loop"]
    kp_rate = results["kpretrain images/s"]
    print(f"tight-loop train step: {loop_rate:.0f} images/s ({loop_name}, one in-memory batch of {batch})")
    print(f"kpretrain training throughput (epochs after the first): {kp_rate:.0f} images/s = "
          f"{kp_rate / loop_rate:.2f} of the tight loop (goal >= 0.9)")


if __name__ == "__main__":
    main()
