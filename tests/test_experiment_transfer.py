"""Transfer protocols end to end through `kpretrain run`: arms, backbone.from, inits, supervised pre-training."""

import json

import pytest
import yaml

from kpretrain.cli import main
from tests.helpers import tiny_npz, tiny_recipe_dict


@pytest.fixture
def tiny(tmp_path):
    """A tiny data set and a recipe with one arm per transfer protocol."""
    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz"), name="tiny_transfer")
    recipe["arms"] = {
        "frozen_all": {"transfer": {"frozen_depth": "all"}},
        "stats": {"transfer": {"init": "statistics", "frozen_depth": 0}},
        "warm": {"transfer": {"frozen_depth": "all", "head_init": "logistic_regression"}},
        "gradual": {"transfer": {"frozen_depth": 3, "unfreeze": {"every": 1, "backbone_lr_factor": 0.5}},
                    "finetune": {"epochs": 3, "min_steps_per_epoch": 5}},
    }
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path), tmp_path


def run(recipe, out, *sets):
    args = ["run", recipe, "--out", str(out)]
    for s in sets:
        args += [s] if s.startswith("--") else ["--set", s]
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


def test_arms_record_their_protocol(tiny):
    recipe, tmp = tiny
    metrics = run(recipe, tmp / "run", "evaluation.bn_refresh_batches=2", "seeds=[0]")
    arms = metrics["arms"]
    # gradual overrides finetune.epochs: it gets its own matched scratch, trained for as long as it is
    assert list(arms) == ["scratch", "scratch-gradual", "frozen_all", "stats", "warm", "gradual"]
    assert arms["gradual"]["baseline"] == "scratch-gradual" and arms["stats"]["baseline"] == "scratch"
    assert arms["scratch-gradual"]["protocol"]["finetune_epochs"] == 3 and arms["scratch"]["protocol"]["finetune_epochs"] == 2
    assert arms["scratch-gradual"]["protocol"]["task"] == "none"
    # the four pre-trained arms differ only in transfer settings: one pre-training per seed, recorded with its arms
    assert len(metrics["pretraining"]) == 1
    assert metrics["pretraining"][0]["arms"] == ["frozen_all", "stats", "warm", "gradual"]
    assert {arms[a]["pretrain_unit"][0] for a in ("frozen_all", "stats", "warm", "gradual")} == {"seed0.frozen_all.pretrain"}
    assert sorted(p.name for p in (tmp / "run" / "units").glob("*.pretrain.*")) == [
        "seed0.frozen_all.pretrain.json", "seed0.frozen_all.pretrain.weights.h5"]
    assert arms["frozen_all"]["protocol"]["frozen_depth"] == "all"
    assert arms["stats"]["protocol"]["init"] == "statistics"
    assert arms["warm"]["protocol"]["head_init"] == "logistic_regression"
    # linear probe: only the head trains
    assert arms["frozen_all"]["trainable_params"] == 8 * 4 + 4
    assert arms["scratch"]["trainable_params"] > arms["stats"]["trainable_params"] - 1
    for entry in arms.values():
        assert len(entry["knn_accuracy"]) == 1 and all(0 <= a <= 1 for a in entry["knn_accuracy"])
    # kNN depends on the backbone's weights only: the same whichever arm (depth, BN policy, head warm start)
    # computes it, and the same for both scratches (same initial weights)
    assert arms["frozen_all"]["knn_accuracy"] == arms["warm"]["knn_accuracy"] == arms["gradual"]["knn_accuracy"]
    assert arms["scratch"]["knn_accuracy"] == arms["scratch-gradual"]["knn_accuracy"]
    # the logistic warm start is far better than chance (0.25) before any fine-tuning
    warm = arms["warm"]["head_init"]
    assert all(w["val_accuracy_before_finetune"] > 0.5 for w in warm), warm
    # gradual unfreezing: block3 at epoch 1 (0-based), block2 at epoch 2
    schedule = arms["gradual"]["unfreeze_schedule"][0]
    assert [len(blocks) for _, blocks in schedule] == [0, 1, 2]
    # finetune.min_steps_per_epoch: the 80 labelled images (3 batches of 32) repeat to 5 batches per epoch,
    # for the arm and its matched scratch alike
    units = tmp / "run" / "units"
    steps = {a: json.loads((units / f"seed0.{a}.finetune.json").read_text())["finetune_steps_per_epoch"]
             for a in ("scratch", "stats", "gradual", "scratch-gradual")}
    assert steps == {"scratch": 3, "stats": 3, "gradual": 5, "scratch-gradual": 5}


def test_backbone_from_round_trip(tiny):
    recipe, tmp = tiny
    first = run(recipe, tmp / "first", "seeds=[0]", "arms=null")
    assert first["backbone"]["arm"] == "overlay"
    source = tmp / "first"
    for path, depth in ((source / "backbone.keras", 2), (source, 1), (source / "backbone", "all")):
        out = tmp / f"again_{depth}"
        metrics = run(recipe, out, "seeds=[0]", "arms=null", "baselines=[]", f"backbone.from={path}", "pretrain.epochs=0",
                      f"transfer.frozen_depth={depth}")
        arm = metrics["arms"]["transfer"]
        assert arm["protocol"]["source_backbone"] == str(path)
        assert arm["protocol"]["frozen_depth"] == depth
        # frozen features equal the exported ones: kNN accuracy of the reloaded backbone is that of the source
        # (a SavedModel hides its BN layers, so its kNN cannot refresh them and is not compared)
        if depth != "all":
            assert arm["knn_accuracy"] == pytest.approx(first["arms"]["overlay"]["knn_accuracy"], abs=1e-9)


def test_saved_model_source_allows_only_0_or_all(tiny, capsys):
    recipe, tmp = tiny
    run(recipe, tmp / "first", "seeds=[0]", "arms=null")
    code = main(["run", recipe, "--dry-run", "--set", "arms=null", "--set", f"backbone.from={tmp / 'first' / 'backbone'}",
                 "--set", "transfer.frozen_depth=2"])
    assert code == 2
    assert "0 or all" in capsys.readouterr().err


def test_supervised_pretraining_mnist_to_fashion(tmp_path):
    """Natural pre-training as an arm: MNIST labels -> Fashion-MNIST (real files, smoke budget)."""
    recipe = {"name": "natural", "seeds": [0],
              "data": {"dataset": "fashion_mnist", "labels_per_class": 10, "validation": 100, "batch_size": 32},
              "backbone": {"name": "small_cnn", "options": {"widths": [4, 8, 8]}},
              "pretrain": {"task": "supervised", "dataset": "mnist", "epochs": 1},
              "finetune": {"epochs": 1}}
    path = tmp_path / "natural.yaml"
    path.write_text(yaml.safe_dump(recipe))
    metrics = run(str(path), tmp_path / "run", "--smoke")
    natural = metrics["arms"]["supervised"]
    assert natural["protocol"]["task"] == "supervised" and natural["protocol"]["pretrain_dataset"] == "mnist"
    pretext = natural["pretext"][0]
    assert pretext["monitor"] == "accuracy"
    assert len(pretext["val_accuracy"]) == len(pretext["epoch"]) >= 1 and pretext["epoch"][-1] <= 1.0


def test_supervised_on_the_downstream_data_set_is_refused(tiny, capsys):
    recipe, _ = tiny
    assert main(["run", recipe, "--dry-run", "--set", "arms={n: {pretrain: {task: supervised}}}"]) == 2
    assert "supervised pre-training needs another data set" in capsys.readouterr().err
