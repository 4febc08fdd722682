"""`baselines: [scratch, scratch_compute]`: the compute-matched scratch, scratch given the optimizer steps that its
arm's pre-training took (He et al. 2019).  One shared tiny run (one seed, overlay pre-training for 1 epoch) plus checks
of the recipe rules, the naming and the report's statistics on hand-made numbers."""

import json
import os

import pytest

from kpretrain import api_display
from kpretrain.api_results import RunResult
from kpretrain.errors import RecipeError
from kpretrain.experiment.loop import Experiment
from kpretrain.experiment.progress import Progress
from kpretrain.recipe import recipe_from_dict
from kpretrain.recipe.arms import ComputeMatch
from kpretrain.report.csv_rows import CSV_FIELDS, csv_fields, rows_table
from kpretrain.report.statistics import holm, paired_comparison
from kpretrain.report.summary import arm_statistics, store_sweep_holm, summary_rows
from kpretrain.tuning.space import searched_arm
from tests.helpers import tiny_npz, tiny_recipe_dict

COMPUTE_KEYS = {"compute_baseline", "compute_of", "extends", "finetune_extra_steps"}
# tiny_npz: 400 train images, 40 held out for validation, so the pool is 360 images = 11 batches of 32 per epoch;
# 1 pre-training epoch is cut into at least 4 Keras epochs (PRETEXT_CURVE_POINTS): 4 x (11 // 4) = 8 steps
EXTRA_STEPS = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("compute")
    raw = {**tiny_recipe_dict(tiny_npz(d / "tiny.npz")), "seeds": [0], "baselines": ["scratch", "scratch_compute"],
           "runtime": {"deterministic": True}}
    experiment = Experiment(recipe_from_dict(raw), progress=Progress(live=False, quiet=True))
    plan = experiment.prepare()
    metrics = experiment.run(str(d / "run"))
    return {"plan": plan, "metrics": metrics, "dir": d / "run"}


def _unit(run, arm):
    with open(os.path.join(run["dir"], "units", f"seed0.{arm}.finetune.json")) as fh:
        return json.load(fh)


def test_extra_steps_are_the_pretrainings_optimizer_steps(run):
    m = run["metrics"]
    (pretraining,) = m["pretraining"]
    steps = len(pretraining["history"]["epoch"]) * pretraining["steps_per_epoch"]
    assert steps == EXTRA_STEPS
    compute = m["arms"]["scratch_compute"]
    assert compute["finetune_extra_steps"] == [steps]
    assert compute["compute_of"] == ["overlay"] and compute["extends"] == "scratch"
    assert m["arms"]["overlay"]["compute_baseline"] == "scratch_compute"
    assert compute["protocol"] == m["arms"]["scratch"]["protocol"]  # the same settings; only the steps differ


def test_compute_scratch_trains_exactly_that_many_more_steps_on_the_same_batches(run):
    scratch, compute = _unit(run, "scratch"), _unit(run, "scratch_compute")
    per_epoch = scratch["finetune_steps_per_epoch"]
    assert compute["finetune_steps_per_epoch"] == per_epoch == 3  # 80 labelled / 32, rounded up
    scratch_steps = len(scratch["history"]["loss"]) * per_epoch
    assert round(compute["history"]["epoch"][-1] * per_epoch) - scratch_steps == EXTRA_STEPS
    # epochs of the same length, the last one cut short: 2 + 8/3 epochs -> 5 Keras epochs ending at 4.6667
    assert compute["history"]["epoch"] == [1.0, 2.0, 3.0, 4.0, 4.6667]
    assert len(compute["history"]["val_accuracy"]) == 5
    # same initial weights, same batches in the same order, constant learning rate: the first epochs are scratch's
    for key in ("loss", "accuracy", "val_accuracy"):
        assert compute["history"][key][:2] == scratch["history"][key]
    assert "epoch" not in scratch["history"] and "finetune_extra_steps" not in scratch


def test_report_and_statistics_show_the_gain_over_both(run):
    m, report = run["metrics"], (run["dir"] / "report.md").read_text()
    acc = {name: entry["test_accuracy"][0] for name, entry in m["arms"].items()}
    stats = m["arms"]["overlay"]["statistics"]
    assert stats["vs_baseline"]["baseline"] == "scratch"
    assert stats["vs_baseline"]["mean"] == pytest.approx(acc["overlay"] - acc["scratch"])
    assert stats["vs_compute"]["baseline"] == "scratch_compute"
    assert stats["vs_compute"]["mean"] == pytest.approx(acc["overlay"] - acc["scratch_compute"])
    assert "Δ vs compute-matched scratch (pts [95 % CI], p)" in report
    assert f"overlay vs scratch: {100 * stats['vs_baseline']['mean']:+.1f} pts" in report
    assert f"overlay vs scratch_compute: {100 * stats['vs_compute']['mean']:+.1f} pts" in report
    assert f"- `scratch_compute`: `scratch` + {EXTRA_STEPS} steps, the pre-training of `overlay`" in report
    for name in ("scratch", "scratch_compute"):  # baselines: no comparison of their own
        assert set(m["arms"][name]["statistics"]) == {"test_accuracy"}
    assert not COMPUTE_KEYS & set(m["arms"]["scratch"])


def test_the_python_api_shows_the_gain_over_both(run):
    result = RunResult(str(run["dir"]), json.loads((run["dir"] / "metrics.json").read_text()))  # as api.run reads it
    acc = {name: entry["test_accuracy"][0] for name, entry in result.metrics["arms"].items()}
    vs = result.metrics["arms"]["overlay"]["statistics"]["vs_compute"]
    overlay = result.arms["overlay"]
    assert (overlay.baseline, overlay.compute_baseline) == ("scratch", "scratch_compute")
    assert overlay.compute_difference["mean"] == vs["mean"] == pytest.approx(acc["overlay"] - acc["scratch_compute"])
    assert result.arms["scratch_compute"].compute_baseline is result.arms["scratch"].compute_difference is None
    shown = f"{vs['mean']:+.4f}"  # one seed: no interval, no test
    assert repr(overlay).endswith(f", vs scratch_compute: {shown} —, p_holm=—)")
    assert repr(result).splitlines()[-1].split()[-4:] == [shown, "—", "scratch_compute", "—"]
    table = result._repr_markdown_()
    assert "| p (Holm) | vs compute | 95 % CI | compute baseline | p (Holm) |" in table
    assert table.endswith(f"| scratch | — | {shown} | — | scratch_compute | — |")
    assert f"<td>{shown}</td><td>—</td><td>scratch_compute</td><td>—</td></tr>" in result._repr_html_()
    seeds = result.to_pandas().set_index("arm")
    assert seeds.diff_vs_compute["overlay"] == acc["overlay"] - acc["scratch_compute"]
    assert seeds.compute_baseline["overlay"] == "scratch_compute" and seeds.diff_vs_compute.isna()["scratch"]
    assert result.to_pandas(per="arm").set_index("arm").compute_diff_mean["overlay"] == vs["mean"]


def test_plan_names_the_extra_steps(run):
    plan = run["plan"]
    assert (f"  scratch_compute: scratch + {EXTRA_STEPS} steps (the pre-training of overlay), 2.67 more fine-tuning "
            f"epochs of 3 steps") in plan
    assert any(line.startswith("  arm scratch_compute:")
               and f"for 2 epochs + {EXTRA_STEPS} steps on 80 labelled" in line for line in plan)
    assert any(line.startswith("  arm overlay:") and line.endswith("(compared with scratch and scratch_compute)")
               for line in plan)


def _recipe(arms=None, baselines=("scratch", "scratch_compute"), **top):
    return recipe_from_dict({"name": "c", "baselines": list(baselines), "pretrain": {"task": "overlay"},
                             **({"arms": arms} if arms else {}), **top})


def test_arms_share_a_compute_scratch_only_with_the_same_budget_and_matched_scratch():
    recipe = _recipe({"a": {}, "b": {"pretrain": {"task": "rotation"}}, "long": {"pretrain": {"epochs": 3}},
                      "wide": {"finetune": {"epochs": 3}}, "plain": {"pretrain": {"task": "none"}}})
    assert recipe.compute_baselines() == {
        "scratch_compute-a": ComputeMatch(("a", "b"), "scratch"),
        "scratch_compute-long": ComputeMatch(("long",), "scratch"),
        "scratch_compute-wide": ComputeMatch(("wide",), "scratch-wide")}
    assert list(recipe.arm_recipes())[:5] == ["scratch", "scratch-wide", "scratch_compute-a", "scratch_compute-long",
                                              "scratch_compute-wide"]
    arms = recipe.arm_recipes()
    assert arms["scratch_compute-wide"].to_dict() == arms["scratch-wide"].to_dict()
    assert _recipe().compute_baselines() == {"scratch_compute": ComputeMatch(("overlay",), "scratch")}
    named = _recipe({"ov": {"baseline": "tuned"}, "tuned": {"pretrain": {"task": "none"}, "finetune": {"epochs": 4}}})
    assert named.compute_baselines() == {"scratch_compute": ComputeMatch(("ov",), "scratch")}  # its own matched scratch
    assert named.arm_recipes()["scratch_compute"].to_dict() == named.arm_recipes()["scratch"].to_dict()
    assert _recipe(baselines=["scratch"]).compute_baselines() == {}


@pytest.mark.parametrize("raw, needle", [
    ({"baselines": ["scratch_compute"]}, "'baselines': scratch_compute is scratch given .* add scratch"),
    ({"arms": {"scratch_compute": {}}}, "'arms.scratch_compute': the name is taken by the compute-matched scratch"),
    ({"arms": {"x": {"baseline": "scratch_compute"}, "y": {}}}, "'arms.x.baseline': 'scratch_compute' is not"),
    ({"arms": {"a": {}, "b": {"pretrain": {"epochs": 2}}, "scratch_compute-b": {"pretrain": {"task": "none"}}}},
     "'arms.scratch_compute-b': the name is taken by the compute-matched scratch of arm 'b'"),
])
def test_recipe_errors(raw, needle):
    with pytest.raises(RecipeError, match=needle):
        recipe_from_dict({"name": "c", "baselines": ["scratch", "scratch_compute"], "pretrain": {"task": "overlay"},
                          **raw})


def test_without_pretraining_it_is_valid_and_empty_and_sweeps_and_tuning_cope():
    assert _recipe(pretrain={"task": "overlay", "epochs": 0}).compute_baselines() == {}
    sweep = _recipe(sweep={"pretrain.epochs": [0, 2]})
    assert [point.compute_baselines() for _, point in sweep.sweep_points()] == [
        {}, {"scratch_compute": ComputeMatch(("overlay",), "scratch")}]
    assert searched_arm(_recipe()) == "overlay"
    with pytest.raises(RecipeError, match="'tune.arm': 'scratch_compute' is a compute-matched scratch"):
        searched_arm(_recipe(tune={"arm": "scratch_compute"}))
    with pytest.raises(RecipeError, match="'sweep.baselines': cannot be swept"):
        _recipe(sweep={"baselines": [["scratch"], ["scratch", "scratch_compute"]]})


def _entry(accuracies, **extra):
    return {"seeds": [0, 1, 2], "test_accuracy": accuracies, "test_accuracy_raw": accuracies, "trainable_params": 1,
            "protocol": {"task": "none", "frozen_depth": 0}, **extra}


def test_both_comparisons_are_one_holm_family_and_a_sweep_adjusts_them_together():
    arms = {"scratch": _entry([0.50, 0.52, 0.55]), "scratch_compute": _entry([0.56, 0.55, 0.60], compute_of=["ov"]),
            "ov": _entry([0.60, 0.61, 0.66], baseline="scratch", compute_baseline="scratch_compute")}
    stats = arm_statistics({"arms": arms})
    p = [paired_comparison([0.10, 0.09, 0.11])["p"], paired_comparison([0.04, 0.06, 0.06])["p"]]
    assert stats["ov"]["vs_baseline"]["p_holm"] == pytest.approx(holm(p)[0])
    assert stats["ov"]["vs_compute"]["p_holm"] == pytest.approx(holm(p)[1])
    assert stats["ov"]["vs_compute"]["comparisons"] == stats["ov"]["vs_baseline"]["comparisons"] == 2
    assert set(stats["scratch_compute"]) == {"test_accuracy"}  # never paired with scratch, though named scratch_*
    runs = [{"arms": {name: {**entry, "statistics": stats[name]} for name, entry in arms.items()}} for _ in range(2)]
    runs[1] = json.loads(json.dumps(runs[1]))  # two points' own copies
    assert store_sweep_holm(runs) == {"family": "sweep", "comparisons": 4}
    assert runs[1]["arms"]["ov"]["statistics"]["vs_compute"]["p_holm"] == pytest.approx(holm(p * 2)[1])
    assert runs[0]["arms"]["ov"]["statistics"]["vs_baseline"]["p_holm"] == pytest.approx(holm(p * 2)[0])
    rows = summary_rows({"arms": runs[0]["arms"]})
    assert rows[2]["compute_diff_mean"] == pytest.approx(0.0533333, abs=1e-6)
    assert [r["diff_vs_compute"] for r in api_display.seed_records({"arms": arms}) if r["arm"] == "ov"] == \
        pytest.approx([0.04, 0.06, 0.06])
    assert csv_fields(rows)[len(CSV_FIELDS):] == ["compute_baseline", "compute_diff_mean", "compute_diff_std",
                                                  "compute_diff_ci_low", "compute_diff_ci_high", "compute_p",
                                                  "compute_p_holm", "compute_seeds_needed"]


def test_the_api_shows_both_differences_with_their_intervals_and_holm_p():
    arms = {"scratch": _entry([0.50, 0.52, 0.55]), "scratch_compute": _entry([0.56, 0.55, 0.60], compute_of=["ov"]),
            "ov": _entry([0.60, 0.61, 0.66], baseline="scratch", compute_baseline="scratch_compute")}
    stats = arm_statistics({"arms": arms})
    result = RunResult("d", {"recipe": "c", "seeds": [0, 1, 2],
                             "arms": {name: {**entry, "statistics": stats[name]} for name, entry in arms.items()}})
    # differences [.10, .09, .11] and [.04, .06, .06]: t = 17.32 and 8 on 2 df, p = 1 - t / sqrt(t^2 + 2) = .00332
    # and .01527, Holm .00663 and .01527; 95 % intervals mean -+ 4.3027 sd / sqrt(3)
    ov = result.arms["ov"]
    assert ov.compute_difference["p_holm"] == pytest.approx(1 - 8 / 66 ** 0.5, abs=1e-6)
    assert repr(ov).endswith(", vs scratch: +0.1000 [+0.0752, +0.1248], p_holm=0.007, "
                             "vs scratch_compute: +0.0533 [+0.0246, +0.0820], p_holm=0.015)")
    headers, cells = api_display.summary_cells(summary_rows(result.metrics))
    assert headers[-4:] == ["vs compute", "95 % CI", "compute baseline", "p (Holm)"]
    assert cells[2][-8:] == ["+0.1000", "[+0.0752, +0.1248]", "scratch", "0.007",
                             "+0.0533", "[+0.0246, +0.0820]", "scratch_compute", "0.015"]
    assert cells[1][-8:] == [""] * 8  # a baseline: no comparison of its own


def test_without_scratch_compute_nothing_new_appears():
    arms = {"scratch": _entry([0.50, 0.52, 0.55]), "ov": _entry([0.60, 0.61, 0.66], baseline="scratch")}
    stats = arm_statistics({"arms": arms})
    assert set(stats["ov"]) == {"test_accuracy", "vs_baseline"}
    rows = summary_rows({"arms": {k: {**v, "statistics": stats[k]} for k, v in arms.items()}})
    assert not any(key.startswith("compute_") for row in rows for key in row)
    assert csv_fields(rows) == CSV_FIELDS and "compute-matched" not in rows_table(rows)
    headers, cells = api_display.summary_cells(rows)
    assert headers[-4:] == ["vs baseline", "95 % CI", "baseline", "p (Holm)"] and {len(c) for c in cells} == {9}
    assert not any("compute" in key for r in api_display.seed_records({"arms": arms}) for key in r)
    ov = RunResult("d", {"arms": {k: {**v, "statistics": stats[k]} for k, v in arms.items()}}).arms["ov"]
    assert ov.compute_baseline is ov.compute_difference is None and repr(ov).count(", vs ") == 1
