"""The training toolkit: the learning-rate range test (`kpretrain lr-find`, `learning_rate: auto`), weight
averaging (Keras optimizer EMA, Polyak) with its batch-norm refresh, checkpoint selection, probes."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from kpretrain.cli import main
from kpretrain.errors import RecipeError
from kpretrain.recipe import LRFindConfig, OptimizerConfig, recipe_from_dict
from kpretrain.training.averaging import BestEpoch, LastWeights, PolyakAverage
from kpretrain.training.lr_finder import lr_range_test, smooth, suggest
from tests.helpers import tiny_npz, tiny_recipe_dict


def least_squares(sigma: float):
    """y = x w*, x ~ N(0, sigma^2 I), full batch: the MSE's Hessian is 2 sigma^2 I, so gradient descent
    converges fastest at lr = 1 / (2 sigma^2) and diverges above 1 / sigma^2."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, sigma, (4096, 8)).astype("float32")
    y = x @ rng.normal(size=(8, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, use_bias=False)])
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4096).repeat()


def test_range_test_suggests_near_the_known_rate_and_restores_the_model():
    ratios = []
    for sigma in (1.0, 5.0):
        model, batches = least_squares(sigma)
        optimizer = keras.optimizers.SGD(0.1)
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(batches, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)  # a model in training, with optimizer state
        weights, iterations = [w.copy() for w in model.get_weights()], int(optimizer.iterations)
        result = lr_range_test(model, batches, compile_kwargs={"loss": "mse"},
                               optimizer=OptimizerConfig(name="sgd", momentum=0.0), settings=LRFindConfig())
        best = 1 / (2 * sigma ** 2)
        assert best / 10 <= result.suggested_lr <= best * 10, (sigma, result.suggestions)
        assert result.method == "steepest" and set(result.suggestions) == {"steepest", "valley", "minimum"}
        # it stopped once the loss diverged, past the rate where gradient descent diverges
        assert result.stopped == "diverged" and result.learning_rates[-1] > 1 / sigma ** 2
        assert len(result.learning_rates) < 200
        assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
        assert model.optimizer is optimizer and int(optimizer.iterations) == iterations
        ratios.append(result.suggested_lr / best)
    assert ratios[0] == pytest.approx(ratios[1], rel=0.15)  # it follows the curvature: 25x flatter, 25x the rate


def test_smoothing_is_bias_corrected_and_suggestions_read_the_curve():
    assert smooth([2.0, 2.0, 2.0]).tolist() == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0 at the start
    lrs = np.logspace(-6, 0, 60)
    loss = 1 / (1 + np.exp(4 * (np.log10(lrs) + 3)))  # falls steepest at 1e-3
    loss[-8:] = np.linspace(1.0, 5.0, 8)  # then diverges
    found = suggest(lrs, loss)
    assert found["steepest"] == pytest.approx(1e-3, rel=0.3)
    assert found["minimum"] == pytest.approx(lrs[np.argmin(loss)] / 10)
    assert 1e-4 < found["valley"] < lrs[np.argmin(loss)]
    with pytest.raises(RecipeError, match="lr_find.start_lr"):
        recipe_from_dict({"name": "x", "finetune": {"optimizer": {"lr_find": {"start_lr": 1.0, "end_lr": 0.1}}}})


def test_polyak_average_is_the_mean_of_the_weights_from_its_start_epoch():
    model, batches = least_squares(1.0)
    model.add(keras.layers.BatchNormalization())  # statistics are not averaged (the stage refreshes them after)
    seen = []
    store = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(
        [np.array(w) for w in model.get_weights()]))
    polyak, last = PolyakAverage(start_epoch=1.5), LastWeights()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(batches, steps_per_epoch=4, epochs=3, callbacks=[store, polyak, last], verbose=0, shuffle=False)
    averaged = seen[6:]  # steps 7..12: from epoch 1.5 on
    assert polyak.count == 6
    bn = model.layers[-1]
    statistics = {id(bn.moving_mean), id(bn.moving_variance)}
    for variable, got, *stored in zip(model.weights, model.get_weights(), *averaged):
        if id(variable) in statistics:  # what training left
            np.testing.assert_array_equal(got, stored[-1])
        else:
            np.testing.assert_allclose(got, np.mean(stored, axis=0), rtol=1e-5, atol=1e-6)
    for got, final in zip(last.weights, seen[-1]):
        np.testing.assert_array_equal(got, final)  # the last trained weights, kept for the diagnostics


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """A run whose pre-training and fine-tuning learning rates are `auto` (a 30-step range test each), with
    Polyak averaging of pre-training and EMA of fine-tuning."""
    d = tmp_path_factory.mktemp("auto")
    recipe = tiny_recipe_dict(tiny_npz(d / "tiny.npz"))
    recipe["seeds"] = [0]
    recipe["pretrain"]["optimizer"] = {"learning_rate": "auto", "lr_find": {"steps": 30}}
    recipe["finetune"]["optimizer"] = {"learning_rate": "auto", "lr_find": {"steps": 30}}
    recipe["pretrain"]["averaging"] = {"method": "polyak", "start_epoch": 0.5}
    recipe["finetune"]["averaging"] = "ema"
    recipe["finetune"]["epochs"] = 3
    recipe["arms"] = {"overlay": {}, "picked": {"pretrain": {"averaging": "none", "select": "best"},
                                                "finetune": {"averaging": "none", "select": {"mode": "best"}}},
                      "probed": {"pretrain": {"task": "rotation", "averaging": "none", "select": "probe",
                                              "probe": {"every": 0.5, "method": "both", "labels_per_class": 10}}}}
    path = d / "auto.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--out", str(d / "run")]) == 0
    return path, d


def test_learning_rate_auto_records_the_value_it_used(auto_run):
    path, d = auto_run
    metrics = json.loads((d / "run" / "metrics.json").read_text())
    found = {}
    for arm in ("scratch", "overlay"):
        (lr,) = metrics["arms"][arm]["finetune_learning_rate"]
        unit = json.loads((d / "run" / "units" / f"seed0.{arm}.finetune.json").read_text())
        assert unit["finetune_lr_find"]["suggested_lr"] == lr and len(unit["finetune_lr_find"]["curve"]["loss"]) <= 30
        found[arm] = lr
    pretraining = next(p for p in metrics["pretraining"] if "overlay" in p["arms"])
    assert pretraining["lr_find"]["method"] == "steepest" and pretraining["lr_find"]["suggested_lr"] > 0
    report = (d / "run" / "report.md").read_text()
    assert "learning rate found" in report and f"{found['scratch']:.3g}" in report
    # the recorded value is the one training used: the same run with it written in gives the same scratch
    assert main(["run", str(path), "--out", str(d / "fixed"), "--set", "arms={plain: {}}", "--set", "pretrain.epochs=0",
                 "--set", f"finetune.optimizer.learning_rate={found['scratch']!r}"]) == 0
    fixed = json.loads((d / "fixed" / "metrics.json").read_text())
    assert fixed["arms"]["scratch"]["test_accuracy"] == metrics["arms"]["scratch"]["test_accuracy"]
    assert fixed["arms"]["scratch"]["val_accuracy"] == metrics["arms"]["scratch"]["val_accuracy"]


def test_lr_find_command_writes_its_curve_and_suggestions(auto_run, capsys):
    path, d = auto_run
    out = d / "lr"
    assert main(["lr-find", str(path), "--stage", "pretrain", "--steps", "25", "--suggestion", "valley",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    found = json.loads((out / "lr_find.json").read_text())
    assert found["arm"] == "overlay" and found["stage"] == "pretrain" and found["method"] == "valley"
    assert found["suggested_lr"] == found["suggestions"]["valley"] and len(found["curve"]["learning_rate"]) <= 25
    assert f"suggested learning rate (valley): {found['suggested_lr']:.3g}" in printed
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["lr-find", str(path), "--stage", "pretrain", "--arm", "scratch", "--out", str(d / "x")]) == 2
    assert "arm 'scratch' has no pre-training" in capsys.readouterr().err
    assert main(["lr-find", str(path), "--arm", "nope"]) == 2
    assert "--arm 'nope': not an arm" in capsys.readouterr().err


def test_averaged_weights_are_refreshed_and_reported_beside_the_last_ones(auto_run):
    path, d = auto_run
    metrics = json.loads((d / "run" / "metrics.json").read_text())
    for arm in ("scratch", "overlay"):
        entry = metrics["arms"][arm]
        (averaging,) = entry["averaging"]
        assert averaging["method"] == "ema"
        # the arm's validation accuracy is the averaged, refreshed model's; the last weights' is the last epoch's
        assert entry["val_accuracy"] == [averaging["val_accuracy_averaged"]]
        assert averaging["val_accuracy_last"] == entry["history"][0]["val_accuracy"][-1]
        assert len(entry["test_accuracy_last"]) == 1 and 0 <= entry["test_accuracy_last"][0] <= 1
    pretraining = next(p for p in metrics["pretraining"] if "overlay" in p["arms"])
    assert pretraining["averaging"]["method"] == "polyak"
    assert pretraining["final_val_accuracy"] == pretraining["averaging"]["val_accuracy_averaged"]
    report = (d / "run" / "report.md").read_text()
    assert "## Weight averaging" in report and "scratch (ema): last weights" in report
    assert "(polyak): pretext validation accuracy last weights" in report


def test_best_epoch_keeps_the_best_validated_weights_and_stops_after_patience():
    model, batches = least_squares(1.0)
    scores = iter([0.5, None, 0.7, None, 0.6, None, 0.65, None, 0.9])  # None: an epoch without validation
    seen = {}

    def validate(epoch, logs):
        score = next(scores)
        if score is not None:
            logs["val_accuracy"] = score
        seen[epoch] = [np.array(w) for w in model.get_weights()]

    best = BestEpoch("val_accuracy", patience=2)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    history = model.fit(batches, steps_per_epoch=1, epochs=9, verbose=0, shuffle=False,
                        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=validate), best])
    assert len(history.history["loss"]) == 7  # two validations (0.6, 0.65) without beating 0.7: stopped
    assert best.best_epoch == 2
    for got, kept in zip(model.get_weights(), seen[2]):
        np.testing.assert_array_equal(got, kept)
    state = json.loads(json.dumps(best.backup_state()))  # what a stage backup holds
    again = BestEpoch("val_accuracy", patience=2)
    again.restore_state(state)
    assert again.best == 0.7 and again.best_epoch == 2 and again.wait == 2
    with pytest.raises(RecipeError, match="finetune.select.mode': best picks one epoch"):
        recipe_from_dict({"name": "x", "finetune": {"select": "best", "averaging": "ema"}})
    with pytest.raises(RecipeError, match="finetune.select.patience"):
        recipe_from_dict({"name": "x", "finetune": {"select": {"patience": 3}}})


def test_select_best_evaluates_the_epoch_it_reports(auto_run):
    path, d = auto_run
    metrics = json.loads((d / "run" / "metrics.json").read_text())
    entry = metrics["arms"]["picked"]
    (epoch,) = entry["selected_epoch"]
    curve = entry["history"][0]["val_accuracy"]
    assert curve[epoch - 1] == max(curve)
    assert entry["val_accuracy"] == [curve[epoch - 1]]  # re-validated after restoring: the same number
    assert entry["baseline"] == "scratch-picked" and "selected_epoch" not in metrics["arms"]["overlay"]
    picked = [p for p in metrics["pretraining"] if "picked" in p["arms"]][0]
    kept = picked["history"]["epoch"].index(picked["selected_epoch"])  # in passes over the data, on the curve
    assert picked["final_val_accuracy"] == picked["history"]["val_accuracy"][kept]


def test_probes_record_one_value_per_probe_point_and_select_the_best_checkpoint(auto_run):
    path, d = auto_run
    metrics = json.loads((d / "run" / "metrics.json").read_text())
    probed = next(p for p in metrics["pretraining"] if "probed" in p["arms"])
    h = probed["history"]
    # a probe after every Keras epoch that completes another half data epoch, and after the last one
    assert len(h["epoch"]) == 4  # pre-training's curve has at least 4 points
    due = [int(e / 0.5 + 1e-9) > int(b / 0.5 + 1e-9) for b, e in zip([0.0, *h["epoch"]], h["epoch"])]
    due[-1] = True
    assert sum(due) >= 2
    for key in ("val_probe_linear", "val_probe_knn"):
        assert [v is not None for v in h[key]] == due, (key, h["epoch"])
        assert all(0 <= v <= 1 for v in h[key] if v is not None)
    scores = [v for v in h["val_probe_linear"] if v is not None]
    assert h["val_probe_linear"][h["epoch"].index(probed["selected_epoch"])] == max(scores)  # select: probe
    assert (d / "run" / "probe.png").read_bytes()[:4] == b"\x89PNG"
    # each probe's validation confusion matrix at its best and at its last probe point
    points = [(e, v) for e, v in enumerate(h["val_probe_linear"], 1) if v is not None]
    for name in ("linear", "knn"):
        kept = probed["probe_confusion"][name]
        curve = [(e, v) for e, v in enumerate(h[f"val_probe_{name}"], 1) if v is not None]
        best = max(curve, key=lambda p: p[1])
        assert (kept["last"]["epoch"], kept["last"]["score"]) == curve[-1]
        assert kept["best"]["score"] == best[1] and h[f"val_probe_{name}"][kept["best"]["epoch"] - 1] == best[1]
        for point in kept.values():
            matrix = np.array(point["matrix"])
            assert matrix.sum() == 40 and np.trace(matrix) / 40 == pytest.approx(point["score"])
    assert points and (d / "run" / "probe_confusion.png").read_bytes()[:4] == b"\x89PNG"
    report = (d / "run" / "report.md").read_text()
    assert "## Probes during pre-training" in report and f"- {probed['unit']}: " in report
    assert f"most confused by the linear probe at its best point (epoch {probed['probe_confusion']['linear']['best']['epoch']})" in report


def test_a_probe_reads_frozen_features_and_leaves_the_backbone_as_it_was(auto_run):
    from kpretrain.experiment import Experiment
    from kpretrain.protocol import build_model
    from kpretrain.protocol.pretrain import backbone_probe
    from kpretrain.recipe import load_recipe

    path, d = auto_run
    experiment = Experiment(load_recipe(str(path)))
    experiment.prepare()
    arm = experiment.arms["probed"]
    inputs = experiment.seed_data(0)
    backbone = build_model(arm, inputs).backbone
    weights = [np.array(w) for w in backbone.get_weights()]  # BN statistics included
    flags = [layer.trainable for layer in backbone.layers]
    scores = backbone_probe(backbone, arm, inputs)()
    assert set(scores) == {"linear", "knn"}
    for score, matrix in scores.values():  # validation accuracy, and the confusion matrix it comes from
        matrix = np.array(matrix)
        assert matrix.sum() == len(inputs.y_validation) and score == np.trace(matrix) / matrix.sum()
        np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(inputs.y_validation, minlength=len(matrix)))
    assert all(np.array_equal(a, b) for a, b in zip(weights, backbone.get_weights()))
    assert [layer.trainable for layer in backbone.layers] == flags
    with pytest.raises(RecipeError, match="probe picks the pre-training checkpoint"):
        recipe_from_dict({"name": "x", "pretrain": {"task": "rotation", "select": "probe"}})


def test_shortcut_check_is_near_chance_for_rotation_and_near_one_for_a_leaking_task(tmp_path):
    import tensorflow as tf

    from kpretrain.pretext import PretextTask, RotationTask
    from kpretrain.pretext.shortcut import image_statistics, shortcut_check

    class BrightenTask(PretextTask):
        """Label 1 = the image brightened: a label written in the intensity histogram."""

        task_name = "brighten"

        def transform(self, images, step):
            (seed,) = self.seeds(step, 1)
            labels = tf.cast(tf.random.stateless_uniform([tf.shape(images)[0]], seed=seed) < 0.5, tf.int32)
            brighter = tf.clip_by_value(images * 0.7 + 0.3, 0.0, 1.0)
            return tf.where(tf.reshape(labels > 0, [-1, 1, 1, 1]), brighter, images), labels

    images = np.load(tiny_npz(tmp_path / "tiny.npz", n_train=1200))["x_train"]
    rotation = shortcut_check(RotationTask(seed=1), images, examples=1200)
    leak = shortcut_check(BrightenTask(seed=1), images, examples=1200)
    assert rotation.examples == 1200 and abs(rotation.accuracy - 0.25) < 0.06 and rotation.chance < 0.3
    assert leak.accuracy > 0.97 and 0.4 < leak.chance < 0.6
    assert leak.record(network_accuracy=0.99)["warning"] and not rotation.record(network_accuracy=0.99)["warning"]
    stats = image_statistics(np.full((2, 4, 4, 1), 0.5, np.float32))
    assert stats.shape == (2, 19) and stats[0, 8] == 1.0 and stats[0, 16] == 0.5 and stats[0, 18] == 1.0


def test_every_run_checks_its_pretext_tasks_for_shortcuts(auto_run):
    path, d = auto_run
    metrics = json.loads((d / "run" / "metrics.json").read_text())
    checks = {c["task"]: c for c in metrics["shortcut"]}
    assert set(checks) == {"overlay", "rotation"} and len(metrics["shortcut"]) == 2
    assert checks["overlay"]["arms"] == ["overlay", "picked"] and checks["rotation"]["arms"] == ["probed"]
    for c in checks.values():
        assert 0 <= c["accuracy"] <= 1 and c["folds"] == 3 and c["network_accuracy"] is not None
    report = (d / "run" / "report.md").read_text()
    assert "## Pretext shortcut check" in report and "- overlay, picked (overlay): statistics" in report


def test_histogram_matching_removes_the_intensity_cue_of_overlay_and_noise(tmp_path):
    from kpretrain.pretext import NoiseTask, OverlayTask
    from kpretrain.pretext.shortcut import shortcut_check

    images = np.load(tiny_npz(tmp_path / "tiny.npz", n_train=1200))["x_train"]
    batch = tf.constant(images[:32], tf.float32) / 255.0
    for task in (OverlayTask(match="histogram", seed=3), NoiseTask(match="histogram", seed=3)):
        out, labels = task.transform(batch, 0)
        assert 0 < int(tf.reduce_sum(labels)) < 32
        for before, after in zip(batch.numpy(), out.numpy()):  # every image keeps its own intensity histogram
            np.testing.assert_array_equal(np.sort(before.ravel()), np.sort(after.ravel()))
        leaky = shortcut_check(type(task)(seed=3), images, examples=1200)
        matched = shortcut_check(task, images, examples=1200)
        assert leaky.accuracy > 0.9 and matched.accuracy < matched.chance + 0.06, (task.task_name, leaky, matched)
    with pytest.raises(RecipeError, match="match"):
        OverlayTask(match="moments")
