"""Self-training arms and `finetune.augment`: pseudo-label selection, the student's data, the soft loss, rounds."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import kpretrain.protocol.selftrain as selftrain
from kpretrain.cli import main
from kpretrain.data.augment import augment_batches
from kpretrain.data import labelled_batches
from kpretrain.errors import RecipeError
from kpretrain.protocol.selftrain import select_pseudo_labels, soft_compile_kwargs
from kpretrain.recipe import recipe_from_dict
from tests.helpers import tiny_npz, tiny_recipe_dict


def test_pseudo_labels_honour_the_threshold_and_the_class_balance():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.2, 0.7, 0.1], [0.95, 0.05, 0.0],
                              [0.1, 0.1, 0.8], [0.34, 0.33, 0.33], [0.85, 0.1, 0.05]])
    kept, targets = select_pseudo_labels(probabilities, threshold=0.65)
    assert kept.tolist() == [0, 2, 3, 4, 6]  # top probability >= 0.65
    np.testing.assert_array_equal(targets, np.eye(3)[[0, 1, 0, 2, 0]])
    kept, targets = select_pseudo_labels(probabilities, threshold=0.65, soft=True)
    np.testing.assert_allclose(targets, probabilities[[0, 2, 3, 4, 6]])
    # balance: 5 kept over 3 classes -> 2 per class: class 0's two most confident (3, 0), classes 1 and 2 repeated
    kept, targets = select_pseudo_labels(probabilities, threshold=0.65, balance=True, seed=0)
    assert np.bincount(targets.argmax(axis=1), minlength=3).tolist() == [2, 2, 2]
    assert sorted(kept.tolist()) == [0, 2, 2, 3, 4, 4]
    assert select_pseudo_labels(probabilities, threshold=0.99)[0].size == 0


def test_soft_label_loss_equals_its_closed_form():
    """Per example -sum(q log softmax(z)), weighted (human 1, pseudo w), summed and divided by the batch size."""
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, -1.0, 0.0], [-0.5, 1.5, 0.5]], np.float32)
    targets = np.array([[1, 0, 0], [0, 0, 1], [0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], np.float32)  # 2 human, 2 pseudo
    weights = np.array([1.0, 1.0, 0.5, 0.5], np.float32)
    loss = soft_compile_kwargs()["loss"](targets, logits, sample_weight=weights)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = np.sum(weights * -(targets * log_p).sum(axis=1)) / len(logits)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_augmentation_is_a_function_of_seed_and_batch_number():
    x = np.random.default_rng(0).integers(0, 255, (64, 12, 12, 1)).astype(np.uint8)
    y = np.arange(64) % 4

    def batches(level, start, seed=3):
        data = labelled_batches(x, y, 16, shuffle=True, seed=0, start=start, repeat=True)
        return [tuple(t.numpy() for t in b) for b in augment_batches(data, level, seed, start).take(3)]

    strong = batches("strong", 0)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(strong, batches("strong", 0)))  # reruns agree
    resumed = batches("strong", 1)  # a stage resumed at batch 1 sees what it would have seen
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(strong[1:], resumed))
    plain = batches("none", 0)
    assert not np.array_equal(strong[0][0], plain[0][0]) and np.array_equal(strong[0][1], plain[0][1])
    assert not np.array_equal(batches("weak", 0)[0][0], batches("weak", 0, seed=4)[0][0])
    assert all(0.0 <= b[0].min() and b[0].max() <= 1.0 for b in strong)


def test_scratch_gets_the_same_augmentation_and_self_training_is_checked():
    base = {"name": "x", "data": {"labels_per_class": 10}}
    recipe = recipe_from_dict({**base, "arms": {
        "st": {"selftrain": {"threshold": 0.8}, "finetune": {"augment": "strong"}},
        "strong": {"finetune": {"augment": "strong"}}}})
    arms = recipe.arm_recipes()
    # the self-trained arm is compared with scratch trained with the same (strong) augmentation, not plain scratch
    assert recipe.baseline_pairs() == {"st": "scratch-st", "strong": "scratch-st"}
    assert arms["scratch-st"].finetune.augment == "strong" and arms["scratch-st"].selftrain is None
    assert arms["st"].selftrain.threshold == 0.8 and arms["st"].selftrain.rounds == 1
    noisy = recipe_from_dict({**base, "arms": {"noisy": {"selftrain": {"student_augment": "strong"}}}})
    pair = noisy.baseline_pairs()["noisy"]  # only the students are augmented: so is the scratch they face
    assert pair == "scratch-noisy" and noisy.arm_recipes()[pair].finetune.augment == "strong"
    assert noisy.arm_recipes()["noisy"].finetune.augment == "none"
    with pytest.raises(RecipeError, match="'arms.st.selftrain.labels': 'fuzzy' is not allowed"):
        recipe_from_dict({**base, "arms": {"st": {"selftrain": {"labels": "fuzzy"}}}})
    with pytest.raises(RecipeError, match="'finetune.augment'"):
        recipe_from_dict({**base, "finetune": {"augment": "heavy"}})


@pytest.fixture(scope="module")
def selftrain_run(tmp_path_factory):
    """Two rounds of soft, thresholded, balanced self-training with strong augmentation, and a stacked arm, on
    tiny data; every batch the students are fed and every model that labels the pool are recorded."""
    d = tmp_path_factory.mktemp("selftrain")
    recipe = tiny_recipe_dict(tiny_npz(d / "tiny.npz"))
    recipe["seeds"] = [0]
    recipe["finetune"]["epochs"] = 1
    recipe["arms"] = {"st": {"pretrain": {"epochs": 0}, "transfer": {"frozen_depth": 0}, "finetune": {"augment": "strong"},
                             "selftrain": {"rounds": 2, "labels": "soft", "threshold": 0.3, "balance": True,
                                           "weight": 0.5, "ratio": 2}},
                      "stack": {"selftrain": {"student_init": "pretrained"}}}
    path = d / "st.yaml"
    path.write_text(yaml.safe_dump(recipe))
    fed, teachers, students = [], [], []
    batches, probabilities = selftrain.student_batches, selftrain.teacher_probabilities

    def record_batches(*args, **kwargs):
        train = batches(*args, **kwargs)
        fed.append([tuple(t.numpy() for t in b) for b in train(0).take(4)])
        return train

    def record_teacher(model, *args, **kwargs):
        teachers.append(model)
        return probabilities(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selftrain, "student_batches", record_batches)
        patch.setattr(selftrain, "teacher_probabilities", record_teacher)
        finetune = selftrain.finetune
        patch.setattr(selftrain, "finetune", lambda model, *a, **kw: students.append(model) or finetune(model, *a, **kw))
        assert main(["run", str(path), "--smoke", "--out", str(d / "run")]) == 0
    return d, json.loads((d / "run" / "metrics.json").read_text()), fed, teachers, students


def test_student_batches_hold_labelled_and_pool_images_never_validation_or_test(selftrain_run):
    d, metrics, fed, _, _ = selftrain_run
    data = np.load(d / "tiny.npz")
    from kpretrain.data import make_splits

    split = make_splits(data["y_train"], num_classes=4, validation=40, labels_per_class=10, seed=0)  # --smoke
    allowed = {x.tobytes() for x in data["x_train"][np.concatenate([split.labelled, split.unlabelled])]}
    forbidden = {x.tobytes() for x in data["x_train"][split.validation]} | {x.tobytes() for x in data["x_test"]}
    labelled = {x.tobytes(): y for x, y in zip(data["x_train"][split.labelled], data["y_train"][split.labelled])}
    assert len(fed) == 3  # st: 2 rounds, stack: 1
    kept = [r["pseudo_labels"] for r in metrics["arms"]["st"]["selftrain"][0]["rounds"]]
    for batches, pseudo in zip(fed[:2], kept):  # st: 32 labelled images and 2 x as many pseudo-labelled (weight 0.5)
        for images, targets, weights in batches:
            stored = [np.round(x * 255).astype(np.uint8).tobytes() for x in images]
            assert all(s in allowed for s in stored) and not any(s in forbidden for s in stored)
            human = np.array([s in labelled for s in stored])
            assert human.sum() in (32, 8) and (~human).sum() == min(64, pseudo)
            np.testing.assert_array_equal(weights, np.where(human, 1.0, 0.5))
            for s, target, is_human in zip(stored, targets, human):  # the true label, one-hot
                if is_human:
                    np.testing.assert_array_equal(target, np.eye(4)[labelled[s]])


def test_each_round_is_taught_by_the_previous_student_and_recorded(selftrain_run):
    d, metrics, _, teachers, students = selftrain_run
    # st: teacher, student 1, student 2; stack: teacher, student 1 (finetune calls in order)
    assert teachers[0] is students[0] and teachers[1] is students[1] and teachers[2] is students[3]
    st = metrics["arms"]["st"]
    (record,) = st["selftrain"]
    assert record["pool"] == 320 and [r["round"] for r in record["rounds"]] == [1, 2]
    first, second = record["rounds"]
    assert second["teacher_val_accuracy"] == first["student_val_accuracy"]
    assert st["val_accuracy"] == [second["student_val_accuracy"]]
    for r in record["rounds"]:
        assert sum(r["per_class"]) == r["pseudo_labels"] and 0 <= r["pseudo_label_accuracy"] <= 1
        assert len(set(c for c in r["per_class"] if c)) <= 1  # balanced: the same count for every class it kept
    assert st["baseline"] == "scratch-st" and metrics["arms"]["scratch-st"]["protocol"]["augment"] == "strong"
    assert metrics["arms"]["stack"]["baseline"] == "scratch"
    report = (d / "run" / "report.md").read_text()
    assert "## Self-training" in report and "st round 2: " in report and "self-training x2 + strong aug." in report
