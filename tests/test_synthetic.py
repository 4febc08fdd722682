"""Synthetic pre-training tasks (shapes, fractal): seeded, every class, images drawn not read, options, end to end."""

from __future__ import annotations

import builtins
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from kpretrain.errors import RecipeError
from kpretrain.pretext import FractalTask, ShapeSetTask, create_task

SHAPES = [(28, 28, 1), (32, 32, 3)]
TASKS = {"shapes": ShapeSetTask, "fractal": FractalTask}


def outputs(task, shape=(28, 28, 1), batches=2, n=24, content="zeros"):
    """`batches` calls of `task` on batches of `n` images of `shape` (zeros or random), as numpy pairs."""
    rng = np.random.default_rng(0)
    made = [np.zeros((n, *shape), np.float32) if content == "zeros" else rng.random((n, *shape), np.float32)
            for _ in range(batches)]
    return [tuple(t.numpy() for t in task(images)) for images in made]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(TASKS))
def test_deterministic_per_seed_and_images_in_range(name, shape):
    first = outputs(TASKS[name](seed=4), shape)
    for (images, labels), (again, again_labels) in zip(first, outputs(TASKS[name](seed=4), shape)):
        np.testing.assert_array_equal(images, again)
        np.testing.assert_array_equal(labels, again_labels)
        assert images.shape == (24, *shape) and images.dtype == np.float32
        assert labels.shape == (24,) and labels.dtype == np.int32
        assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.4
    assert not np.array_equal(first[0][0], first[1][0])  # the next batch draws new images
    assert not np.array_equal(first[0][0], outputs(TASKS[name](seed=5), shape, batches=1)[0][0])


def test_another_seed_draws_another_vocabulary_and_other_function_systems():
    assert ShapeSetTask(seed=1).kinds != ShapeSetTask(seed=2).kinds
    assert not np.array_equal(FractalTask(seed=1).systems, FractalTask(seed=2).systems)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_image_content_ignored_and_nothing_read(name, monkeypatch):
    task_a, task_b = TASKS[name](seed=3), TASKS[name](seed=3)
    expected = outputs(task_a, content="zeros")

    def refuse(*args, **kwargs):
        raise AssertionError(f"a synthetic task opened a file: {args}")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(tf.io.gfile, "GFile", refuse)
    for (x, y), (x2, y2) in zip(expected, outputs(task_b, content="random")):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_dataset_paths_match_the_layer_and_every_class_appears(name):
    task = TASKS[name](seed=6, **({"classes": 5} if name == "fractal" else {}))
    layer = outputs(TASKS[name](seed=6, **({"classes": 5} if name == "fractal" else {})), batches=3)
    generated = [tuple(t.numpy() for t in pair) for pair in task.generated_batches(24, (28, 28, 1), batches=3)]
    mapped = task.make_dataset(tf.data.Dataset.from_tensor_slices(np.ones((3, 24, 28, 28, 1), np.float32)))
    for (x, y), (gx, gy), (mx, my) in zip(layer, generated, [tuple(t.numpy() for t in p) for p in mapped]):
        np.testing.assert_array_equal(x, gx), np.testing.assert_array_equal(x, mx)
        np.testing.assert_array_equal(y, gy), np.testing.assert_array_equal(y, my)
    labels = np.concatenate([y for _, y in layer])
    assert set(labels.tolist()) == set(range(task.num_classes))
    later = task.generated_batches(24, (28, 28, 1), start=2, batches=1)
    np.testing.assert_array_equal(next(iter(later))[0].numpy(), layer[2][0])  # resumes at any batch
    (validation, _), = task.validation_batches(24, (28, 28, 1), 1)  # same classes, images training never draws
    assert not any(np.array_equal(validation.numpy(), x) for x, _ in layer)


def test_multi_label_marks_the_kinds_present_consistent_with_the_count():
    counted = ShapeSetTask(seed=8, vocabulary=8, max_distinct=5, primitives=6)
    marked = ShapeSetTask(seed=8, vocabulary=8, max_distinct=5, primitives=6, multi_label=True)
    assert (counted.num_classes, marked.num_classes) == (5, 8)
    for (x, count), (mx, hot) in zip(outputs(counted, (32, 32, 3)), outputs(marked, (32, 32, 3))):
        np.testing.assert_array_equal(x, mx)  # the same images, labelled two ways
        assert hot.dtype == np.float32 and hot.shape == (24, 8) and set(np.unique(hot)) <= {0.0, 1.0}
        np.testing.assert_array_equal(hot.sum(axis=1), count + 1)
    assert marked.describe(np.eye(8)[2]) and counted.describe(0) == "1 distinct"
    compiled = marked.compile_kwargs()
    assert isinstance(compiled["loss"], keras.losses.BinaryCrossentropy) and marked.monitor == "accuracy"
    assert isinstance(compiled["metrics"][0], keras.metrics.BinaryAccuracy)


def test_multi_label_task_trains():
    from kpretrain.models.backbones import create_backbone

    task = ShapeSetTask(seed=0, multi_label=True)
    model = task.build_model(create_backbone("small_cnn", (28, 28, 1), seed=0, widths=(4, 8)), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), **task.compile_kwargs())
    history = model.fit(task.generated_batches(16, (28, 28, 1), batches=2), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and 0.0 <= history["accuracy"][0] <= 1.0


@pytest.mark.parametrize("name, options", [("shapes", {"vocabulary": 9, "multi_label": True, "images_per_epoch": 64}),
                                           ("fractal", {"classes": 4, "maps": 3, "jitter": 0.2})])
def test_config_round_trip_gives_same_outputs(name, options):
    task = create_task(name, options, seed=9)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(task))
    assert type(revived) is type(task) and revived.get_config() == task.get_config()
    for (x, y), (rx, ry) in zip(outputs(task, batches=1), outputs(create_task(name, options, seed=9), batches=1)):
        np.testing.assert_array_equal(x, rx), np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(outputs(revived, batches=1)[0][0], outputs(task.from_config(task.get_config()),
                                                                               batches=1)[0][0])


@pytest.mark.parametrize("name, options, expected", [
    ("shapes", {"vocabulary": 1}, "pretrain.options.vocabulary: got 1; allowed: an integer in [2, 23]"),
    ("shapes", {"max_distinct": 7}, "pretrain.options.max_distinct: got 7; allowed: an integer in [2, 6]"),
    ("shapes", {"primitives": 3}, "pretrain.options.primitives: got 3; allowed: an integer in [4, 9]"),
    ("shapes", {"multi_label": "yes"}, "pretrain.options.multi_label: got 'yes'; allowed: true, false"),
    ("shapes", {"images_per_epoch": 0}, "pretrain.options.images_per_epoch: got 0; allowed: an integer >= 1"),
    ("fractal", {"classes": 1.5}, "pretrain.options.classes: got 1.5; allowed: an integer in [2, 10000]"),
    ("fractal", {"maps": [1, 3]}, "pretrain.options.maps: got [1, 3]; allowed: an integer or [min, max]"),
    ("fractal", {"jitter": 2}, "pretrain.options.jitter: got 2; allowed: a number in [0.0, 1.0]"),
    ("fractal", {"points": 2}, "pretrain.options.points: unknown option for task 'fractal'"),
    ("mixed", {"tasks": ["rotation", "shapes"]}, "pretrain.options.tasks: unknown task 'shapes'"),
])
def test_bad_option_is_one_line_naming_it(name, options, expected):
    with pytest.raises(RecipeError) as info:
        create_task(name, options, seed=0)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_images_too_small_to_draw_on_are_refused():
    with pytest.raises(RecipeError, match=r"^pretrain\.task: shapes draws images .* 6x6 is too small"):
        ShapeSetTask(seed=0).make_dataset(tf.data.Dataset.from_tensor_slices(np.zeros((1, 2, 6, 6, 1), np.float32)))
    with pytest.raises(RecipeError, match=r"^pretrain\.task: fractal draws images .* 28x7 is too small"):
        FractalTask(seed=0).generated_batches(2, (28, 7, 1))


def test_shortcut_check_and_task_grid(tmp_path):
    from kpretrain.pretext.shortcut import checkable_tasks, shortcut_check
    from kpretrain.pretext.show import save_task_grid, task_examples

    assert checkable_tasks(ShapeSetTask(seed=0, multi_label=True)) == []  # no single label to predict
    result = shortcut_check(FractalTask(seed=0, classes=3), np.zeros((240, 28, 28, 1), np.uint8), examples=240)
    assert result.examples == 240 and 0.0 <= result.accuracy <= 1.0 and result.chance < 0.5
    examples = task_examples(ShapeSetTask(seed=0, multi_label=True), np.zeros((2, 28, 28, 1), np.float32), 6)
    assert len(examples) == 6 and all(title for _, title in examples)  # drawn, however few images were given
    path = save_task_grid(FractalTask(seed=0), np.zeros((1, 32, 32, 3), np.float32), str(tmp_path / "g.png"), n=4)
    assert open(path, "rb").read(4) == b"\x89PNG"


def test_pretrains_on_shapes_and_transfers_with_statistics_init(tmp_path):
    from kpretrain.cli import main
    from tests.helpers import tiny_npz, tiny_recipe_dict

    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz", n_train=160, n_test=40), name="tiny_synthetic")
    recipe.update(seeds=[0], pretrain={"task": "shapes", "epochs": 1, "options": {"images_per_epoch": 96}},
                  transfer={"init": "statistics", "frozen_depth": 0}, finetune={"epochs": 1})
    recipe["data"].update(labels_per_class=8, validation=32)
    path = tmp_path / "synthetic.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--set", "evaluation.bn_refresh_batches=1"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    (pretraining,) = metrics["pretraining"]
    # images_per_epoch, not the pool of 128 real images: 3 batches of 32 an epoch (one validation point each)
    assert pretraining["task"] == "shapes" and pretraining["images"] == 96
    assert pretraining["history"]["epoch"] == [0.3333, 0.6667, 1.0]
    assert metrics["arms"]["shapes"]["protocol"]["init"] == "statistics"
    assert 0.0 <= metrics["arms"]["shapes"]["test_accuracy"][0] <= 1.0
