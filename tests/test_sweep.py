"""`sweep:`: one sub-directory per grid point, pre-training shared across points, one table, the label-efficiency plot."""

import csv
import json
import os

import pytest
import yaml

from kpretrain.errors import RecipeError
from kpretrain.experiment import point_dir, smoke_sweep
from kpretrain.recipe import recipe_from_dict
from tests.helpers import tiny_npz, tiny_recipe_dict


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    recipe = tiny_recipe_dict(tiny_npz(d / "tiny.npz"))
    recipe["finetune"] = {"epochs": 1}
    recipe["pretrain"]["epochs"] = 2  # distributed_run kills a worker after a pre-training's first epoch
    recipe["sweep"] = {"data.labels_per_class": [5, 20]}
    path = d / "sweep.yaml"
    path.write_text(yaml.safe_dump(recipe))
    from kpretrain.cli import main

    out = d / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    return out


def test_a_sweep_runs_every_point_into_its_directory_and_pretrains_once_per_seed(sweep_run):
    metrics = json.loads((sweep_run / "metrics.json").read_text())
    assert metrics["complete"] and [p["dir"] for p in metrics["points"]] == [
        "data.labels_per_class=5", "data.labels_per_class=20"]
    for point, labelled in zip(metrics["points"], (5 * 4, 20 * 4)):
        assert point["data"]["labelled"] == labelled and set(point["arms"]) == {"scratch", "overlay"}
        assert len(point["arms"]["overlay"]["test_accuracy"]) == 2  # two seeds
        assert json.loads((sweep_run / point["dir"] / "metrics.json").read_text())["arms"] == point["arms"]
    # the second point reuses each seed's pre-training of the first (labels_per_class does not change it)
    first, second = (p["pretraining"] for p in metrics["points"])
    assert [p.get("reused_from") for p in first] == [None, None]
    assert [p["reused_from"] for p in second] == [f"data.labels_per_class=5/units/seed{s}.overlay.pretrain.json"
                                                  for s in (0, 1)]
    assert [p["history"] for p in first] == [p["history"] for p in second] and metrics["pretraining_reused"] == 2
    assert (sweep_run / "label_efficiency.png").stat().st_size > 0
    report = (sweep_run / "report.md").read_text()
    assert "| point | arm |" in report and "| data.labels_per_class=20 | overlay |" in report
    assert "Holm-adjusted over every comparison of the sweep" in report


def test_each_run_has_its_confusion_matrices_plots_and_most_confused_pairs(sweep_run):
    from kpretrain.report.confusion import mean_confusion, most_confused

    point = sweep_run / "data.labels_per_class=5"
    metrics = json.loads((point / "metrics.json").read_text())
    names = metrics["data"]["class_names"]
    report = (point / "report.md").read_text()
    for arm, entry in metrics["arms"].items():
        assert len(entry["confusion"]) == 2  # one per seed, each over the whole test set
        assert all(sum(map(sum, m)) == metrics["data"]["test"] for m in entry["confusion"])
        rates = mean_confusion(entry["confusion"])
        assert rates.sum(axis=1) == pytest.approx([1.0] * len(names))
        assert (point / f"confusion_{arm}.png").read_bytes()[:4] == b"\x89PNG"
        pairs = most_confused(entry["confusion"], names)
        assert f"- {arm}: {pairs[0][0]} / {pairs[0][1]} {100 * pairs[0][2]:.1f} %" in report
    m = [[8, 2, 0], [4, 6, 0], [0, 1, 9]]  # classes a, b confused 6 times in 20 images; b, c once in 20
    assert most_confused([m, m], ["a", "b", "c"], k=2) == [("a", "b", 0.3), ("b", "c", 0.05)]


def test_sweep_comparisons_are_holm_adjusted_across_points(sweep_run):
    from kpretrain.report.tables import summary_rows

    metrics = json.loads((sweep_run / "metrics.json").read_text())
    rows = [r for r in summary_rows(metrics) if "diff_mean" in r]
    assert [r["point"] for r in rows] == ["data.labels_per_class=5", "data.labels_per_class=20"]
    tested = [r for r in rows if r["p"] is not None]
    assert all(r["comparisons"] == len(tested) for r in rows)
    if len(tested) == 2:
        assert max(r["p_holm"] for r in tested) >= max(r["p"] for r in tested)
        assert min(r["p_holm"] for r in tested) == pytest.approx(min(1.0, 2 * min(r["p"] for r in tested)))


def test_each_point_carries_the_sweeps_holm_adjustment_as_every_reader_does(sweep_run):
    from kpretrain.api import RunResult
    from kpretrain.report.statistics import holm
    from kpretrain.report.tables import summary_rows

    metrics = json.loads((sweep_run / "metrics.json").read_text())
    result = RunResult(str(sweep_run), metrics)
    api = {p["dir"]: arms for p, (_, arms) in zip(metrics["points"], result.points)}
    compared = [(p["dir"], arm, entry["statistics"]["vs_baseline"]["p"]) for p in metrics["points"]
                for arm, entry in p["arms"].items() if "vs_baseline" in entry["statistics"]]
    expected = holm([p for _, _, p in compared])
    tested = sum(p is not None for p in expected)
    assert tested == 2, "both points' comparisons have a p-value: one family of 2 differs from two families of 1"
    for (point, arm, _), p_holm in zip(compared, expected):
        stored = json.loads((sweep_run / point / "metrics.json").read_text())
        vs = stored["arms"][arm]["statistics"]["vs_baseline"]
        assert vs["p_holm"] == pytest.approx(p_holm) and vs["comparisons"] == tested
        assert stored["arms"] == next(p["arms"] for p in metrics["points"] if p["dir"] == point)
        assert stored["holm"] == metrics["holm"] == {"family": "sweep", "comparisons": tested}
        assert api[point][arm].difference["p_holm"] == pytest.approx(p_holm)
        assert [r["p_holm"] for r in summary_rows(stored) if r["arm"] == arm] == [pytest.approx(p_holm)]
        line = next(v for v in result.verdicts if v.startswith(f"{point}: {arm} vs "))
        report = (sweep_run / point / "report.md").read_text()
        assert f"- {line.removeprefix(f'{point}: ')}\n" in report and f"Holm-adjusted p = " in line
        assert f"Holm-adjusted over every comparison of the sweep ({tested} comparisons" in report


def test_sweep_keys_are_validated_and_smoke_keeps_points_distinct(tmp_path):
    base = tiny_recipe_dict(str(tmp_path / "x.npz"))
    for sweep, needle in (({"seeds": [[0], [1]]}, "'sweep.seeds': cannot be swept"),
                          ({"data.labels_per_class": []}, "non-empty list of distinct values"),
                          ({"finetune.epochs": [1, 0]}, "at sweep point finetune.epochs=0")):
        with pytest.raises(RecipeError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            recipe_from_dict({**base, "sweep": sweep})
    points = recipe_from_dict({**base, "sweep": {"data.labels_per_class": [10, 100], "finetune.epochs": [1, 2]}})
    assert [at for at, _ in points.sweep_points()] == [
        {"data.labels_per_class": 10, "finetune.epochs": 1}, {"data.labels_per_class": 10, "finetune.epochs": 2},
        {"data.labels_per_class": 100, "finetune.epochs": 1}, {"data.labels_per_class": 100, "finetune.epochs": 2}]
    assert points.sweep_points()[3][1].finetune.epochs == 2 and points.sweep_points()[3][1].data.labels_per_class == 100
    assert point_dir({"data.labels_per_class": None, "pretrain.task": "rotation"}) == (
        "data.labels_per_class=null,pretrain.task=rotation")
    assert smoke_sweep({"data.labels_per_class": [1000, 10, 100], "x": [1]}) == {
        "data.labels_per_class": [10, 3, 7], "x": [1]}
    assert smoke_sweep({"data.labels_per_class": [None, 10]})["data.labels_per_class"] == [10, 5]
    assert not os.listdir(tmp_path)


def test_tune_refuses_a_sweep_and_says_how_to_tune_one_point(tmp_path, capsys):
    from kpretrain.cli import main

    recipe = tiny_recipe_dict(str(tmp_path / "x.npz"))
    recipe.update(sweep={"data.labels_per_class": [10, 100]}, tune={"space": {"transfer.frozen_depth": {"int": [0, 1]}}})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["tune", str(path), "--dir", str(tmp_path / "runs")]) == 2
    assert "not a sweep; tune one of its points, e.g. --set sweep=null --set data.labels_per_class=10" in (
        capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_report_combines_run_directories_with_their_statistics(sweep_run, tmp_path, capsys):
    from kpretrain.cli import main

    a, b = (sweep_run / name for name in ("data.labels_per_class=5", "data.labels_per_class=20"))
    capsys.readouterr()
    assert main(["report", str(a), str(b), "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [(r["run"], r["arm"]) for r in rows] == [(str(a), "scratch"), (str(a), "overlay"),
                                                    (str(b), "scratch"), (str(b), "overlay")]
    assert rows[1]["baseline"] == "scratch" and float(rows[1]["diff_ci_low"]) <= float(rows[1]["diff_mean"])
    assert {"test_accuracy_ci_low", "diff_ci_high", "p", "p_holm", "seeds_needed"} <= set(rows[0])
    assert main(["report", str(a), str(b), "--plot", str(tmp_path / "runs.png")]) == 0
    assert (tmp_path / "runs.png").stat().st_size > 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| run | arm |") and "[95 % CI]" in table[0] and len(table) == 6
    assert main(["report", str(sweep_run), "--format", "json"]) == 0  # a sweep: one row per point and arm
    assert [r["point"] for r in json.loads(capsys.readouterr().out)] == [
        "data.labels_per_class=5"] * 2 + ["data.labels_per_class=20"] * 2
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_a_sweep_over_exponent_floats_expands_names_its_points_and_validates(tmp_path, capsys):
    """`finetune.optimizer.learning_rate: [1e-5, 1e-3]`, as a user writes it in YAML or passes it from Python."""
    from kpretrain.cli import main
    from kpretrain.recipe import load_recipe

    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz"))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(recipe) + "sweep: {finetune.optimizer.learning_rate: [1e-5, 1e-3]}\n")
    key = "finetune.optimizer.learning_rate"
    for loaded in (load_recipe(str(path)), recipe_from_dict({**recipe, "sweep": {key: [1e-5, 1e-3]}})):
        points = loaded.sweep_points()
        assert [at for at, _ in points] == [{key: 1e-05}, {key: 1e-3}]
        assert [point.finetune.optimizer.learning_rate for _, point in points] == [1e-05, 1e-3]
        assert [point_dir(at) for at, _ in points] == [f"{key}=1.0e-05", f"{key}=0.001"]
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "finetune.optimizer.learning_rate=1.0e-05" in capsys.readouterr().out


# ---- the same sweep on two Dask worker processes ------------------------------------------------------------------
def _without_timings(tree):
    from benchmarks.invariant import stable  # what varies between identical runs: timings, wall times, paths

    return stable(tree)


def _log_lines(run_dir, word):
    """`(unit, pid)` of every `unit <key> <word> (pid <pid>...` line of the workers' logs."""
    import re

    found = []
    for log in (run_dir / "logs" / "workers").glob("*.log"):
        for m in re.finditer(rf"unit (\S+) {word} \(pid (\d+)", log.read_text(errors="replace")):
            found.append((m.group(1), int(m.group(2))))
    return found


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    """The sweep of `sweep_run` on a local cluster of 2 worker processes, one worker SIGKILLed in a pre-training
    once its first epoch is backed up; returns (run directory, the driver's output, (killed unit, killed pid))."""
    import signal
    import subprocess
    import sys
    import time

    d = tmp_path_factory.mktemp("distributed")
    recipe = tiny_recipe_dict(tiny_npz(d / "tiny.npz"))
    recipe["finetune"] = {"epochs": 1}
    recipe["pretrain"]["epochs"] = 2
    recipe["sweep"] = {"data.labels_per_class": [5, 20]}
    (d / "sweep.yaml").write_text(yaml.safe_dump(recipe))
    out = d / "run"
    proc = subprocess.Popen([sys.executable, "-m", "kpretrain.cli", "run", str(d / "sweep.yaml"), "--out", str(out),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        finished = {unit for unit, _ in _log_lines(out, "done")}
        backed_up = [(unit, pid) for unit, pid in _log_lines(out, "started") if unit.endswith(".pretrain")
                     and unit not in finished and os.path.exists(os.path.join(
                         os.path.dirname(unit), "units", f"{os.path.basename(unit)}.backup", "latest",
                         "training_metadata.json"))]
        if backed_up:
            killed = backed_up[0]
            os.kill(killed[1], signal.SIGKILL)
        time.sleep(0.02)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert killed is not None, "no pre-training was seen backed up after its first epoch"
    return out, output, killed


def test_a_sweep_on_two_dask_workers_gives_the_local_numbers_even_when_a_worker_is_killed(sweep_run, distributed_run):
    out, output, (killed_unit, killed_pid) = distributed_run
    local, distributed = (json.loads((d / "metrics.json").read_text()) for d in (sweep_run, out))
    assert distributed["complete"] and len(distributed["points"]) == 2
    for here, there in zip(local["points"], distributed["points"]):
        assert _without_timings(there["arms"]) == _without_timings(here["arms"])
        assert _without_timings(there["pretraining"]) == _without_timings(here["pretraining"])
    assert distributed["pretraining_reused"] == local["pretraining_reused"] == 2
    # the killed unit ran again on a live worker, from its stage's backup; every unit finished exactly once
    logs = "".join(log.read_text(errors="replace") for log in (out / "logs" / "workers").glob("*.log"))
    assert "pre-training resumed from its backup after epoch 1" in logs
    done = _log_lines(out, "done")
    assert sorted(unit for unit, _ in done) == sorted(set(unit for unit, _ in done)) and len(done) == 12
    assert [pid for unit, pid in done if unit == killed_unit] != [killed_pid]
    assert [unit for unit, _ in _log_lines(out, "started")].count(killed_unit) == 2
    records = sorted(p.name for p in out.glob("*/units/*.json"))
    assert len(records) == 12 and records == sorted(
        p.name for p in sweep_run.glob("*/units/*.json"))
    assert "executor: dask, 12 units on a local Dask cluster of 2 worker processes" in output
    assert "[12/12]" in output and "oneDNN" not in output  # the workers' own lines went to their logs
    # the driver wrote the report and the plot, as a local run does
    assert (out / "report.md").read_text().count("| data.labels_per_class=") == 4
    assert (out / "label_efficiency.png").stat().st_size > 0


def test_the_unit_graph_waits_for_pretraining_and_trains_a_shared_one_once(sweep_run, tmp_path):
    from kpretrain.experiment import make_run
    from kpretrain.experiment.executor import run_points, unit_tasks
    from kpretrain.recipe import load_recipe

    run = make_run(load_recipe(str(sweep_run / "recipe.yaml")))
    run.prepare()
    tasks = unit_tasks(run_points(run, str(tmp_path)), str(tmp_path / "logs"))
    by_key = {os.path.relpath(t.key, tmp_path): t for t in tasks}
    first, second = "data.labels_per_class=5", "data.labels_per_class=20"
    assert len(tasks) == 12
    for seed in (0, 1):
        copy = by_key[f"{second}/seed{seed}.overlay.pretrain"]
        assert [os.path.relpath(k, tmp_path) for k in copy.after] == [f"{first}/seed{seed}.overlay.pretrain"]
        assert copy.origin[0].endswith(f"{first}/units/seed{seed}.overlay.pretrain.json")
        for point in (first, second):
            assert [os.path.relpath(k, tmp_path) for k in by_key[f"{point}/seed{seed}.overlay.finetune"].after] == [
                f"{point}/seed{seed}.overlay.pretrain"]
            assert by_key[f"{point}/seed{seed}.scratch.finetune"].after == ()
    position = {t.key: i for i, t in enumerate(tasks)}
    assert all(position[k] < position[t.key] for t in tasks for k in t.after)  # submitted after what they wait for
    # what a run directory holds already is not run again
    assert unit_tasks(run_points(run, str(sweep_run)), str(tmp_path / "logs")) == []
    # a relative run directory is made absolute once, for the workers (their working directory is not ours)
    relative = os.path.relpath(tmp_path)
    assert [d for d, _ in run_points(run, relative)] == [str(tmp_path / first), str(tmp_path / second)]


def test_workers_and_address_are_checked_with_one_line(tmp_path, capsys):
    from kpretrain.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz"))))
    for extra, expected in ((["--workers", "0"], "--workers 0: give at least 1 worker process"),
                            (["--workers", "2", "--address", "tcp://127.0.0.1:9"], "give one of them"),
                            (["--address", "tcp://127.0.0.1:9"], "--address 'tcp://127.0.0.1:9': no Dask scheduler "
                                                                 "answers there")):
        assert main(["run", str(path), "--out", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "out").exists()  # nothing half-written
    import keras

    import kpretrain
    from kpretrain.errors import InputError

    with pytest.raises(InputError, match="callbacks= run in this process, but workers="):
        kpretrain.run(str(path), out=str(tmp_path / "api"), workers=2, callbacks=[keras.callbacks.Callback()])
    assert not (tmp_path / "api").exists()
    with pytest.raises(RecipeError, match="runtime.executor"):
        recipe_from_dict({**tiny_recipe_dict("x.npz"), "runtime": {"executor": "dask", "distribute": "multi_worker"}})


def test_local_workers_get_a_gpu_each_and_a_share_of_the_inter_op_threads():
    from kpretrain.experiment.dask_executor import worker_environments

    envs = worker_environments(3, ["0", "1"], 12, "/runs/x/logs/workers")
    assert [e.get("CUDA_VISIBLE_DEVICES") for e in envs] == ["0", "1", "0"]
    assert all(e["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for e in envs)  # 3 workers share 2 GPUs
    assert [e["KPRETRAIN_WORKER_THREADS"] for e in envs] == ["4"] * 3
    assert envs[2]["KPRETRAIN_WORKER_LOG"] == "/runs/x/logs/workers/worker-2.log"
    two = worker_environments(None, ["3", "5"], 8)  # one worker per GPU by default, each its own
    assert [e["CUDA_VISIBLE_DEVICES"] for e in two] == ["3", "5"] and "TF_FORCE_GPU_ALLOW_GROWTH" not in two[0]
    cpu = worker_environments(None, [], 2)  # no GPU: one worker per two cores
    assert len(cpu) == 1 and "CUDA_VISIBLE_DEVICES" not in cpu[0] and cpu[0]["KPRETRAIN_WORKER_THREADS"] == "2"


def test_the_dry_run_line_names_the_gpus_the_workers_will_get(monkeypatch):
    """`--dry-run` describes the cluster before it starts: with the GPUs this process sees, as the run will."""
    from kpretrain.experiment import dask_executor

    monkeypatch.setattr(dask_executor, "visible_gpus", lambda: ["0", "1"])
    assert (dask_executor.DaskExecutor(workers=3).describe()
            == "a local Dask cluster of 3 worker processes (GPU 0, 1, 0 in turn)")
    assert dask_executor.DaskExecutor().describe() == "a local Dask cluster of 2 worker processes (GPU 0, 1 in turn)"
    monkeypatch.setattr(dask_executor, "visible_gpus", lambda: [])
    monkeypatch.setattr(dask_executor.os, "cpu_count", lambda: 4)
    assert (dask_executor.DaskExecutor().describe()
            == "a local Dask cluster of 2 worker processes (2 inter-op CPU threads each)")


def test_runtime_threads_sizes_the_intra_op_pool_of_the_run(tmp_path):
    """`runtime.threads` is applied before TensorFlow's first op (the command line) and recorded; a process whose
    TensorFlow already runs with another pool is told so in one line."""
    import subprocess
    import sys

    from kpretrain.errors import InputError
    from kpretrain.runtime_logs import use_threads

    path = tmp_path / "r.yaml"
    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz"))
    recipe.update(seeds=[0], runtime={"threads": 1})
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.run([sys.executable, "-m", "kpretrain.cli", "run", str(path), "--smoke", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 intra-op thread per process (runtime.threads)" in proc.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["environment"]["intra_op_threads"] == 1
    import tensorflow as tf

    tf.constant(0)  # this test process: TensorFlow runs with its default pool
    with pytest.raises(InputError, match="recipe key 'runtime.threads': 3, but TensorFlow already runs"):
        use_threads(3)


def test_a_run_directory_the_workers_cannot_write_is_refused_in_one_line(tmp_path):
    from kpretrain.errors import InputError
    from kpretrain.experiment.dask_executor import DaskExecutor

    with DaskExecutor(workers=1) as executor:
        executor.require_shared(str(tmp_path))  # this machine's workers see it
        with pytest.raises(InputError, match=r"1 of 1 Dask workers cannot write there .*storage every worker sees"):
            executor.require_shared(str(tmp_path / "elsewhere"))
