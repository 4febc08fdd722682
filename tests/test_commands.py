"""The commands' library functions, as the Python API exposes them: `kpretrain.lr_find`, `kpretrain.show_task` and
`kpretrain.compare` (`kpretrain lr-find`, `show-task`, `report`), against what the files and the command line say;
and the one failure line of `run`, `lr-find` and `tune`."""

import dataclasses
import json

import pytest

import kpretrain
from kpretrain.cli import main
from kpretrain.recipe import load_recipe


def test_lr_find_returns_what_lr_find_json_records(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "lr"
    found = kpretrain.lr_find(tiny_recipe, smoke=True, steps=12, suggestion="valley", out=str(out))
    written = json.loads((out / "lr_find.json").read_text())
    assert isinstance(found, kpretrain.LRFindRun)
    assert (found.recipe, found.arm, found.stage, found.seed, found.out_dir) == (
        written["recipe"], written["arm"], written["stage"], written["seed"], str(out)) == (
        "tiny", "overlay", "finetune", 0, str(out))
    assert dataclasses.asdict(found.settings) == written["settings"]
    assert (found.settings.steps, found.settings.suggestion) == (12, "valley")
    recorded = ("suggested_lr", "method", "suggestions", "stopped", "curve")
    assert found.result.record() == {k: written[k] for k in recorded}
    assert found.suggested_lr == written["suggestions"]["valley"] and found.result.method == "valley"
    assert 3 <= len(found.result.learning_rates) <= 12
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert ("lr-find tiny: arm overlay, stage finetune, seed 0: 12 steps from 1e-07 to 10 "
            "(after the arm's pre-training)") in capsys.readouterr().out
    with pytest.raises(kpretrain.RecipeError, match="arm 'scratch' has no pre-training"):
        kpretrain.lr_find(tiny_recipe, stage="pretrain", arm="scratch", smoke=True, steps=5, out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_lr_find_checks_its_arguments_before_tensorflow_runs(tiny_recipe):
    from kpretrain.lr_range import plan_lr_find

    recipe = load_recipe(tiny_recipe)
    assert plan_lr_find(recipe).settings.steps == 200 and plan_lr_find(recipe, smoke=True).settings.steps == 50
    assert plan_lr_find(recipe, smoke=True, steps=80).settings.steps == 80  # given steps are kept under smoke
    assert plan_lr_find(recipe, arm="scratch", stage="pretrain").arm == "scratch"  # checked when it runs
    assert plan_lr_find(recipe).out.startswith("runs/tiny-lr-find/")
    for kwargs, message in [({"arm": "nope"}, "--arm 'nope': not an arm of recipe tiny"),
                            ({"stage": "train"}, "stage 'train': expected one of pretrain, finetune"),
                            ({"suggestion": "best"}, "suggestion 'best': expected one of steepest"),
                            ({"start_lr": 1.0, "end_lr": 0.1}, "need 0 < start < end"),
                            ({"overrides": {"sweep": {"data.labels_per_class": [5, 20]}}}, "not a sweep")]:
        with pytest.raises(kpretrain.InputError, match=message):
            kpretrain.lr_find(tiny_recipe, **kwargs)


def test_show_task_writes_the_grid_and_returns_the_shortcut_check_the_command_prints(tiny_recipe, tmp_path, capsys):
    shown = kpretrain.show_task(tiny_recipe, out=str(tmp_path / "task.png"), n=6)
    assert isinstance(shown, kpretrain.TaskPreview)
    assert (shown.png, shown.arm, shown.task) == (str(tmp_path / "task.png"), "overlay", "overlay")
    assert (tmp_path / "task.png").read_bytes()[:4] == b"\x89PNG"
    assert [s.task for s in shown.shortcuts] == ["overlay"]
    assert all(0.0 <= s.accuracy <= 1.0 and 0.0 < s.chance < 1.0 and s.examples > 0 for s in shown.shortcuts)
    capsys.readouterr()
    assert main(["show-task", tiny_recipe, "--out", str(tmp_path / "cli.png"), "--n", "6"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "cli.png")] + [
        f"shortcut check: {s.line()}" for s in shown.shortcuts] + [shown.blocks_line()]
    assert shown.blocks_line() == "backbone small_cnn (2,356 parameters): block1 (7 layers), block2 (7 layers), " \
                                  "block3 (7 layers)"  # widths 4, 8, 8: 2,196 conv weights + 4 x 40 BN parameters
    quiet = kpretrain.show_task(tiny_recipe, out=str(tmp_path / "q.png"), n=2, shortcut_check=False)
    assert quiet.shortcuts == () and (tmp_path / "q.png").exists()
    with pytest.raises(kpretrain.RecipeError, match="--arm 'nope': not an arm of tiny"):
        kpretrain.show_task(tiny_recipe, arm="nope")
    with pytest.raises(kpretrain.RecipeError, match="no pretext task that makes labels"):
        kpretrain.show_task(tiny_recipe, overrides={"pretrain.task": "none"})


def _write_run(directory, recipe: str, arms: dict, reference: str | None = None) -> str:
    """A run directory holding only a metrics.json with these arms' test accuracies per seed."""
    entry = {"trainable_params": 10, "protocol": {"task": "overlay", "frozen_depth": 1}}
    metrics = {"recipe": recipe, "arms": {
        name: {**entry, "seeds": list(range(len(acc))), "test_accuracy": acc, "test_accuracy_raw": acc,
               **({"baseline": "scratch"} if name != "scratch" else {}),
               **({"reference": "natural"} if name == reference else {})} for name, acc in arms.items()}}
    directory.mkdir()
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return str(directory)


def test_compare_rows_are_what_kpretrain_report_prints(tmp_path, capsys):
    a = _write_run(tmp_path / "a", "ra", {"scratch": [0.70, 0.71, 0.72], "overlay": [0.72, 0.74, 0.73]})
    b = _write_run(tmp_path / "b", "rb", {"scratch": [0.60, 0.62, 0.61, 0.6], "natural": [0.7, 0.71, 0.7, 0.72],
                                          "rotation": [0.65, 0.64, 0.66, 0.63]}, reference="natural")
    table = kpretrain.compare([a, b], plot=str(tmp_path / "runs.png"))
    assert isinstance(table, kpretrain.Comparison) and table.plot == str(tmp_path / "runs.png")
    assert (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"
    assert [(r["run"], r["recipe"], r["arm"]) for r in table.rows] == [
        (a, "ra", "scratch"), (a, "ra", "overlay"), (b, "rb", "scratch"), (b, "rb", "natural"), (b, "rb", "rotation")]
    assert table.rows[1]["diff_mean"] == pytest.approx(0.02) and table.rows[4]["benefit"]["reference"] == "natural"
    capsys.readouterr()
    assert main(["report", a, b, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == table.rows
    for fmt in ("json", "csv", "md"):
        assert main(["report", a, b, "--format", fmt]) == 0
        assert capsys.readouterr().out == table.render(fmt)
    assert kpretrain.compare(a).rows == table.rows[:2]  # one directory, as a path
    with pytest.raises(kpretrain.InputError, match="cannot read a run's metrics"):
        kpretrain.compare([a, str(tmp_path / "nothing")])
    with pytest.raises(kpretrain.InputError, match="format 'html': expected one of md, csv, json"):
        table.render("html")


def test_report_rows_carry_knn_and_show_accuracy_intervals_within_0_and_100(tmp_path, capsys):
    import csv

    run = _write_run(tmp_path / "a", "ra", {"scratch": [0.02, 0.30, 0.03], "overlay": [0.72, 0.74, 0.73]})
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    metrics["arms"]["overlay"]["knn_accuracy"] = [0.61, 0.63, 0.62]
    (tmp_path / "a" / "metrics.json").write_text(json.dumps(metrics))
    assert main(["report", run, "--format", "csv"]) == 0
    rows = {r["arm"]: r for r in csv.DictReader(capsys.readouterr().out.splitlines())}
    assert float(rows["overlay"]["knn_accuracy_mean"]) == pytest.approx(0.62) and rows["scratch"]["knn_accuracy_mean"] == ""
    # scratch's t interval is [-0.28, 0.51]: shown from 0, the mean and std as computed
    assert float(rows["scratch"]["test_accuracy_ci_low"]) == 0.0
    assert float(rows["scratch"]["test_accuracy_ci_high"]) == pytest.approx(0.5113, abs=1e-4)
    assert main(["report", run]) == 0
    assert "11.67 ± 15.89 [0.00, 51.13]" in capsys.readouterr().out
    # metrics.json's statistics are not clipped (kpretrain.compare reads the rows as shown)
    from kpretrain.report.statistics import t_interval

    assert t_interval([0.02, 0.30, 0.03])["ci"][0] < 0


def test_one_failure_line_for_run_lr_find_and_tune(tiny_recipe, tmp_path, capsys, monkeypatch):
    from kpretrain import cli
    from kpretrain.errors import failure_line
    from kpretrain.tuning.outputs import failed

    boom = RuntimeError("  boom\nsecond line")
    hint = "(rerun with --debug for the traceback)"
    assert failure_line("search", boom) == f"kpretrain: search failed: RuntimeError: boom {hint}"
    assert failed("final run", boom, False) == 1
    assert capsys.readouterr().err == f"kpretrain: final run failed: RuntimeError: boom {hint}\n"

    def explode(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    import kpretrain.protocol.lr_find

    monkeypatch.setattr(kpretrain.protocol.lr_find, "find_learning_rate", explode)
    assert main(["lr-find", tiny_recipe, "--smoke", "-q", "--out", str(tmp_path / "lr")]) == 1
    assert capsys.readouterr().err == f"kpretrain: lr-find failed: RuntimeError: boom {hint}\n"
    assert not (tmp_path / "lr").exists()

    class Failing:  # what _experiment returns, failing once it trains
        progress = type("P", (), {"close": lambda self: None})()

        def prepare(self):
            return []

        def run(self, out_dir):
            explode()

    monkeypatch.setattr(cli, "_experiment", lambda *args: Failing())
    out = tmp_path / "run"
    assert main(["run", tiny_recipe, "-q", "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"kpretrain: training failed: RuntimeError: boom (rerun with --debug for the "
                                       f"traceback; partial results in {out})\n")


def test_label_efficiency_plot_shows_accuracy_and_the_paired_difference_titled(tmp_path, monkeypatch):
    from kpretrain import io
    from kpretrain.report.plots import plot_label_efficiency, plot_runs

    entry = {"trainable_params": 10, "protocol": {"task": "overlay", "frozen_depth": 1}, "seeds": [0, 1, 2]}
    scratch = {10: [0.02, 0.30, 0.03], 100: [0.60, 0.62, 0.61]}
    points = [{"dir": f"labels={n}", "data": {"labelled": 10 * n, "num_classes": 10}, "values": {},
               "arms": {"scratch": {**entry, "test_accuracy": acc, "test_accuracy_raw": acc},
                        "overlay": {**entry, "baseline": "scratch", "test_accuracy": [a + d for a, d in zip(acc, (0.05, 0.06, 0.04))],
                                    "test_accuracy_raw": acc}}} for n, acc in scratch.items()]
    figures = []
    monkeypatch.setattr(io, "save_figure", lambda fig, path, dpi=None: figures.append(fig))
    plot_label_efficiency({"recipe": "demo", "smoke": True, "points": points, "sweep": {}}, str(tmp_path / "le.png"))
    left, right = figures[0].axes
    assert figures[0]._suptitle.get_text() == "demo: label efficiency (smoke run: numbers mean nothing)"
    assert (left.get_title(), right.get_title()) == ("test accuracy per arm",
                                                     "difference to the matched baseline (paired by seed)")
    band = left.collections[0].get_paths()[0].vertices[:, 1]  # scratch: its t interval at 10 labels reaches below 0
    assert band.min() == 0.0 and band.max() <= 100
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["overlay - scratch"]
    ys = right.lines[0].get_ydata()  # the paired differences, in points, at 10 and 100 labels per class
    assert list(ys) == pytest.approx([5.0, 5.0])
    plot_runs([{"run": "a", "arm": "scratch", "test_accuracy_mean": 0.5, "test_accuracy_ci": [0.4, 0.6], "smoke": True}],
              str(tmp_path / "runs.png"))
    assert "smoke" in figures[1].axes[0].get_title()
