"""`kpretrain tune`: space parsing, a resumable search on tiny data, Hyperband, chief + workers, MirroredStrategy."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import kpretrain.protocol.unit
from kpretrain.cli import main
from tests import helpers
from kpretrain.recipe import load_recipe

SPACE = {"pretrain.epochs": {"int": [0, 1]}, "pretrain.task": {"choice": ["rotation", "overlay"]},
         "transfer.frozen_depth": {"int": [0, 1]}}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def tiny_npz(path):
    return helpers.tiny_npz(path, n_train=300, n_test=60)


def write_recipe(tmp_path, space=SPACE, **sections):
    recipe = {
        "name": "tiny", "seeds": [0, 1],
        "data": {"dataset": "tiny", "path": tiny_npz(tmp_path / "tiny.npz"), "labels_per_class": 10,
                 "validation": 40, "batch_size": 32},
        "backbone": {"name": "small_cnn", "options": {"widths": [4, 8, 8]}},
        "pretrain": {"task": "overlay", "epochs": 1},
        "transfer": {"frozen_depth": 1},
        "finetune": {"epochs": 2},
        "tune": {"max_trials": 2, "space": space},
        **sections,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def trials(project: Path) -> dict:
    """trial id -> trial.json of every trial KerasTuner recorded."""
    found = {}
    for path in sorted(project.glob("trial_*/trial.json")):
        trial = json.loads(path.read_text())
        found[trial["trial_id"]] = trial
    return found


def lookup(tree, key):
    for part in key.split("."):
        tree = tree[part]
    return tree


def test_search_writes_outputs_resumes_extends_and_starts_over(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    project = tmp_path / "runs" / "tiny-smoke"  # a smoke search's own project
    args = ["tune", recipe, "--smoke", "--dir", str(tmp_path / "runs")]
    assert main(args) == 0
    first = trials(project)
    assert sorted(first) == ["0", "1"] and all(t["status"] == "COMPLETED" for t in first.values())
    out = capsys.readouterr().out
    assert "| trial | pretrain.epochs | pretrain.task | transfer.frozen_depth |" in out
    assert "device: CPU" in out
    # one display, kpretrain's; each trial named as KerasTuner names its directory (trial_<id>) in every line
    assert "Running Trial" not in out and "Best val_accuracy So Far" not in out
    assert "tune tiny-smoke: random, 2 trials over pretrain.epochs, pretrain.task (when pretrain.epochs > 0), " \
           "transfer.frozen_depth" in out
    assert re.search(r"^\[unit 1/2\] seed 0 \| \w+ \| trial_0: started\ntrial_0: \{.*\}$", out, re.M)
    assert re.search(r"^trial_0: val_accuracy 0\.\d{4} in \d+ s; best so far trial_0 \(0\.\d{4}\)$", out, re.M)
    assert re.search(r"^trial_1: val_accuracy 0\.\d{4} in \d+ s; best so far trial_[01] \(0\.\d{4}\)$", out, re.M)

    best = json.loads((project / "best.json").read_text())
    assert len(best["trials"]) == 2 and best["arm"] == "overlay"
    assert best["best"]["score"] == max(t["score"] for t in best["trials"])
    assert f"best: trial_{best['best']['trial_id']}, val_accuracy {best['best']['score']:.4f}" in out
    assert f"| trial_{best['best']['trial_id']} | " in out.split("| trial |")[1].splitlines()[2]  # first row
    for row in best["trials"]:  # pretrain.task is searched only in the trials that pre-train
        assert set(row["values"]) == set(SPACE) - ({"pretrain.task"} if row["values"]["pretrain.epochs"] == 0
                                                   else set()), row
    assert (project / "tune.png").stat().st_size > 0
    assert not list(project.glob("*.tmp"))
    loaded = load_recipe(str(project / "best_recipe.yaml"))
    for key, value in best["best"]["values"].items():
        assert lookup(loaded.to_dict(), key) == value, key
    assert loaded.tune.space == SPACE and loaded.name == "tiny"
    assert main(["run", str(project / "best_recipe.yaml"), "--smoke", "--dry-run"]) == 0
    capsys.readouterr()

    assert main(args) == 0  # resumes a finished search: nothing runs
    assert "trial_" not in capsys.readouterr().out.split("| trial |")[0]
    assert trials(project) == first

    assert main(args + ["--max-trials", "3"]) == 0  # exactly one more
    extended = trials(project)
    assert sorted(extended) == ["0", "1", "2"] and {k: extended[k] for k in first} == first

    assert main(args + ["--set", "finetune.epochs=3"]) == 2  # another recipe cannot resume this search
    assert "finetune.epochs differs" in capsys.readouterr().err

    assert main(args + ["--max-trials", "1", "--overwrite", "--final"]) == 0
    assert sorted(trials(project)) == ["0"]
    assert len(json.loads((project / "best.json").read_text())["trials"]) == 1
    out = capsys.readouterr().out
    # --final: scratch gets its own search with the same budget (fine-tuning lr, schedule, epochs), and the
    # best arm is compared on every seed with that tuned scratch
    assert "tune scratch: random, 1 trials over finetune.optimizer.learning_rate, finetune.optimizer.schedule, " \
           "finetune.epochs; arm scratch" in out
    scratch = json.loads((project / "scratch" / "best.json").read_text())
    assert len(scratch["trials"]) == 1 and scratch["arm"] == "scratch"
    final_recipe = load_recipe(str(project / "final_recipe.yaml"))
    arm = best_arm = final_recipe.tune.arm
    tuned = final_recipe.arm_recipes()["scratch-tuned"]
    for key, value in scratch["best"]["values"].items():
        assert lookup(tuned.to_dict(), key) == value, key
    assert tuned.pretrain.epochs == 0 and tuned.transfer.frozen_depth == 0
    (final,) = (project / "final").iterdir()
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1] and set(metrics["arms"]) == {"scratch", "scratch-tuned", best_arm}
    assert metrics["arms"][arm]["baseline"] == "scratch-tuned"
    assert f"{arm} vs scratch-tuned:" in out and "(vs scratch-tuned)" in out


def test_final_runs_the_tuned_scratch_the_scratch_search_scored(tmp_path):
    """`scratch-tuned` holds every key an arm can set as the scratch search had it: a best recipe that self-trains
    does not make the tuned scratch self-train (no trial of the scratch search did)."""
    from kpretrain.recipe import load_raw, recipe_from_dict
    from kpretrain.tuning import final_recipe, scratch_search_recipe

    space = {"finetune.optimizer.learning_rate": {"choice": [0.01, 0.03]},
             "selftrain": {"choice": [None, {"threshold": 0.5}]}}
    raw = load_raw(write_recipe(tmp_path, space=space))
    scratch_raw = scratch_search_recipe(raw, "overlay")
    assert set(scratch_raw["tune"]["space"]) >= {"finetune.optimizer.learning_rate"}
    assert "selftrain" not in scratch_raw["tune"]["space"]  # a baseline never self-trains
    best = {"values": {"finetune.optimizer.learning_rate": 0.03, "selftrain": {"threshold": 0.5}}, "trial_id": "1",
            "score": 0.5}
    scratch_best = {"values": {"finetune.optimizer.learning_rate": 0.01, "finetune.optimizer.schedule": "cosine",
                               "finetune.epochs": 3}}
    arms = recipe_from_dict(final_recipe(raw, best, scratch_raw, scratch_best)).arm_recipes()
    assert arms["overlay"].selftrain.threshold == 0.5 and arms["overlay"].finetune.optimizer.learning_rate == 0.03
    tuned = arms["scratch-tuned"]
    assert tuned.selftrain is None and tuned.pretrain.epochs == 0 and tuned.transfer.frozen_depth == 0
    assert (tuned.finetune.optimizer.learning_rate, tuned.finetune.epochs) == (0.01, 3)


BAD_SPACES = [
    ({"pretrain.epoch": {"int": [0, 2]}}, "tune.space.pretrain.epoch", "did you mean 'pretrain.epochs'"),
    ({"pretrain.epochs": {"int": [2, 0]}}, "tune.space.pretrain.epochs", "lo < hi"),
    ({"pretrain.epochs": {"int": [0, 1.5]}}, "tune.space.pretrain.epochs", "integers"),
    ({"pretrain.epochs": {"range": [0, 1]}}, "tune.space.pretrain.epochs", "{int: [lo, hi]}"),
    ({"pretrain.epochs": 3}, "tune.space.pretrain.epochs", "{choice: [a, b, ...]}"),
    ({"pretrain.epochs": {"int": [0, 2], "sampling": "cubic"}}, "tune.space.pretrain.epochs", "linear, or log"),
    ({"pretrain.epochs": {"int": [0, 4], "step": 0}}, "tune.space.pretrain.epochs", "step"),
    ({"pretrain.optimizer.learning_rate": {"float": ["small", 1.0e-2]}}, "tune.space.pretrain.optimizer.learning_rate",
     "text, not a number"),
    ({"pretrain.optimizer.learning_rate": {"float": [0.0, 1.0e-2], "sampling": "log"}},
     "tune.space.pretrain.optimizer.learning_rate", "log with lo > 0"),
    ({"pretrain.task": {"choice": []}}, "tune.space.pretrain.task", "non-empty"),
    ({"pretrain.task": {"choice": ["rotation", "rotation"]}}, "tune.space.pretrain.task", "distinct"),
    ({"pretrain.task": {"choice": ["rotation", "spin"]}}, "tune.space.pretrain.task", "'spin' is not allowed"),
    ({"pretrain.task": {"choice": ["rotation"], "step": 2}}, "tune.space.pretrain.task", "unknown option 'step'"),
    ({"transfer.frozen_depth": {"int": [0, 7]}}, "tune.space.transfer.frozen_depth", "exceeds the 3 blocks"),
    ({"seeds": {"int": [1, 3]}}, "tune.space.seeds", "cannot be searched"),
    ({"runtime.jit_compile": {"choice": [True, False]}}, "tune.space.runtime.jit_compile", "cannot be searched"),
    ({"arms.other.pretrain.epochs": {"int": [0, 2]}}, "tune.space.arms.other.pretrain.epochs", "no arm 'other'"),
]


@pytest.mark.parametrize("space,key,hint", BAD_SPACES, ids=[f"{c[1]}:{c[2]}" for c in BAD_SPACES])
def test_bad_space_is_exit_2_naming_the_key(tmp_path, capsys, space, key, hint):
    recipe = write_recipe(tmp_path, space=space)
    assert main(["tune", recipe, "--smoke", "--dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"'{key}" in err and hint in err, err
    assert len(err.strip().splitlines()) <= 3
    assert not (tmp_path / "runs").exists()


def test_a_space_reads_bounds_with_an_exponent_as_numbers(tmp_path):
    """`{float: [1e-4, 1e-2]}` as written in YAML: numbers, not text (YAML 1.1 reads 1e-4 as a string)."""
    from kpretrain.tuning import parse_space, with_values

    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\ntune:\n  space:\n    finetune.optimizer.learning_rate: {float: [1e-4, 1E-2], "
                    "sampling: log}\n")
    (dim,) = parse_space(load_recipe(str(path)).tune.space)
    assert dim.values == (1e-4, 1e-2) and dim.sampling == "log"
    assert with_values({"name": "tiny"}, {dim.key: 1e-05})["finetune"]["optimizer"]["learning_rate"] == 1e-05


@pytest.mark.parametrize("key,spec", [("data.batch_size", {"choice": [16, 32]}),
                                      ("evaluation.bn_refresh", {"choice": [True, False]})])
def test_final_refuses_a_searched_data_or_evaluation_key_before_any_trial(tmp_path, capsys, key, spec):
    """Every arm of the final run shares data and evaluation: `scratch-tuned` could not hold scratch's own best
    value of such a key (it was dropped), so --final refuses to search one."""
    recipe = write_recipe(tmp_path, space={**SPACE, key: spec})
    assert main(["tune", recipe, "--smoke", "--final", "--max-trials", "1", "--dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"recipe key 'tune.space.{key}': --final cannot search it: every arm of the final run shares " \
           f"{key.split('.')[0]}" in err, err
    assert len(err.strip().splitlines()) <= 3 and not (tmp_path / "runs").exists()


def test_space_key_the_searched_arm_overrides_is_rejected(tmp_path, capsys):
    """The arm sets pretrain.task itself, so searching the top-level key would change nothing."""
    recipe = write_recipe(tmp_path, space={"pretrain.task": {"choice": ["rotation", "noise"]}},
                          arms={"rot": {"pretrain": {"task": "rotation"}}})
    assert main(["tune", recipe, "--smoke", "--dir", str(tmp_path / "runs")]) == 2
    assert "search 'arms.rot.pretrain.task'" in capsys.readouterr().err
    assert main(["tune", recipe, "--smoke", "--dir", str(tmp_path / "runs"), "--set", "tune.arm=nope"]) == 2
    assert "'tune.arm': 'nope' is not an arm" in capsys.readouterr().err


def test_smoke_search_runs_three_trials_unless_told_and_loads_the_data_once(tmp_path, capsys, monkeypatch):
    import kpretrain.experiment.preparation

    loaded = []
    load = kpretrain.experiment.preparation.load_dataset
    monkeypatch.setattr(kpretrain.experiment.preparation, "load_dataset",
                        lambda *a, **kw: loaded.append(a[0]) or load(*a, **kw))
    recipe = write_recipe(tmp_path, tune={"max_trials": 30, "space": {"transfer.frozen_depth": {"int": [0, 3]}}},
                          pretrain={"task": "overlay", "epochs": 0}, finetune={"epochs": 1})  # cheap trials
    runs = tmp_path / "runs"
    assert main(["tune", recipe, "--smoke", "--dir", str(runs)]) == 0
    assert "random, 3 trials over transfer.frozen_depth" in capsys.readouterr().out
    assert len(trials(runs / "tiny-smoke")) == 3
    assert len(loaded) == 1  # for the plan, the checks of the space's corners and every trial: loaded once
    # smoke and real searches of a recipe have their own projects: neither blocks, nor resumes, the other
    assert main(["tune", recipe, "--max-trials", "1", "--dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "tune tiny: random, 1 trials" in out and f"results: {runs / 'tiny'}/best.json" in out
    assert len(trials(runs / "tiny")) == 1 and len(trials(runs / "tiny-smoke")) == 3
    assert json.loads((runs / "tiny" / "search.json").read_text())["smoke"] is False
    assert main(["tune", recipe, "--smoke", "--dir", str(runs)]) == 0  # the smoke search again: resumed, finished
    out = capsys.readouterr().out
    assert f"Reloading Tuner from {runs / 'tiny-smoke'}" in out and "trial_0: {" not in out
    assert len(trials(runs / "tiny-smoke")) == 3


def test_grid_search_tries_every_combination_and_pretrains_once_per_setting(tmp_path, capsys, monkeypatch):
    """Trials that differ only after pre-training reuse it, and score what a fresh pre-training gives."""
    space = {"pretrain.task": {"choice": ["rotation", "overlay"]}, "transfer.frozen_depth": {"int": [0, 1]}}
    recipe = write_recipe(tmp_path, space=space, tune={"tuner": "grid", "max_trials": 10, "space": space})
    calls = []
    pretrain = kpretrain.protocol.unit.pretrain
    monkeypatch.setattr(kpretrain.protocol.unit, "pretrain", lambda *a, **kw: calls.append(1) or pretrain(*a, **kw))
    assert main(["tune", recipe, "--smoke", "--max-trials", "10", "--dir", str(tmp_path / "grid")]) == 0
    found = [t["hyperparameters"]["values"] for t in trials(tmp_path / "grid" / "tiny-smoke").values()]
    assert sorted((v["pretrain.task"], v["transfer.frozen_depth"]) for v in found) == [
        ("overlay", 0), ("overlay", 1), ("rotation", 0), ("rotation", 1)]
    assert len(calls) == 2
    reused = [t for t in trials(tmp_path / "grid" / "tiny-smoke").values()  # in trial order: the later one reused
              if t["hyperparameters"]["values"]["pretrain.task"] == "rotation"][-1]
    depth = reused["hyperparameters"]["values"]["transfer.frozen_depth"]
    alone = {"pretrain.task": {"choice": ["rotation"]}, "transfer.frozen_depth": {"choice": [depth]}}
    assert main(["tune", write_recipe(tmp_path, space=alone), "--smoke", "--dir", str(tmp_path / "alone")]) == 0
    (trial,) = trials(tmp_path / "alone" / "tiny-smoke").values()
    assert trial["score"] == pytest.approx(reused["score"], abs=1e-6)
    capsys.readouterr()
    bad = write_recipe(tmp_path, tune={"tuner": "grid", "space": {
        "pretrain.optimizer.learning_rate": {"float": [1.0e-4, 1.0e-2], "sampling": "log"}}})
    assert main(["tune", bad, "--smoke", "--dir", str(tmp_path / "bad")]) == 2
    assert "tune.space.pretrain.optimizer.learning_rate': the grid tuner needs a step" in capsys.readouterr().err


def test_a_pretraining_key_is_searched_only_in_trials_that_pretrain(tmp_path, capsys):
    """A user space: the grid has 3 points, not 4 (no learning rate for the trial without pre-training), and that
    trial runs, with no learning rate in its values, trial.json, best.json or the table."""
    space = {"arms.overlay.pretrain.epochs": {"choice": [0, 1]},
             "arms.overlay.pretrain.optimizer.learning_rate": {"choice": [0.001, 0.01]}}
    recipe = write_recipe(tmp_path, tune={"tuner": "grid", "max_trials": 10, "space": space},
                          arms={"overlay": {"pretrain": {"task": "overlay"}}}, finetune={"epochs": 1})
    assert main(["tune", recipe, "--smoke", "--max-trials", "10", "--dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    project = tmp_path / "runs" / "tiny-smoke"
    epochs, lr = space
    found = {i: t["hyperparameters"]["values"] for i, t in trials(project).items()}
    assert found == {"00": {epochs: 0}, "01": {epochs: 1, lr: 0.001}, "02": {epochs: 1, lr: 0.01}}
    assert all(t["status"] == "COMPLETED" for t in trials(project).values())
    rows = {row["trial_id"]: row for row in json.loads((project / "best.json").read_text())["trials"]}
    assert rows["00"]["values"] == {epochs: 0} and 0.0 <= rows["00"]["score"] <= 1.0
    assert '\ntrial_00: {"arms.overlay.pretrain.epochs": 0}\n' in out  # KerasTuner pads ids to max_trials' digits
    assert re.search(r"^\| trial_00 \| 0 \| — \| 0\.\d{4} \| COMPLETED \|$", out, re.M)
    assert re.search(r"^\| trial_02 \| 1 \| 0\.01 \| 0\.\d{4} \| COMPLETED \|$", out, re.M)


def test_a_recipe_without_a_space_searches_pretraining_epochs_learning_rate_and_frozen_depth(tmp_path, capsys):
    recipe = write_recipe(tmp_path, tune={"max_trials": 1})
    assert main(["tune", recipe, "--smoke", "--dir", str(tmp_path / "runs")]) == 0
    default = {"pretrain.epochs": {"int": [0, 2]},
               "pretrain.optimizer.learning_rate": {"float": [0.0001, 0.01], "sampling": "log"},
               "transfer.frozen_depth": {"int": [0, 3]}}  # the tiny small_cnn has 3 blocks
    out = capsys.readouterr().out
    assert f"the default space: {json.dumps(default)}" in out
    assert "pretrain.optimizer.learning_rate (when pretrain.epochs > 0)" in out
    project = tmp_path / "runs" / "tiny-smoke"
    assert json.loads((project / "search.json").read_text())["tune"]["space"] == default
    best = json.loads((project / "best.json").read_text())
    assert best["space"] == default
    ((trial_id, trial),) = trials(project).items()
    values = best["best"]["values"]
    assert trial["status"] == "COMPLETED" and best["best"]["trial_id"] == trial_id
    assert ("pretrain.optimizer.learning_rate" in values) == (values["pretrain.epochs"] > 0)
    assert load_recipe(str(project / "best_recipe.yaml")).tune.space == default

    # the learning rate is a KerasTuner conditional hyperparameter: absent when the trial does not pre-train,
    # whose trial still runs; present when it does
    import keras_tuner

    from kpretrain.tuning import ProtocolHyperModel

    hypermodel = ProtocolHyperModel({**yaml.safe_load(Path(recipe).read_text()), "tune": {"space": default}},
                                    smoke=True)
    hp = keras_tuner.HyperParameters()
    assert hypermodel.declare(hp) == {"pretrain.epochs": 0, "transfer.frozen_depth": 0}  # KerasTuner's defaults
    assert set(hp.values) == {"pretrain.epochs", "transfer.frozen_depth"}
    assert 0.0 <= hypermodel.fit(hp, hypermodel.build(hp))["val_accuracy"] <= 1.0
    hp = keras_tuner.HyperParameters()
    hypermodel.declare(hp)
    hp.values["pretrain.epochs"] = 2
    hp.ensure_active_values()  # as KerasTuner's oracle fills a trial
    assert set(hypermodel.declare(hp)) == set(default)
    no_pretraining = write_recipe(tmp_path, tune={"max_trials": 1}, pretrain={"task": "none"})
    assert main(["tune", no_pretraining, "--smoke", "--dir", str(tmp_path / "other")]) == 2
    assert "'tune.space': empty, and the searched arm 'model' does not pre-train" in capsys.readouterr().err


def test_search_across_tf_config_workers_is_refused_before_tensorflow_starts(tmp_path, capsys, monkeypatch):
    """A MultiWorkerMirroredStrategy search would wait for its peers forever; it is exit 2 at once instead."""
    workers = ["127.0.0.1:1", "127.0.0.1:2"]
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}))
    recipe = write_recipe(tmp_path)
    assert main(["tune", recipe, "--smoke", "--dir", str(tmp_path / "runs"),
                 "--set", "runtime.distribute=multi_worker"]) == 2
    assert "cannot span the 2 workers of TF_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_continued_hyperband_trial_is_trained_from_its_start_and_scores_what_the_run_records(tmp_path,
                                                                                                  monkeypatch):
    """A Hyperband trial that continues one of the previous round is the unit `kpretrain run` executes with the
    round's budget as finetune.epochs (from the start, not from the other trial's checkpoint with a restarted
    schedule), here with validation every other epoch; it reuses the pre-training of the trial it continues."""
    import numpy as np

    import kpretrain.tuning
    from kpretrain.experiment import Experiment
    from kpretrain.tuning import trial_recipe

    space = {"pretrain.epochs": {"choice": [1]},
             "pretrain.optimizer.learning_rate": {"float": [1.0e-5, 1.0e-2], "sampling": "log"}}  # 1e-05 in YAML
    recipe = write_recipe(tmp_path, space=space, finetune={"epochs": 3},  # 3 one-epoch trials, then 1 continued
                          evaluation={"validate_every": 2}, runtime={"deterministic": True})
    calls, units = [], []
    pretrain, run_unit = kpretrain.protocol.unit.pretrain, kpretrain.tuning.hypermodel.run_unit
    monkeypatch.setattr(kpretrain.protocol.unit, "pretrain", lambda *a, **kw: calls.append(1) or pretrain(*a, **kw))
    monkeypatch.setattr(kpretrain.tuning.hypermodel, "run_unit",
                        lambda *a, **kw: units.append(run_unit(*a, **kw)) or units[-1])
    assert main(["tune", recipe, "--tuner", "hyperband", "--max-trials", "4", "--dir", str(tmp_path / "runs")]) == 0
    found = trials(tmp_path / "runs" / "tiny")
    assert len(found) == 4 and all(t["status"] == "COMPLETED" for t in found.values())
    continued = [t for t in found.values() if "tuner/trial_id" in t["hyperparameters"]["values"]]
    assert len(continued) == 1 and continued[0]["hyperparameters"]["values"]["tuner/epochs"] == 3
    assert len(calls) == 3  # the continued trial reuses its pre-training
    values = {k: v for k, v in continued[0]["hyperparameters"]["values"].items() if not k.startswith("tuner/")}
    experiment = Experiment(trial_recipe(yaml.safe_load(Path(recipe).read_text()), values))
    experiment.prepare()
    reference = run_unit(experiment.arms["overlay"], experiment.seed_data(0), test=False)
    trained = units[-1]  # Hyperband's last round: the continued trial
    assert trained.finetune.history == reference.finetune.history  # every epoch, with the same schedule
    assert all(np.array_equal(a, b) for a, b in zip(trained.model.get_weights(), reference.model.get_weights()))
    assert continued[0]["score"] == reference.finetune.val_accuracy


def test_the_trial_checkpoint_holds_the_model_scored_not_an_unvalidated_epoch(tmp_path):
    """KerasTuner's best-epoch checkpoint (what `get_best_models` loads) is the model the trial scores.  With
    validation every other epoch and a learning rate of 0 (equal validation accuracies), a per-epoch
    checkpoint would hold epoch 3, never validated, with training's BN statistics."""
    import keras_tuner
    import numpy as np
    from keras_tuner.src.engine.tuner_utils import SaveBestEpoch

    from kpretrain.training.stages import accuracy
    from kpretrain.tuning import ProtocolHyperModel

    path = write_recipe(tmp_path, space={"pretrain.epochs": {"choice": [0]}}, evaluation={"validate_every": 2},
                        finetune={"epochs": 4, "optimizer": {"learning_rate": 0.0}}, runtime={"deterministic": True})
    hypermodel = ProtocolHyperModel(yaml.safe_load(Path(path).read_text()))
    hp = keras_tuner.HyperParameters()
    checkpoint = SaveBestEpoch(keras_tuner.Objective("val_accuracy", "max"), str(tmp_path / "checkpoint.weights.h5"))
    model = hypermodel.build(hp)
    scores = hypermodel.fit(hp, model, callbacks=[checkpoint])
    kept = hypermodel.build(hp)
    kept.load_weights(checkpoint.filepath)
    assert all(np.array_equal(a, b) for a, b in zip(kept.get_weights(), model.get_weights()))
    inputs = hypermodel.trial(hypermodel.declare(hp))[0].seed_data(0)
    assert accuracy(kept, inputs.validation, inputs.y_validation)[0] == scores["val_accuracy"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_run_every_trial_once(tmp_path):
    recipe = write_recipe(tmp_path)
    command = [sys.executable, "-m", "kpretrain.cli", "tune", recipe, "--smoke", "--max-trials", "4", "--dir", "runs"]
    env = {**ENV, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(_free_port())}
    procs = {tuner_id: subprocess.Popen(command, cwd=tmp_path, env={**env, "KERASTUNER_TUNER_ID": tuner_id},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for tuner_id in ("chief", "tuner0", "tuner1")}
    outputs = {tuner_id: proc.communicate(timeout=400)[0] for tuner_id, proc in procs.items()}
    for tuner_id, proc in procs.items():
        assert proc.returncode == 0, f"{tuner_id}:\n{outputs[tuner_id][-3000:]}"
    project = tmp_path / "runs" / "tiny-smoke"
    found = trials(project)
    assert sorted(found) == ["0", "1", "2", "3"] and all(t["status"] == "COMPLETED" for t in found.values())
    run_times = json.loads((project / "oracle.json").read_text())["run_times"]
    assert run_times == {trial_id: 1 for trial_id in found}
    assert (project / "tuner0.json").exists() and (project / "tuner1.json").exists()  # both workers ran trials
    assert "no trials left" in outputs["tuner0"] and "| trial |" in outputs["chief"]
    assert len(json.loads((project / "best.json").read_text())["trials"]) == 4


MIRRORED = """
import contextlib, json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, keras_tuner, yaml
from kpretrain.tuning import ProtocolHyperModel, distribution_strategy
raw = yaml.safe_load(open(sys.argv[1]))
result = {}
for mode in ("none", "mirrored"):
    strategy = distribution_strategy(mode)
    hypermodel = ProtocolHyperModel(raw, smoke=True, strategy=strategy)
    hp = keras_tuner.HyperParameters()
    hp.values = {"pretrain.epochs": 1, "pretrain.task": "overlay", "transfer.frozen_depth": 1}
    with strategy.scope() if strategy else contextlib.nullcontext():  # as KerasTuner's Tuner builds
        model = hypermodel.build(hp)
    history = keras.callbacks.History()
    metrics = hypermodel.fit(hp, model, callbacks=[history])
    result[mode] = {"replicas": model.distribute_strategy.num_replicas_in_sync, "metrics": sorted(metrics),
                    "history": {k: len(v) for k, v in history.history.items()},
                    "variable": type(model.trainable_weights[0].value).__name__}
print("RESULT " + json.dumps(result))
"""


def test_fit_under_mirrored_strategy_on_two_logical_cpus(tmp_path):
    recipe = write_recipe(tmp_path)
    proc = subprocess.run([sys.executable, "-c", MIRRORED, recipe], capture_output=True, text=True, timeout=300,
                          env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    single, mirrored = result["none"], result["mirrored"]
    assert single["replicas"] == 1 and mirrored["replicas"] == 2
    assert mirrored["variable"] == "MirroredVariable"
    assert mirrored["history"] == single["history"] and "val_accuracy" in mirrored["history"]
    assert mirrored["metrics"] == single["metrics"] == ["val_accuracy", "val_accuracy_raw"]


def test_trial_under_mixed_precision_and_xla(tmp_path, capsys):
    """runtime.mixed_precision and runtime.jit_compile apply inside trials (checked on the CPU)."""
    import keras

    recipe = write_recipe(tmp_path, space={"pretrain.epochs": {"int": [0, 1]}})
    try:
        assert main(["tune", recipe, "--smoke", "--dir", str(tmp_path / "runs"), "--max-trials", "1",
                     "--set", "runtime.mixed_precision=true", "--set", "runtime.jit_compile=true"]) == 0
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    (trial,) = trials(tmp_path / "runs" / "tiny-smoke").values()
    assert trial["status"] == "COMPLETED" and 0.0 <= trial["score"] <= 1.0


PROTOCOLS = {  # one arm per protocol option; each must score in a trial what `kpretrain run` records
    "depth0": {"transfer": {"frozen_depth": 0}},
    "depth1": {"transfer": {"frozen_depth": 1}},
    "depth_all": {"transfer": {"frozen_depth": "all"}},
    "bn_train": {"transfer": {"frozen_depth": 2, "bn": "train"}},
    "unfreeze": {"transfer": {"frozen_depth": 2, "unfreeze": {"every": 1, "backbone_lr_factor": 0.5}}},
    "init_statistics": {"transfer": {"init": "statistics"}},
    "init_random": {"transfer": {"init": "random"}},
    "head_init": {"transfer": {"frozen_depth": "all", "head_init": "logistic_regression"}},
    "supervised": {"pretrain": {"task": "supervised", "dataset": "kmnist"}},  # tiny data under that name
    "from_keras": {"backbone": {"from": "BACKBONE"}, "pretrain": {"epochs": 0}, "transfer": {"frozen_depth": 1}},
}


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory):
    """One deterministic run of every protocol option on tiny data (one seed), shared by the trial checks."""
    import keras_tuner  # noqa: F401  (imported before the run, as `kpretrain tune` does)
    from kpretrain.models.backbones import create_backbone

    tmp = tmp_path_factory.mktemp("protocols")
    backbone = tmp / "source.keras"
    create_backbone("small_cnn", (28, 28, 1), seed=7, widths=(4, 8, 8)).save(backbone)
    arms = json.loads(json.dumps(PROTOCOLS).replace("BACKBONE", str(backbone)))
    path = write_recipe(tmp, space={"evaluation.bn_warn_points": {"choice": [2.0]}}, arms=arms,  # changes nothing
                        runtime={"deterministic": True}, finetune={"epochs": 3, "optimizer": {"learning_rate": 0.01}},
                        seeds=[0], data={"dataset": "tiny", "path": str(tmp / "tiny.npz"), "labels_per_class": 20,
                              "validation": 100, "batch_size": 32})
    # 28x28 images, so that $KPRETRAIN_DATA_DIR/kmnist.npz (other tiny data) can stand in for KMNIST
    helpers.tiny_npz(tmp / "tiny.npz", n_train=300, n_test=60, size=28)
    helpers.tiny_npz(tmp / "kmnist.npz", n_train=300, n_test=60, classes=10, seed=1, size=28)
    env = pytest.MonkeyPatch()
    env.setenv("KPRETRAIN_DATA_DIR", str(tmp))
    assert main(["run", path, "--out", str(tmp / "run")]) == 0
    yield path, tmp / "run"
    env.undo()


@pytest.mark.parametrize("arm", ["scratch", *PROTOCOLS])
def test_a_trial_scores_the_validation_accuracy_the_run_records(protocol_run, arm, monkeypatch):
    """A tuner trial (KerasTuner calls build, then fit) is the protocol `kpretrain run` executes: same score."""
    import keras_tuner

    from kpretrain.recipe import load_raw
    from kpretrain.tuning import ProtocolHyperModel

    path, run_dir = protocol_run
    monkeypatch.setenv("KPRETRAIN_DATA_DIR", str(Path(path).parent))
    raw = load_raw(path, [f"tune.arm={arm}"])
    raw["arms"] = {name: protocol for name, protocol in raw["arms"].items() if name == arm} or None  # the others wait
    hypermodel = ProtocolHyperModel(raw)
    hp = keras_tuner.HyperParameters()
    scores = hypermodel.fit(hp, hypermodel.build(hp))
    recorded = json.loads((run_dir / "units" / f"seed0.{arm}.finetune.json").read_text())
    assert scores["val_accuracy"] == pytest.approx(recorded["val_accuracy"], abs=1e-6)
    # the stale-BN number is the more sensitive one: it changes whenever a block trains differently
    assert scores["val_accuracy_raw"] == pytest.approx(recorded["val_accuracy_raw"], abs=1e-6)


def test_the_trial_table_writes_searched_values_as_the_recipe_does():
    from kpretrain.tuning.outputs import summary_table
    from kpretrain.tuning.space import parse_space

    dims = parse_space({"selftrain": {"choice": [None, {"threshold": 0.5, "balance": True}]},
                        "finetune.optimizer.learning_rate": {"float": [1e-4, 1e-2], "sampling": "log"}})
    rows = [{"trial_id": "0", "values": {"selftrain": None, "finetune.optimizer.learning_rate": 0.00123456},
             "score": 0.5, "status": "COMPLETED"},
            {"trial_id": "1", "values": {"selftrain": {"threshold": 0.5, "balance": True},
                                         "finetune.optimizer.learning_rate": 0.01}, "score": 0.25, "status": "COMPLETED"}]
    lines = summary_table(rows, dims).splitlines()
    assert lines[2] == "| trial_0 | null | 0.001235 | 0.5000 | COMPLETED |"
    assert lines[3] == '| trial_1 | {"balance": true, "threshold": 0.5} | 0.01 | 0.2500 | COMPLETED |'
