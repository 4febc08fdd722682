"""How training runs: determinism, mixed precision, distribution strategy, device report."""

from __future__ import annotations

import functools

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

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
    return MultiWorkerMirroredStrategy() if mode == "multi_worker" else None


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` whose `reduce` accepts what Keras 3's `fit` passes it.

    With two or more workers, Keras 3 (up to 3.15 at least) reduces a nested batch and scalar logs with
    `axis=0`, which TensorFlow's collective reduce rejects (tensorflow/tensorflow#72388): `fit` fails at its
    first step.  Reducing each leaf, over replicas only when it is a scalar, is what Keras means.
    """

    def reduce(self, reduce_op, value, axis):
        def reduce_leaf(leaf):
            local = leaf.values[0] if isinstance(leaf, tf.distribute.DistributedValues) else tf.convert_to_tensor(leaf)
            return super(MultiWorkerMirroredStrategy, self).reduce(reduce_op, leaf, axis if local.shape.rank else None)

        return tf.nest.map_structure(reduce_leaf, value)


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether this process writes the results: yes, except on a non-chief worker of a multi-worker cluster
    (the chief is the `chief` task, else worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    jobs = resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" if "chief" in jobs else (resolver.task_type, resolver.task_id) == ("worker", 0)


def configure_runtime(runtime: RuntimeConfig) -> None:
    """Apply op determinism and the mixed-precision policy (process-wide)."""
    if runtime.op_determinism:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():  # process-wide: a later run or trial must not inherit it
        tf_config.disable_op_determinism()  # (no public API; Keras reads the same flag to refuse XLA)
    keras.mixed_precision.set_global_policy("mixed_float16" if runtime.mixed_precision else "float32")


def describe_device(strategy: tf.distribute.Strategy | None = None, mode: str = "none") -> str:
    """One line: which device TensorFlow uses, and the distribution."""
    gpus = tf.config.list_physical_devices("GPU")
    text = f"device: {len(gpus)} GPU ({', '.join(g.name for g in gpus)})" if gpus else "device: CPU (no GPU visible)"
    return text + (f"; {mode} over {strategy.num_replicas_in_sync} replicas" if strategy else "")
