"""End to end: `kpretrain run` through the CLI on a tiny generated data set and on real Fashion-MNIST."""

import csv
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from kpretrain.cli import main

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def test_smoke_run_writes_every_artifact(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", tiny_recipe, "--smoke", "--out", str(out)]) == 0
    for name in ("recipe.yaml", "metrics.json", "history.csv", "curves.png", "report.md", "backbone.keras",
                 "backbone/saved_model.pb", "backbone/kpretrain.json"):
        assert (out / name).exists(), name
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] is True and metrics["seeds"] == [0, 1]
    assert list(metrics["arms"]) == ["scratch", "overlay"]
    for name, arm in metrics["arms"].items():
        assert len(arm["test_accuracy"]) == 2 and all(0.0 <= a <= 1.0 for a in arm["test_accuracy"])
        assert arm["test_accuracy"] == arm["test_accuracy_refreshed"]
        assert len(arm["test_accuracy_raw"]) == 2
        assert arm["trainable_params"] > 0
        assert [h["seed"] for h in arm["history"]] == [0, 1]
        assert all(len(h["val_accuracy"]) == 1 for h in arm["history"])
        assert np.asarray(arm["confusion"][0]).sum() == metrics["data"]["test"]
    assert "pretext" in metrics["arms"]["overlay"] and "pretext" not in metrics["arms"]["scratch"]
    pretext = metrics["arms"]["overlay"]["pretext"][0]  # pretext validation, raw and BN-refreshed, per point
    assert len(pretext["val_accuracy"]) == len(pretext["val_accuracy_raw"]) == len(pretext["epoch"]) >= 1
    # frozen block 1 in the overlay arm: fewer trainable parameters than scratch
    assert metrics["arms"]["overlay"]["trainable_params"] < metrics["arms"]["scratch"]["trainable_params"]
    assert metrics["arms"]["overlay"]["protocol"]["task"] == "overlay"
    assert metrics["arms"]["scratch"]["protocol"]["task"] == "none"
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert {r["stage"] for r in rows} == {"pretrain", "finetune"}
    assert {r["arm"] for r in rows} == {"scratch", "overlay"}
    report = (out / "report.md").read_text()
    assert "| scratch |" in report and "| overlay |" in report and "vs scratch" in report
    units = sorted(os.listdir(out / "units"))
    assert "seed1.overlay.pretrain.json" in units and "seed1.scratch.finetune.json" in units
    assert "seed0.scratch.pretrain.json" not in units
    assert yaml.safe_load((out / "recipe.yaml").read_text())["name"] == "tiny"
    # a smoke run says so wherever its numbers appear, with the budget that ran
    assert metrics["smoke"] is True and metrics["budget"]["epochs"] == 1 and metrics["budget"]["steps_per_epoch"] == 3
    assert "overlay | task=overlay, pretrain_epochs=1.0, " in report  # the recipe's 1 epoch ran
    assert "finetune_epochs=1 (smoke; recipe: 2)" in report and "Smoke budget: at most 3 batches x 1 epoch" in report
    verdicts = [line for line in capsys.readouterr().out.splitlines() if line.startswith("overlay vs scratch:")]
    assert verdicts and verdicts[0].endswith("; smoke run: tiny data, numbers mean nothing")
    assert "seeds for 80 % power" not in verdicts[0] and f"- {verdicts[0]}" in report
    assert main(["report", str(out), "--format", "csv"]) == 0
    table = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert {row["smoke"] for row in table} == {"True"}
    assert main(["report", str(out)]) == 0
    assert f"| {out} (smoke) | overlay |" in capsys.readouterr().out
    assert main(["report", str(out), "--format", "json"]) == 0
    assert all(row["smoke"] is True for row in json.loads(capsys.readouterr().out))


def test_pairing_same_labelled_subset_and_head_init(tiny_recipe, tmp_path):
    """Scratch arms with identical protocols give identical results for the same seed."""
    out = tmp_path / "run"
    arms = "arms={again: {pretrain: {task: none, epochs: 0}, transfer: {frozen_depth: 0}}}"
    assert main(["run", tiny_recipe, "--smoke", "--out", str(out), "--set", arms,
                 "--set", "runtime.deterministic=true"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arms"]["again"]["test_accuracy"] == metrics["arms"]["scratch"]["test_accuracy"]


def test_exported_backbone_loads_in_a_fresh_process(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    assert main(["run", tiny_recipe, "--smoke", "--out", str(out)]) == 0
    info = json.loads((out / "backbone" / "kpretrain.json").read_text())
    assert info["input_shape"] == [None, 16, 16, 1] and info["input_dtype"] == "float32"
    assert "255" in info["scaling"] and info["endpoint"] == "serve"
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf, keras
        loaded = tf.saved_model.load({str(out / 'backbone')!r})
        x = np.random.default_rng(0).random((3, 16, 16, 1)).astype('float32')
        a = loaded.serve(tf.constant(x)).numpy()
        b = keras.saving.load_model({str(out / 'backbone.keras')!r}, safe_mode=True)(x).numpy()
        assert a.shape == (3, {info['feature_dim']}), a.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        print('OK', a.shape)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK (3," in proc.stdout


def test_dry_run_prints_plan_and_writes_nothing(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", tiny_recipe, "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "arm scratch" in text and "arm overlay" in text and "labelled 80" in text
    assert "small_cnn (2,356 parameters) [block1 (7 layers), block2 (7 layers), block3 (7 layers)]" in text
    assert not out.exists()


BAD = [
    (["--set", "pretrain.epoch=2"], "pretrain.epoch"),
    (["--set", "data.batch_size=-3"], "data.batch_size"),
    (["--set", "transfer.frozen_depth=9"], "transfer.frozen_depth"),
    (["--set", "data.labels_per_class=100000"], "labels_per_class"),
    (["--set", "pretrain.task=rotate"], "pretrain.task"),
    (["--set", "data.path=/nonexistent/data.npz"], "/nonexistent/data.npz"),
]


@pytest.mark.parametrize("extra, needle", BAD)
def test_bad_input_exits_2_with_one_line_and_no_run_dir(tiny_recipe, tmp_path, extra, needle):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "kpretrain.cli", "run", tiny_recipe, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert 1 <= len(lines) <= 3 and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_missing_recipe_and_unwritable_out(tmp_path, tiny_recipe):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", tiny_recipe, "--smoke", "--out", str(blocker / "run")]) == 2


@pytest.mark.slow
def test_smoke_run_of_the_default_recipe_on_real_fashion_mnist(tmp_path):
    assert os.path.exists(FASHION), "Fashion-MNIST missing: install Debian's dataset-fashion-mnist (make data)"
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "kpretrain.cli", "run", "recipes/fashion_overlay.yaml", "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["source"].endswith("fashion-mnist") or "fashion" in metrics["data"]["source"]
    assert metrics["data"]["image_shape"] == [28, 28, 1]
    assert list(metrics["arms"]) == ["scratch", "overlay"]
    assert all(len(a["test_accuracy"]) == 3 for a in metrics["arms"].values())
    assert (out / "backbone" / "saved_model.pb").exists()


def test_mixed_precision_and_xla_run_and_export_float32(tiny_recipe, tmp_path, capsys):
    """XLA really on: neither the default op determinism nor an earlier run's (process-wide) may turn it off."""
    import warnings

    import keras
    import tensorflow as tf

    out = tmp_path / "run"
    tf.config.experimental.enable_op_determinism()  # as a deterministic run earlier in this process leaves it
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*jit_compile")  # Keras's fall-back to no XLA
            assert main(["run", tiny_recipe, "--smoke", "--out", str(out), "--set", "seeds=[0]",
                         "--set", "runtime.mixed_precision=true", "--set", "runtime.jit_compile=true"]) == 0
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        assert "runtime: op determinism off because runtime.jit_compile is on" in capsys.readouterr().out
    finally:
        keras.mixed_precision.set_global_policy("float32")
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(0.0 <= a["test_accuracy"][0] <= 1.0 for a in metrics["arms"].values())
    assert json.loads((out / "backbone" / "kpretrain.json").read_text())["input_dtype"] == "float32"


def _free_ports(n: int) -> list[int]:
    import socket

    probes = [socket.socket() for _ in range(n)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def test_multi_worker_run_on_two_workers(tiny_recipe, tmp_path):
    """runtime.distribute: multi_worker over a two-worker TF_CONFIG cluster on 127.0.0.1: both workers train
    the same models (same results), the chief (worker 0) alone writes the run directory."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    out = tmp_path / "run"
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kpretrain.cli", "run", tiny_recipe, "--smoke", "--set", "seeds=[0]",
             "--set", "runtime.distribute=multi_worker", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TF_CONFIG": tf_config, "TMPDIR": str(tmp_path)}))
    try:
        results = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (stdout, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr[-2000:]
        assert "multi_worker over 2 replicas" in stdout
    accuracies = [re.findall(r"(\w+): test acc ([0-9.]+), raw ([0-9.]+)", stdout) for stdout, _ in results]
    assert len(accuracies[0]) == 2 and accuracies[0] == accuracies[1]  # scratch and overlay: same on both workers
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] is True and (out / "backbone" / "saved_model.pb").exists()
    assert "results: in the chief's run directory" in results[1][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.npz", "tiny.yaml"]  # worker 1's files removed


@pytest.mark.parametrize("command", ["run", "show-task", "tune", "lr-find", "export", "report"])
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for needle in ("examples:\n  kpretrain " + command, "exit codes:", "  0    success", "  2    bad input"):
        assert needle in text, (command, needle)
    trains = command in ("run", "tune", "lr-find")
    assert ("  1    failure while training" in text) == trains  # only what applies to this command
    assert ("KPRETRAIN_DATA_DIR" in text) == (command not in ("export", "report"))
    assert ("TF_CONFIG" in text) == (command == "run")
    assert ("KERASTUNER_TUNER_ID" in text) == (command == "tune")
    assert ("resumes" in text) == (command in ("run", "tune"))
    options = [line for line in text.splitlines() if line.startswith("  -")]
    assert options and all(len(line.split(None, 1)) == 2 or line.strip().startswith("--") for line in options)


def test_bare_kpretrain_prints_its_help(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: kpretrain") and "kpretrain <command> --help" in text and "--smoke" in text


def test_top_level_help_lists_every_command_with_a_sentence(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("run", "show-task", "tune", "lr-find", "export", "report"):
        assert re.search(rf"^    {command}\s", text, re.M), command
    assert "kpretrain <command> --help" in text


def test_progress_is_a_live_line_on_a_terminal_and_plain_lines_otherwise():
    import io as stdio

    from kpretrain.experiment.progress import Progress

    class Terminal(stdio.StringIO):
        def isatty(self):
            return True

    for stream, live in ((Terminal(), True), (stdio.StringIO(), False)):
        progress = Progress(stream)
        assert progress.live == live
        progress.add_units(3)
        progress.unit(0, "overlay", "pretrain")
        progress.step("pretrain", 1, 4, 9, 20)
        progress.log("seed 0 | pretrain overlay: done")
        progress.unit_done()
        progress.unit(0, "overlay", "finetune")
        progress.phase("finetune done, evaluating")
        progress.close()
        text = stream.getvalue()
        assert "seed 0 | pretrain overlay: done\n" in text
        if live:  # a display redrawn in place (tests/test_progress.py renders it as a terminal would): unit i/N,
            # elapsed, ETA once a unit is done, the unit, the stage's position
            assert "unit 1/3" in text and "seed 0 | overlay | pretrain" in text and "about 0:00:00 left" in text
            assert "pretrain epoch 2/4" in text and "batch 10/20" in text
        else:
            assert text.splitlines() == ["[unit 1/3] seed 0 | overlay | pretrain: started",
                                         "seed 0 | pretrain overlay: done",
                                         "[unit 2/3] seed 0 | overlay | finetune: started"]
    quiet = stdio.StringIO()
    progress = Progress(quiet, quiet=True)
    progress.add_units(1)
    progress.unit(0, "scratch", "finetune")
    progress.log("hidden")
    assert quiet.getvalue() == ""


def test_quiet_run_prints_only_the_results(tiny_recipe, tmp_path, capsys):
    assert main(["run", tiny_recipe, "--smoke", "-q", "--set", "seeds=[0]", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| arm |") and "results: " in out
    assert "[unit" not in out and "seed 0 |" not in out and "recipe tiny" not in out
