"""The Python API: the README's example, run as written, against metrics.json and the recorded weights."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import kpretrain

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_and_returns_what_metrics_json_holds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink(README.parent / "recipes", tmp_path / "recipes")
    scope: dict = {}
    exec(compile(readme_example(), "README.md (Python API)", "exec"), scope)
    result = scope["result"]
    metrics = json.loads((tmp_path / "runs" / "api_example" / "metrics.json").read_text())
    assert result.run_dir == "runs/api_example" and result.metrics == metrics
    assert set(result.arms) == {"scratch", "overlay"}
    for name, arm in result.arms.items():
        assert arm.test_accuracy == metrics["arms"][name]["test_accuracy"] and len(arm.test_accuracy) == 2
        assert arm.mean == pytest.approx(np.mean(arm.test_accuracy))
    assert result.arms["overlay"].baseline == "scratch" and "p" in result.arms["overlay"].difference
    assert result.verdicts and result.verdicts[0].startswith("overlay vs scratch:")
    assert scope["markdown"].startswith("# fashion_overlay")
    # the user's callback saw every stage of every unit: 2 pre-trainings, 4 fine-tunings
    seen = scope["seen"]
    assert seen.count("pretext_overlay_model") == 2 and len(seen) == 6, seen
    # load_backbone: seed 1's pre-trained weights, as its unit recorded them
    backbone, unit = scope["backbone"], metrics["arms"]["overlay"]["pretrain_unit"][1]
    import keras

    recorded = kpretrain.load_backbone("runs/api_example", arm="overlay", seed=0)
    assert unit == "seed1.overlay.pretrain" and tuple(scope["features"].shape) == (1, 64)
    assert not all(np.array_equal(a, b) for a, b in zip(backbone.get_weights(), recorded.get_weights()))
    exported = kpretrain.load_backbone("runs/api_example")  # backbone.keras: the first seed's
    assert all(np.array_equal(a, b) for a, b in zip(exported.get_weights(), recorded.get_weights()))
    assert isinstance(backbone, keras.Model)
    # kpretrain export: every pre-trained arm's backbone for every seed, and any arm's fine-tuned classifier
    from kpretrain.cli import main
    from kpretrain.experiment import Experiment
    from kpretrain.recipe import load_recipe

    assert main(["export", "runs/api_example"]) == 0
    for seed in (0, 1):
        exported = keras.saving.load_model(f"runs/api_example/backbones/overlay/seed{seed}/backbone.keras",
                                           safe_mode=True)
        expected = kpretrain.load_backbone("runs/api_example", arm="overlay", seed=seed)
        assert all(np.array_equal(a, b) for a, b in zip(exported.get_weights(), expected.get_weights()))
        assert os.path.exists(f"runs/api_example/backbones/overlay/seed{seed}/backbone/saved_model.pb")
    assert not os.path.exists("runs/api_example/backbones/scratch")  # scratch has no pre-trained backbone
    assert main(["export", "runs/api_example", "--model", "classifier", "--arm", "scratch", "--seed", "1"]) == 0
    classifier = keras.saving.load_model("runs/api_example/classifiers/scratch/seed1/classifier.keras",
                                         safe_mode=True)
    experiment = Experiment(load_recipe("runs/api_example/recipe.yaml"), smoke=True)
    experiment.prepare()
    inputs = experiment.seed_data(1)
    predicted = np.argmax(classifier.predict(inputs.test, verbose=0), axis=1)
    assert np.mean(predicted == inputs.data.y_test) == metrics["arms"]["scratch"]["test_accuracy"][1]
    assert main(["export", "runs/api_example", "--arm", "scratch"]) == 2
    # a finished directory is read back, not run again
    again = kpretrain.run("recipes/fashion_overlay.yaml", smoke=True, out="runs/api_example",
                          overrides={"seeds": [0, 1]})
    assert again.metrics == metrics
    with pytest.raises(kpretrain.InputError, match="arm 'scratch': no pre-trained backbone"):
        kpretrain.load_backbone("runs/api_example", arm="scratch")
    with pytest.raises(kpretrain.RecipeError, match="pretrain.epoch"):
        kpretrain.run({"name": "x", "pretrain": {"epoch": 2}})
    with pytest.raises(kpretrain.InputError, match="callbacks: unknown stage 'train'"):
        kpretrain.run("recipes/fashion_overlay.yaml", smoke=True, out="runs/other", callbacks={"train": []})
    assert not os.path.exists("runs/other")


def test_import_kpretrain_does_not_load_tensorflow():
    import subprocess
    import sys

    code = "import sys, kpretrain; print('tensorflow' in sys.modules, kpretrain.RecipeError.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "RecipeError"]


def test_tune_from_python_returns_the_best_trial_and_its_recipe(tmp_path):
    from tests.helpers import tiny_npz, tiny_recipe_dict

    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz"))
    recipe["tune"] = {"tuner": "grid", "max_trials": 5, "space": {"transfer.frozen_depth": {"int": [0, 1]}}}
    result = kpretrain.tune(recipe, smoke=True, directory=str(tmp_path / "tuner"))
    assert result.directory == str(tmp_path / "tuner" / "tiny-smoke") and len(result.trials) == 2  # a 2-point grid
    assert result.best_score == max(t["score"] for t in result.trials)
    assert result.best_recipe["transfer"]["frozen_depth"] == result.best_values["transfer.frozen_depth"]
    assert result.final is None
    with pytest.raises(kpretrain.RecipeError, match="tune.space.transfer.frozen_depth"):
        kpretrain.tune(recipe, overrides={"tune.space": {"transfer.frozen_depth": {"int": [0, 9]}}}, smoke=True,
                       directory=str(tmp_path / "other"))


def test_every_public_name_resolves():
    import kpretrain

    for name in kpretrain.__all__:
        assert getattr(kpretrain, name) is not None, name
