"""`kpretrain tune` interrupted: a search SIGKILLed mid-trial and started again runs that trial again and keeps
the finished ones (KerasTuner's reload); one process at a time owns a tuner directory; KerasTuner's state files
are never left half-written."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kpretrain
from kpretrain.cli import main
from tests.test_tuning import trials, write_recipe

SPACE = {"transfer.frozen_depth": {"int": [0, 3]}}  # one key, four values: three distinct trials
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",  # subprocesses import this checkout's kpretrain
       "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(kpretrain.__file__).parents[1]),
                                                   os.environ.get("PYTHONPATH")]))}


def read_json(path: Path):
    """The file's JSON, or None while it does not exist (yet)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_for(condition, proc: subprocess.Popen, log: Path, what: str, timeout: float = 180):
    """Poll `condition()` until it is true; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"the search ended (exit {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout} s")


def test_search_killed_mid_trial_reruns_that_trial_and_keeps_the_finished_ones(tmp_path):
    recipe = write_recipe(tmp_path, space=SPACE, seeds=[0])
    command = [sys.executable, "-m", "kpretrain.cli", "tune", recipe, "--smoke", "--max-trials", "3", "--dir", "runs"]
    project = tmp_path / "runs" / "tiny-smoke"  # --smoke's project
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    try:
        # trial 1 is running once KerasTuner has saved it as the search's ongoing trial (trial 0 is finished)
        wait_for(lambda: "1" in (read_json(project / "oracle.json") or {}).get("ongoing_trials", {}).values(),
                 first, log, "trial 1 started")
        assert read_json(project / ".lock")["pid"] == first.pid  # the running search holds the directory
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    before = trials(project)
    assert before["0"]["status"] == "COMPLETED" and before["1"]["status"] == "RUNNING" and "2" not in before
    assert not (project / "best.json").exists()

    again = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Reloading Tuner" in again.stdout
    assert "took over the stale lock of tuner directory" in again.stderr  # the killed process's pid was left
    started = re.findall(r"^(trial_\d+): \{", again.stdout, re.M)
    assert started == ["trial_1", "trial_2"], again.stdout  # trial_1 again, then trial_2; trial_0 is not re-run
    assert "[unit 1/2] seed 0 | overlay | trial_1: started" in again.stdout  # the trials left to this process

    after = trials(project)
    assert sorted(after) == ["0", "1", "2"] and all(t["status"] == "COMPLETED" for t in after.values())
    assert after["0"] == before["0"]  # kept as it was
    assert after["1"]["hyperparameters"]["values"] == before["1"]["hyperparameters"]["values"]  # the same trial
    assert len({json.dumps(t["hyperparameters"]["values"]) for t in after.values()}) == 3
    for trial in after.values():  # one result each: one observation of one value
        (observation,) = trial["metrics"]["metrics"]["val_accuracy"]["observations"]
        assert observation["value"] == [trial["score"]]
    oracle = read_json(project / "oracle.json")
    assert oracle["run_times"] == {"0": 1, "1": 1, "2": 1}  # each trial ended once
    assert sorted(oracle["end_order"]) == ["0", "1", "2"] and oracle["start_order"] == ["0", "1", "2"]
    assert oracle["ongoing_trials"] == {} and oracle["retry_queue"] == []

    best = read_json(project / "best.json")
    assert sorted(row["trial_id"] for row in best["trials"]) == ["0", "1", "2"]
    assert all(row["status"] == "COMPLETED" for row in best["trials"])
    assert {row["trial_id"]: row["score"] for row in best["trials"]} == {k: t["score"] for k, t in after.items()}
    assert best["best"]["score"] == max(t["score"] for t in after.values())
    assert (project / ".lock").read_text() == ""  # released by the finished search (the file stays, emptied)


def test_second_search_on_a_locked_tuner_directory_is_exit_2_naming_the_holder(tmp_path, capsys):
    recipe = write_recipe(tmp_path, space=SPACE, seeds=[0])
    project = tmp_path / "runs" / "tiny-smoke"  # --smoke's project
    hold = ("import sys; from kpretrain.rundir import DirectoryLock; lock = DirectoryLock(sys.argv[1]); "
            "lock.acquire(); print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(project)], env=ENV, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["tune", recipe, "--smoke", "--dir", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert f"tuner directory '{project}' is in use by process {holder.pid}" in err and "use another --dir" in err
        assert sorted(os.listdir(project)) == [".lock"]  # nothing read or written there
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_unreadable_state_file_is_exit_2_with_the_way_out(tmp_path, capsys):
    """A state file cut short by a crash of a version whose writes were not atomic: one line, no traceback."""
    recipe = write_recipe(tmp_path, space=SPACE, seeds=[0])
    project = tmp_path / "runs" / "tiny-smoke"  # --smoke's project
    project.mkdir(parents=True)
    (project / "tuner0.json").write_text("{}")
    (project / "oracle.json").write_text("")
    assert main(["tune", recipe, "--smoke", "--dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "a KerasTuner state file is unreadable" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1, err


def test_keras_tuner_state_is_written_atomically(tmp_path, monkeypatch):
    """During a search KerasTuner's JSON writes (oracle.json, trial.json, ...) leave the old file or the new one."""
    from keras_tuner.src import utils as tuner_utils

    from kpretrain.tuning import _atomic_state_files

    path = tmp_path / "oracle.json"
    path.write_text('{"old": true}')
    original = tuner_utils.save_json
    with _atomic_state_files():
        assert tuner_utils.save_json(str(path), {"new": 1}) == '{"new": 1}'
        assert json.loads(path.read_text()) == {"new": 1}

        def crash(*_):
            raise OSError("killed before the rename")

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(OSError):
            tuner_utils.save_json(str(path), {"newer": 2})
        monkeypatch.undo()
        assert json.loads(path.read_text()) == {"new": 1}
        assert os.listdir(tmp_path) == ["oracle.json"]  # no temporary left beside it
    assert tuner_utils.save_json is original


def _grid_trials(oracle, stop_after: int | None = None) -> list:
    """Run `oracle`'s trials (a score each, no training) until it stops or `stop_after` trials were created (the
    last left running, as a kill leaves it); the values of each trial created, in order."""
    import keras_tuner

    created = []
    while stop_after is None or len(created) < stop_after:
        trial = oracle.create_trial("tuner0")
        if trial.status == keras_tuner.engine.trial.TrialStatus.STOPPED:
            break
        created.append(dict(trial.hyperparameters.values))
        if stop_after is not None and len(created) == stop_after:
            break  # killed while this trial runs
        oracle.update_trial(trial.trial_id, {"score": float(len(created))})
        trial.status = keras_tuner.engine.trial.TrialStatus.COMPLETED
        oracle.end_trial(trial)
    return created


def test_a_grid_search_started_again_in_a_new_process_tries_each_remaining_combination_once(tmp_path):
    """KerasTuner's grid oracle loses its order of tried combinations on reload (keras-team/keras-tuner#1055: a
    `KeyError` on the first trial the new process completes); kpretrain's rebuilds it from the trials."""
    import keras_tuner

    from kpretrain.tuning.grid import ResumableGridOracle

    def oracle(project: str):
        space = keras_tuner.HyperParameters()
        space.Choice("a", [1, 2, 3])
        space.Choice("b", ["x", "y"])
        made = ResumableGridOracle(objective=keras_tuner.Objective("score", "max"), max_trials=20,
                                   hyperparameters=space)
        made._set_project_dir(str(tmp_path), project)
        return made

    uninterrupted = _grid_trials(oracle("whole"))
    assert len(uninterrupted) == 6 and len({tuple(v.items()) for v in uninterrupted}) == 6
    first = _grid_trials(oracle("resumed"), stop_after=3)  # two finished, the third running when killed
    again = oracle("resumed")
    again.reload()  # a new process: the trials and oracle.json from the directory
    rest = _grid_trials(again)
    assert first == uninterrupted[:3] and rest == uninterrupted[2:]  # the running trial again, then the rest, once
