"""How training runs: determinism, mixed precision, distribution strategy, device report."""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from kpretrain.recipe import RuntimeConfig


@functools.lru_cache(maxsize=None)
def distribution_strategy(mode: str) -> tf.distribute.Strategy | None:
    """`runtime.distribute`: mirrored over every GPU (else every logical CPU), multi-worker, or none.

    One strategy per process and mode; `multi_worker` must be created before TensorFlow runs any op
    (the CLI does so at start-up).
    """
    if mode == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.MultiWorkerMirroredStrategy() if mode == "multi_worker" else None


def configure_runtime(runtime: RuntimeConfig) -> None:
    """Apply op determinism and the mixed-precision policy (process-wide)."""
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if runtime.mixed_precision else "float32")


def describe_device(strategy: tf.distribute.Strategy | None = None, mode: str = "none") -> str:
    """One line: which device TensorFlow uses, and the distribution."""
    gpus = tf.config.list_physical_devices("GPU")
    text = f"device: {len(gpus)} GPU ({', '.join(g.name for g in gpus)})" if gpus else "device: CPU (no GPU visible)"
    return text + (f"; {mode} over {strategy.num_replicas_in_sync} replicas" if strategy else "")
