"""Pretext tasks: label semantics, determinism, tf.data / tf.function use, config round trip, training."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpretrain.errors import RecipeError
from kpretrain.models.backbones import create_backbone
from kpretrain.pretext import (ContrastiveTask, JigsawTask, MixedTask, NoiseTask, OverlayTask, RotationTask,
                               create_task)

SHAPES = [(28, 28, 1), (32, 32, 3)]


def random_images(shape=(28, 28, 1), n=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def as_numpy(outputs):
    return [np.asarray(t) for t in tf.nest.flatten(outputs)]


def run_eager(task, batches):
    return [as_numpy(task(b, training=True)) for b in batches]


def run_function(task, batches, jit_compile=False):
    fn = tf.function(lambda x: task(x, training=True), jit_compile=jit_compile)
    return [as_numpy(fn(tf.constant(b))) for b in batches]


def run_dataset(task, batches):
    ds = task.make_dataset(tf.data.Dataset.from_tensor_slices(np.stack(batches)))
    return [as_numpy(element) for element in ds]


def assert_same(outputs_a, outputs_b):
    assert len(outputs_a) == len(outputs_b)
    for a, b in zip(outputs_a, outputs_b):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def assert_differs(outputs_a, outputs_b):
    assert any(not np.array_equal(x, y) for a, b in zip(outputs_a, outputs_b) for x, y in zip(a, b))


# -- overlay ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_overlay_label0_untouched_label1_changed(shape, mode):
    images = random_images(shape, n=64)
    out, labels = OverlayTask(mode=mode, seed=3)(images)
    out, labels = out.numpy(), labels.numpy()
    assert labels.dtype == np.int32 and labels.shape == (64,) and set(labels) == {0, 1}
    np.testing.assert_array_equal(out[labels == 0], images[labels == 0])
    for i in np.flatnonzero(labels == 1):
        assert not np.array_equal(out[i], images[i])
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1


def test_overlay_partner_is_another_image_of_the_batch():
    # Each image is constant with value i/n, so a 50/50 blend reveals the partner's index exactly.
    n = 16
    images = np.broadcast_to((np.arange(n, dtype=np.float32) / n)[:, None, None, None], (n, 8, 8, 1)).copy()
    task = OverlayTask(p=1.0, seed=0)
    partners_seen = set()
    for _ in range(20):
        out, labels = task(images)
        assert np.all(labels.numpy() == 1)
        partner = np.rint((2 * out.numpy()[:, 0, 0, 0] - images[:, 0, 0, 0]) * n).astype(int)
        assert np.all(partner != np.arange(n)) and np.all((partner >= 0) & (partner < n))
        partners_seen.update(zip(range(n), partner))
    assert len(partners_seen) > 2 * n  # partners vary from batch to batch


def test_overlay_mean_weight_drawn_from_weight_range():
    a, b = random_images(n=2)
    task = OverlayTask(p=1.0, weight_range=(0.2, 0.4), seed=1)
    weights = []
    for _ in range(10):
        out = task(np.stack([a, b]))[0].numpy()
        w = (out[0] - b) / (a - b)  # with two images, each one's partner is the other
        w = w[np.abs(a - b) > 0.05]
        np.testing.assert_allclose(w, w.mean(), atol=1e-3)
        weights.append(w.mean())
    assert 0.2 - 1e-4 <= min(weights) < max(weights) <= 0.4 + 1e-4


def test_overlay_batch_of_one_is_single():
    out, labels = OverlayTask(p=1.0, seed=0)(random_images(n=1))
    assert labels.numpy().tolist() == [0]


# -- create_task ------------------------------------------------------------------------------------------
def test_create_task_builds_configured_task():
    task = create_task("overlay", {"p": 0.3, "mode": "max", "weight_range": [0.3, 0.6]}, seed=5)
    assert isinstance(task, OverlayTask)
    assert (task.p, task.mode, task.weight_range, task.seed) == (0.3, "max", (0.3, 0.6), 5)


@pytest.mark.parametrize("name", ["rotation", "noise", "overlay", "jigsaw", "contrastive", "mixed"])
def test_create_task_knows_every_task_and_rejects_unknown_options(name):
    task = create_task(name, None, seed=3)
    assert task.task_name == name and task.seed == 3
    with pytest.raises(RecipeError, match=rf"^pretrain\.options\.colour: unknown option for task '{name}'; allowed: "):
        create_task(name, {"colour": 1}, seed=0)


def test_make_dataset_accepts_image_label_pairs():
    images = random_images(n=32)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(32, np.int32))).batch(16)
    expected = run_eager(NoiseTask(seed=1), [images[:16], images[16:]])
    assert_same(expected, [as_numpy(element) for element in NoiseTask(seed=1).make_dataset(ds)])


def test_make_dataset_from_a_later_batch_continues_the_labelling():
    images = random_images(n=64)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(8)
    whole = [as_numpy(element) for element in MixedTask([RotationTask(seed=1), NoiseTask(seed=2)], seed=4).make_dataset(ds)]
    later = MixedTask([RotationTask(seed=1), NoiseTask(seed=2)], seed=4).make_dataset(ds.skip(5), start=5)
    assert_same(whole[5:], [as_numpy(element) for element in later])  # e.g. a stage resumed after batch 5


@pytest.mark.parametrize("name, options, expected", [
    ("shuffle", None, "pretrain.task: unknown task 'shuffle'; allowed: rotation, noise, overlay, jigsaw, "
                      "contrastive, mixed"),
    ("overlay", {"q": 1}, "pretrain.options.q: unknown option"),
    ("overlay", {"p": 1.5}, "pretrain.options.p: got 1.5; allowed: a number in [0.0, 1.0]"),
    ("overlay", {"mode": "min"}, "pretrain.options.mode: got 'min'; allowed: mean, max"),
    ("overlay", {"weight_range": [0.5, 1.0]}, "pretrain.options.weight_range: got [0.5, 1.0]"),
    ("overlay", [("p", 1)], "pretrain.options: got"),
])
def test_create_task_rejects_bad_input_in_one_line(name, options, expected):
    with pytest.raises(RecipeError) as info:
        create_task(name, options, seed=0)
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message


# -- contract shared by the labelling tasks ---------------------------------------------------------------
LABELLING_TASKS = {
    "overlay": lambda seed: OverlayTask(seed=seed),
    "overlay_max": lambda seed: OverlayTask(mode="max", weight_range=(0.3, 0.7), seed=seed),
    "rotation": lambda seed: RotationTask(seed=seed),
    "rotation_all": lambda seed: RotationTask(all_rotations=True, seed=seed),
    "noise": lambda seed: NoiseTask(seed=seed),
    "noise_salt_pepper_levels": lambda seed: NoiseTask(kind="salt_pepper", levels=3, seed=seed),
    "noise_speckle": lambda seed: NoiseTask(kind="speckle", strength=0.5, seed=seed),
    "jigsaw": lambda seed: JigsawTask(seed=seed),
    "jigsaw3": lambda seed: JigsawTask(grid=3, num_permutations=10, seed=seed),
}
JIT_TASKS = ["overlay", "rotation", "noise", "noise_salt_pepper_levels", "jigsaw3"]
LABEL0_UNTOUCHED = ["overlay", "overlay_max", "noise", "noise_salt_pepper_levels", "noise_speckle", "jigsaw", "jigsaw3"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", sorted(LABELLING_TASKS))
def test_labelling_contract(kind, shape):
    task = LABELLING_TASKS[kind](7)
    images = random_images(shape, n=256)
    out, labels = task(images, training=True)
    assert out.shape[1:] == images.shape[1:] and out.dtype == tf.float32
    assert labels.dtype == tf.int32 and labels.shape == (out.shape[0],) == (task.batch_multiplier * 256,)
    assert set(labels.numpy()) == set(range(task.num_classes))  # every class occurs
    assert all(isinstance(task.describe(k), str) for k in range(task.num_classes))


@pytest.mark.parametrize("kind", sorted(LABELLING_TASKS))
def test_deterministic_for_a_seed_in_eager_function_and_dataset(kind):
    batches = [random_images(n=16, seed=s) for s in range(3)]
    eager = run_eager(LABELLING_TASKS[kind](11), batches)
    assert_same(eager, run_eager(LABELLING_TASKS[kind](11), batches))
    assert_same(eager, run_function(LABELLING_TASKS[kind](11), batches))
    assert_same(eager, run_dataset(LABELLING_TASKS[kind](11), batches))
    if kind != "rotation_all":  # the one task without randomness
        assert_differs(eager, run_eager(LABELLING_TASKS[kind](12), batches))
        same_batch_twice = run_eager(LABELLING_TASKS[kind](11), batches[:1] * 2)
        assert_differs(same_batch_twice[:1], same_batch_twice[1:])  # the batch counter advances


@pytest.mark.parametrize("kind", sorted(LABELLING_TASKS))
def test_config_round_trip_gives_same_outputs(kind):
    task = LABELLING_TASKS[kind](21)
    clone = type(task).from_config(task.get_config())
    batches = [random_images(n=16, seed=s) for s in range(2)]
    assert_same(run_eager(task, batches), run_eager(clone, batches))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(task))
    assert_same(run_eager(LABELLING_TASKS[kind](21), batches), run_eager(revived, batches))


@pytest.mark.parametrize("kind", JIT_TASKS)
def test_runs_under_xla_deterministically(kind):
    # XLA draws other random streams than the TF kernels, so XLA is compared with itself.
    batches = [random_images(n=16, seed=s) for s in range(2)]
    compiled = run_function(LABELLING_TASKS[kind](5), batches, jit_compile=True)
    assert_same(compiled, run_function(LABELLING_TASKS[kind](5), batches, jit_compile=True))
    for batch, (out, labels) in zip(batches, compiled):
        assert labels.dtype == np.int32 and labels.shape == (len(batch),)
        if kind in LABEL0_UNTOUCHED:
            np.testing.assert_array_equal(out[labels == 0], batch[labels == 0])
        if kind == "rotation":
            for k in range(4):
                np.testing.assert_array_equal(out[labels == k], np.rot90(batch[labels == k], k, axes=(1, 2)))


@pytest.mark.parametrize("kind", sorted(LABEL0_UNTOUCHED))
def test_label0_untouched_and_others_changed(kind):
    images = random_images(n=64)
    out, labels = (t.numpy() for t in LABELLING_TASKS[kind](2)(images))
    np.testing.assert_array_equal(out[labels == 0], images[labels == 0])
    assert all(not np.array_equal(out[i], images[i]) for i in np.flatnonzero(labels))
    assert out.min() >= 0.0 and out.max() <= 1.0


# -- rotation ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_rotation_label_k_is_rot90_by_k(shape):
    images = random_images(shape, n=40)
    out, labels = RotationTask(seed=4)(images)
    for i, k in enumerate(labels.numpy()):
        np.testing.assert_array_equal(out[i], tf.image.rot90(images[i], k))


def test_rotation_all_rotations_puts_every_rotation_of_each_image_in_the_batch():
    images = random_images((32, 32, 3), n=8)
    out, labels = RotationTask(all_rotations=True, seed=0)(images)
    assert out.shape == (32, 32, 32, 3) and labels.numpy().tolist() == sum([[k] * 8 for k in range(4)], [])
    for k in range(4):
        np.testing.assert_array_equal(out[8 * k:8 * (k + 1)], tf.image.rot90(images, k))


def test_rotation_non_square_needs_half_turns_only():
    images = random_images((24, 32, 3), n=16)
    with pytest.raises(RecipeError, match=r"pretrain\.options\.angles: .* 24x32 images; allowed .*: \[0, 180\]"):
        RotationTask(seed=0)(images)
    with pytest.raises(RecipeError) as info:  # the training stage's path: one line, as the CLI prints it
        RotationTask(seed=0).make_dataset(tf.data.Dataset.from_tensors(images))
    assert str(info.value) == ("pretrain.options.angles: [0, 90, 180, 270] would change the shape of 24x32 images; "
                               "allowed for non-square images: [0, 180]")
    task = RotationTask(angles=[0, 180], seed=0)
    out, labels = task(images)
    assert task.num_classes == 2 and task.describe(1) == "rot 180°"
    for i, k in enumerate(labels.numpy()):
        np.testing.assert_array_equal(out[i], tf.image.rot90(images[i], 2 * k))


# -- noise ------------------------------------------------------------------------------------------------
def test_noise_levels_grow_with_the_label():
    images = np.full((256, 16, 16, 1), 0.5, np.float32)
    task = NoiseTask(kind="gaussian", strength=(0.05, 0.25), levels=3, p=0.75, seed=0)
    out, labels = (t.numpy() for t in task(images))
    assert task.num_classes == 4 and set(labels) == {0, 1, 2, 3}
    spread = [np.std(out[labels == k] - images[labels == k]) for k in range(4)]
    assert spread[0] == 0.0
    np.testing.assert_allclose(spread[1:], [0.05, 0.15, 0.25], rtol=0.1)


def test_salt_pepper_sets_whole_pixels_to_black_or_white():
    images = random_images((32, 32, 3), n=32)
    out, labels = (t.numpy() for t in NoiseTask(kind="salt_pepper", strength=(0.2, 0.2), p=1.0, seed=1)(images))
    changed = np.any(out != images, axis=-1)
    hit = out[changed]
    assert np.all((hit == 0.0) | (hit == 1.0)) and np.all(hit.min(-1) == hit.max(-1))
    assert 0.15 < changed.mean() < 0.25


# -- jigsaw -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES + [(28, 30, 1)])
@pytest.mark.parametrize("grid", [2, 3])
def test_jigsaw_undo_restores_and_identity_is_label0(grid, shape):
    images = random_images(shape, n=64)
    task = JigsawTask(grid=grid, seed=2)
    out, labels = task(images)
    np.testing.assert_array_equal(task.undo(out, labels), images)
    labels = labels.numpy()
    np.testing.assert_array_equal(out.numpy()[labels == 0], images[labels == 0])
    assert all(not np.array_equal(out[i], images[i]) for i in np.flatnonzero(labels))


def test_jigsaw_tiles_move_whole_and_border_stays():
    images = random_images((28, 28, 1), n=16)
    task = JigsawTask(grid=3, seed=0)  # 28 = 3 * 9 + 1: tiles of 9x9 in rows/cols 0..26, border row/col 27
    out, labels = (t.numpy() for t in task(images))
    np.testing.assert_array_equal(out[:, 27, :], images[:, 27, :])
    np.testing.assert_array_equal(out[:, :, 27], images[:, :, 27])
    i = int(np.flatnonzero(labels)[0])
    perm = task.permutations[labels[i]]
    for j, src in enumerate(perm):
        np.testing.assert_array_equal(out[i, 9 * (j // 3):9 * (j // 3) + 9, 9 * (j % 3):9 * (j % 3) + 9],
                                      images[i, 9 * (src // 3):9 * (src // 3) + 9, 9 * (src % 3):9 * (src % 3) + 9])


def test_jigsaw_permutation_set_is_seeded_distinct_and_spread():
    two = JigsawTask(seed=0).permutations
    assert two.shape == (24, 4) and len({tuple(p) for p in two}) == 24 and two[0].tolist() == [0, 1, 2, 3]
    three = JigsawTask(grid=3, seed=0).permutations
    assert three.shape == (100, 9) and len({tuple(p) for p in three}) == 100 and three[0].tolist() == list(range(9))
    distances = (three[:, None, :] != three[None, :, :]).sum(-1) + 9 * np.eye(100, dtype=int)
    assert distances.min() >= 6  # random sets of 100 permutations typically have pairs at distance 2-3
    np.testing.assert_array_equal(three, JigsawTask(grid=3, seed=0).permutations)
    assert not np.array_equal(three, JigsawTask(grid=3, seed=1).permutations)


# -- mixed ------------------------------------------------------------------------------------------------
def mixed_task(schedule="random", every=1, seed=0):
    return MixedTask([RotationTask(seed=1), NoiseTask(seed=2), OverlayTask(seed=3)], schedule=schedule,
                     every=every, seed=seed)


@pytest.mark.parametrize("schedule, every", [("random", 1), ("round_robin", 1), ("every_n", 2)])
def test_mixed_switching_visits_every_task(schedule, every):
    task = mixed_task(schedule, every)
    images = random_images(n=16)
    active = []
    for _ in range(3 * every * 4):
        out, labels, weights = task(images)
        on = [name for name, w in weights.items() if np.all(w.numpy() == 1.0)]
        off = [name for name, w in weights.items() if np.all(w.numpy() == 0.0)]
        assert len(on) == 1 and len(off) == 2 and all(np.all(labels[name].numpy() == 0) for name in off)
        active.append(on[0])
    for cycle in range(4):  # each cycle of 3 * every batches sees all three tasks
        assert set(active[3 * every * cycle:3 * every * (cycle + 1)]) == {"rotation", "noise", "overlay"}
    if schedule == "every_n":
        assert all(active[i] == active[i + 1] for i in range(0, len(active), 2))


def test_mixed_active_task_labels_like_the_task_itself():
    task = mixed_task("round_robin")
    images = random_images(n=16)
    for step in range(3):
        out, labels, _ = task(images)
        sub = task.tasks[step]
        expected_out, expected_labels = sub.transform(tf.constant(images), step)
        np.testing.assert_array_equal(out, expected_out)
        np.testing.assert_array_equal(labels[sub.name], expected_labels)


def test_mixed_refuses_batch_changing_or_non_labelling_tasks():
    with pytest.raises(RecipeError, match="tasks"):
        MixedTask([RotationTask(all_rotations=True), NoiseTask()])
    with pytest.raises(RecipeError, match="tasks"):
        MixedTask([ContrastiveTask(), NoiseTask()])
    with pytest.raises(RecipeError, match="distinct names"):
        MixedTask([NoiseTask(), NoiseTask(kind="speckle")])
    MixedTask([NoiseTask(), NoiseTask(kind="speckle", name="speckle")])


def test_mixed_config_round_trip_and_determinism():
    batches = [random_images(n=16, seed=s) for s in range(4)]
    task = mixed_task(seed=9)
    expected = run_eager(task, batches)
    assert_same(expected, run_eager(MixedTask.from_config(mixed_task(seed=9).get_config()), batches))
    assert_same(expected, run_function(mixed_task(seed=9), batches))
    assert_same(expected, run_dataset(mixed_task(seed=9), batches))


def test_create_task_mixed_with_sub_options():
    task = create_task("mixed", {"tasks": {"rotation": None, "noise": {"kind": "speckle"}}, "schedule": "every_n",
                                 "every": 3}, seed=4)
    assert task.task_names == ["rotation", "noise"] and task.tasks[1].kind == "speckle" and task.every == 3
    assert create_task("mixed", None, seed=0).task_names == ["rotation", "noise", "overlay"]
    with pytest.raises(RecipeError, match=r"^pretrain\.options\.tasks\.noise\.kind: got 'pink'"):
        create_task("mixed", {"tasks": {"noise": {"kind": "pink"}, "rotation": {}}}, seed=0)
    with pytest.raises(RecipeError, match=r"^pretrain\.options\.tasks: unknown task 'mixed'"):
        create_task("mixed", {"tasks": ["mixed", "rotation"]}, seed=0)


# -- contrastive ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_contrastive_views_and_partner_labels(shape):
    images = random_images(shape, n=8)
    views, partner = ContrastiveTask(seed=0)(images)
    assert views.shape == (16, *shape) and partner.dtype == tf.int32
    assert partner.numpy().tolist() == list(range(8, 16)) + list(range(8))
    views = views.numpy()
    assert views.min() >= 0 and views.max() <= 1
    assert all(not np.array_equal(views[i], views[i + 8]) for i in range(8))
    plain = ContrastiveTask(crop=0, translation=0, flip=False, color=0, noise=0, seed=0)
    np.testing.assert_allclose(plain(images)[0], np.concatenate([images, images]), atol=1e-6)  # view i, i+B <- i


def test_contrastive_deterministic_and_round_trip():
    batches = [random_images(n=8, seed=s) for s in range(2)]
    expected = run_eager(ContrastiveTask(seed=3), batches)
    assert_same(expected, run_dataset(ContrastiveTask(seed=3), batches))
    assert_same(expected, run_eager(ContrastiveTask.from_config(ContrastiveTask(seed=3).get_config()), batches))
    assert_differs(expected, run_eager(ContrastiveTask(seed=4), batches))


# -- training ---------------------------------------------------------------------------------------------
def fit_one_epoch(task, shape=(28, 28, 1)):
    backbone = create_backbone("small_cnn", shape, seed=0, widths=(8, 16))
    model = task.build_model(backbone, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), **task.compile_kwargs())
    images = tf.data.Dataset.from_tensor_slices(random_images(shape, n=96)).batch(16)
    return model.fit(task.make_dataset(images), epochs=1, verbose=0, shuffle=False).history


@pytest.mark.parametrize("kind", ["overlay", "rotation_all", "jigsaw"])
def test_labelling_task_trains(kind):
    task = LABELLING_TASKS[kind](0)
    history = fit_one_epoch(task)
    assert np.isfinite(history["loss"][0]) and 0.0 <= history[task.monitor][0] <= 1.0


def test_mixed_task_trains_one_head_per_task():
    task = mixed_task("round_robin")
    history = fit_one_epoch(task, shape=(32, 32, 3))
    assert np.isfinite(history["loss"][0])
    for name in task.task_names:
        assert np.isfinite(history[f"{name}_loss"][0]) and 0.0 <= history[f"{name}_accuracy"][0] <= 1.0
    assert task.monitor in history


def test_contrastive_task_trains_with_nt_xent():
    task = ContrastiveTask(temperature=0.2, seed=0)
    history = fit_one_epoch(task)
    # NT-Xent of 2B = 32 views starts near log(31)
    assert np.isfinite(history["loss"][0]) and 2.0 < history["loss"][0] < 4.0
    assert 0.0 <= history[task.monitor][0] <= 1.0


# -- show -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [("rotation", {"all_rotations": True}), ("jigsaw", {}),
                                           ("contrastive", {}), ("mixed", {})])
def test_save_task_grid_writes_a_png(tmp_path, name, options):
    from kpretrain.pretext.show import save_task_grid, task_examples

    images = random_images((32, 32, 3), n=20)
    task = create_task(name, options, seed=0)
    examples = task_examples(task, images, 8)
    assert len(examples) == 8 and all(isinstance(title, str) and title for _, title in examples)
    path = save_task_grid(task, images, str(tmp_path / "grid.png"), n=8, title=name)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_shortcut_line_says_in_words_what_the_number_means():
    from kpretrain.pretext.shortcut import ShortcutResult

    def line(accuracy, network=None):
        return ShortcutResult("overlay", accuracy, 0.5, 2000, 5).line(network)

    assert "accuracy 0.950 (chance 0.500" in line(0.95) and ": a shortcut: image statistics alone get 90 % of the way" \
        in line(0.95)
    assert ": a partial shortcut: image statistics alone get 20 % of the way" in line(0.6)
    assert line(0.52).endswith(": no shortcut found: image statistics alone do little better than chance")
    # with the pretext network's accuracy, the comparison is with the network, not with a perfect score
    assert "get 93 % of its margin over chance" in line(0.92, 0.95) and "perfect" not in line(0.92, 0.95)
    assert line(0.6, 0.95).endswith("the pretext network reaches 0.950")
