"""Building a compiled model's training state before Keras traces its step."""

from __future__ import annotations

import keras
import tensorflow as tf


def build_state(model: keras.Model, batches: tf.data.Dataset) -> None:
    """Create a compiled model's optimizer, loss and metric variables before `fit` traces its training step.

    Without a distribution strategy, Keras (TensorFlow backend) creates them while tracing the first step, and
    TensorFlow then traces that step a second time without them; built here from the batches' specification
    (no data read, nothing computed), the step is traced once: a short stage spends about half as long
    tracing, with the same numbers.  A model Keras cannot build symbolically is left to `fit`, as before, and so
    is a model made under a distribution strategy (Keras builds it in `fit`, inside the strategy's scope).

    Args:
        model: a compiled Keras model.
        batches: the `tf.data.Dataset` that `fit` will train on.

    Example:
        >>> build_state(model, batches)  # then model.fit(batches, ...) traces its step once
    """
    if getattr(model, "_distribute_strategy", None) is not None:
        return
    try:
        model._symbolic_build(data_batch=batches.element_spec)  # what Keras itself does under a strategy
    except Exception:  # noqa: BLE001 - an optimisation only: `fit` builds whatever is left, as it always did
        pass
