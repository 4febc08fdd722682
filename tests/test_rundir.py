"""`kpretrain.rundir.first_difference`: the one "which key differs" of run directories and tune searches."""

import os

from kpretrain.rundir import IGNORED_KEYS, first_difference


def test_first_difference_names_the_dotted_key_and_both_values():
    here = {"name": "a", "finetune": {"epochs": 3, "optimizer": {"lr": 0.1}}}
    there = {"name": "a", "finetune": {"epochs": 3, "optimizer": {"lr": 0.01}}}
    assert first_difference(here, there) == ("finetune.optimizer.lr", 0.1, 0.01)
    assert first_difference(here, here) is None
    assert first_difference(1, 2) == ("", 1, 2)


def test_first_difference_follows_the_order_of_here_then_keys_only_there_has():
    here = {"b": 1, "a": 1}
    assert first_difference(here, {"a": 2, "b": 2}) == ("b", 1, 2)
    assert first_difference({"a": 1}, {"a": 1, "z": 5}) == ("z", "(absent)", 5)
    assert first_difference({"a": 1, "y": 5}, {"a": 1}) == ("y", 5, "(absent)")


def test_missing_keys_are_skipped_when_told():
    older = {"finetune": {"epochs": 3}, "data": {"name": "x"}}
    newer = {"finetune": {"epochs": 3, "added": True}, "tune": {}, "data": {"name": "y"}}
    assert first_difference(older, newer, skip_missing=True) == ("data.name", "x", "y")
    assert first_difference({"a": {"b": 1}}, {"a": {"c": 2}}, skip_missing=True) is None


def test_the_tune_resume_guard_keeps_its_name_for_it():
    from kpretrain.tuning import _difference

    older = {"finetune": {"epochs": 3}, "data": {"name": "x"}}
    newer = {"finetune": {"epochs": 3, "added": True}, "tune": {}, "data": {"name": "y"}}
    assert _difference(older, newer) == "data.name" and _difference(older, older) is None


def test_ignored_keys_are_not_compared():
    here = {"runtime": {"verbose": 0, "tensorboard": False, "jit_compile": True}}
    there = {"runtime": {"verbose": 2, "tensorboard": True, "jit_compile": True}}
    assert first_difference(here, there, ignore=IGNORED_KEYS) is None
    assert first_difference(here, there) == ("runtime.verbose", 0, 2)
    assert first_difference({"runtime": {"verbose": 0}}, {"runtime": {}}, ignore=IGNORED_KEYS) is None


def test_a_new_run_directory_holds_its_recipe_before_anything_runs(tmp_path):
    """`recipe.yaml` and `run.json` are written as the directory is taken, so a run killed at any later moment is
    one `--resume DIR` continues; `runtime.executor` does not make a run another recipe's."""
    from kpretrain.recipe import recipe_from_dict
    from kpretrain.recipe.values import dump_yaml, load_yaml
    from kpretrain.rundir import run_directory, run_state
    from tests.helpers import tiny_recipe_dict

    out = str(tmp_path / "run")
    recipe = load_yaml(dump_yaml(recipe_from_dict(tiny_recipe_dict("tiny.npz")).to_dict()))
    with run_directory(out, recipe, smoke=True) as state:
        assert state == "new" and sorted(os.listdir(out)) == [".lock", "recipe.yaml", "run.json"]
        with open(os.path.join(out, "recipe.yaml")) as fh:
            assert load_yaml(fh) == recipe
    assert run_state(out, {**recipe, "runtime": {**recipe["runtime"], "executor": "dask"}}, smoke=True) == "resume"


def test_resume_of_a_directory_stopped_before_its_recipe_says_what_to_run(tmp_path, capsys):
    from kpretrain.cli import main

    stopped = tmp_path / "run"
    stopped.mkdir()
    (stopped / ".lock").write_text("")  # what a run killed as it took the directory leaves (before 0.9.0)
    assert main(["run", "--resume", str(stopped)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"start it again with `kpretrain run RECIPE --out {stopped}`" in err and "nothing was trained" in err


def test_a_run_killed_as_soon_as_it_takes_its_directory_resumes(tmp_path):
    """SIGKILL the moment `.lock` appears (before 0.9.0, 2 of 5 random start-up kills left a directory holding
    only `.lock`, which --resume refused); --resume DIR then finishes the run."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from tests.helpers import tiny_npz, tiny_recipe_dict

    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz"))
    recipe["seeds"] = [0]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "kpretrain.cli", "run"]
    proc = subprocess.Popen([*cli, str(tmp_path / "r.yaml"), "--out", str(out), "--smoke"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / ".lock").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    resumed = subprocess.run([*cli, "--resume", str(out)], capture_output=True, text=True, timeout=300)
    if not (out / "recipe.yaml").exists():  # killed within the microseconds before the start files: told what to run
        assert "start it again with `kpretrain run RECIPE --out" in resumed.stderr
        return
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming the unfinished run" in resumed.stdout and (out / "report.md").exists()
