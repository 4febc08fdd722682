"""Every shipped recipe validates with its data, runs under --smoke, and every task runs through `kpretrain run`."""

import glob
import json
import os

import pytest

from kpretrain.cli import main
from kpretrain.recipe import load_recipe

RECIPES = sorted(glob.glob("recipes/*.yaml"))
LOCAL = [r for r in RECIPES if "cifar10" not in r]  # CIFAR-10 comes from TFDS (online) or a local copy


def test_recipes_are_shipped():
    names = {os.path.basename(r) for r in RECIPES}
    assert {"fashion_overlay.yaml", "mnist_rotation.yaml", "mnist_noise.yaml", "mnist_overlay.yaml",
            "mnist_mixed.yaml", "fashion_rotation.yaml", "cifar10_rotation.yaml"} <= names


SEARCHES = [r for r in LOCAL if load_recipe(r).tune.space]  # recipes made for `kpretrain tune`


@pytest.mark.parametrize("recipe", [r for r in LOCAL if "fashion_overlay" not in r and r not in SEARCHES])
def test_recipe_smoke_runs_on_real_data(recipe, tmp_path):
    out = tmp_path / "run"
    assert main(["run", recipe, "--smoke", "--set", "seeds=[0]", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    points = metrics.get("points") or [metrics]  # a sweep lists its points, each laid out as a run
    if "points" in metrics:
        assert len(points) == len(next(iter(load_recipe(recipe).sweep.values())))
        assert (out / "label_efficiency.png").exists() == ("data.labels_per_class" in load_recipe(recipe).sweep)
    for point in points:
        assert "scratch" in point["arms"] and len(point["arms"]) >= 2
        assert point["data"]["source"].startswith("idx:")
        for arm in point["arms"].values():  # every pre-trained arm records its pretext validation curve
            if arm.get("pretext"):
                monitor = arm["pretext"][0]["monitor"]
                assert arm["pretext"][0][f"val_{monitor}"], arm["pretext"][0].keys()


@pytest.mark.parametrize("recipe", SEARCHES)
def test_search_recipes_validate_their_space_against_real_data(recipe, capsys):
    """What `kpretrain tune` checks before its first trial: every bound and choice, on the recipe's data."""
    from kpretrain.recipe import load_raw
    from kpretrain.tuning import ProtocolHyperModel

    ProtocolHyperModel(load_raw(recipe), smoke=True).check()
    assert main(["run", recipe, "--smoke", "--dry-run"]) == 0
    assert "dry run: recipe and data are valid" in capsys.readouterr().out


def test_shipped_recipes_cover_every_task_but_jigsaw():
    """The smoke runs above run these tasks through `kpretrain run` on real data; jigsaw runs below."""
    tasks = set()
    for path in LOCAL:
        recipe = load_recipe(path)
        tasks |= {arm.pretrain.task for arm in recipe.arm_recipes().values()}
        tasks |= set(recipe.pretrain.options.get("tasks", []))
    assert tasks >= {"rotation", "noise", "overlay", "contrastive", "mixed"}


def test_cifar10_recipe_without_data_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KPRETRAIN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KPRETRAIN_OFFLINE", "1")
    code = main(["run", "recipes/cifar10_rotation.yaml", "--dry-run"])
    err = capsys.readouterr().err
    if code == 0:  # a machine with CIFAR-10 installed or downloadable
        return
    assert code == 2 and "cifar10" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("task", ["jigsaw"])  # the others run in the shipped recipes' smoke runs above
def test_every_task_runs_as_an_arm(task, tiny_recipe, tmp_path):
    out = tmp_path / "run"
    assert main(["run", tiny_recipe, "--smoke", "--set", "seeds=[0]", "--set", f"pretrain.task={task}",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    arm = metrics["arms"][task]
    assert arm["protocol"]["task"] == task
    monitor = arm["pretext"][0]["monitor"]
    assert arm["pretext"][0][f"val_{monitor}"], arm["pretext"][0].keys()


def test_show_task_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "task.png"
    assert main(["show-task", "recipes/fashion_overlay.yaml", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    assert main(["show-task", "recipes/fashion_overlay.yaml", "--set", "pretrain.task=none"]) == 2
    fractal = tmp_path / "fractal.png"  # another arm's task: generated images, titled with their class
    assert main(["show-task", "recipes/fashion_synthetic.yaml", "--arm", "fractal", "--out", str(fractal), "-q"]) == 0
    assert fractal.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["show-task", "recipes/fashion_synthetic.yaml", "--arm", "nope"]) == 2
    assert "--arm 'nope': not an arm of fashion_synthetic" in capsys.readouterr().err
