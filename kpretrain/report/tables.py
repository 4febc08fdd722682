"""Tables: per-arm summary, paired differences to the baseline, history rows, the markdown report."""

from __future__ import annotations

import csv
import io as _io

import numpy as np

from kpretrain.report.statistics import benefit_ratio, holm, paired_comparison, t_interval, verdict

BASELINE = "scratch"


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summary_rows(metrics: dict) -> list[dict]:
    """One row per arm (per point and arm for a sweep, with `point`): test accuracy (mean, std, 95 % t interval; raw
    mean) and, against its matched scratch, the paired difference with its interval, paired t-test p-value and its
    Holm adjustment over all the comparisons of the run (every point's of a sweep), as metrics.json stores it
    (`holm_adjusted`); with an arm marked `reference: natural`, each compared arm's `benefit` (its share of the
    natural arm's gain, per point)."""
    rows = _unadjusted_rows(metrics)
    adjusted = holm_adjusted(metrics, rows)
    for row in rows:
        if "diff_mean" in row:
            row["p_holm"], row["comparisons"] = adjusted[(row.get("point"), row["arm"])]
    return rows


def _unadjusted_rows(metrics: dict, benefit: bool = True) -> list[dict]:
    """`summary_rows` without the Holm columns (and without `benefit` when `benefit` is false)."""
    def reference(arms):
        return reference_arm(arms, metrics.get("reference")) if benefit else None

    if "points" in metrics:
        return [{"point": point["dir"], **row} for point in metrics["points"]
                for row in _arm_rows(point["arms"], reference(point["arms"]))]
    return _arm_rows(metrics["arms"], reference(metrics["arms"]))


def holm_family(rows: list[dict]) -> dict:
    """The one Holm adjustment: every compared row of `rows` (a run's, or every point's of a sweep) as one family.
    Returns (point or None, arm) -> (adjusted p, tested comparisons in the family); None where there is no test."""
    compared = [row for row in rows if "diff_mean" in row]
    tested = sum(row["p"] is not None for row in compared)
    return {(row.get("point"), row["arm"]): (adjusted, tested)
            for row, adjusted in zip(compared, holm([row["p"] for row in compared]))}


def holm_adjusted(metrics: dict, rows: list[dict] | None = None) -> dict:
    """(point or None, arm) -> (p_holm, comparisons) of every compared arm, as `metrics.json` stores them: one family
    per run or sweep, adjusted once when it was written (a sweep point's file holds the sweep's).  The one fallback
    for a `metrics.json` without them (written before statistics were stored, or a sweep before it stored its
    family, or unfinished): the family computed here from the raw p-values (`rows`: its unadjusted rows, if made)."""
    stored = _stored_holm(metrics)
    if stored is not None and (rows is None or all((row.get("point"), row["arm"]) in stored
                                                   for row in rows if "diff_mean" in row)):
        return stored
    return holm_family(rows if rows is not None else _unadjusted_rows(metrics, benefit=False))


def _stored_holm(metrics: dict) -> dict | None:
    """The Holm columns stored under `arms.<arm>.statistics.vs_baseline`; None when some are missing, or for a sweep
    whose `holm` record does not say its points were adjusted together."""
    if "points" in metrics:
        if (metrics.get("holm") or {}).get("family") != "sweep":
            return None
        runs = [(point["dir"], point["arms"]) for point in metrics["points"]]
    else:
        runs = [(None, metrics["arms"])]
    out = {}
    for point, arms in runs:
        for name, entry in arms.items():
            if not entry["test_accuracy"]:  # not run yet: no row either
                continue
            if "statistics" not in entry:
                return None
            compared = entry["statistics"].get("vs_baseline")
            if compared is not None:
                if "p_holm" not in compared or "comparisons" not in compared:
                    return None
                out[(point, name)] = (compared["p_holm"], compared["comparisons"])
    return out


def store_sweep_holm(runs: list[dict]) -> dict:
    """Adjust every comparison of a sweep's points (each point's metrics, run layout) as one Holm family, once, and
    store it in each point's metrics: `statistics.vs_baseline` `p_holm` and `comparisons` of each compared arm, and
    `holm` = {family: "sweep", comparisons}.  Returns that record (for the sweep's own metrics.json)."""
    points = {"points": [{"dir": i, "arms": run["arms"]} for i, run in enumerate(runs)]}
    family = holm_family(_unadjusted_rows(points, benefit=False))
    record = {"family": "sweep", "comparisons": max((tested for _, tested in family.values()), default=0)}
    for (i, arm), (adjusted, tested) in family.items():
        runs[i]["arms"][arm]["statistics"]["vs_baseline"].update(p_holm=adjusted, comparisons=tested)
    for run in runs:
        run["holm"] = dict(record)
    return record


def reference_arm(arms: dict, default: str | None = None) -> str | None:
    """The arm marked `reference: natural` in metrics.json (its arm entry, or the run's `reference`), or None."""
    marked = [name for name, entry in arms.items() if entry.get("reference") == "natural"]
    return marked[0] if marked else default if default in arms else None


def _arm_rows(arms: dict, reference: str | None = None) -> list[dict]:
    rows, paired_diffs = [], {}
    for name, entry in arms.items():
        if not entry["test_accuracy"]:  # not run yet (metrics.json of an unfinished run)
            continue
        acc = t_interval(entry["test_accuracy"])
        row = {"arm": name, "n": acc["n"], "test_accuracy_mean": acc["mean"], "test_accuracy_std": acc["std"],
               "test_accuracy_ci": acc["ci"], "test_accuracy_raw_mean": mean_std(entry["test_accuracy_raw"])[0],
               "trainable_params": entry["trainable_params"], "task": _task(entry["protocol"]),
               "frozen_depth": entry["protocol"]["frozen_depth"], "init": entry["protocol"].get("init", "weights")}
        if entry.get("knn_accuracy"):
            row["knn_accuracy_mean"] = mean_std(entry["knn_accuracy"])[0]
        baseline = entry.get("baseline") or (  # runs before matched baselines paired every arm with scratch
            BASELINE if name != BASELINE and not name.startswith(BASELINE + "-") else None)
        base = arms.get(baseline)
        if base is not None:
            paired = dict(zip(base["seeds"], base["test_accuracy"]))
            paired_diffs[name] = {s: acc - paired[s] for s, acc in zip(entry["seeds"], entry["test_accuracy"])
                                  if s in paired}  # seed -> difference, for the benefit column
            diffs = list(paired_diffs[name].values())
            if diffs:
                c = paired_comparison(diffs)
                row.update(baseline=baseline, diff_mean=c["mean"], diff_std=c["std"], diff_n=c["n"], diff_ci=c["ci"],
                           p=c["p"], bootstrap_ci=c["bootstrap_ci"], seeds_needed=c["seeds_needed"])
        rows.append(row)
    if reference is not None:
        natural = paired_diffs.get(reference, {})
        for row in rows:
            if "diff_mean" in row:
                row["benefit"] = _benefit(paired_diffs[row["arm"]], natural, reference)
    return rows


def _benefit(diffs: dict, natural: dict, reference: str) -> dict:
    """`benefit_ratio` over the seeds both arms share, as recorded in metrics.json (fractions)."""
    seeds = [s for s in diffs if s in natural]
    b = benefit_ratio([diffs[s] for s in seeds], [natural[s] for s in seeds])
    if not natural:
        b["reason"] = f"the natural arm {reference!r} has no difference to scratch yet"
    return {"reference": reference, "ratio": b["ratio"], "ci95": b["ci95"], "defined": b["defined"],
            "reason": b["reason"], "n": b["n"]}


def benefit_text(benefit: dict | None, arm: str | None = None) -> str:
    """The report's benefit cell: `65 % [40, 90]`, or why the ratio is undefined; `—` without one."""
    if not benefit:
        return "—"
    if not benefit["defined"]:
        short = ("natural's gain not established" if "not established" in (benefit["reason"] or "")
                 else benefit["reason"] or "no paired seeds")
        return f"undefined ({short})"
    low, high = benefit["ci95"]
    text = f"{100 * benefit['ratio']:.0f} % [{100 * low:.0f}, {100 * high:.0f}]"
    return text + (" (reference)" if arm is not None and arm == benefit["reference"] else "")


def _task(protocol: dict) -> str:
    """The arm's pre-training task, with self-training and augmentation when it has them."""
    parts = [protocol["task"]]
    if protocol.get("selftrain"):
        student = protocol["selftrain"].get("student_augment")
        parts.append(f"self-training x{protocol['selftrain']['rounds']}"
                     + (f" (students: {student} aug.)" if student else ""))
    if protocol.get("augment", "none") != "none":
        parts.append(f"{protocol['augment']} aug.")
    return " + ".join(parts)


def arm_statistics(metrics: dict) -> dict:
    """What `metrics.json` records per arm under `statistics` (fractions, not points), with the Holm adjustment
    computed here, once, over the comparisons of `metrics` (a run; a sweep re-adjusts its points together with
    `store_sweep_holm`)."""
    out = {}
    rows = _unadjusted_rows(metrics)
    family = holm_family(rows)
    for row in rows:
        entry = {"test_accuracy": {"mean": row["test_accuracy_mean"], "std": row["test_accuracy_std"],
                                   "ci95": row["test_accuracy_ci"], "n": row["n"]}}
        if "diff_mean" in row:
            p_holm, comparisons = family[(row.get("point"), row["arm"])]
            entry["vs_baseline"] = {"baseline": row["baseline"], "mean": row["diff_mean"], "std": row["diff_std"],
                                    "n": row["diff_n"], "ci95": row["diff_ci"], "p": row["p"], "p_holm": p_holm,
                                    "comparisons": comparisons,
                                    "bootstrap_ci95": row["bootstrap_ci"], "seeds_for_80_power": row["seeds_needed"]}
        if "benefit" in row:
            entry["benefit"] = row["benefit"]
        out[row["arm"]] = entry
    return out


def holm_note(metrics: dict) -> list[str]:
    """A run report's line on the family its p-values were Holm-adjusted over, when it is a sweep's (or, until the
    sweep finishes, one point's); nothing for a run of its own (its verdicts count its comparisons)."""
    record = metrics.get("holm") or {}
    n = record.get("comparisons", 0)
    count = f"{n} comparison{'s' if n != 1 else ''}"
    if record.get("family") == "sweep":
        return ["", f"p-values are Holm-adjusted over every comparison of the sweep ({count}: all points, all arms), "
                "the same adjusted p-values as the sweep's report.md."]
    if record.get("family") == "point":
        return ["", f"p-values are Holm-adjusted over this point's {count} only: when the sweep's last point "
                "finishes, they are replaced by the adjustment over every comparison of the sweep."]
    return []


def verdict_lines(metrics: dict) -> list[str]:
    """One plain verdict per compared arm (interval, p-value, Holm-adjusted when several comparisons, evidence)."""
    rows = [row for row in summary_rows(metrics) if "diff_mean" in row]
    return [(f"{row['point']}: " if "point" in row else "") + verdict(row["arm"], row["baseline"], {"mean": row["diff_mean"], "std": row["diff_std"], "n": row["diff_n"],
                                                  "ci": row["diff_ci"], "p": row["p"], "seeds_needed": row["seeds_needed"]},
                    row["p_holm"] if row["comparisons"] > 1 else None, row["comparisons"]) for row in rows]


def benefit_note(metrics: dict) -> list[str]:
    """The report's explanation of the benefit column, when the run has a natural reference arm."""
    arms = [point["arms"] for point in metrics["points"]] if "points" in metrics else [metrics["arms"]]
    names = {reference_arm(a, metrics.get("reference")) for a in arms} - {None}
    if not names:
        return []
    return ["", f"Benefit: each arm's mean gain over its scratch as a share of the natural reference arm's "
            f"({', '.join(f'`{n}`' for n in sorted(names))}), mean(arm − scratch) / mean(natural − scratch) over the "
            "seeds, with a paired bootstrap 95 % interval (the same seeds resampled for both); undefined where the "
            "natural arm's difference to scratch has an interval containing zero or below zero."]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def interval(ci, digits: int = 1, sign: bool = False) -> str:
    """`[low, high]` in points, or empty without an interval."""
    if not ci:
        return ""
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f" [{f.format(100 * ci[0])}, {f.format(100 * ci[1])}]"


def markdown_table(metrics: dict) -> str:
    """Arm x test accuracy (mean ± std, 95 % interval), raw accuracy, paired difference vs its scratch (points, 95 %
    interval, p-value; Holm-adjusted when the run makes several comparisons), and with a natural reference arm the
    share of its gain each arm recovers."""
    return rows_table(summary_rows(metrics))


def rows_table(rows: list[dict]) -> str:
    """Markdown table of `summary_rows` (of one run, or of several with a `run` key each: a run column is added)."""
    labels = [key for key in ("run", "point") if any(key in row for row in rows)]
    benefit = any("benefit" in row for row in rows)
    lines = ["".join(f"| {key} " for key in labels) + "| arm | task | frozen | test acc % (mean ± std [95 % CI]) | raw (no BN "
             "refresh) % | Δ vs its scratch (pts [95 % CI], p) | " + ("benefit (% of natural's gain [95 % CI]) | "
                                                                       if benefit else "")
             + "kNN % (frozen features) | trainable params |",
             "|---" * (8 + int(benefit) + len(labels)) + "|"]
    for row in rows:
        if "diff_mean" not in row:
            diff = "—"
        else:
            diff = f"{100 * row['diff_mean']:+.2f}{interval(row['diff_ci'], 2, True)}"
            if row["p"] is not None:
                diff += f", p = {row['p']:.2g}" + (f" (Holm {row['p_holm']:.2g})" if row["comparisons"] > 1 else "")
            if row["baseline"] != BASELINE:
                diff += f" (vs {row['baseline']})"
        knn = pct(row["knn_accuracy_mean"]) if "knn_accuracy_mean" in row else "—"
        lines.append("".join(f"| {row.get(key, '')} " for key in labels) +
                     f"| {row['arm']} | {row['task']} | {row['frozen_depth']} | {pct(row['test_accuracy_mean'])} ± "
                     f"{pct(row['test_accuracy_std'])}{interval(row['test_accuracy_ci'], 2)} (n={row['n']}) | "
                     f"{pct(row['test_accuracy_raw_mean'])} | {diff} | "
                     + (f"{benefit_text(row.get('benefit'), row['arm'])} | " if benefit else "")
                     + f"{knn} | {row['trainable_params']:,} |")
    return "\n".join(lines)


CSV_FIELDS = ["run", "recipe", "point", "arm", "task", "frozen_depth", "n", "test_accuracy_mean", "test_accuracy_std",
              "test_accuracy_ci_low", "test_accuracy_ci_high", "test_accuracy_raw_mean", "baseline", "diff_mean",
              "diff_std", "diff_ci_low", "diff_ci_high", "p", "p_holm", "seeds_needed", "benefit_reference", "benefit",
              "benefit_ci_low", "benefit_ci_high", "benefit_undefined", "trainable_params"]


def flat_row(row: dict) -> dict:
    """A summary row with its intervals split into `_low` / `_high` columns (CSV); the benefit as its ratio, interval,
    reference arm and, when undefined, the reason (the ratio left empty)."""
    out = {k: v for k, v in row.items() if not k.endswith("_ci") and k != "benefit"}
    for key in ("test_accuracy_ci", "diff_ci"):
        if row.get(key):
            out[f"{key}_low"], out[f"{key}_high"] = row[key]
    b = row.get("benefit")
    if b:
        out.update(benefit_reference=b["reference"], benefit=b["ratio"])
        if b["defined"]:
            out["benefit_ci_low"], out["benefit_ci_high"] = b["ci95"]
        else:
            out["benefit_undefined"] = b["reason"]
    return out


def history_csv(metrics: dict) -> str:
    """Per-epoch history of every arm, seed and stage as CSV text."""
    rows, keys = [], set()
    for name, entry in metrics["arms"].items():
        for stage, histories in (("pretrain", entry.get("pretext", [])), ("finetune", entry["history"])):
            for hist in histories:
                series = {k: v for k, v in hist.items() if isinstance(v, list) and k != "epoch"}
                n = max((len(v) for v in series.values()), default=0)
                positions = hist.get("epoch") or list(range(1, n + 1))
                for epoch in range(n):
                    row = {"arm": name, "seed": hist["seed"], "stage": stage, "epoch": positions[epoch]}
                    for k, v in series.items():
                        if epoch < len(v):
                            row[k] = v[epoch]
                            keys.add(k)
                    rows.append(row)
    fields = ["arm", "seed", "stage", "epoch", *sorted(keys)]
    out = _io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def run_report(metrics: dict) -> str:
    """The run's `report.md`."""
    from kpretrain.report.confusion import most_confused

    d = metrics["data"]
    lines = [f"# {metrics['recipe']}" + (" (smoke run: tiny data, numbers mean nothing)" if metrics["smoke"] else ""), ""]
    lines += ["## Result", "", markdown_table(metrics), ""]
    lines += [f"- {line}" for line in verdict_lines(metrics)]
    lines += holm_note(metrics)
    lines += benefit_note(metrics)
    lines += ["", f"Test accuracy is measured {'after refreshing' if metrics['evaluation']['bn_refresh'] else 'without refreshing'} "
              "the batch-norm moving statistics on training batches; the raw column shows the accuracy before.", ""]
    warnings = [*metrics["warnings"], *convergence_lines(metrics)]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    lines += ["## Setup", "",
              f"- data: {d['dataset']} ({d['source']}), image {tuple(d['image_shape'])}, {d['num_classes']} classes, "
              f"scaling {d['scaling']}",
              f"- per seed: {d['labelled']} labelled, {d['validation']} validation, {d['unlabelled']} unlabelled pool; "
              f"test {d['test']}",
              f"- seeds: {metrics['seeds']}",
              *_time_line(metrics),
              f"- wall time: {metrics['wall_time_s']:.0f} s on {metrics['environment']['device']} "
              f"({metrics['environment']['cpu_count']} cores), TensorFlow {metrics['environment']['tensorflow']}, "
              f"Keras {metrics['environment']['keras']}", ""]
    averaged = averaging_lines(metrics)
    if averaged:
        lines += ["## Weight averaging", "", "Test accuracy, seed mean: the arm's headline is the averaged weights after the "
                  "batch-norm refresh; the other two are diagnostics (nothing is chosen from them).", ""]
        lines += [f"- {line}" for line in averaged] + [""]
    if metrics.get("shortcut"):
        lines += ["## Pretext shortcut check", "", "Can the pretext label be read off low-level image statistics "
                  "(16-bin intensity histogram, maximum, mean, ink fraction) instead of shape?  A logistic regression "
                  "on those 19 numbers, cross-validated on pretext examples, next to chance and to the pretext "
                  "network's validation accuracy (a warning when it gets 80 % of the network's margin over chance):", ""]
        for s in metrics["shortcut"]:
            network = "" if s["network_accuracy"] is None else f"; pretext network {s['network_accuracy']:.3f}"
            flag = " **(shortcut: the task can be solved without learning shape)**" if s["warning"] else ""
            lines.append(f"- {', '.join(s['arms'])} ({s['task']}): statistics {s['accuracy']:.3f}, chance "
                         f"{s['chance']:.3f}{network}{flag}")
        lines.append("")
    taught = selftrain_lines(metrics)
    if taught:
        lines += ["## Self-training", "", "Per round, seed mean: pseudo labels kept (of the unlabelled pool), their "
                  "accuracy against the pool's hidden labels (a diagnostic: nothing is chosen from it), teacher and "
                  "student validation accuracy.", ""] + [f"- {line}" for line in taught] + [""]
    found = learning_rate_lines(metrics)
    if found:
        lines += ["## Learning rates found (`learning_rate: auto`)", ""] + [f"- {line}" for line in found] + [""]
    lines += ["| arm | protocol |", "|---|---|"]
    for name, entry in metrics["arms"].items():
        p = entry["protocol"]
        lines.append(f"| {name} | " + ", ".join(f"{k}={v}" for k, v in p.items() if v is not None) + " |")
    lines += ["", "## Confusions", "", "The three class pairs each arm mistakes most often for each other (share of "
              "the two classes' test images predicted as the other, over the seeds); matrices in `confusion_<arm>.png` "
              "and `metrics.json`.", ""]
    for name, entry in metrics["arms"].items():
        pairs = most_confused(entry["confusion"], metrics["data"]["class_names"])
        lines.append(f"- {name}: " + "; ".join(f"{a} / {b} {100 * share:.1f} %" for a, b, share in pairs))
    lines += ["", "## Plots", "", "![learning curves](curves.png)", ""]
    lines += [f"![confusion {name}](confusion_{name}.png)" for name in metrics["arms"]] + [""]
    probed = [p for p in metrics.get("pretraining", []) if any(k.startswith("val_probe_") for k in p["history"])]
    if probed:
        lines += ["## Probes during pre-training", "", "![probes](probe.png)", ""]
        for p in probed:
            scores = {k.removeprefix("val_probe_"): [v for v in p["history"][k] if v is not None]
                      for k in p["history"] if k.startswith("val_probe_")}
            text = "; ".join(f"{k} " + ", ".join(f"{v:.3f}" for v in vs) for k, vs in scores.items())
            chosen = f" (checkpoint kept: epoch {p['selected_epoch']})" if p.get("selected_epoch") else ""
            lines.append(f"- {p['unit']}: {text}{chosen}")
        lines += [""] + probe_confusion_lines(metrics) + [""]
    if metrics.get("backbone"):
        b = metrics["backbone"]
        lines += ["## Exported backbone", "",
                  f"Pre-trained backbone of arm `{b['arm']}`, seed {b['seed']}: `backbone.keras` and the SavedModel "
                  "`backbone/` (endpoint `serve`, float32 images, see `backbone/kpretrain.json`).", ""]
    return "\n".join(lines)


def selftrain_lines(metrics: dict) -> list[str]:
    """Per self-training arm and round: pseudo labels kept, their hidden-label accuracy, teacher and student
    validation accuracy (seed means)."""
    lines = []
    for name, entry in metrics["arms"].items():
        records = [r for r in entry.get("selftrain") or [] if r]
        for i in range(max((len(r["rounds"]) for r in records), default=0)):
            rounds = [r["rounds"][i] for r in records if i < len(r["rounds"])]
            kept = np.mean([r["pseudo_labels"] for r in rounds])
            right = [r["pseudo_label_accuracy"] for r in rounds if r.get("pseudo_label_accuracy") is not None]
            accuracy = f", {100 * np.mean(right):.1f} % right" if right else ""
            lines.append(f"{name} round {i + 1}: {kept:,.0f} pseudo labels of {records[0]['pool']:,} pool images"
                         f"{accuracy}; teacher {pct(np.mean([r['teacher_val_accuracy'] for r in rounds]))} %, "
                         f"student {pct(np.mean([r['student_val_accuracy'] for r in rounds]))} % validation")
    return lines


def probe_confusion_lines(metrics: dict) -> list[str]:
    """Per pre-training setting and probe: the most confused class pairs at its best and at its last probe point
    (validation, summed over the seeds)."""
    from kpretrain.report.confusion import most_confused, probe_confusion_rows

    names, lines = metrics["data"]["class_names"], []
    for setting, probe, points in probe_confusion_rows(metrics):
        for when in ("best", "last"):
            epochs = ", ".join(str(e) for e in sorted({p[when]["epoch"] for p in points}))
            pairs = most_confused([p[when]["matrix"] for p in points], names)
            lines.append(f"- {setting}: most confused by the {probe} probe at its {when} point (epoch {epochs}): "
                         + "; ".join(f"{a} / {b} {100 * share:.1f} %" for a, b, share in pairs))
    if lines:
        lines += ["", "Validation confusion matrices of the probes at those points: `probe_confusion.png`."]
    return lines


def averaging_lines(metrics: dict) -> list[str]:
    """Per averaged arm: test accuracy of the last weights, of the averaged ones before and after the BN refresh."""
    lines = []
    for name, entry in metrics["arms"].items():
        if entry.get("averaging") and entry.get("test_accuracy_last"):
            method = entry["averaging"][0]["method"]
            mean = lambda xs: 100 * sum(xs) / len(xs)  # noqa: E731
            lines.append(f"{name} ({method}): last weights {mean(entry['test_accuracy_last']):.2f} % -> averaged, stale "
                         f"BN {mean(entry['test_accuracy_raw']):.2f} % -> averaged, BN refreshed "
                         f"{mean(entry['test_accuracy']):.2f} %")
    for p in metrics.get("pretraining", []):
        if p.get("averaging"):
            a = p["averaging"]
            last, avg = (a.get(f"val_{p['monitor']}_{k}") for k in ("last", "averaged"))
            lines.append(f"pre-training {p['unit']} ({a['method']}): pretext validation {p['monitor']} "
                         f"last weights {last:.4f} -> averaged, BN refreshed {avg:.4f}")
    return lines


def learning_rate_lines(metrics: dict) -> list[str]:
    """Each range test's chosen learning rate (`learning_rate: auto`): per pre-training unit and per arm."""
    lines = [f"pre-training {p['unit']} ({p['task']}): learning rate found {p['lr_find']['suggested_lr']:.3g} "
             f"({p['lr_find']['method']})" for p in metrics.get("pretraining", []) if p.get("lr_find")]
    for name, entry in metrics["arms"].items():
        if entry.get("finetune_learning_rate"):
            rates = ", ".join(f"{lr:.3g}" for lr in entry["finetune_learning_rate"])
            lines.append(f"{name} fine-tuning: learning rate found per seed {rates}")
    return lines


def sweep_report(metrics: dict) -> str:
    """The sweep's `report.md`: one table over every point and arm, verdicts, links to the points' reports."""
    lines = [f"# {metrics['recipe']}: sweep over " + ", ".join(f"{k} in {v}" for k, v in metrics["sweep"].items())
             + (" (smoke run: tiny data, numbers mean nothing)" if metrics["smoke"] else ""), "",
             "## Result", "", markdown_table(metrics), ""]
    lines += [f"- {line}" for line in verdict_lines(metrics)]
    lines += benefit_note(metrics)
    lines += ["", "p-values are Holm-adjusted over every comparison of the sweep (all points, all arms); each point's "
              "report.md and metrics.json hold the same adjusted p-values.", ""]
    if metrics.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in metrics["warnings"]] + [""]
    if "data.labels_per_class" in metrics["sweep"]:
        lines += ["## Label efficiency", "", "![label efficiency](label_efficiency.png)", ""]
    lines += ["## Points", ""] + [f"- [{p['dir']}]({p['dir']}/report.md): {p['data']['labelled']} labelled per seed"
                                  for p in metrics["points"]]
    lines += ["", f"Pre-trainings reused across points (identical settings and data for a seed): "
              f"{metrics['pretraining_reused']}.", ""]
    return "\n".join(lines)


def _time_line(metrics: dict) -> list[str]:
    split = metrics.get("time_split")
    if not split:
        return []
    wall = max(split["wall"], 1e-9)
    return [f"- time split: training {split['training']:.0f} s ({100 * split['training'] / wall:.0f} %), evaluation "
            f"{split['evaluation']:.0f} s ({100 * split['evaluation'] / wall:.0f} %), other {split['other']:.0f} s"]


def convergence_lines(metrics: dict, tolerance: float = 0.005) -> list[str]:
    """Arms whose seed-mean validation accuracy still rose by `tolerance` or more over the last 20 % of epochs."""
    lines = []
    for name, entry in metrics["arms"].items():
        curves = [[v for v in h.get("val_accuracy", []) if v is not None] for h in entry["history"]]
        n = min((len(c) for c in curves), default=0)
        if n < 5:
            continue
        mean = np.mean([c[:n] for c in curves], axis=0)
        start = mean[int(np.floor(0.8 * (n - 1)))]
        if mean[-1] - start >= tolerance:
            lines.append(f"{name}: validation accuracy still rising (+{100 * (mean[-1] - start):.1f} pts over the last "
                         f"20 % of validations); raise finetune.epochs")
    return lines
