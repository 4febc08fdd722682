"""BYOL, MoCo v2 and DINO: each loss against its closed form, the momentum schedule and update, MoCo's queue, DINO's
centre and multi-crop, what Keras trains (never the momentum network), and a stage interrupted and resumed from its
backup that ends exactly where an uninterrupted one does (momentum network, queue, centre and step counter
included).  Their learning runs share the tiny run of tests/test_ssl.py."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpretrain.data import image_batches
from kpretrain.errors import RecipeError
from kpretrain.models.backbones import small_cnn
from kpretrain.pretext import ContrastiveTask, create_task
from kpretrain.pretext.byol import byol_loss
from kpretrain.pretext.dino import NormalizedDense, dino_loss
from kpretrain.pretext.moco import info_nce
from kpretrain.pretext.momentum import momentum_at
from kpretrain.recipe import OptimizerConfig
from kpretrain.training.stages import fit_stage

RNG = np.random.default_rng(1)
P1, P2, T1, T2 = (RNG.normal(size=(5, 3)).astype(np.float32) for _ in range(4))
OPTIONS = {"byol": {}, "moco": {"queue_size": 40}, "dino": {"prototypes": 16, "local_crops": 2}}


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- closed forms -------------------------------------------------------------------------------------------
def test_byol_loss_is_the_symmetrised_normalised_squared_distance():
    expected = np.mean(np.sum((unit(P1) - unit(T2)) ** 2, 1)) + np.mean(np.sum((unit(P2) - unit(T1)) ** 2, 1))
    assert float(byol_loss(P1, P2, T1, T2)) == pytest.approx(expected, rel=1e-5)
    p1, p2, t1, t2 = (tf.Variable(v) for v in (P1, P2, T1, T2))
    with tf.GradientTape() as tape:
        loss = byol_loss(p1, p2, t1, t2)
    grads = tape.gradient(loss, [p1, p2, t1, t2], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    assert all(np.abs(g.numpy()).sum() > 1e-3 for g in grads[:2]) and all(not g.numpy().any() for g in grads[2:])


def test_info_nce_is_the_cross_entropy_of_the_positive_among_the_queue():
    q, k, queue = unit(P1), unit(T1), unit(RNG.normal(size=(7, 3)).astype(np.float32))
    for temperature in (0.2, 1.0):
        logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ queue.T], axis=1) / temperature
        expected = -np.mean(np.log(softmax(logits)[:, 0]))
        assert float(info_nce(q, k, queue, temperature)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("views", [2, 4])
def test_dino_loss_is_the_teacher_student_cross_entropy_over_other_views(views):
    b, k = 3, 5
    student = RNG.normal(size=(views * b, k)).astype(np.float32)
    teacher = RNG.normal(size=(2 * b, k)).astype(np.float32)
    center = RNG.normal(size=k).astype(np.float32)
    probabilities = softmax((teacher - center) / 0.04).reshape(2, b, k)
    log_student = np.log(softmax(student / 0.1)).reshape(views, b, k)
    pairs = [(t, s) for t in range(2) for s in range(views) if s != t]
    expected = np.mean([-np.mean(np.sum(probabilities[t] * log_student[s], 1)) for t, s in pairs])
    assert float(dino_loss(student, teacher, center, 0.1, 0.04)) == pytest.approx(expected, rel=1e-4)


def test_momentum_schedule_and_normalised_prototypes():
    steps = np.arange(0, 101, 25)
    expected = 1 - (1 - 0.99) * (np.cos(np.pi * steps / 100) + 1) / 2
    np.testing.assert_allclose([float(momentum_at(s, 100, 0.99)) for s in steps], expected, rtol=1e-6)
    assert float(momentum_at(150, 100, 0.99)) == pytest.approx(1.0)  # past the end: held at 1
    layer = NormalizedDense(4, seed=0)
    x = unit(P1)
    np.testing.assert_allclose(layer(x), x @ unit(layer.kernel.numpy().T).T, rtol=1e-5)


# -- the models ---------------------------------------------------------------------------------------------
def images(n=48, size=16):
    return np.random.default_rng(n).integers(0, 255, (n, size, size, 1)).astype(np.uint8)


def pretext_model(name, seed=0):
    keras.utils.set_random_seed(seed)
    task = create_task(name, OPTIONS[name], seed=seed)
    return task, task.build_model(small_cnn((16, 16, 1), seed=seed, widths=(4, 8, 8)), seed=seed)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_one_step_moves_the_target_by_its_momentum_and_keras_never_trains_it(name):
    task, model = pretext_model(name)
    target = {id(v) for v in model.target_weights}
    assert model.trainable_weights and not target & {id(v) for v in model.trainable_weights}
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.momentum_total.assign(10.0)
    online = [*model.backbone.trainable_weights, *model.projector.trainable_weights]
    followers = [*model.target_backbone.trainable_weights, *model.target_projector.trainable_weights]
    before = [v.numpy().copy() for v in followers]
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, online))  # the target starts as a copy
    views, partner = task(tf.constant(images(8), tf.float32) / 255)
    model.train_step((views, partner))
    tau = 0.99  # step 0 of 10
    for old, follower, source in zip(before, followers, online):
        np.testing.assert_allclose(follower.numpy(), tau * old + (1 - tau) * source.numpy(), rtol=1e-5, atol=1e-7)
    assert float(model.momentum_step.numpy()) == 1.0
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, online))  # the online network moved


def test_moco_queue_is_a_ring_of_the_latest_keys():
    _, model = pretext_model("moco")
    keys = unit(RNG.normal(size=(24, model.queue.shape[1])).astype(np.float32))
    model.queue_position.assign(30.0)
    model._keys = tf.constant(keys)
    model.after_step()  # 24 keys into a queue of 40 from row 30: rows 30..39, then 0..13
    queue = model.queue.numpy()
    np.testing.assert_array_equal(queue[30:], keys[:10])
    np.testing.assert_array_equal(queue[:14], keys[10:])
    assert float(model.queue_position.numpy()) == 14.0


def test_dino_centre_follows_the_teachers_mean_and_local_views_are_extra():
    task, model = pretext_model("dino")
    model._batch_center = tf.ones(16)
    model.after_step()
    np.testing.assert_allclose(model.center.numpy(), np.full(16, 0.1), rtol=1e-6)  # 0.9 x 0 + 0.1 x 1
    batch = tf.constant(images(6), tf.float32) / 255
    views, partner = task(batch)
    assert views.shape[0] == 24 and partner.numpy().tolist() == [*range(6, 12), *range(6)]
    plain, _ = ContrastiveTask(seed=0)(batch)  # the global views are every two-view task's views
    np.testing.assert_array_equal(views[:12], plain)


def test_a_backbone_keras_cannot_copy_is_refused_in_one_line():
    class Opaque(keras.layers.Layer):  # a user's layer without a config: clone_model cannot rebuild it
        def call(self, x):
            return keras.ops.mean(x, axis=(1, 2))

        def get_config(self):
            raise NotImplementedError

    backbone = keras.Sequential([keras.Input((16, 16, 1)), Opaque(), keras.layers.Dense(4)], name="opaque")
    with pytest.raises(RecipeError, match=r"^pretrain.task: byol keeps a momentum copy of the backbone.*opaque"):
        create_task("byol", seed=0).build_model(backbone, seed=0)


# -- resuming: the same momentum network, queue and centre ------------------------------------------------
class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("killed")


def pretrain(name, backup, interrupt=False):
    task, model = pretext_model(name)
    x = images()

    def train(start):
        return task.make_dataset(image_batches(x, 8, shuffle=True, seed=0, drop_remainder=True, start=start,
                                               repeat=True), start)

    fit_stage(model, train, epochs=4, steps_per_epoch=3, optimizer=OptimizerConfig(learning_rate=0.01),
              compile_kwargs=task.compile_kwargs(), callbacks=[Interrupt()] if interrupt else [], backup=backup)
    return model


@pytest.mark.parametrize("name", ["moco", "dino"])  # BYOL's state is the momentum network alone, which both have
def test_a_resumed_stage_ends_with_the_same_momentum_network_queue_and_centre(name, tmp_path):
    tf.config.experimental.enable_op_determinism()  # as every kpretrain run does
    whole = pretrain(name, str(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        pretrain(name, str(tmp_path / "cut"), interrupt=True)
    resumed = pretrain(name, str(tmp_path / "cut"))
    assert float(resumed.momentum_step.numpy()) == 12.0 and float(resumed.momentum_total.numpy()) == 12.0
    state = {"moco": ["queue", "queue_position"], "dino": ["center"]}[name]
    for variable in ("momentum_step", *state):
        np.testing.assert_array_equal(getattr(resumed, variable).numpy(), getattr(whole, variable).numpy())
    for a, b in zip(resumed.target_weights, whole.target_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(resumed.backbone.weights, whole.backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# -- every self-supervised method as a tuner trial --------------------------------------------------------------
SSL_TASKS = ["simsiam", "barlow_twins", "vicreg", "byol", "moco", "dino", "masked_image"]


def test_every_self_supervised_method_runs_as_a_tuner_trial(tmp_path, capsys):
    import json

    import yaml

    from kpretrain.cli import main
    from tests.helpers import tiny_npz, tiny_recipe_dict

    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz", n_train=200, n_test=40), name="methods")
    recipe.update(seeds=[0], evaluation={"knn": False, "bn_refresh_batches": 1})
    recipe["pretrain"] = {"task": "byol", "epochs": 1, "options": {}}
    recipe["finetune"]["epochs"] = 1
    recipe["tune"] = {"tuner": "grid", "max_trials": len(SSL_TASKS), "space": {"pretrain.task": {"choice": SSL_TASKS}}}
    path = tmp_path / "methods.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["tune", str(path), "--dir", str(tmp_path / "runs"), "--smoke", "--max-trials", "7", "-q"]) == 0
    best = json.loads((tmp_path / "runs" / "methods-smoke" / "best.json").read_text())
    tried = {row["values"]["pretrain.task"]: row["score"] for row in best["trials"]}
    assert sorted(tried) == sorted(SSL_TASKS) and all(0.0 <= s <= 1.0 for s in tried.values()), tried
    capsys.readouterr()


def test_show_task_draws_global_then_local_views_of_each_image(tmp_path):
    from kpretrain.pretext.show import save_task_grid, task_examples

    task = create_task("dino", {"local_crops": 2}, seed=0)
    batch = images(4).astype(np.float32) / 255
    examples = task_examples(task, batch, 8)
    assert [title for _, title in examples] == [f"#{i} {v}" for i in range(2)
                                                for v in ("view 1", "view 2", "local 1", "local 2")]
    views, _ = create_task("dino", {"local_crops": 2}, seed=0)(tf.constant(batch[:2]))  # batch 0 again
    np.testing.assert_array_equal(examples[7][0], views[2 * 3 + 1])  # image 1's second local view
    assert open(save_task_grid(task, batch, str(tmp_path / "dino.png"), n=8), "rb").read(4) == b"\x89PNG"
