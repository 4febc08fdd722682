"""Transfer protocol pieces: re-initialisation, backbone.from loading, gradual unfreezing, head warm start, kNN."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.models.backbones import block_names, create_backbone
from kpretrain.models.freezing import freeze_to_depth
from kpretrain.models.heads import attach_head, create_head
from kpretrain.models.initialisation import reinitialise_from_statistics, reinitialise_random
from kpretrain.models.loading import load_backbone
from kpretrain.training.head_init import fit_logistic_regression, logistic_regression_head
from kpretrain.training.knn import knn_accuracy, knn_predict
from kpretrain.training.unfreezing import GradualUnfreezing, rebuilt_optimizer

SHAPE = (28, 28, 1)


def _pretrained_like(widths=(16, 32, 32)):
    """A backbone whose every tensor has its own, distinct mean and std (as after pre-training)."""
    backbone = create_backbone("small_cnn", SHAPE, widths=widths)
    rng = np.random.default_rng(123)
    for i, variable in enumerate(backbone.weights):
        values = rng.normal(i - 5.0, 0.1 * (i + 1), variable.shape)
        variable.assign((np.abs(values) + 0.5 if "variance" in variable.path else values).astype("float32"))
    return backbone


def _weights(model):
    return {v.path: v.numpy().copy() for v in model.weights}


# ---- transfer.init ------------------------------------------------------------------------------------
def test_statistics_init_matches_each_tensor_and_redraws_it():
    backbone = _pretrained_like()
    backbone.get_layer("block2_bn1").gamma.assign(np.full(32, 1.5, "float32"))  # zero std: filled with mean
    before = _weights(backbone)
    reinitialise_from_statistics(backbone, seed=0)
    for variable in backbone.weights:
        old, new = before[variable.path], variable.numpy()
        if "moving_mean" in variable.path:
            assert np.all(new == 0), variable.path
        elif "moving_variance" in variable.path:
            assert np.all(new == 1), variable.path
        elif old.std() == 0:
            np.testing.assert_array_equal(new, old)
        else:
            n = old.size
            assert abs(new.mean() - old.mean()) < 5 * old.std() / np.sqrt(n), variable.path
            assert abs(new.std() / old.std() - 1) < 5 / np.sqrt(2 * n), variable.path
            assert np.all(new != old), variable.path


def test_statistics_init_is_deterministic_per_seed():
    a, b, c = _pretrained_like(), _pretrained_like(), _pretrained_like()
    for model, seed in ((a, 1), (b, 1), (c, 2)):
        reinitialise_from_statistics(model, seed=seed)
    wa, wb, wc = a.get_weights(), b.get_weights(), c.get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))
    assert not np.array_equal(wa[0], wc[0])


def test_statistics_pooled_per_block_shares_kernel_statistics():
    backbone = _pretrained_like()
    conv1, conv2 = (backbone.get_layer(f"block2_conv{j}").kernel for j in (1, 2))
    pooled = np.concatenate([conv1.numpy().ravel(), conv2.numpy().ravel()])
    own_mean = conv1.numpy().mean()
    reinitialise_from_statistics(backbone, seed=0, pooled="block")
    for kernel in (conv1, conv2):
        assert abs(kernel.numpy().mean() - pooled.mean()) < 0.1 * pooled.std()
        assert abs(kernel.numpy().std() / pooled.std() - 1) < 0.1
    assert abs(conv1.numpy().mean() - own_mean) > pooled.std() / 4


def test_statistics_pooled_per_layer():
    rnn = keras.layers.SimpleRNN(32, name="rnn")
    model = keras.Sequential([keras.Input((5, 3)), rnn])
    rnn.cell.kernel.assign(np.random.default_rng(0).normal(0.0, 0.1, (3, 32)).astype("float32"))
    rnn.cell.recurrent_kernel.assign(np.random.default_rng(1).normal(3.0, 1.0, (32, 32)).astype("float32"))
    pooled = np.concatenate([rnn.cell.kernel.numpy().ravel(), rnn.cell.recurrent_kernel.numpy().ravel()])
    reinitialise_from_statistics(model, seed=0, pooled="layer")
    assert abs(rnn.cell.kernel.numpy().mean() - pooled.mean()) < 0.5  # own mean was 0, pooled is ~2.7
    # registry backbones have one kernel per layer, so 'layer' is 'tensor' there
    a, b = _pretrained_like((4, 8, 8)), _pretrained_like((4, 8, 8))
    reinitialise_from_statistics(a, seed=3, pooled="layer")
    reinitialise_from_statistics(b, seed=3, pooled="tensor")
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_random_init_equals_a_fresh_backbone_of_that_seed():
    backbone = _pretrained_like((4, 8, 8))
    reinitialise_random(backbone, "small_cnn", {"widths": (4, 8, 8)}, seed=7)
    fresh = create_backbone("small_cnn", SHAPE, seed=7, widths=(4, 8, 8))
    assert all(np.array_equal(x, y) for x, y in zip(backbone.get_weights(), fresh.get_weights()))


# ---- backbone.from ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run directory as runs write it: backbone.keras and backbone/ (SavedModel + kpretrain.json)."""
    run = tmp_path_factory.mktemp("run")
    backbone = create_backbone("small_cnn", SHAPE, widths=(4, 8, 8))
    backbone.get_layer("block1_bn1").moving_mean.assign(np.full(4, 0.3, "float32"))  # not the default
    backbone.save(run / "backbone.keras")
    backbone.export(str(run / "backbone"), format="tf_saved_model", verbose=False)
    (run / "backbone" / "kpretrain.json").write_text(json.dumps({"input_shape": [None, *SHAPE], "scaling": "0-1"}))
    images = np.random.default_rng(0).random((8, *SHAPE), dtype=np.float32)
    return run, backbone(images).numpy(), images


@pytest.mark.parametrize("where", ["run_dir", "file"])
def test_load_keras_backbone_round_trip(exported, where):
    run, features, images = exported
    backbone, info = load_backbone(str(run if where == "run_dir" else run / "backbone.keras"), SHAPE)
    assert info["format"] == "keras" and info["path"].endswith("backbone.keras")
    np.testing.assert_array_equal(backbone(images).numpy(), features)
    assert block_names(backbone) == info["blocks"] == ["block1", "block2", "block3"]
    assert info["depth_choices"] == [0, 1, 2, 3, "all"]
    assert info["metadata"]["scaling"] == "0-1"
    assert freeze_to_depth(backbone, 2) == ["block1", "block2"]


def test_load_saved_model_backbone(exported):
    run, features, images = exported
    backbone, info = load_backbone(str(run / "backbone"), SHAPE)
    assert info["format"] == "saved_model" and info["depth_choices"] == [0, "all"] and info["trainable"]
    assert info["metadata"]["input_shape"] == [None, *SHAPE] and info["input_shape"] == list(SHAPE)
    np.testing.assert_allclose(backbone.predict(images, verbose=0), features, atol=1e-6)
    model = attach_head(backbone, create_head("linear", 8, 3))
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, np.arange(8) % 3, epochs=1, verbose=0)  # Adam slots need ':'-free weight names
    assert not np.allclose(backbone.predict(images, verbose=0), features, atol=1e-4)


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: tmp, "neither a .keras file nor a SavedModel"),
    (lambda tmp: (tmp / "notes.txt").write_text("x") and tmp / "notes.txt", "neither a .keras file"),
    (lambda tmp: (tmp / "b.keras").write_text("x") and tmp / "b.keras", "cannot load"),
])
def test_load_bad_paths_are_one_line_recipe_errors(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(RecipeError) as error:
        load_backbone(str(path), SHAPE)
    message = str(error.value)
    assert message.startswith("backbone.from: ") and str(path) in message and expected in message
    assert "\n" not in message and "backbone.keras" in message


@pytest.mark.parametrize("target", ["backbone.keras", "backbone"])
def test_load_shape_mismatch(exported, target):
    run, _, _ = exported
    with pytest.raises(RecipeError, match=r"^backbone\.from: .* expects \(28, 28, 1\), data has \(32, 32, 3\)"):
        load_backbone(str(run / target), (32, 32, 3))


# ---- transfer.unfreeze --------------------------------------------------------------------------------
def _classifier(frozen_depth, widths=(4, 8, 8)):
    backbone = create_backbone("small_cnn", SHAPE, widths=widths)
    freeze_to_depth(backbone, frozen_depth)
    return backbone, attach_head(backbone, create_head("linear", widths[-1], 4))


def _fit_recording(model, callback, optimizer, epochs=3):
    rng = np.random.default_rng(0)
    x, y = rng.random((32, *SHAPE), dtype=np.float32), rng.integers(0, 4, 32)
    snapshots = [_weights(model)]
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(_weights(model)))
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[callback, record])
    return snapshots


def _block_of(path):
    return path.split("/")[-2].split("_")[0]


def test_gradual_unfreezing_follows_the_schedule():
    backbone, model = _classifier("all")
    callback = GradualUnfreezing(backbone, "all", every=1, bn="frozen")
    snapshots = _fit_recording(model, callback, keras.optimizers.Adam(0.01))
    assert callback.schedule == [(0, []), (1, ["block3"]), (2, ["block2", "block3"])]
    trainable_from = {"block3": 1, "block2": 2}  # epoch in which each block starts training
    for epoch in range(3):
        before, after = snapshots[epoch], snapshots[epoch + 1]
        for path in before:
            changed = not np.array_equal(before[path], after[path])
            block = _block_of(path)
            if block.startswith("block"):
                assert changed == (epoch >= trainable_from.get(block, 99)), (epoch, path)
            else:
                assert changed, (epoch, path)  # the head always trains


def test_backbone_lr_factor_zero_keeps_backbone_weights():
    backbone, model = _classifier(0)
    callback = GradualUnfreezing(backbone, 0, every=None, backbone_lr_factor=0.0)
    snapshots = _fit_recording(model, callback, keras.optimizers.AdamW(0.01, weight_decay=0.1), epochs=2)
    assert callback.schedule == [(0, ["block1", "block2", "block3"]), (1, ["block1", "block2", "block3"])]
    first, last = snapshots[0], snapshots[-1]
    for path in first:
        changed = not np.array_equal(first[path], last[path])
        if "moving" in path:
            assert changed, path  # the backbone's BN still normalises with batch statistics
        else:
            assert changed == (not _block_of(path).startswith("block")), path


def test_unfrozen_blocks_train_their_batch_norm_scale_with_bn_train():
    """bn: train keeps a frozen block's BN scale and offset fixed; once the block is unfrozen they train (and with
    EMA the optimizer's averages and the trainable weights stay one list: it used to fail on a fresh model)."""
    backbone, model = _classifier(0)  # a fresh model: every weight trainable, as a self-training student starts
    callback = GradualUnfreezing(backbone, "all", every=1, bn="train")
    snapshots = _fit_recording(model, callback, keras.optimizers.Adam(0.01, use_ema=True), epochs=3)
    before, after = snapshots[2], snapshots[3]  # the last epoch: block3 and block2 unfrozen, block1 frozen
    for path in before:
        if path.endswith(("gamma", "beta")):
            assert (not np.array_equal(before[path], after[path])) == (_block_of(path) != "block1"), path


def test_backbone_lr_factor_zero_keeps_backbone_weights_with_ema():
    backbone, model = _classifier(0)
    callback = GradualUnfreezing(backbone, 0, every=None, backbone_lr_factor=0.0)
    snapshots = _fit_recording(model, callback, keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9), epochs=2)
    first, last = snapshots[0], _weights(model)  # after fit: the averages written back
    for path in first:
        if "moving" not in path:
            changed = not np.array_equal(first[path], last[path])
            assert changed == (not _block_of(path).startswith("block")), path


def test_backbone_lr_factor_scales_each_update_like_a_learning_rate():
    scaled, plain = keras.Variable([1.0, -2.0]), keras.Variable([1.0, -2.0])
    optimizer = rebuilt_optimizer(keras.optimizers.Adam(0.1), [scaled, plain], [scaled], factor=0.25)
    for step in range(5):
        grad = tf.constant([0.3 * step - 0.5, 1.0])
        optimizer.apply_gradients([(grad, scaled), (grad, plain)])
    np.testing.assert_allclose(scaled.numpy() - [1.0, -2.0], 0.25 * (plain.numpy() - [1.0, -2.0]), rtol=1e-5)


# ---- transfer.head_init -------------------------------------------------------------------------------
def _patterns(n, seed):
    """Four classes: horizontal stripes, vertical stripes, checkerboard, flat grey; plus noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(SHAPE[:2])
    templates = np.stack([rows % 4 < 2, cols % 4 < 2, (rows + cols) % 2 == 0, np.full(SHAPE[:2], 0.5)])
    labels = rng.integers(0, 4, n)
    images = templates[labels].astype("float32")[..., None] * 0.8 + rng.random((n, *SHAPE), dtype=np.float32) * 0.2
    return images, labels


def test_logistic_regression_warm_start_beats_chance_before_fine_tuning():
    backbone = create_backbone("small_cnn", SHAPE, seed=0, widths=(8, 16, 16))
    head = create_head("linear", 16, 4, name="downstream_head")
    model = attach_head(backbone, head)
    images, labels = _patterns(200, seed=0)
    info = logistic_regression_head(backbone, head, tf.data.Dataset.from_tensor_slices(images).batch(64), labels, 4)
    assert info["feature_dim"] == 16 and info["train_accuracy"] > 0.9
    train_predicted = np.argmax(model.predict(images, verbose=0), axis=1)
    assert np.mean(train_predicted == labels) == pytest.approx(info["train_accuracy"], abs=0.01)
    test_images, test_labels = _patterns(200, seed=1)
    assert np.mean(np.argmax(model.predict(test_images, verbose=0), axis=1) == test_labels) > 0.8


def test_logistic_regression_agrees_with_scikit_learn():
    from sklearn import linear_model  # the test extra installs scikit-learn
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1.5, (4, 10))
    labels = rng.integers(0, 4, 400)
    features = (centres[labels] + rng.normal(0, 1, (400, 10))) * 3 + 5  # overlapping, badly scaled
    kernel, bias = fit_logistic_regression(features, labels, 4)
    ours = np.argmax(features @ kernel + bias, axis=1)
    theirs = linear_model.LogisticRegression(max_iter=2000).fit(features, labels).predict(features)
    assert np.mean(ours == theirs) > 0.95


def test_logistic_regression_needs_a_linear_head():
    backbone = create_backbone("small_cnn", SHAPE, widths=(4, 8, 8))
    head = create_head("mlp", 8, 4, hidden=8)
    with pytest.raises(RecipeError, match="transfer.head_init: .*finetune.head: linear"):
        logistic_regression_head(backbone, head, tf.data.Dataset.from_tensor_slices(np.zeros((4, *SHAPE))).batch(2),
                                 np.zeros(4), 4)


# ---- kNN ----------------------------------------------------------------------------------------------
def _brute_force_knn(train, train_labels, queries, num_classes, k, temperature=0.07):
    predicted = []
    for query in queries:
        similarity = train @ query / (np.linalg.norm(train, axis=1) * np.linalg.norm(query))
        nearest = np.argsort(-similarity)[:k]
        votes = np.zeros(num_classes)
        for i in nearest:
            votes[train_labels[i]] += np.exp(similarity[i] / temperature)
        predicted.append(np.argmax(votes))
    return np.array(predicted)


def test_knn_equals_brute_force():
    rng = np.random.default_rng(0)
    train, queries = rng.normal(size=(300, 12)), rng.normal(size=(70, 12))
    train_labels, query_labels = rng.integers(0, 5, 300), rng.integers(0, 5, 70)
    expected = _brute_force_knn(train, train_labels, queries, 5, k=20)
    np.testing.assert_array_equal(knn_predict(train, train_labels, queries, num_classes=5, k=20, chunk=16), expected)
    assert knn_accuracy(train, train_labels, queries, query_labels, num_classes=5) == np.mean(expected == query_labels)
    assert len(set(expected)) > 1  # the vote is not degenerate


def test_knn_is_perfect_on_separated_clusters():
    rng = np.random.default_rng(1)
    directions = np.eye(6)[:4] * 10
    train_labels, test_labels = rng.integers(0, 4, 200), rng.integers(0, 4, 50)
    train = directions[train_labels] + rng.normal(0, 1, (200, 6))
    test = directions[test_labels] + rng.normal(0, 1, (50, 6))
    assert knn_accuracy(train, train_labels, test, test_labels, num_classes=4) == 1.0
    few = _brute_force_knn(train[:5], train_labels[:5], test, 4, k=5)  # k=20 > 5 examples: all of them vote
    np.testing.assert_array_equal(knn_predict(train[:5], train_labels[:5], test, num_classes=4, k=20), few)
