"""Options that each work alone must give right numbers together.

A pairwise covering array over the options that change what a unit trains, keeps or measures: every pair of values
of any two options appears in at least one tiny run.  Each run is checked against invariants that hold whatever the
options are:
  (a) it completes (select and averaging exclude each other, so each stage's "keep" is one factor; the
      combinations the recipe refuses are tested for their one-line errors apart);
  (b) the recorded validation and test accuracies are those of the kept model, re-measured from its weights and
      batch-norm statistics;
  (c) `backbone_lr_factor: 0` leaves the backbone's weights bit-identical, with any averaging;
  (f) raw numbers are measured with the statistics training left (not with refreshed ones);
and with pre-training `select: best`, the kept checkpoint is named in passes over the data.
The array's rows run in two halves, the first here and the second in test_interactions_b.py (its own file, so that
`pytest -n 2 --dist loadfile` can run the halves on two workers); the checks are the four tests taking `runs` below,
which test_interactions_b.py imports (pytest gives them that file's own `runs`).
Apart from the array: (d) an oracle that reads the true pretext label off each image scores 1.0 on every task's
pretext validation set; (e) Polyak averaging starts after the stated number of passes over the data; (h)
`kpretrain lr-find` tests the batches that `learning_rate: auto` tests.
"""

import collections
import dataclasses

import numpy as np
import pytest

from kpretrain.errors import RecipeError
from kpretrain.recipe import recipe_from_dict
from tests.helpers import tiny_npz, tiny_recipe_dict

UNFREEZE = {"off": None, "factor0": {"every": 1, "backbone_lr_factor": 0.0},
            "factor0.1": {"every": 1, "backbone_lr_factor": 0.1}}
# what a stage ends with: select and averaging exclude each other, so they are one factor of five (four) values
KEEP = {"last": {}, "best": {"select": "best"}, "probe": {"select": "probe"},
        "ema": {"averaging": {"method": "ema", "momentum": 0.9}},
        "polyak": {"averaging": {"method": "polyak", "start_epoch": 1}}}
# a labelling task, jigsaw inside mixed (one task per batch, one head per task, (x, y, weight) batches), two views
# per image, images drawn by the task; the other tasks' labels are checked by the oracle test below
TASKS = {"none": {"task": "none"}, "rotation": {"task": "rotation"},
         "mixed": {"task": "mixed", "options": {"tasks": ["rotation", "jigsaw"]}},
         "contrastive": {"task": "contrastive"}, "shapes": {"task": "shapes", "options": {"images_per_epoch": 160}}}
FACTORS = collections.OrderedDict(
    task=list(TASKS),
    pretrain_keep=list(KEEP),
    finetune_keep=["last", "best", "ema", "polyak"],
    frozen_depth=[0, 1, "all"],
    unfreeze=list(UNFREEZE),
    bn=["frozen", "train"],
    head_init=["none", "logistic_regression"],
    init=["weights", "statistics"],
    augment=["none", "weak"],
    learning_rate=[0.01, "auto"],
    schedule=["constant", "cosine"],
    bn_refresh=[True, False],
    validate_every=[1, 2],
    raw=["final", "every_epoch"],
    selftrain=[False, True],
)
# The covering array: one tiny run per row, values in FACTORS' order (shortened as SHORT says).  Each row covers the
# 105 pairs of its 15 values; task x pretrain_keep alone needs 5 x 5 rows, so no pairwise array has fewer than 25.
# The rows are allpairspy's 25 (to 0.6.0) with every value that no pair needed from its row moved, by a search that
# keeps every pair covered, to the option's cheaper value: the costly values (`auto`: a range test per stage;
# `selftrain`: a second fine-tuning; `logreg`, refresh, augmentation, unfreezing: more traces) now appear about as
# often as their pairs need (`auto`, `selftrain`: 5 times, once per task) instead of in most rows.
# test_the_array_covers_every_pair_of_values names any pair an edit leaves uncovered.
TABLE = """
# task     pretrain finetune depth unfreeze  bn     head   init    augment lr   schedule refresh every raw   selftrain
  none     ema      ema      1     off       frozen none   weights weak    0.01 constant True    2     final False
  none     polyak   last     0     factor0.1 train  none   stats   none    0.01 constant False   1     final False
  rotation last     best     1     off       frozen none   stats   none    0.01 constant False   1     final False
  rotation best     polyak   1     off       train  logreg weights none    0.01 cosine   True    1     final False
  rotation ema      last     all   factor0.1 frozen none   weights none    0.01 constant False   2     final False
  mixed    last     last     1     off       frozen none   weights weak    0.01 constant False   2     epoch False
  mixed    probe    last     1     factor0.1 train  logreg stats   none    auto cosine   False   2     final False
  mixed    polyak   best     all   off       train  none   weights none    0.01 constant True    2     final False
  contrast last     ema      0     factor0   train  logreg stats   none    0.01 cosine   False   2     final False
  contrast best     last     all   off       train  none   weights weak    0.01 constant False   2     final True
  contrast polyak   best     1     factor0   frozen none   weights none    0.01 constant False   2     final False
  shapes   best     last     all   factor0   frozen none   weights none    auto constant True    2     final False
# the second half: run in test_interactions_b.py
  none     last     polyak   all   off       train  logreg weights none    auto cosine   False   2     final False
  none     best     best     0     off       train  none   stats   none    0.01 constant False   2     epoch False
  none     probe    last     0     factor0   frozen none   weights weak    0.01 constant False   2     final True
  rotation probe    best     0     factor0   frozen none   stats   none    0.01 constant False   2     final False
  rotation polyak   ema      1     off       frozen logreg stats   weak    auto cosine   False   2     epoch True
  mixed    best     ema      0     factor0.1 frozen none   stats   none    0.01 constant False   2     final False
  mixed    ema      polyak   0     factor0   frozen none   stats   none    0.01 constant False   1     epoch True
  contrast probe    polyak   0     factor0.1 train  none   weights none    0.01 constant True    2     epoch False
  contrast ema      best     0     off       frozen none   weights none    auto cosine   False   1     final False
  shapes   last     best     0     factor0.1 train  none   stats   weak    0.01 cosine   True    2     final True
  shapes   probe    ema      all   off       train  none   stats   none    0.01 constant False   1     final False
  shapes   ema      best     all   off       train  logreg weights none    0.01 constant False   2     epoch False
  shapes   polyak   polyak   1     off       frozen none   weights weak    0.01 constant False   1     final False
"""
SHORT = {"logreg": "logistic_regression", "epoch": "every_epoch", "contrast": "contrastive", "stats": "statistics"}


def _parse(table: str) -> list:
    """The rows of `table` (one per line, values in FACTORS' order as SHORT shortens them, `#` lines skipped) as
    dicts of option values."""
    rows = []
    for line in table.strip().splitlines():
        if not line.lstrip().startswith("#"):
            cells = [SHORT.get(cell, cell) for cell in line.split()]
            assert len(cells) == len(FACTORS), line
            rows.append({name: next(v for v in FACTORS[name] if str(v) == cell)
                         for name, cell in zip(FACTORS, cells)})
    return rows


ROWS = _parse(TABLE)
FIRST_HALF, SECOND_HALF = ROWS[:12], ROWS[12:]  # about the same training each (this file also runs (d), (e), (h))


def row_recipe(row: dict, data: str) -> dict:
    """A one-arm tiny recipe with the row's options (the run-level ones at the top)."""
    recipe = tiny_recipe_dict(data, name="interactions")
    recipe["seeds"] = [0]
    recipe["data"].update(labels_per_class=10, validation=32)
    recipe["evaluation"] = {"bn_refresh": row["bn_refresh"], "validate_every": row["validate_every"],
                            "raw": row["raw"], "knn": False, "bn_refresh_batches": 2}
    optimizer = {"learning_rate": row["learning_rate"], "schedule": row["schedule"], "lr_find": {"steps": 12}}
    pretrain = {**TASKS[row["task"]], "epochs": 1, "optimizer": {"learning_rate": 0.01}, **KEEP[row["pretrain_keep"]]}
    if row["pretrain_keep"] == "probe":
        pretrain["probe"] = {"every": 0.5, "method": "linear"}
    if row["task"] == "none":  # nothing to pre-train: the pre-training options do not apply
        pretrain = {"task": "none"}
    unfreeze = UNFREEZE[row["unfreeze"]]
    if unfreeze and row["frozen_depth"] == 0:  # nothing to unfreeze (refused): the factor alone
        unfreeze = {**unfreeze, "every": None}
    arm = {"pretrain": pretrain,
           "transfer": {"frozen_depth": row["frozen_depth"], "bn": row["bn"], "unfreeze": unfreeze,
                        "head_init": row["head_init"], "init": row["init"]},
           "finetune": {"epochs": 3, "augment": row["augment"], "optimizer": optimizer, **KEEP[row["finetune_keep"]]}}
    if row["selftrain"]:
        arm["selftrain"] = {"pool": 32, "ratio": 1.0}
    recipe["arms"] = {"row": arm}
    return recipe


class StageStarts:
    """Keras callback: the backbone's weights (not its BN statistics) when each fine-tuning stage starts."""

    def __init__(self):
        import keras

        outer = self

        class Capture(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                outer.starts.append(weights_without_statistics(self.model.backbone))

        self.starts: list = []
        self.callback = Capture()


def weights_without_statistics(model) -> list:
    """Every weight of `model` but the BN moving statistics (which a refresh recomputes), as arrays."""
    from kpretrain.training.bn_refresh import batch_norm_layers

    statistics = {id(v) for layer in batch_norm_layers(model, trainable_only=False)
                  for v in (layer.moving_mean, layer.moving_variance)}
    return [np.array(v) for v in model.weights if id(v) not in statistics]


@dataclasses.dataclass
class Ran:
    row: dict
    unit: object
    inputs: object
    starts: list


def run_rows(rows: list, directory) -> list:
    """Each of `rows` run once (seed 0) through `run_unit`, as `kpretrain run` runs a unit, on tiny data written to
    `directory`: a list of `Ran`."""
    from kpretrain.experiment import Experiment
    from kpretrain.protocol.unit import run_unit

    data = tiny_npz(directory / "tiny.npz", n_train=160, n_test=32)
    done = []
    for row in rows:
        experiment = Experiment(recipe_from_dict(row_recipe(row, data)))
        experiment.prepare()
        inputs = experiment.seed_data(0)
        starts = StageStarts()
        try:
            unit = run_unit(experiment.arms["row"], inputs, name="row", callbacks=[starts.callback])
        except Exception as exc:  # (a): every combination completes; name the one that did not
            raise AssertionError(f"row {ROWS.index(row)} failed: {', '.join(f'{k}={v}' for k, v in row.items())}") \
                from exc
        done.append(Ran(row, unit, inputs, starts.starts))
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The first half of the array's rows, run (the second half: test_interactions_b.py)."""
    return run_rows(FIRST_HALF, tmp_path_factory.mktemp("interactions"))


def _label(ran: Ran) -> str:
    return ", ".join(f"{k}={v}" for k, v in ran.row.items())


def test_the_array_covers_every_pair_of_values():
    names = list(FACTORS)
    for row in ROWS:
        assert all(row[name] in FACTORS[name] for name in names), row
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for va in FACTORS[a]:
                for vb in FACTORS[b]:
                    assert any(r[a] == va and r[b] == vb for r in ROWS), (a, va, b, vb)
    assert len(ROWS) == len(FACTORS["task"]) * len(FACTORS["pretrain_keep"])  # the least: a few minutes of CI
    assert FIRST_HALF + SECOND_HALF == ROWS


def test_recorded_numbers_are_those_of_the_kept_model(runs):
    """(a), (b): validation and test accuracy re-measured from the kept weights and BN statistics."""
    from kpretrain.training.stages import accuracy

    for ran in runs:
        model, inputs, unit = ran.unit.model, ran.inputs, ran.unit
        val = accuracy(model, inputs.validation, inputs.y_validation)[0]
        assert val == pytest.approx(unit.finetune.val_accuracy, abs=1e-6), _label(ran)
        test = accuracy(model, inputs.test, inputs.data.y_test)[0]
        assert test == pytest.approx(unit.test.test_accuracy, abs=1e-6), _label(ran)


def test_raw_numbers_are_measured_with_the_statistics_training_left(runs):
    """(f): `raw_bn` gives back the recorded raw numbers; a refreshed model does not hold them."""
    from kpretrain.training.bn_refresh import batch_norm_layers, bn_state, set_bn_state
    from kpretrain.training.stages import accuracy

    swapped = 0
    for ran in runs:
        model, inputs, finetuned = ran.unit.model, ran.inputs, ran.unit.finetune
        refreshed = ran.row["bn_refresh"] or ran.row["finetune_keep"] in ("ema", "polyak")
        trainable_bn = batch_norm_layers(model)
        if refreshed and trainable_bn:
            kept = bn_state(model)
            assert finetuned.raw_bn and any(not np.array_equal(k[0], r[0]) for k, r in zip(kept, finetuned.raw_bn)), \
                _label(ran)
            set_bn_state(model, finetuned.raw_bn)
            val_raw = accuracy(model, inputs.validation, inputs.y_validation)[0]
            test_raw = accuracy(model, inputs.test, inputs.data.y_test)[0]
            set_bn_state(model, kept)
            swapped += 1
        else:
            val_raw, test_raw = finetuned.val_accuracy, ran.unit.test.test_accuracy
        assert val_raw == pytest.approx(finetuned.val_accuracy_raw, abs=1e-6), _label(ran)
        assert test_raw == pytest.approx(ran.unit.test.test_accuracy_raw, abs=1e-6), _label(ran)
    assert swapped >= 2  # rows whose kept statistics were refreshed: the raw ones restored and re-measured


def test_a_zero_backbone_learning_rate_leaves_the_backbone_unchanged(runs):
    """(c): with `backbone_lr_factor: 0` the backbone ends as its last fine-tuning stage started, any averaging."""
    checked = 0
    for ran in runs:
        if ran.row["unfreeze"] != "factor0":
            continue
        start = ran.starts[-1]
        end = weights_without_statistics(ran.unit.model.backbone)
        assert len(start) == len(end)
        for a, b in zip(start, end):
            np.testing.assert_array_equal(a, b, err_msg=_label(ran))
        checked += 1
    assert checked >= 3


def test_a_kept_pretraining_checkpoint_is_named_in_passes_over_the_data(runs):
    checked = 0
    for ran in runs:
        pretrained = ran.unit.pretrain
        if pretrained is None or ran.row["pretrain_keep"] not in ("best", "probe"):
            continue
        assert pretrained.selected_epoch in pretrained.history["epoch"], _label(ran)
        index = pretrained.history["epoch"].index(pretrained.selected_epoch)
        monitor = pretrained.history[f"val_{pretrained.monitor}"] if ran.row["pretrain_keep"] == "best" else \
            pretrained.history["val_probe_linear"]
        assert monitor[index] == max(v for v in monitor if v is not None), _label(ran)
        checked += 1
    assert checked >= 2


REFUSED = [
    ({"finetune": {"select": "best", "averaging": "ema"}}, ("finetune.select.mode", "finetune.averaging")),
    ({"pretrain": {"task": "rotation", "select": "best", "averaging": "polyak"}},
     ("pretrain.select.mode", "pretrain.averaging")),
    ({"pretrain": {"task": "rotation", "select": "probe"}}, ("pretrain.select.mode", "pretrain.probe")),
    ({"finetune": {"averaging": {"method": "ema", "start_epoch": 1}}},
     ("finetune.averaging.start_epoch", "finetune.averaging.method")),
]


@pytest.mark.parametrize("arm, keys", REFUSED)
def test_refused_combinations_name_both_keys(arm, keys, tmp_path):
    recipe = tiny_recipe_dict(str(tmp_path / "none.npz"))
    recipe["arms"] = {"row": arm}
    with pytest.raises(RecipeError) as refused:
        recipe_from_dict(recipe)
    message = str(refused.value)
    assert "\n" not in message and all(key in message for key in keys), message


# -- (d) pretext labels mean the same in training and validation ------------------------------------------------
def _oracle(task, original, output):
    """The true label of each output image, read off it and its original with `task`'s own definitions."""
    import tensorflow as tf

    from kpretrain.pretext.jigsaw import JigsawTask
    from kpretrain.pretext.rotation import RotationTask

    if isinstance(task, RotationTask):
        candidates = [tf.image.rot90(original, a // 90).numpy() for a in task.angles]
    elif isinstance(task, JigsawTask):
        candidates = [task._permute_tiles(tf.constant(original), tf.fill([len(original), len(p)], 0) + p).numpy()
                      for p in task.permutations]
    else:  # noise, overlay: label 1 = the image was changed
        return np.any(output != original, axis=(1, 2, 3)).astype(np.int32)
    matches = np.stack([np.all(c == output, axis=(1, 2, 3)) for c in candidates], axis=1)
    assert np.all(matches.sum(axis=1) >= 1)
    return np.argmax(matches, axis=1)


@pytest.mark.parametrize("task", ["rotation", "noise", "overlay", "jigsaw", "mixed"])
def test_an_oracle_scores_one_on_the_pretext_validation_set(task, tmp_path):
    """(d): label k of a validation image means what label k means in training (jigsaw's permutation set)."""
    from kpretrain.data import image_batches
    from kpretrain.experiment import Experiment
    from kpretrain.pretext.mixed import MixedTask
    from kpretrain.protocol import build_model
    from kpretrain.protocol.pretrain import pretext_stage, pretraining_images

    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz", n_train=300, n_test=20))
    recipe["seeds"] = [0]
    recipe["data"]["validation"] = 160  # 5 batches: a mixed task labels each with one of its tasks
    recipe["pretrain"] = {"task": task, "options": {"tasks": ["rotation", "jigsaw"]} if task == "mixed" else {}}
    experiment = Experiment(recipe_from_dict(recipe))
    experiment.prepare()
    arm, inputs = experiment.arms[task], experiment.seed_data(0)
    stage = pretext_stage(build_model(arm, inputs).backbone, arm, inputs)
    x_val = pretraining_images(arm, inputs)[1]
    originals = image_batches(x_val, inputs.batch_size, shuffle=False, seed=0, drop_remainder=len(x_val) >= 32)
    right = total = 0
    seen = set()
    for original, batch in zip(originals, stage.validation):
        original, output = original.numpy(), batch[0].numpy()
        if isinstance(stage.task, MixedTask):
            active = [i for i, name in enumerate(stage.task.task_names) if batch[2][name].numpy()[0] == 1][0]
            sub = stage.task.task_names[active]
            seen.add(sub)
            truth, guess = batch[1][sub].numpy(), _oracle(stage.task.tasks[active], original, output)
        else:
            truth, guess = batch[1].numpy(), _oracle(stage.task, original, output)
        right += int(np.sum(truth == guess))
        total += len(truth)
    assert total >= 128 and right == total, f"{task}: the oracle scores {right / total:.3f}"
    assert task != "mixed" or seen == {"rotation", "jigsaw"}


# -- (e) Polyak averaging counts passes over the data ------------------------------------------------------------
def test_polyak_averaging_starts_after_the_stated_passes_in_a_stage_cut_into_more_keras_epochs():
    import keras
    import tensorflow as tf

    from kpretrain.recipe import AveragingConfig, OptimizerConfig
    from kpretrain.training.stages import fit_stage

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, x.sum(axis=1, keepdims=True))).batch(4)  # 16 steps per pass
    seen = []
    store = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(
        [np.array(w) for w in model.get_weights()]))
    result = fit_stage(model, data, epochs=2, steps_per_epoch=16, min_points=4, callbacks=[store],
                       optimizer=OptimizerConfig(learning_rate=0.05), compile_kwargs={"loss": "mse"},
                       averaging=AveragingConfig(method="polyak", start_epoch=1.0))
    assert (result.epochs, result.steps_per_epoch, len(seen)) == (4, 8, 32)  # 4 Keras epochs of half a pass
    for got, *stored in zip(model.get_weights(), *seen[16:]):  # the second pass: steps 17..32
        np.testing.assert_allclose(got, np.mean(stored, axis=0), rtol=1e-5, atol=1e-6)


# -- (h) lr-find tests the stage's own batches ------------------------------------------------------------------
def test_lr_find_tests_the_batches_learning_rate_auto_tests(tmp_path):
    """`kpretrain lr-find` (find_learning_rate) and `learning_rate: auto` see the same batches (fine-tuning's
    augmented): the same curve, to the digit; and the range test takes a mixed task's (images, labels, weights)."""
    from kpretrain.experiment import Experiment
    from kpretrain.protocol import build_model
    from kpretrain.protocol.lr_find import find_learning_rate
    from kpretrain.protocol.pretrain import pretrain
    from kpretrain.protocol.unit import run_unit

    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz", n_train=200, n_test=20))
    recipe["seeds"] = [0]
    recipe["pretrain"] = {"task": "mixed", "epochs": 0.25, "options": {"tasks": ["rotation", "noise"]},
                          "optimizer": {"learning_rate": "auto", "lr_find": {"steps": 10}}}
    recipe["finetune"] = {"epochs": 1, "augment": "weak",
                          "optimizer": {"learning_rate": "auto", "lr_find": {"steps": 10}}}
    experiment = Experiment(recipe_from_dict(recipe))
    experiment.prepare()
    inputs = experiment.seed_data(0)
    mixed, scratch = experiment.arms["mixed"], experiment.arms["scratch"]
    recorded = {"pretrain": pretrain(build_model(mixed, inputs).backbone, mixed, inputs).lr_find,
                "finetune": run_unit(scratch, inputs, name="scratch", test=False).finetune.lr_find}
    for stage, arm in (("pretrain", mixed), ("finetune", scratch)):
        found = find_learning_rate(arm, inputs, stage).record()
        assert found["curve"]["loss"] == pytest.approx(recorded[stage]["curve"]["loss"], rel=1e-6), stage
        assert found["suggested_lr"] == pytest.approx(recorded[stage]["suggested_lr"], rel=1e-9), stage
