"""Resume after SIGTERM / SIGKILL, identical deterministic reruns, atomic files, one writer per run directory."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from tests.helpers import tiny_npz

CLI = [sys.executable, "-m", "kpretrain.cli"]
UNIT_FILES = ("seed0.scratch.finetune.json", "seed0.overlay.pretrain.json", "seed0.overlay.pretrain.weights.h5",
              "seed0.scratch.finetune.weights.h5", "seed0.overlay.finetune.json", "seed0.overlay.finetune.weights.h5")
RECORDED_BEFORE_THE_KILL = UNIT_FILES[:4]
TIMINGS = ("seconds", "wall_time_s")  # what may differ between an interrupted and an uninterrupted run


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def _start(recipe, out, *extra):
    return subprocess.Popen([*CLI, "run", recipe, "--out", str(out), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def _run(recipe, out, *extra, timeout=240):
    args = ["--resume", str(out)] if recipe is None else [recipe, "--out", str(out)]
    return subprocess.run([*CLI, "run", *args, *extra], capture_output=True, text=True, timeout=timeout, env=_env())


def _interrupt_once_backed_up(proc, backup_dir, signum, timeout=180):
    """Send `signum` once the stage backing up into `backup_dir` has finished an epoch; return (rc, out, err)."""
    deadline = time.monotonic() + timeout
    while not os.path.isdir(os.path.join(backup_dir, "latest")):
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            pytest.fail(f"the stage never backed up (rc {proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
        time.sleep(0.01)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _backed_up_epoch(backup_dir) -> int:
    with open(os.path.join(backup_dir, "latest", "training_metadata.json")) as fh:
        return json.load(fh)["epoch"]


def _without_timings(metrics: dict) -> dict:
    return {name: {k: v for k, v in arm.items() if k not in TIMINGS} for name, arm in metrics["arms"].items()}


@pytest.fixture(scope="module")
def resumable_recipe(tmp_path_factory):
    """Scratch and overlay (gradual unfreezing), one seed, deterministic, fine-tuning long enough to be caught in
    the middle."""
    d = tmp_path_factory.mktemp("reliability")
    data = tiny_npz(d / "tiny.npz", n_train=300, n_test=100)
    recipe = {
        "name": "resumable", "seeds": [0],
        "data": {"dataset": "tiny", "path": data, "labels_per_class": 40, "validation": 40, "batch_size": 16},
        "backbone": {"name": "small_cnn", "options": {"widths": [4, 8, 8]}},
        "arms": {"overlay": {"pretrain": {"task": "overlay", "epochs": 2},  # resumed with unfreezing in progress
                             "transfer": {"frozen_depth": 2, "unfreeze": {"every": 2, "backbone_lr_factor": 0.5}}}},
        "finetune": {"epochs": 6},
        "evaluation": {"validate_every": 1, "bn_refresh_batches": 2},
        "runtime": {"deterministic": True},
    }
    path = d / "resumable.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.fixture(scope="module")
def interrupted_and_reference(resumable_recipe, tmp_path_factory):
    """One run stopped by SIGTERM in scratch's fine-tuning, resumed and stopped by Ctrl-C (SIGINT) in pre-training,
    resumed and SIGKILLed in overlay's fine-tuning, resumed to the end; and two uninterrupted runs of the recipe."""
    base = tmp_path_factory.mktemp("runs")
    run, refs = base / "interrupted", [base / "reference_a", base / "reference_b"]
    steps = {}
    # the determinism benchmark's own check runs meanwhile, on the core these mostly single-threaded runs leave idle
    benchmark = subprocess.Popen([sys.executable, "benchmarks/determinism.py", "--smoke"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=_env())
    first = _start(resumable_recipe, run)
    steps["term"] = _interrupt_once_backed_up(first, run / "units" / "seed0.scratch.finetune.backup", signal.SIGTERM)
    steps["term_epoch"] = _backed_up_epoch(run / "units" / "seed0.scratch.finetune.backup")
    steps["term_units"] = sorted(os.listdir(run / "units"))
    second = _start(resumable_recipe, run)
    steps["pre_kill"] = _interrupt_once_backed_up(second, run / "units" / "seed0.overlay.pretrain.backup",
                                                  signal.SIGINT)  # Ctrl-C
    steps["pre_epoch"] = _backed_up_epoch(run / "units" / "seed0.overlay.pretrain.backup")
    third = _start(resumable_recipe, run)
    steps["kill"] = _interrupt_once_backed_up(third, run / "units" / "seed0.overlay.finetune.backup", signal.SIGKILL)
    steps["kill_epoch"] = _backed_up_epoch(run / "units" / "seed0.overlay.finetune.backup")
    steps["mtimes"] = {f: os.stat(run / "units" / f).st_mtime_ns for f in RECORDED_BEFORE_THE_KILL}
    references = [_start(resumable_recipe, refs[0], "--set", "runtime.tensorboard=true"), _start(resumable_recipe, refs[1])]
    last = _run(None, run)  # kpretrain run --resume DIR
    steps["last"] = last.returncode, last.stdout, last.stderr
    steps["references"] = [(p.wait(timeout=300), *p.communicate()) for p in references]
    steps["benchmark"] = (benchmark.wait(timeout=600), *benchmark.communicate())
    return run, refs, steps


def test_sigterm_stops_at_a_batch_boundary_and_says_how_to_resume(interrupted_and_reference):
    run, _, steps = interrupted_and_reference
    rc, out, err = steps["term"]
    assert rc == 143, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == (f"kpretrain: interrupted (SIGTERM); finished units are kept in {run}/units; "
                         f"resume with: kpretrain run --resume {run}")
    assert steps["term_epoch"] >= 1
    assert steps["term_units"] == ["seed0.scratch.finetune.backup"]  # the stopped unit is not recorded


def test_an_interrupted_run_resumes_each_stage_after_its_last_backup(interrupted_and_reference):
    run, _, steps = interrupted_and_reference
    rc, out, err = steps["pre_kill"]
    assert rc == 130 and err.strip().splitlines()[-1].startswith("kpretrain: interrupted (SIGINT); finished units")
    # the SIGTERMed fine-tuning resumed after its backed-up epoch, then the run went on until killed
    assert f"fine-tuning resumed from its backup after epoch {steps['term_epoch']}" in out, out[-3000:]
    rc, out, err = steps["kill"]
    assert rc == -signal.SIGKILL
    assert f"pre-training resumed from its backup after epoch {steps['pre_epoch']}" in out, out[-3000:]
    rc, out, err = steps["last"]
    assert rc == 0, err[-3000:]
    assert f"seed 0 | scratch: recorded in {run}/units/seed0.scratch.finetune.json, reused" in out
    assert "seed 0 | pretrain for overlay: recorded in" in out
    assert f"fine-tuning resumed from its backup after epoch {steps['kill_epoch']}" in out, out[-3000:]
    # units finished before the kill were reused, not recomputed: their files were not written again
    assert {f: os.stat(run / "units" / f).st_mtime_ns for f in RECORDED_BEFORE_THE_KILL} == steps["mtimes"]
    units = sorted(os.listdir(run / "units"))
    assert units == sorted(UNIT_FILES)  # every unit recorded exactly once, no backup left behind
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"] and metrics["time_split"]["reused_units"] == [
        "seed0.overlay.pretrain", "seed0.scratch.finetune"]


def test_resumed_run_equals_uninterrupted_runs_which_equal_each_other(resumable_recipe, interrupted_and_reference):
    run, refs, steps = interrupted_and_reference
    for rc, out, err in steps["references"]:
        assert rc == 0, err[-3000:]
    interrupted, a, b = (json.loads((d / "metrics.json").read_text()) for d in (run, *refs))
    assert _without_timings(a) == _without_timings(b)  # deterministic reruns: identical, not just close
    data = os.path.join(os.path.dirname(resumable_recipe), "tiny.npz")
    for m in (interrupted, a, b):  # provenance: same recipe, same data file, same arrays
        assert m["schema_version"] == 2 and m["recipe_sha256"] == a["recipe_sha256"]
        assert m["data_files"] == {data: hashlib.sha256(open(data, "rb").read()).hexdigest()}
        assert m["data_sha256"] == a["data_sha256"] and len(m["data_sha256"]["tiny"]) == 64
    assert _without_timings(interrupted) == _without_timings(a)
    assert interrupted["pretraining"][0]["history"] == a["pretraining"][0]["history"]
    assert len(a["arms"]["overlay"]["history"][0]["val_accuracy"]) == 6
    assert [len(blocks) for _, blocks in a["arms"]["overlay"]["unfreeze_schedule"][0]] == [1, 1, 2, 2, 3, 3]
    for d in (run, *refs):  # the exported backbone is the same pre-trained one
        assert (d / "backbone.keras").exists()
    # TensorBoard logs (which change nothing else) per unit and stage, only where asked for
    for stage in ("scratch/finetune", "overlay/pretrain", "overlay/finetune"):
        events = [f for _, _, files in os.walk(refs[0] / "tb" / "0" / stage) for f in files]
        assert any(f.startswith("events.out.tfevents") for f in events), stage
    assert not (refs[1] / "tb").exists() and not (run / "tb").exists()


def _tflite_logits(saved_model: str, images: np.ndarray) -> np.ndarray:
    """`images` through the SavedModel converted to TFLite, run by the TFLite interpreter in one batch."""
    import warnings

    import tensorflow as tf

    converted = tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT)
        interpreter = tf.lite.Interpreter(model_content=converted)
    (given,), (returned,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(given["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(returned["index"])


def test_exported_classifier_reproduces_the_test_accuracy_in_every_format(interrupted_and_reference, tmp_path):
    """`kpretrain export --model classifier`: the .keras file (safe mode), the SavedModel's `serve` endpoint called
    with the image tensor itself (through TFSMLayer and tf.saved_model.load) and its TFLite conversion all
    predict the test split as the fine-tuned model did: the run's test accuracy, for either arm."""
    import keras
    import tensorflow as tf

    from kpretrain.cli import main
    from kpretrain.experiment import Experiment
    from kpretrain.recipe import load_recipe

    run = interrupted_and_reference[1][1]  # an uninterrupted, finished run
    assert main(["export", str(run), "--model", "classifier", "--out", str(tmp_path)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    experiment = Experiment(load_recipe(str(run / "recipe.yaml")))
    experiment.prepare()
    inputs = experiment.seed_data(0)
    images = np.concatenate([x for x, _ in inputs.test.as_numpy_iterator()]).astype(np.float32)
    labels = inputs.data.y_test
    for arm in ("scratch", "overlay"):
        directory, recorded = tmp_path / arm / "seed0", metrics["arms"][arm]["test_accuracy"][0]
        info = json.loads((directory / "classifier" / "kpretrain.json").read_text())
        assert info["endpoint"] == "serve" and info["outputs"] == "logits" and info["test_accuracy"] == recorded
        saved_model = str(directory / "classifier")
        loaded = tf.saved_model.load(saved_model)  # held: `serve` only references its variables
        logits = {
            "keras": keras.saving.load_model(str(directory / "classifier.keras"), safe_mode=True).predict(
                images, verbose=0),
            "TFSMLayer": keras.layers.TFSMLayer(saved_model, call_endpoint="serve")(images),
            "serve": loaded.serve(tf.constant(images)),
            "TFLite": _tflite_logits(saved_model, images),
        }
        for name, value in logits.items():
            value = np.asarray(value)
            assert value.shape == (len(labels), metrics["data"]["num_classes"]), name
            assert np.mean(np.argmax(value, axis=1) == labels) == pytest.approx(recorded, abs=1e-6), (arm, name)


def test_finished_changed_and_locked_run_directories(resumable_recipe, interrupted_and_reference):
    run, refs, _ = interrupted_and_reference
    from kpretrain.rundir import DirectoryLock

    lock = run / ".lock"
    lock.write_text(json.dumps({"pid": 999999999, "host": os.uname().nodename}))  # left by a killed process
    done = _run(resumable_recipe, run)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "holds a finished run of recipe resumable (metrics.json is complete); nothing to train" in done.stdout
    assert "took over the stale lock of run directory" in done.stderr and "process 999999999" in done.stderr
    before = (run / "metrics.json").read_bytes()
    stored = yaml.safe_load((run / "recipe.yaml").read_text())  # a run started before these keys existed
    del stored["reference"], stored["finetune"]["min_steps_per_epoch"]
    (run / "recipe.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    older = _run(resumable_recipe, run)
    assert older.returncode == 0 and "nothing to train" in older.stdout, older.stderr[-2000:]
    changed = _run(resumable_recipe, run, "--set", "finetune.epochs=3")
    assert changed.returncode == 2
    assert changed.stderr.strip().splitlines()[-1].startswith(
        f"kpretrain: error: --out '{run}' holds a run of another recipe: key 'finetune.epochs' is 6 there and 3 here")
    with DirectoryLock(str(refs[0])):
        locked = _run(resumable_recipe, refs[0])
    assert locked.returncode == 2
    assert f"is in use by process {os.getpid()}" in locked.stderr.strip().splitlines()[-1]
    assert (run / "metrics.json").read_bytes() == before


def test_atomic_files_survive_a_fault_between_write_and_rename(tmp_path, monkeypatch):
    from kpretrain import io

    path = tmp_path / "metrics.json"
    io.write_json(str(path), {"old": 1})
    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError("injected fault before the rename")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="injected"):
        io.write_json(str(path), {"new": 2})
    with pytest.raises(OSError, match="injected"):
        io.write_json(str(tmp_path / "absent.json"), {"new": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert json.loads(path.read_text()) == {"old": 1}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]  # no temporary file, no partial new file


def test_stage_backup_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import keras

    from kpretrain.training.backup import StageBackup

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    backup = StageBackup(str(tmp_path / "stage.backup"))
    backup.set_model(model)
    backup._current_epoch = 1
    backup._save_model()
    saved = model.get_weights()
    model.set_weights([w + 1 for w in saved])
    backup._current_epoch = 2

    def fail(*args, **kwargs):
        raise OSError("injected fault while writing the weights")

    monkeypatch.setattr(model, "save_weights", fail)
    with pytest.raises(OSError, match="injected"):
        backup._save_model()
    assert backup.resume_epoch() == 1
    os.replace(backup.latest, backup.latest + ".old")  # a kill between the two renames of the directory swap
    fresh = StageBackup(str(tmp_path / "stage.backup"))
    assert fresh.resume_epoch() == 1
    fresh.set_model(model)
    fresh.on_train_begin()
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), saved))


def test_determinism_benchmark_runs(interrupted_and_reference):  # identical reruns: the fixture's reference runs
    rc, out, err = interrupted_and_reference[2]["benchmark"]
    assert rc == 0, err[-3000:]
    lines = out.strip().splitlines()
    assert sum(line.startswith("  deterministic=") for line in lines) == 2
    ratio = lines[-1].removeprefix("deterministic/default wall-time ratio: ")
    assert lines[-1].startswith("deterministic/default wall-time ratio: ") and float(ratio) > 0


@pytest.mark.parametrize("argv, needle", [
    (["run"], "kpretrain run needs a recipe (e.g. recipes/fashion_overlay.yaml) or --resume DIR"),
    (["run", "--resume", "{tmp}"], "--resume '{tmp}': no recipe.yaml there; pass a run directory written by kpretrain run"),
    (["run", "recipes/fashion_overlay.yaml", "--resume", "{tmp}"], "--resume DIR takes the recipe and run directory from DIR"),
])
def test_resume_arguments_are_checked_in_one_line(argv, needle, tmp_path, capsys):
    from kpretrain.cli import main

    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle.format(tmp=tmp_path) in err[0]
