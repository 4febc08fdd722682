"""`finetune.augment`: Keras preprocessing layers on the training batches, a pure function of (seed, batch number)."""

from __future__ import annotations

LEVELS = ("none", "weak", "strong")


def augmentation_layers(level: str, seed: int) -> list:
    """The Keras layers of an augmentation level: weak = horizontal flip + translation by up to 10 % (a padded
    crop); strong = weak + `RandAugment` (2 operations, factor 0.5)."""
    import keras

    if level not in LEVELS:
        raise ValueError(f"augmentation level {level!r}; allowed: {', '.join(LEVELS)}")
    if level == "none":
        return []
    layers = [keras.layers.RandomFlip("horizontal", seed=seed),
              keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 1)]
    if level == "strong":
        layers.append(keras.layers.RandAugment(value_range=(0.0, 1.0), num_ops=2, factor=0.5, seed=seed + 2))
    return layers


def augment_batches(batches, level: str, seed: int, start: int = 0):
    """`batches` ((images, ...) tuples, batch `start` first) with the images augmented at `level`.

    Batch number b is augmented with every layer's seed generator set to (seed, b): the same batches whatever
    ran before (resumed stages included).  The map runs in order, since the layers share those generators."""
    import tensorflow as tf

    layers = augmentation_layers(level, seed)
    if not layers:
        return batches
    generators = [g for layer in layers for sub in layer._flatten_layers() for g in getattr(sub, "_seed_generators", [])]

    def augment(number, batch):
        images, *rest = batch if isinstance(batch, tuple) else (batch,)
        for i, generator in enumerate(generators):
            generator.state.assign(tf.cast(tf.stack([tf.constant(seed * 1009 + i, tf.int64), number * 64]),
                                           generator.state.dtype))
        for layer in layers:
            images = layer(images, training=True)
        return (images, *rest) if rest else images

    return batches.enumerate(start).map(augment).prefetch(tf.data.AUTOTUNE)
