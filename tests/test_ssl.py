"""SimSiam, Barlow Twins and VICReg: each loss against its closed form, SimSiam's stop-gradient, the two-view
augmentation they share with SimCLR (whose views are unchanged), option errors, show-task, and one tiny run with an
arm per method (the loss decreases, the embedding does not collapse, `select: best` reads the right direction)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tensorflow as tf

import kpretrain
from kpretrain.errors import RecipeError
from kpretrain.pretext import ContrastiveTask, create_task
from kpretrain.pretext.barlow_twins import barlow_twins_loss
from kpretrain.pretext.joint import embedding_std, view_accuracy
from kpretrain.pretext.simsiam import simsiam_loss
from kpretrain.pretext.vicreg import vicreg_loss, vicreg_terms
from tests.helpers import tiny_npz, tiny_recipe_dict

METHODS = ("simsiam", "barlow_twins", "vicreg")
MOMENTUM = ("byol", "moco", "dino")  # their own tests: tests/test_momentum.py; their learning runs here
RNG = np.random.default_rng(0)
Z1, Z2, P1, P2 = (RNG.normal(size=(6, 4)).astype(np.float32) for _ in range(4))
COLLAPSED = np.tile(np.array([[0.3, -1.2, 2.0, 0.5]], np.float32), (6, 1))
DECORRELATED = np.array([[1, 1], [-1, 1], [1, -1], [-1, -1]], np.float32)  # zero-mean, orthogonal columns


# -- closed forms (numpy) ---------------------------------------------------------------------------------
def np_simsiam(p1, p2, z1, z2):
    cos = lambda p, z: np.sum(p * z, 1) / np.linalg.norm(p, axis=1) / np.linalg.norm(z, axis=1)  # noqa: E731
    return -0.5 * cos(p1, z2).mean() - 0.5 * cos(p2, z1).mean()


def np_barlow(z1, z2, lam):
    n1, n2 = ((z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5) for z in (z1, z2))
    c = n1.T @ n2 / len(z1)
    off = c - np.diag(np.diag(c))
    return np.sum((1 - np.diag(c)) ** 2) + lam * np.sum(off ** 2)


def np_vicreg(z1, z2, lam=25.0, mu=25.0, nu=1.0):
    def var(z):
        return np.mean(np.maximum(0.0, 1.0 - np.sqrt(z.var(0, ddof=1) + 1e-4)))

    def cov(z):
        c = np.cov(z, rowvar=False)
        return (np.sum(c ** 2) - np.sum(np.diag(c) ** 2)) / z.shape[1]

    return lam * np.mean((z1 - z2) ** 2) + mu * (var(z1) + var(z2)) / 2 + nu * (cov(z1) + cov(z2))


def test_simsiam_loss_is_the_symmetric_negative_cosine():
    np.testing.assert_allclose(simsiam_loss(P1, P2, Z1, Z2), np_simsiam(P1, P2, Z1, Z2), rtol=1e-5)
    assert float(simsiam_loss(COLLAPSED, COLLAPSED, COLLAPSED, COLLAPSED)) == pytest.approx(-1.0)  # collapse: -1
    assert float(simsiam_loss(Z1, Z2, -2 * Z2, -Z1)) == pytest.approx(1.0)  # every prediction opposite its target


def test_simsiam_stops_the_gradient_of_the_target_branch():
    p1, p2, z1, z2 = (tf.Variable(v) for v in (P1, P2, Z1, Z2))
    with tf.GradientTape() as tape:
        loss = simsiam_loss(p1, p2, z1, z2)
    grads = tape.gradient(loss, [p1, p2, z1, z2], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    assert all(np.abs(g.numpy()).sum() > 1e-3 for g in grads[:2])  # the predictions learn
    assert all(np.all(g.numpy() == 0) for g in grads[2:])  # the targets get nothing through the loss


def test_barlow_twins_loss_is_the_cross_correlation_to_identity():
    for lam in (0.0051, 0.5):
        np.testing.assert_allclose(barlow_twins_loss(Z1, Z2, lam), np_barlow(Z1, Z2, lam), rtol=1e-5)
    assert float(barlow_twins_loss(COLLAPSED, COLLAPSED)) == pytest.approx(4.0)  # C = 0: the diagonal's D ones
    assert float(barlow_twins_loss(DECORRELATED, 3 * DECORRELATED + 1)) == pytest.approx(0.0, abs=1e-6)  # C = I
    # swapped dimensions: C = [[0, 1], [1, 0]], the diagonal misses 2 and the off-diagonal costs 2 lambda
    assert float(barlow_twins_loss(DECORRELATED, DECORRELATED[:, ::-1], 0.25)) == pytest.approx(2.5, rel=1e-4)


def test_vicreg_loss_is_invariance_variance_covariance():
    np.testing.assert_allclose(vicreg_loss(Z1, Z2), np_vicreg(Z1, Z2), rtol=1e-5)
    np.testing.assert_allclose(vicreg_loss(Z1, Z2, 1.0, 2.0, 3.0), np_vicreg(Z1, Z2, 1.0, 2.0, 3.0), rtol=1e-5)
    assert float(vicreg_loss(COLLAPSED, COLLAPSED)) == pytest.approx(25 * 0.99)  # std sqrt(1e-4) in every dim
    wide = 2 * DECORRELATED  # std 2.31 > gamma = 1, uncorrelated: only invariance can cost
    assert float(vicreg_loss(wide, wide)) == pytest.approx(0.0, abs=1e-6)
    assert float(vicreg_loss(wide, wide + 1)) == pytest.approx(25.0)  # mean squared difference 1
    s, v, c = (float(t) for t in vicreg_terms(DECORRELATED / 4, DECORRELATED / 4))  # std 0.289 < 1
    assert (s, c) == (0.0, 0.0) and v == pytest.approx(1 - np.sqrt(1 / 12 + 1e-4), rel=1e-5)


def test_collapse_indicators():
    assert float(embedding_std(COLLAPSED)) == pytest.approx(0.0, abs=1e-6)
    spread = RNG.normal(size=(4096, 16)).astype(np.float32)
    assert float(embedding_std(spread)) == pytest.approx(1.0, abs=0.05)  # isotropic: about 1 whatever the width
    views = np.concatenate([spread[:8], spread[:8] + 0.01])
    partner = np.concatenate([np.arange(8, 16), np.arange(8)])
    assert view_accuracy(views, partner).numpy().tolist() == [1.0] * 16
    assert view_accuracy(np.ones((16, 4), np.float32), partner).numpy().mean() <= 1 / 8  # collapsed: chance


# -- the tasks ----------------------------------------------------------------------------------------------
def fixed_images(shape, n=4):
    grid = np.indices((n, *shape)).sum(axis=0).astype(np.float32)
    return (np.sin(grid * 0.7) * 0.5 + 0.5).astype(np.float32)


def test_contrastive_views_are_those_recorded_before_the_views_were_shared():
    # sha256 of two batches of ContrastiveTask(seed=7) views, recorded with kpretrain 0.6.0 before views.py existed
    recorded = {(28, 28, 1): "5b3c78926f7994865933c34291ad623c45cd3d588ec22c2800671af71c09e7c5",
                (16, 16, 3): "1539a4d28238ac6058040c484df54d48edee6203779872073b3f10737a07d911"}
    for shape, digest in recorded.items():
        task = ContrastiveTask(seed=7)
        views = [task(fixed_images(shape))[0].numpy() for _ in range(2)]
        assert hashlib.sha256(np.concatenate([v.ravel() for v in views]).tobytes()).hexdigest() == digest


@pytest.mark.parametrize("name", METHODS + MOMENTUM)
def test_methods_share_the_views_round_trip_and_name_their_options(name):
    images = fixed_images((16, 16, 1), n=6)
    task = create_task(name, {"crop": 0.2, "noise": 0.1}, seed=5)
    views, partner = task(images)
    np.testing.assert_array_equal(views, ContrastiveTask(crop=0.2, noise=0.1, seed=5)(images)[0])
    assert partner.numpy().tolist() == [6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5]
    again = type(task).from_config(task.get_config())
    assert again.get_config() == task.get_config()
    np.testing.assert_array_equal(again(images)[0], views)
    from kpretrain.pretext.shortcut import checkable_tasks

    assert checkable_tasks(task) == [] and task.monitor == "view_accuracy"


@pytest.mark.parametrize("name, options, expected", [
    ("simsiam", {"predictor_dim": 0}, "pretrain.options.predictor_dim: got 0; allowed: an integer >= 1"),
    ("simsiam", {"projection_dim": 2.5}, "pretrain.options.projection_dim: got 2.5; allowed: an integer >= 1"),
    ("barlow_twins", {"off_diagonal": -1}, "pretrain.options.off_diagonal: got -1; allowed: a number in [0.0, 1.0]"),
    ("vicreg", {"variance": "high"}, "pretrain.options.variance: got 'high'; allowed: a number in [0.0, 1000.0]"),
    ("vicreg", {"flip": "yes"}, "pretrain.options.flip: got 'yes'; allowed: true, false"),
    ("vicreg", {"gamma": 2}, "pretrain.options.gamma: unknown option for task 'vicreg'; allowed: projection_dim, "
                             "invariance, variance, covariance, crop, translation, flip, color, noise"),
])
def test_create_task_rejects_a_bad_option_in_one_line(name, options, expected):
    with pytest.raises(RecipeError) as info:
        create_task(name, options, seed=0)
    assert str(info.value) == expected


def test_show_task_draws_both_views_of_each_image(tmp_path):
    from kpretrain.pretext.show import save_task_grid, task_examples

    images = fixed_images((16, 16, 1), n=8)
    for name in METHODS:
        task = create_task(name, seed=0)
        examples = task_examples(task, images, 6)
        assert [title for _, title in examples] == [f"#{i} view {v}" for i in range(3) for v in (1, 2)]
        path = save_task_grid(task, images, str(tmp_path / f"{name}.png"), n=6, title=name)
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# -- one tiny run, an arm per method ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ssl_run(tmp_path_factory):
    """Scratch and the six methods on tiny images, one seed: 3 epochs of 11 pre-training steps each.  SimSiam
    keeps its best checkpoint by its monitor (view_accuracy, higher is better), VICReg by val_loss (lower)."""
    d = tmp_path_factory.mktemp("ssl")
    recipe = tiny_recipe_dict(tiny_npz(d / "tiny.npz"), name="ssl")
    recipe.update(seeds=[0], evaluation={"knn": False, "bn_refresh_batches": 2})
    recipe["pretrain"] = {"epochs": 3, "optimizer": {"learning_rate": 0.005}}
    recipe["finetune"]["epochs"] = 1
    recipe["arms"] = {"simsiam": {"pretrain.task": "simsiam", "pretrain.select": "best"},
                      "barlow_twins": {"pretrain.task": "barlow_twins"},
                      "vicreg": {"pretrain.task": "vicreg", "pretrain.select": {"mode": "best", "monitor": "val_loss"}},
                      "byol": {"pretrain.task": "byol"},
                      "moco": {"pretrain.task": "moco", "pretrain.options": {"queue_size": 256}},
                      "dino": {"pretrain.task": "dino", "pretrain.options": {"prototypes": 64, "local_crops": 2}}}
    kpretrain.run(recipe, out=str(d / "run"), quiet=True)
    return json.loads((d / "run" / "metrics.json").read_text())


@pytest.mark.parametrize("name", METHODS + MOMENTUM)
def test_each_method_learns_without_collapsing(ssl_run, name):
    (p,) = [p for p in ssl_run["pretraining"] if p["arms"] == [name]]
    h = p["history"]
    assert p["task"] == name and p["monitor"] == "view_accuracy"
    assert len(h["loss"]) >= 3 and h["loss"][-1] < h["loss"][0]  # training loss falls
    assert min(h["embedding_std"]) > 0.3 and h["val_embedding_std"][-1] > 0.3  # collapse would be 0
    assert 0.0 <= h["val_view_accuracy"][-1] <= 1.0 and np.isfinite(ssl_run["arms"][name]["test_accuracy"][0])


def test_select_best_reads_higher_for_accuracy_and_lower_for_loss(ssl_run):
    def kept(name, key):
        (p,) = [p for p in ssl_run["pretraining"] if p["arms"] == [name]]
        return p["history"][key][p["history"]["epoch"].index(p["selected_epoch"])], p["history"][key]

    value, curve = kept("simsiam", "val_view_accuracy")
    assert value == max(curve)
    value, curve = kept("vicreg", "val_loss")
    assert value == min(curve) and curve.index(value) != curve.index(max(curve))
