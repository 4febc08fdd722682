"""Masked-image modelling: the loss and its monitor against numpy closed forms, the seeded patch mask (exact ratio,
mean fill), option and image-size errors, the decoder for several image shapes, show-task, and one tiny run (the
loss falls, val_masked_r2 rises, `select: best` keeps the highest)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

import kpretrain
from kpretrain.errors import RecipeError
from kpretrain.models.backbones import create_backbone
from kpretrain.pretext import create_task
from kpretrain.pretext.masked_image import MaskedImageTask, image_decoder, masked_mse, masked_r2
from kpretrain.pretext.shortcut import checkable_tasks
from tests.helpers import tiny_npz, tiny_recipe_dict

RNG = np.random.default_rng(0)


def np_patch_normalized(images, p):
    b, h, w, c = images.shape
    patches = images.reshape(b, h // p, p, w // p, p, c)
    mean = patches.mean(axis=(2, 4, 5), keepdims=True)
    var = patches.var(axis=(2, 4, 5), keepdims=True)
    return ((patches - mean) / np.sqrt(var + 1e-6)).reshape(images.shape)


def np_masked(images, reconstruction, mask, normalize=False, p=None):
    """(mse, r2) over every channel of every masked pixel, pooled over the batch."""
    targets = np_patch_normalized(images, p) if normalize else images
    chosen = np.broadcast_to(mask, targets.shape) > 0.5
    t, r = targets[chosen].astype(np.float64), reconstruction[chosen].astype(np.float64)
    mse = np.mean((r - t) ** 2)
    return mse, 1.0 - mse / t.var()


def patch_images(shape, n=4):
    return RNG.uniform(size=(n, *shape)).astype(np.float32)


# -- the loss -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [False, True])
def test_masked_mse_and_r2_are_their_closed_forms_and_ignore_visible_pixels(normalize):
    images, reconstruction = patch_images((8, 8, 3), n=3), patch_images((8, 8, 3), n=3)
    mask = np.repeat(np.repeat(RNG.integers(0, 2, (3, 4, 4, 1)), 2, axis=1), 2, axis=2).astype(np.float32)
    options = {"normalize_targets": normalize, "patch_size": 2}
    mse, r2 = np_masked(images, reconstruction, mask, normalize, 2)
    assert float(masked_mse(images, reconstruction, mask, **options)) == pytest.approx(mse, rel=1e-5)
    assert float(masked_r2(images, reconstruction, mask, **options)) == pytest.approx(r2, rel=1e-4)
    changed = np.where(mask > 0.5, reconstruction, 100.0 * RNG.normal(size=reconstruction.shape)).astype(np.float32)
    assert float(masked_mse(images, changed, mask, **options)) == pytest.approx(mse, rel=1e-5)
    assert mse > 0.01  # the visible pixels changed by ~100 and the loss did not move
    perfect = np_patch_normalized(images, 2) if normalize else images
    assert float(masked_mse(images, perfect, mask, **options)) == pytest.approx(0.0, abs=1e-8)
    assert float(masked_r2(images, perfect, mask, **options)) == pytest.approx(1.0)


def test_predicting_the_masked_mean_scores_r2_zero():
    images = patch_images((4, 4, 1), n=2)
    mask = np.zeros((2, 4, 4, 1), np.float32)
    mask[:, :2] = 1.0
    mean = images[:, :2].mean()
    assert float(masked_r2(images, np.full_like(images, mean), mask)) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="normalize_targets needs the patch_size"):
        masked_mse(images, images, mask, normalize_targets=True)


# -- the mask -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, options, masked_patches, patches", [
    ((32, 32, 3), {}, 32, 64),  # 8 x 8 patches of 4, half masked
    ((28, 28, 1), {"patch_size": 7, "mask_ratio": 0.3}, 5, 16),  # round(4.8)
    ((16, 16, 1), {"patch_size": 8, "mask_ratio": 0.9}, 3, 4),  # round(3.6), at most all but one
    ((16, 16, 1), {"patch_size": 8, "mask_ratio": 0.05}, 1, 4),  # at least one
])
def test_mask_is_whole_patches_an_exact_share_filled_with_the_image_mean(shape, options, masked_patches, patches):
    images = patch_images(shape, n=6)
    task = create_task("masked_image", options, seed=3)
    masked, labels = (t.numpy() for t in task.transform(tf.constant(images), 5))
    p = task.patch_size
    assert labels.shape == (6, *shape[:2], shape[2] + 1)
    np.testing.assert_array_equal(labels[..., :-1], images)
    mask = labels[..., -1]
    assert set(np.unique(mask)) == {0.0, 1.0}
    grid = mask[:, ::p, ::p]
    np.testing.assert_array_equal(np.repeat(np.repeat(grid, p, axis=1), p, axis=2), mask)  # whole patches
    assert grid.reshape(6, -1).sum(axis=1).tolist() == [masked_patches] * 6
    assert grid.size // 6 == patches
    mean = images.mean(axis=(1, 2), keepdims=True)
    hidden = np.broadcast_to(mask[..., None] > 0.5, images.shape)
    np.testing.assert_array_equal(masked[~hidden], images[~hidden])  # visible pixels untouched
    np.testing.assert_allclose(masked, np.where(hidden, mean, images), rtol=0, atol=1e-6)  # float32 sums
    assert len({grid[i].tobytes() for i in range(6)}) > 1  # drawn per image


def test_mask_is_a_pure_function_of_seed_and_step():
    images = tf.constant(patch_images((16, 16, 1), n=4))

    def mask(seed, step):
        return create_task("masked_image", seed=seed).transform(images, step)[1].numpy()[..., -1]

    np.testing.assert_array_equal(mask(1, 7), mask(1, 7))
    assert not np.array_equal(mask(1, 7), mask(1, 8)) and not np.array_equal(mask(1, 7), mask(2, 7))
    task = create_task("masked_image", seed=1)
    called = [task(images)[1].numpy()[..., -1] for _ in range(2)]  # the layer's counter: batches 0 and 1
    np.testing.assert_array_equal(called[1], mask(1, 1))
    dataset = task.make_dataset(tf.data.Dataset.from_tensor_slices(images).batch(2).repeat(2), start=7)
    np.testing.assert_array_equal(next(iter(dataset))[1].numpy()[..., -1], mask(1, 7)[:2])


# -- options, image sizes, the model ------------------------------------------------------------------------
def test_options_round_trip_and_no_shortcut_check():
    task = create_task("masked_image", {"patch_size": 2, "mask_ratio": 0.75, "normalize_targets": True,
                                        "decoder_width": 8}, seed=4)
    again = MaskedImageTask.from_config(task.get_config())
    assert again.get_config() == task.get_config()
    assert (again.patch_size, again.mask_ratio, again.normalize_targets, again.decoder_width) == (2, 0.75, True, 8)
    images = tf.constant(patch_images((8, 8, 1)))
    np.testing.assert_array_equal(again.transform(images, 3)[1], task.transform(images, 3)[1])
    assert checkable_tasks(task) == [] and task.monitor == "masked_r2" and task.compile_kwargs() == {}


@pytest.mark.parametrize("options, expected", [
    ({"patch_size": 0}, "pretrain.options.patch_size: got 0; allowed: an integer >= 1"),
    ({"patch_size": 4.0}, "pretrain.options.patch_size: got 4.0; allowed: an integer >= 1"),
    ({"mask_ratio": 1}, "pretrain.options.mask_ratio: got 1; allowed: a number in (0, 1), both ends excluded"),
    ({"mask_ratio": 0.0}, "pretrain.options.mask_ratio: got 0.0; allowed: a number in (0, 1), both ends excluded"),
    ({"normalize_targets": "yes"}, "pretrain.options.normalize_targets: got 'yes'; allowed: true, false"),
    ({"decoder_width": 0}, "pretrain.options.decoder_width: got 0; allowed: an integer in [1, 1024]"),
    ({"ratio": 0.5}, "pretrain.options.ratio: unknown option for task 'masked_image'; allowed: patch_size, "
                     "mask_ratio, normalize_targets, decoder_width"),
])
def test_bad_options_are_one_line_errors(options, expected):
    with pytest.raises(RecipeError) as info:
        create_task("masked_image", options, seed=0)
    assert str(info.value) == expected


@pytest.mark.parametrize("shape, patch_size, allowed", [
    ((28, 28, 1), 5, "1, 2, 4, 7, 14"),
    ((28, 28, 1), 28, "1, 2, 4, 7, 14"),  # one patch: nothing left visible
    ((32, 16, 3), 32, "1, 2, 4, 8, 16"),
])
def test_images_the_patches_do_not_cut_are_refused_in_one_line(shape, patch_size, allowed):
    task = create_task("masked_image", {"patch_size": patch_size}, seed=0)
    expected = (f"pretrain.options.patch_size: {patch_size} does not cut {shape[0]}x{shape[1]} images into at "
                f"least 2 whole patches; allowed: {allowed}")
    with pytest.raises(RecipeError) as info:
        task.make_dataset(tf.data.Dataset.from_tensor_slices(np.zeros((4, *shape), np.float32)).batch(2))
    assert str(info.value) == expected


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (16, 16, 1)])
def test_the_model_reconstructs_an_image_of_the_input_shape(shape):
    backbone = create_backbone("small_cnn", shape, seed=0, widths=[4, 8, 8])
    task = create_task("masked_image", seed=0)
    for head, hidden in (("mlp", True), ("linear", False)):
        model = task.build_model(backbone, head=head, seed=0)
        assert model.built and model(np.zeros((2, *shape), np.float32)).shape == (2, *shape)
        assert any(layer.name == "decoder_hidden" for layer in model.decoder.layers) == hidden
    with pytest.raises(RecipeError) as info:
        task.build_model(backbone, head="deep")
    assert str(info.value) == "pretrain.head: got 'deep'; allowed for the masked_image decoder: mlp, linear"


def test_the_decoder_grows_a_small_grid_for_large_images():
    decoder = image_decoder(64, (224, 200, 3), head="linear", width=16, seed=0)
    assert decoder.output_shape == (None, 224, 200, 3)
    assert decoder.get_layer("decoder_grid").units == 7 * 7 * 16  # 5 doublings of a 7 x 7 grid, then cropped
    assert decoder.count_params() < 100_000


# -- show-task and one tiny run -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return tiny_npz(tmp_path_factory.mktemp("mim") / "tiny.npz")


def test_show_task_draws_each_masked_input_beside_its_original(tmp_path, data_path):
    from kpretrain.pretext.show import save_task_grid, task_examples

    images = patch_images((16, 16, 1), n=8)
    task = create_task("masked_image", {"patch_size": 8}, seed=0)  # 4 patches, 2 masked
    examples = task_examples(task, images, 6)
    assert [title for _, title in examples] == [t for i in range(3) for t in (f"#{i} masked 50 %", f"#{i} original")]
    np.testing.assert_array_equal(examples[1][0], images[0])
    assert open(save_task_grid(task, images, str(tmp_path / "g.png"), n=6), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    recipe = tiny_recipe_dict(data_path, name="mim_show")
    recipe["pretrain"]["task"] = "masked_image"
    shown = kpretrain.show_task(recipe, out=str(tmp_path / "show.png"), n=4)
    assert shown.task == "masked_image" and shown.shortcuts == () and (tmp_path / "show.png").exists()
    with pytest.raises(RecipeError, match=r"^pretrain\.options\.patch_size: 5 does not cut 16x16 images"):
        kpretrain.show_task(recipe, out=str(tmp_path / "bad.png"), n=4, overrides={"pretrain.options.patch_size": 5})


@pytest.fixture(scope="module")
def mim_run(tmp_path_factory, data_path):
    """masked_image on tiny 16x16 images, one seed, 3 epochs of 11 pre-training steps; the best epoch is kept."""
    d = tmp_path_factory.mktemp("mim_run")
    recipe = tiny_recipe_dict(data_path, name="mim")
    recipe.update(seeds=[0], evaluation={"knn": False, "bn_refresh_batches": 2})
    recipe["pretrain"] = {"task": "masked_image", "epochs": 3, "select": "best",
                          "optimizer": {"learning_rate": 0.005}}
    recipe["finetune"]["epochs"] = 1
    kpretrain.run(recipe, out=str(d / "run"), quiet=True)
    return json.loads((d / "run" / "metrics.json").read_text())


def test_a_tiny_run_learns_to_reconstruct_and_keeps_its_best_epoch(mim_run):
    (p,) = [p for p in mim_run["pretraining"] if p["task"] == "masked_image"]
    h = p["history"]
    assert p["monitor"] == "masked_r2" and len(h["loss"]) >= 3
    assert h["loss"][-1] < h["loss"][0]  # the training loss falls
    curve = [v for v in h["val_masked_r2"] if v is not None]
    assert max(curve[1:]) > curve[0] and all(np.isfinite(curve))  # validation reconstruction improves
    kept = h["val_masked_r2"][h["epoch"].index(p["selected_epoch"])]
    assert kept == max(curve)  # select: best reads the monitor as higher-is-better


def test_a_patch_size_that_does_not_cut_the_images_is_refused_before_the_run(tiny_recipe, tmp_path, capsys):
    from kpretrain.cli import main

    out = tmp_path / "run"
    code = main(["run", tiny_recipe, "--dry-run", "--out", str(out), "--set", "pretrain.task=masked_image",
                 "--set", "pretrain.options={patch_size: 5}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err.splitlines() == [err] and "pretrain.options.patch_size: 5 does not cut 16x16 images" in err
