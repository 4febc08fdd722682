"""The notebook-friendly API: a short repr, to_pandas, history, quiet, callbacks told their context, and
runtime.loggers (csv and tensorboard for real, mlflow and wandb as stand-in modules), all read from one tiny run."""

import contextlib
import io
import json
import os
import re
import sys
import tempfile
import types
from pathlib import Path

import keras
import pytest

import kpretrain

RECIPE = str(Path(__file__).resolve().parent.parent / "recipes" / "fashion_overlay.yaml")
UNITS = [(0, "scratch", "finetune"), (0, "overlay", "pretrain"), (0, "overlay", "finetune"),
         (1, "scratch", "finetune"), (1, "overlay", "pretrain"), (1, "overlay", "finetune")]


class Recorder(keras.callbacks.Callback):
    """Records the context it was given (set_context) and the one it reads when a stage begins."""

    def __init__(self):
        super().__init__()
        self.given, self.read = [], []

    def set_context(self, context):
        self.given.append(context)

    def on_train_begin(self, logs=None):
        self.read.append(self.kpretrain_context)


def fake_mlflow():
    mlflow = types.ModuleType("mlflow")
    mlflow.runs, mlflow.active = [], []

    def start_run(run_name=None, nested=False, tags=None):
        run = {"name": run_name, "nested": nested, "tags": tags, "params": {}, "metrics": {}, "epochs": 0}
        mlflow.runs.append(run)
        mlflow.active.append(run)
        return run

    def end_run(status="FINISHED"):
        mlflow.active.pop()["status"] = status

    class MlflowCallback(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.run = mlflow.active[-1]

        def on_epoch_end(self, epoch, logs=None):
            self.run["epochs"] += 1

    mlflow.start_run, mlflow.end_run = start_run, end_run
    mlflow.active_run = lambda: mlflow.active[-1] if mlflow.active else None
    mlflow.log_params = lambda params: mlflow.active[-1]["params"].update(params)
    mlflow.log_metrics = lambda metrics: mlflow.active[-1]["metrics"].update(metrics)
    mlflow.keras = types.ModuleType("mlflow.keras")
    mlflow.keras.MlflowCallback = MlflowCallback
    return {"mlflow": mlflow, "mlflow.keras": mlflow.keras}


def fake_wandb():
    wandb = types.ModuleType("wandb")
    wandb.runs, wandb.run = [], None

    class Run:
        def __init__(self, **settings):
            self.settings, self.summary, self.epochs, self.exit_code = settings, {}, 0, None

        def finish(self, exit_code=0):
            self.exit_code, wandb.run = exit_code, None

    def init(**settings):
        wandb.run = Run(**settings)
        wandb.runs.append(wandb.run)
        return wandb.run

    class WandbMetricsLogger(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.run = wandb.run

        def on_epoch_end(self, epoch, logs=None):
            self.run.epochs += 1

    wandb.init = init
    integration = types.ModuleType("wandb.integration")
    integration.keras = types.ModuleType("wandb.integration.keras")
    integration.keras.WandbMetricsLogger = WandbMetricsLogger
    wandb.integration = integration
    return {"wandb": wandb, "wandb.integration": integration, "wandb.integration.keras": integration.keras}


@contextlib.contextmanager
def captured_fd(fd: int):
    """What is written to file descriptor `fd` (1 or 2) during the block, Python's sys.stdout/stderr included."""
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.flush()
    saved, sink = os.dup(fd), tempfile.TemporaryFile()
    text = io.StringIO()
    os.dup2(sink.fileno(), fd)
    redirect = contextlib.redirect_stdout if fd == 1 else contextlib.redirect_stderr
    out = {}
    try:
        with redirect(text):
            yield out
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        sink.seek(0)
        out["text"] = text.getvalue() + sink.read().decode(errors="replace")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One smoke run, 2 seeds, quiet, with a recording callback and every logger (tensorboard by its deprecated
    alias); mlflow and wandb are stand-ins that record what kpretrain asked of them."""
    out = str(tmp_path_factory.mktemp("notebook") / "run")
    recorder, fakes = Recorder(), {**fake_mlflow(), **fake_wandb()}
    with pytest.MonkeyPatch.context() as patch:
        for name, module in fakes.items():
            patch.setitem(sys.modules, name, module)
        with captured_fd(1) as stdout, captured_fd(2) as stderr:
            result = kpretrain.run(RECIPE, smoke=True, out=out, quiet=True, callbacks=[recorder],
                                   overrides={"seeds": [0, 1], "runtime.tensorboard": True,
                                              "runtime.loggers": ["csv", "mlflow", "wandb"]})
    return types.SimpleNamespace(result=result, out=out, recorder=recorder, mlflow=fakes["mlflow"],
                                 wandb=fakes["wandb"], stdout=stdout["text"], stderr=stderr["text"])


def test_quiet_prints_nothing_and_tensorflow_warnings_are_silenced(run):
    assert run.stdout == ""
    assert "retracing" not in run.stderr and "oneDNN" not in run.stderr


def test_the_repr_is_a_short_rounded_table(run):
    result, metrics = run.result, run.result.metrics
    text = repr(result)
    lines = text.splitlines()
    assert len(lines) == 4 and "smoke run" in lines[0] and lines[1].split()[:4] == ["arm", "n", "mean", "sd"]
    overlay = next(line for line in lines if line.startswith("overlay"))
    stats = metrics["arms"]["overlay"]["statistics"]
    assert f"{stats['test_accuracy']['mean']:.4f}" in overlay and "scratch" in overlay
    assert f"{stats['vs_baseline']['mean']:+.4f}" in overlay
    assert not re.search(r"\d\.\d{5,}", text) and len(text) < 1000
    arm = repr(result.arms["overlay"])
    assert arm.startswith("ArmResult('overlay', n=2") and not re.search(r"\d\.\d{5,}", arm)
    assert result.arms["overlay"].mean == stats["test_accuracy"]["mean"]  # the field keeps full precision
    assert result._repr_html_().startswith("<table><caption>RunResult") and "<td>overlay</td>" in result._repr_html_()
    assert "| arm | n | mean |" in result._repr_markdown_()
    compared = repr(kpretrain.compare([run.out]))
    assert compared.startswith("Comparison of 1 run:") and len(compared.splitlines()) == 4
    searched = kpretrain.TuneResult("tuner_runs/x", {"finetune.optimizer.learning_rate": 1.23456e-05,
                                                      "transfer.frozen_depth": 1}, 0.8123456, {},
                                    [{"status": "COMPLETED"}, {"status": "FAILED"}], result)
    assert repr(searched).splitlines()[:3] == [
        "TuneResult tuner_runs/x: best validation accuracy 0.8123 (2 trials, 1 completed)",
        "  finetune.optimizer.learning_rate = 1.235e-05", "  transfer.frozen_depth = 1"]
    assert repr(searched).endswith(text)


def test_to_pandas_per_seed_and_per_arm(run, monkeypatch):
    metrics = run.result.metrics["arms"]
    seeds = run.result.to_pandas()
    assert list(seeds[["arm", "seed"]].itertuples(index=False, name=None)) == [
        ("scratch", 0), ("scratch", 1), ("overlay", 0), ("overlay", 1)]
    overlay = seeds[seeds.arm == "overlay"]
    assert list(overlay.test_accuracy) == metrics["overlay"]["test_accuracy"]
    assert list(overlay.diff_vs_baseline) == [a - b for a, b in zip(metrics["overlay"]["test_accuracy"],
                                                                    metrics["scratch"]["test_accuracy"])]
    assert not {"compute_baseline", "diff_vs_compute"} & set(seeds.columns)  # only with scratch_compute
    arms = run.result.to_pandas(per="arm")
    assert list(arms.arm) == ["scratch", "overlay"]
    assert arms.set_index("arm").test_accuracy_mean["overlay"] == run.result.arms["overlay"].mean
    monkeypatch.setitem(sys.modules, "pandas", None)  # pandas not installed
    with pytest.raises(ImportError, match=r"pip install 'kpretrain\[notebook\]'"):
        run.result.to_pandas()


def test_history_reads_what_the_units_recorded(run):
    units = Path(run.out) / "units"
    finetune = json.loads((units / "seed1.overlay.finetune.json").read_text())["history"]
    history = run.result.history("overlay", 1)
    assert history == {"epoch": list(range(1, len(finetune["loss"]) + 1)), **finetune}
    pretext = json.loads((units / "seed0.overlay.pretrain.json").read_text())["history"]
    assert run.result.history("overlay", 0, stage="pretrain") == pretext
    with pytest.raises(kpretrain.InputError, match="does not pre-train"):
        run.result.history("scratch", 0, stage="pretrain")
    with pytest.raises(kpretrain.InputError, match="unknown arm 'natural'"):
        run.result.history("natural", 0)


def test_callbacks_are_told_the_stage_arm_and_seed(run):
    seen = [(c.seed, c.arm, c.stage) for c in run.recorder.given]
    assert seen == UNITS and run.recorder.read == run.recorder.given
    pretraining = run.recorder.given[1]
    assert pretraining.unit == "seed0.overlay.pretrain" and pretraining.arms == ("overlay",)
    assert all(c.run_dir == run.out for c in run.recorder.given)


def test_csv_and_tensorboard_log_every_unit_and_stage(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    for seed, arm, stage in UNITS:
        rows = (Path(run.out) / "logs" / str(seed) / arm / f"{stage}.csv").read_text().splitlines()
        assert rows[0].startswith("epoch,") and len(rows) == 1 + len(run.result.history(arm, seed, stage)["epoch"])
        assert (Path(run.out) / "tb" / str(seed) / arm / stage / "train").is_dir()
    board = EventAccumulator(os.path.join(run.out, "tb", "1", "overlay", "finetune"), size_guidance={"tensors": 0})
    board.Reload()
    start = board.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG]
    hparams = metadata.parse_session_start_info_plugin_data(start).hparams
    assert hparams["pretrain.task"].string_value == "overlay" and hparams["kpretrain.seed"].number_value == 1
    import tensorflow as tf

    tested = tf.make_ndarray(board.Tensors("test_accuracy")[0].tensor_proto)
    assert float(tested) == pytest.approx(run.result.metrics["arms"]["overlay"]["test_accuracy"][1])


def test_mlflow_and_wandb_get_one_run_per_unit_and_stage(run):
    test_accuracy = run.result.metrics["arms"]["overlay"]["test_accuracy"][0]
    names = [f"{arm}/seed{seed}/{stage}" for seed, arm, stage in UNITS]
    assert [r["name"] for r in run.mlflow.runs] == names
    assert all(r["status"] == "FINISHED" and r["epochs"] > 0 and not r["nested"] for r in run.mlflow.runs)
    tags, params, logged = run.mlflow.runs[2]["tags"], run.mlflow.runs[2]["params"], run.mlflow.runs[2]["metrics"]
    assert (tags["kpretrain.stage"], tags["kpretrain.arm"], tags["kpretrain.seed"]) == ("finetune", "overlay", "0")
    assert params["pretrain.task"] == "overlay" and logged["test_accuracy"] == test_accuracy
    assert [r.settings["name"] for r in run.wandb.runs] == names
    assert [r.settings["group"] for r in run.wandb.runs] == [arm for _, arm, _ in UNITS]
    assert all(r.exit_code == 0 and r.epochs > 0 for r in run.wandb.runs)
    assert run.wandb.runs[2].settings["job_type"] == "finetune"
    assert run.wandb.runs[2].summary["test_accuracy"] == test_accuracy


def test_loggers_are_checked_before_anything_trains(tmp_path, monkeypatch):
    from kpretrain.recipe import recipe_from_dict

    with pytest.raises(kpretrain.RecipeError, match=r"runtime.loggers': 'mlfow' is not allowed; allowed: csv, "
                                                     r"tensorboard, mlflow, wandb; did you mean 'mlflow'"):
        recipe_from_dict({"name": "x", "runtime": {"loggers": ["mlfow"]}})
    assert recipe_from_dict({"name": "x", "runtime": {"tensorboard": True, "loggers": ["csv", "tensorboard"]}}
                            ).runtime.active_loggers == ("csv", "tensorboard")
    for name in ("mlflow", "wandb"):
        monkeypatch.setitem(sys.modules, name, None)  # not installed
        with pytest.raises(kpretrain.RecipeError, match=rf"runtime.loggers': {name} is not installed; "
                                                        rf"pip install {name} \(or 'kpretrain\[{name}\]'\)"):
            kpretrain.run(RECIPE, smoke=True, out=str(tmp_path / name), quiet=True,
                          overrides={"runtime.loggers": ["csv", name]})
        assert not (tmp_path / name).exists()
