"""Intervals, paired tests, Holm, seeds needed and verdict wording, against numbers worked out by hand."""

import math

import numpy as np
import pytest

from kpretrain.report.statistics import holm, paired_comparison, seeds_needed, t_interval, verdict
from kpretrain.report.tables import arm_statistics, markdown_table, summary_rows, verdict_lines


def test_t_interval_by_hand():
    # n = 3: mean 0.72, sd 0.02, t(0.975, 2) = 4.302653 -> half width 4.302653 * 0.02 / sqrt(3) = 0.0496828
    r = t_interval([0.70, 0.72, 0.74])
    assert r["n"] == 3 and r["mean"] == pytest.approx(0.72) and r["std"] == pytest.approx(0.02)
    assert r["ci"] == pytest.approx([0.72 - 0.0496828, 0.72 + 0.0496828], abs=1e-6)
    # n = 2: mean 0.55, sd 0.0707107, t(0.975, 1) = 12.706205 -> half width 12.706205 * 0.05 = 0.635310
    assert t_interval([0.5, 0.6])["ci"] == pytest.approx([0.55 - 0.635310, 0.55 + 0.635310], abs=1e-5)
    assert t_interval([0.8])["ci"] is None  # one seed: no interval
    assert t_interval([0.8, 0.8, 0.8])["ci"] == pytest.approx([0.8, 0.8])  # zero variance: [d, d]


def test_paired_t_test_by_hand():
    # differences 0.01, 0.02, 0.03: t = 0.02 / (0.01 / sqrt 3) = 3.4641; with 2 degrees of freedom the t CDF is
    # 1/2 + t / (2 sqrt(2 + t^2)), so the two-sided p = 1 - t / sqrt(2 + t^2) = 0.074180
    c = paired_comparison([0.01, 0.02, 0.03])
    t = 0.02 / (0.01 / math.sqrt(3))
    assert c["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-6)
    assert c["bootstrap_ci"] is None  # fewer than 10 seeds
    # n = 2, differences 0.01 and 0.03: t = 0.02 / (0.0141421 / sqrt 2) = 2; 1 degree of freedom: p = 1 - 2/pi atan(t)
    assert paired_comparison([0.01, 0.03])["p"] == pytest.approx(1 - 2 / math.pi * math.atan(2.0), abs=1e-6)
    flat = paired_comparison([0.01, 0.01, 0.01])
    assert flat["p"] is None and flat["ci"] == pytest.approx([0.01, 0.01]) and flat["seeds_needed"] is None
    one = paired_comparison([0.05])
    assert one["ci"] is None and one["p"] is None


def test_bootstrap_interval_from_ten_seeds():
    d = np.array([0.01, 0.03, -0.01, 0.02, 0.04, 0.00, 0.02, 0.03, 0.01, 0.05])
    c = paired_comparison(d)
    low, high = c["bootstrap_ci"]
    assert low < d.mean() < high and min(d) <= low and high <= max(d)
    assert c["bootstrap_ci"] == paired_comparison(d)["bootstrap_ci"]  # seeded: the same interval every time


def test_seeds_needed_reaches_80_percent_power_by_simulation():
    n = seeds_needed(0.01, 0.01)  # effect size 1
    assert n == 10  # the standard table value for a paired t-test, d = 1, 80 % power, two-sided 5 %
    rng = np.random.default_rng(0)

    def simulated_power(k):
        from scipy import stats

        samples = rng.normal(0.01, 0.01, (20_000, k))
        return np.mean(stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05)

    assert simulated_power(n) >= 0.79 and simulated_power(n - 1) < 0.8
    assert seeds_needed(0.0, 0.01) is None and seeds_needed(0.01, 0.0) is None
    assert seeds_needed(-0.01, 0.01) == n  # the sign does not matter


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, 1 x 0.04 = 0.04 -> kept monotone: 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.01, None, 0.04]) == [pytest.approx(0.02), None, pytest.approx(0.04)]  # no test: not counted
    assert holm([0.5, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1, and kept monotone
    assert holm([]) == []


def test_verdict_wording_follows_the_interval():
    weak = verdict("overlay", "scratch", paired_comparison([-0.03, 0.005, 0.0]))
    assert weak.startswith("overlay vs scratch: -0.8 pts [") and "no evidence of a difference (3 seeds)" in weak
    assert "the evidence is weak: a difference of 0.8 pts would need" in weak and "seeds for 80 % power" in weak
    gain = verdict("rotation", "scratch", paired_comparison([0.04, 0.05, 0.045, 0.05, 0.04]))
    assert "evidence of a gain (5 seeds)" in gain and "weak" not in gain
    low = float(gain.split("[")[1].split(",")[0])
    assert low > 0  # "evidence" only when the interval excludes zero
    adjusted = verdict("rotation", "scratch", paired_comparison([0.04, 0.05, 0.045, 0.05, 0.04]), 0.2, 3)
    assert "Holm-adjusted p = 0.20 (3 comparisons), no evidence of a difference" in adjusted
    assert "zero variance, no p-value" in verdict("a", "scratch", paired_comparison([0.01, 0.01]))
    assert "1 seed: no interval" in verdict("a", "scratch", paired_comparison([0.01]))


def _metrics(arms):
    entry = {"test_accuracy_raw": None, "trainable_params": 10, "protocol": {"task": "overlay", "frozen_depth": 1}}
    return {"arms": {name: {**entry, "seeds": list(range(len(acc))), "test_accuracy": acc,
                            "test_accuracy_raw": acc, **({"baseline": "scratch"} if name != "scratch" else {})}
                     for name, acc in arms.items()}}


def test_run_statistics_pair_by_seed_and_adjust_for_several_arms():
    m = _metrics({"scratch": [0.70, 0.71, 0.72], "a": [0.72, 0.72, 0.75], "b": [0.69, 0.715, 0.72]})
    rows = {r["arm"]: r for r in summary_rows(m)}
    assert rows["a"]["diff_mean"] == pytest.approx(0.02) and rows["a"]["comparisons"] == 2
    assert rows["a"]["p_holm"] == pytest.approx(min(1, 2 * min(rows["a"]["p"], rows["b"]["p"]))
                                                 if rows["a"]["p"] < rows["b"]["p"] else rows["b"]["p_holm"])
    stats = arm_statistics(m)
    assert stats["a"]["vs_baseline"]["ci95"] == pytest.approx(rows["a"]["diff_ci"])
    assert "Holm-adjusted" in verdict_lines(m)[0] and "(Holm " in markdown_table(m)
    single = _metrics({"scratch": [0.70, 0.71, 0.72], "a": [0.72, 0.72, 0.75]})
    assert "Holm" not in verdict_lines(single)[0] and "Holm" not in markdown_table(single)


def _point(arms):
    """A sweep point's metrics.json as its run writes it: statistics adjusted over the point's comparisons only."""
    m = _metrics(arms)
    for name, stats in arm_statistics(m).items():
        m["arms"][name]["statistics"] = stats
    m["holm"] = {"family": "point", "comparisons": sum(1 for name in arms if name != "scratch")}
    return m


def test_a_sweep_is_one_holm_family_stored_once_and_read_by_every_report():
    from kpretrain.api import RunResult
    from kpretrain.report.tables import holm_note, store_sweep_holm

    points = [_point({"scratch": [0.70, 0.71, 0.72], "a": [0.72, 0.72, 0.75], "b": [0.69, 0.715, 0.72]}),
              _point({"scratch": [0.60, 0.62, 0.61], "a": [0.65, 0.66, 0.67]})]
    compared = [(0, "a"), (0, "b"), (1, "a")]
    raw = [points[i]["arms"][arm]["statistics"]["vs_baseline"]["p"] for i, arm in compared]
    expected = holm(raw)  # one family of 3, not a family of 2 and a family of 1
    assert points[1]["arms"]["a"]["statistics"]["vs_baseline"]["p_holm"] == pytest.approx(raw[2]) != expected[2]

    def sweep(**extra):  # the sweep's metrics.json: its points' arms as they are, and the sweep's record if stored
        return {"points": [{"dir": f"p={i}", "values": {"p": i}, **m} for i, m in enumerate(points)], **extra}

    old = sweep()  # written before the sweep stored its family: computed over the whole sweep (the fallback)
    assert [r["p_holm"] for r in summary_rows(old) if "diff_mean" in r] == pytest.approx(expected)
    assert [RunResult("old", old).points[i][1][arm].difference["p_holm"] for i, arm in compared] == pytest.approx(
        expected)

    record = store_sweep_holm(points)  # computed once, stored in each point
    assert record == {"family": "sweep", "comparisons": 3} and all(m["holm"] == record for m in points)
    for (i, arm), p_holm in zip(compared, expected):
        assert points[i]["arms"][arm]["statistics"]["vs_baseline"]["p_holm"] == pytest.approx(p_holm)
        assert points[i]["arms"][arm]["statistics"]["vs_baseline"]["comparisons"] == 3
    assert "over every comparison of the sweep (3 comparisons" in holm_note(points[1])[1]

    # every reader takes the stored value instead of adjusting again: change it, and they all follow
    points[1]["arms"]["a"]["statistics"]["vs_baseline"]["p_holm"] = 0.5
    metrics = sweep(holm=record)
    assert [r["p_holm"] for r in summary_rows(metrics) if "diff_mean" in r][2] == 0.5
    assert [r["p_holm"] for r in summary_rows(points[1]) if "diff_mean" in r] == [0.5]  # `kpretrain report POINT`
    assert RunResult("sweep", metrics).points[1][1]["a"].difference["p_holm"] == 0.5
    assert RunResult("point", points[1]).arms["a"].difference["p_holm"] == 0.5
    assert "Holm-adjusted p = 0.50 (3 comparisons)" in RunResult("sweep", metrics).verdicts[2]
    # a point's verdicts (its report.md) are the sweep's, word for word
    assert [f"p={i}: {line}" for i, m in enumerate(points) for line in verdict_lines(m)] == verdict_lines(metrics)


def test_benefit_ratio_is_the_ratio_of_mean_paired_differences():
    from kpretrain.report.statistics import benefit_ratio

    arm = [0.02, 0.03, 0.01, 0.02, 0.04]  # arm - scratch per seed
    natural = [0.05, 0.04, 0.06, 0.05, 0.05]  # natural - scratch per seed, interval well above zero
    b = benefit_ratio(arm, natural)
    assert b["defined"] and b["reason"] is None and b["n"] == 5
    assert b["ratio"] == pytest.approx(np.mean(arm) / np.mean(natural)) and b["ratio"] == pytest.approx(0.48)
    low, high = b["ci95"]
    assert low < b["ratio"] < high
    # the bootstrap's extremes: every resample's ratio lies between these two
    assert 0.01 / 0.06 <= low and high <= 0.04 / 0.04
    assert benefit_ratio(arm, natural)["ci95"] == b["ci95"]  # seeded: the same interval every time
    assert benefit_ratio(arm, natural, seed=1)["ci95"] != b["ci95"]
    same = benefit_ratio(natural, natural)  # the reference against itself: 100 %, every resample
    assert same["ratio"] == pytest.approx(1.0) and same["ci95"] == pytest.approx([1.0, 1.0])
    # paired: resampling seeds jointly, a perfectly proportional arm has a zero-width interval
    half = benefit_ratio([d / 2 for d in natural], natural)
    assert half["ci95"] == pytest.approx([0.5, 0.5])


def test_benefit_ratio_is_undefined_when_the_natural_gain_is_not_established():
    from kpretrain.report.statistics import benefit_ratio

    # natural - scratch: mean 0.01, t interval [-0.0148, 0.0348] contains zero -> no ratio
    b = benefit_ratio([0.02, 0.03, 0.01], [0.00, 0.01, 0.02])
    assert paired_comparison([0.00, 0.01, 0.02])["ci"][0] < 0  # the interval the report shows contains zero
    assert not b["defined"] and b["ratio"] is None and b["ci95"] is None
    assert "not established" in b["reason"] and b["natural"]["mean"] == pytest.approx(0.01)
    hurts = benefit_ratio([0.02, 0.03, 0.01], [-0.05, -0.04, -0.06])  # natural clearly worse than scratch
    assert not hurts["defined"] and "hurts" in hurts["reason"]
    one = benefit_ratio([0.02], [0.05])  # one seed: no interval at all
    assert not one["defined"] and "1 paired seed" in one["reason"]
    with pytest.raises(ValueError):
        benefit_ratio([0.01, 0.02], [0.05])  # not paired


def _with_reference(arms, reference):
    m = _metrics(arms)
    m["arms"][reference]["reference"] = "natural"
    return m


def test_benefit_column_equals_the_formula_and_is_marked_undefined():
    from kpretrain.report.tables import CSV_FIELDS, benefit_note, flat_row, rows_table, run_report

    scratch, natural, a = [0.70, 0.71, 0.72, 0.70, 0.69], [0.75, 0.75, 0.78, 0.75, 0.74], [0.72, 0.74, 0.73, 0.71, 0.71]
    m = _with_reference({"scratch": scratch, "natural": natural, "a": a}, "natural")
    rows = {r["arm"]: r for r in summary_rows(m)}
    expected = np.mean(np.subtract(a, scratch)) / np.mean(np.subtract(natural, scratch))  # 0.018 / 0.05
    assert expected == pytest.approx(0.36)
    assert rows["a"]["benefit"]["ratio"] == pytest.approx(expected) and rows["a"]["benefit"]["defined"]
    assert rows["natural"]["benefit"]["ratio"] == pytest.approx(1.0) and "benefit" not in rows["scratch"]
    stats = arm_statistics(m)
    assert stats["a"]["benefit"] == rows["a"]["benefit"] and stats["a"]["benefit"]["reference"] == "natural"
    low, high = stats["a"]["benefit"]["ci95"]
    table = markdown_table(m)
    assert "| benefit (% of natural's gain [95 % CI]) |" in table
    assert f"| {100 * expected:.0f} % [{100 * low:.0f}, {100 * high:.0f}] |" in table
    assert "100 % [100, 100] (reference)" in table
    assert all(line.count("|") == table.splitlines()[0].count("|") for line in table.splitlines())
    flat = flat_row(rows["a"])
    assert flat["benefit"] == pytest.approx(expected) and flat["benefit_ci_low"] == low
    assert {"benefit", "benefit_ci_low", "benefit_ci_high", "benefit_undefined"} <= set(CSV_FIELDS)
    assert benefit_note(m) and "benefit" not in markdown_table(_metrics({"scratch": scratch, "a": a}))
    assert benefit_note(_metrics({"scratch": scratch, "a": a})) == []

    # the natural arm's gain has an interval containing zero: no number, a reason
    undefined = _with_reference({"scratch": [0.70, 0.71, 0.72], "natural": [0.70, 0.72, 0.71],
                                 "a": [0.72, 0.74, 0.73]}, "natural")
    rows = {r["arm"]: r for r in summary_rows(undefined)}
    assert rows["natural"]["diff_ci"][0] < 0 < rows["natural"]["diff_ci"][1]
    assert not rows["a"]["benefit"]["defined"] and rows["a"]["benefit"]["ratio"] is None
    assert "| undefined (natural's gain not established) |" in markdown_table(undefined)
    assert "not established" in flat_row(rows["a"])["benefit_undefined"]
    assert "undefined (natural's gain not established)" in rows_table([{"run": "r", **r} for r in rows.values()])

    # a sweep: per point, with the reference read from the point's arms
    sweep = {"points": [{"dir": "p=1", **m}, {"dir": "p=2", **undefined}]}
    rows = summary_rows(sweep)
    by_point = {(r["point"], r["arm"]): r for r in rows}
    assert by_point[("p=1", "a")]["benefit"]["ratio"] == pytest.approx(expected)
    assert not by_point[("p=2", "a")]["benefit"]["defined"]

    # the top-level `reference` (metrics.json) is enough on its own
    top = {**_metrics({"scratch": scratch, "natural": natural, "a": a}), "reference": "natural"}
    assert summary_rows(top)[2]["benefit"]["ratio"] == pytest.approx(expected)
    for entry in m["arms"].values():  # what run_report reads beyond the statistics
        entry.update(history=[], confusion=[[[5, 0], [1, 4]]])
    report = run_report({**m, "recipe": "r", "smoke": False, "evaluation": {"bn_refresh": True}, "warnings": [],
                         "data": {"dataset": "d", "source": "s", "image_shape": [28, 28, 1], "num_classes": 2,
                                  "scaling": "unit", "labelled": 10, "validation": 5, "unlabelled": 0, "test": 5,
                                  "class_names": ["a", "b"]},
                         "seeds": [0, 1, 2, 3, 4], "wall_time_s": 1.0,
                         "environment": {"device": "CPU", "cpu_count": 2, "tensorflow": "x", "keras": "y"}})
    assert "benefit (% of natural's gain" in report and "Benefit: each arm's mean gain" in report


def test_kpretrain_report_shows_the_benefit_of_a_written_run(tmp_path, capsys):
    import csv
    import json

    from kpretrain.cli import main

    m = _with_reference({"scratch": [0.70, 0.71, 0.72, 0.70, 0.69], "natural": [0.75, 0.75, 0.78, 0.75, 0.74],
                         "a": [0.72, 0.74, 0.73, 0.71, 0.71]}, "natural")
    (tmp_path / "metrics.json").write_text(json.dumps({**m, "recipe": "r"}))
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--format", "csv"]) == 0
    rows = {r["arm"]: r for r in csv.DictReader(capsys.readouterr().out.splitlines())}
    assert float(rows["a"]["benefit"]) == pytest.approx(0.018 / 0.05) and rows["a"]["benefit_reference"] == "natural"
    assert float(rows["a"]["benefit_ci_low"]) < float(rows["a"]["benefit"]) < float(rows["a"]["benefit_ci_high"])
    assert rows["scratch"]["benefit"] == ""
    assert main(["report", str(tmp_path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[2]["benefit"]["defined"] is True
    assert main(["report", str(tmp_path)]) == 0
    assert "| benefit (% of natural's gain [95 % CI]) |" in capsys.readouterr().out
