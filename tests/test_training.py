"""Training pieces: batch-norm refresh, stages, fractional epochs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpretrain.models.backbones import create_backbone
from kpretrain.models.freezing import freeze_to_depth
from kpretrain.models.heads import attach_head, create_head
from kpretrain.training.bn_refresh import (batch_norm_layers, bn_state, refresh_batch_norm, statistics_restored,
                                          statistics_swapped)
from kpretrain.training.stages import epoch_plan


def _toy():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="dense")(inputs)
    return keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(hidden))


def test_refresh_equals_cumulative_average_of_batch_statistics():
    model = _toy()
    data = np.random.default_rng(0).normal(2.0, 3.0, size=(1000, 4)).astype("float32")
    used = refresh_batch_norm(model, tf.data.Dataset.from_tensor_slices(data).batch(100))
    assert used == 10
    dense = model.get_layer("dense")
    hidden = data @ dense.kernel.numpy() + dense.bias.numpy()
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), hidden.mean(0), rtol=1e-4, atol=1e-4)
    expected_var = np.mean([hidden[i:i + 100].var(0) for i in range(0, 1000, 100)], axis=0)
    np.testing.assert_allclose(bn.moving_variance.numpy(), expected_var, rtol=1e-4)
    assert bn.momentum == 0.99  # restored


def test_refresh_respects_max_batches_and_leaves_weights():
    model = _toy()
    kernel = model.get_layer("dense").kernel.numpy().copy()
    data = np.random.default_rng(1).normal(size=(1000, 4)).astype("float32")
    used = refresh_batch_norm(model, tf.data.Dataset.from_tensor_slices(data).batch(100), max_batches=3)
    assert used == 3
    np.testing.assert_array_equal(model.get_layer("dense").kernel.numpy(), kernel)


def test_refresh_skips_frozen_batch_norm():
    backbone = create_backbone("small_cnn", (28, 28, 1), widths=(4, 4, 4))
    freeze_to_depth(backbone, 1)
    before = bn_state(backbone)
    images = tf.data.Dataset.from_tensor_slices(np.random.rand(64, 28, 28, 1).astype("float32")).batch(16)
    refresh_batch_norm(backbone, images)
    after = bn_state(backbone)
    names = [l.name for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    for name, (m0, _), (m1, _) in zip(names, before, after):
        assert np.array_equal(m0, m1) == name.startswith("block1_"), name


def test_refresh_fixes_stale_statistics_on_a_trained_model():
    """The BACKGROUND.md trap in miniature: stale moving statistics wreck accuracy until refreshed."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8)).astype("float32") * 5 + 3
    y = (x[:, 0] + x[:, 1] > 6).astype("int32")
    inputs = keras.Input((8,))
    h = keras.layers.BatchNormalization(momentum=0.999)(keras.layers.Dense(16)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.ReLU()(h)))
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=100, epochs=1, verbose=0)
    stale = model.evaluate(x, y, verbose=0)[1]
    refresh_batch_norm(model, tf.data.Dataset.from_tensor_slices(x).batch(100))
    fresh = model.evaluate(x, y, verbose=0)[1]
    assert fresh > stale + 0.1 and fresh > 0.85


def _classifier():
    backbone = create_backbone("small_cnn", (28, 28, 1), seed=0, widths=(8, 16, 32))
    return backbone, attach_head(backbone, create_head("linear", backbone.output_shape[-1], 10, seed=0))


def test_refresh_after_unfreezing_a_block_matches_a_fresh_model():
    """A changed set of trainable BN layers must retrace the cached forward pass, not reuse the stale graph."""
    images = tf.data.Dataset.from_tensor_slices(
        np.random.default_rng(3).random((96, 28, 28, 1), dtype=np.float32)).batch(32)
    backbone, model = _classifier()
    freeze_to_depth(backbone, 2)
    refresh_batch_norm(model, images)
    fresh_backbone, fresh_model = _classifier()
    fresh_model.set_weights(model.get_weights())

    freeze_to_depth(backbone, 1)
    refresh_batch_norm(model, images)
    freeze_to_depth(fresh_backbone, 1)
    refresh_batch_norm(fresh_model, images)

    got, want = batch_norm_layers(model), batch_norm_layers(fresh_model)
    assert [layer.name for layer in got] == [layer.name for layer in want]
    assert any(layer.name.startswith("block2_") for layer in got)
    for layer in got:
        assert np.all(layer.moving_variance.numpy() > 0), layer.name
    for layer, ref in zip(got, want):
        np.testing.assert_allclose(layer.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-5,
                                   err_msg=layer.name)
        np.testing.assert_allclose(layer.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=layer.name)
    for (m0, v0), (m1, v1) in zip(bn_state(model), bn_state(fresh_model)):  # frozen block1 BN untouched
        np.testing.assert_allclose(m0, m1, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v0, v1, rtol=1e-5)


def _assert_state_equal(got, want):
    assert len(got) == len(want)
    for (m0, v0), (m1, v1) in zip(got, want):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)


def test_statistics_restored_puts_the_saved_statistics_back_even_when_the_block_raises():
    model = _toy()
    images = tf.data.Dataset.from_tensor_slices(
        np.random.default_rng(4).normal(2.0, 3.0, size=(200, 4)).astype("float32")).batch(50)
    before = bn_state(model)
    with pytest.raises(RuntimeError, match="measurement failed"):
        with statistics_restored(model) as saved:
            _assert_state_equal(saved, before)
            refresh_batch_norm(model, images)
            inside = bn_state(model)
            assert not np.array_equal(inside[0][0], before[0][0])  # the block's statistics hold within it
            raise RuntimeError("measurement failed")
    _assert_state_equal(bn_state(model), before)

    with statistics_restored(model):
        refresh_batch_norm(model, images)
        _assert_state_equal(bn_state(model), inside)  # the same refresh, the same statistics
    _assert_state_equal(bn_state(model), before)


def test_statistics_restored_without_restore_keeps_what_the_block_set():
    model = _toy()
    images = tf.data.Dataset.from_tensor_slices(
        np.random.default_rng(5).normal(2.0, 3.0, size=(200, 4)).astype("float32")).batch(50)
    before = bn_state(model)
    with statistics_restored(model, restore=False) as saved:
        refresh_batch_norm(model, images)
        refreshed = bn_state(model)
    _assert_state_equal(saved, before)
    _assert_state_equal(bn_state(model), refreshed)


def test_statistics_swapped_holds_the_given_state_within_the_block_only():
    model = _toy()
    own = bn_state(model)
    other = [(m + 1.0, v * 2.0) for m, v in own]
    with pytest.raises(ValueError):
        with statistics_swapped(model, other):
            _assert_state_equal(bn_state(model), other)
            raise ValueError
    _assert_state_equal(bn_state(model), own)


@pytest.mark.parametrize("epochs, steps, points, expected", [
    (3, 10, 1, (3, 10)), (0.5, 10, 1, (1, 5)), (1.5, 10, 1, (2, 7)), (0, 10, 1, (0, 10)), (0.01, 10, 1, (1, 1)),
    (1, 100, 4, (4, 25)), (2, 10, 4, (4, 5)), (1, 2, 4, (2, 1)), (6, 10, 4, (6, 10))])
def test_epoch_plan(epochs, steps, points, expected):
    assert epoch_plan(epochs, steps, points) == expected


def _stage_inputs(kind: str):
    """(model, batches, compile kwargs) of a tiny classifier's fine-tuning or a MoCo pre-training (queue, momentum
    network and its own `train_step`)."""
    from kpretrain.data import image_batches, labelled_batches
    from kpretrain.pretext import create_task
    from kpretrain.protocol.finetune import classification_compile_kwargs

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (48, 16, 16, 1)).astype(np.uint8), rng.integers(0, 4, 48)
    backbone = create_backbone("small_cnn", (16, 16, 1), seed=0, widths=(4, 8, 8))
    if kind == "classifier":
        model = attach_head(backbone, create_head("linear", backbone.output_shape[-1], 4, seed=0))
        return model, labelled_batches(x, y, 8, shuffle=True, seed=0), classification_compile_kwargs()
    task = create_task("moco", {"queue_size": 40}, seed=0)
    batches = image_batches(x, 8, shuffle=True, seed=0, drop_remainder=True, repeat=True)
    return task.build_model(backbone, seed=0), task.make_dataset(batches), task.compile_kwargs()


@pytest.mark.parametrize("kind", ["classifier", "moco"])
def test_a_stage_traces_its_training_step_once_and_trains_what_keras_alone_trains(kind, monkeypatch):
    """`build_state` creates the optimizer and metric variables before `fit` (Keras would create them while
    tracing the first step, and TensorFlow would trace it again): one trace, the same weights to the bit."""
    from kpretrain.recipe import OptimizerConfig
    from kpretrain.training import stages

    def stage(build_first: bool):
        model, batches, compile_kwargs = _stage_inputs(kind)
        traces, step = [], model.train_step
        model.train_step = lambda data: (traces.append(1), step(data))[1]  # called once per trace
        with monkeypatch.context() as patch:
            if not build_first:
                patch.setattr(stages, "build_state", lambda *_: None)
            stages.fit_stage(model, batches, epochs=2, steps_per_epoch=3, compile_kwargs=compile_kwargs,
                             optimizer=OptimizerConfig(learning_rate=0.01))
        return len(traces), [np.array(w) for w in model.weights]

    (traces, weights), (keras_traces, keras_weights) = stage(True), stage(False)
    assert (traces, keras_traces) == (1, 2)
    assert len(weights) == len(keras_weights)
    for ours, theirs in zip(weights, keras_weights):
        np.testing.assert_array_equal(ours, theirs)


def test_a_model_made_under_a_distribution_strategy_is_left_to_keras_to_build():
    """Keras builds such a model's state in `fit`, inside the strategy's scope; built here outside it, the optimizer's
    variables would not be the strategy's."""
    from kpretrain.training.state import build_state

    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    batches = tf.data.Dataset.from_tensor_slices((np.ones((8, 4), "float32"), np.ones((8, 3), "float32"))).batch(4)
    build_state(model, batches)
    assert not model.optimizer.built
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    plain.compile(optimizer="adam", loss="mse")
    build_state(plain, batches)
    assert plain.optimizer.built
