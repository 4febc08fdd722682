"""report.md: a run's (`run_report`) and a sweep's (`sweep_report`), their table, verdict lines and notes, and the
run report's diagnostic sections (their lines in `kpretrain.report.diagnostics`, re-exported here).  Every number
comes from `kpretrain.report.summary`."""

from __future__ import annotations

from kpretrain.report.confusion import most_confused
from kpretrain.report.csv_rows import rows_table
from kpretrain.report.diagnostics import (averaging_lines, convergence_lines, learning_rate_lines,
                                          probe_confusion_lines, selftrain_lines)
from kpretrain.report.statistics import verdict
from kpretrain.report.summary import COMPUTE, reference_arm, summary_rows

SMOKE = " (smoke run: tiny data, numbers mean nothing)"


def markdown_table(metrics: dict) -> str:
    """Arm x test accuracy (mean ± std, 95 % interval), raw accuracy, paired difference vs its scratch (points, 95 %
    interval, p-value; Holm-adjusted when the run makes several comparisons), and with a natural reference arm the
    share of its gain each arm recovers."""
    return rows_table(summary_rows(metrics))


def verdict_lines(metrics: dict) -> list[str]:
    """One plain verdict per comparison (interval, p-value, Holm-adjusted when several comparisons, evidence): each
    compared arm against its baseline, then against its compute-matched scratch when it has one."""
    return [_verdict_line(row, prefix, bool(metrics.get("smoke"))) for row in summary_rows(metrics)
            for prefix in ("", COMPUTE) if prefix + "diff_mean" in row]


def _verdict_line(row: dict, prefix: str, smoke: bool) -> str:
    """The verdict of a row's comparison with its baseline (`prefix` "compute_": its compute-matched scratch)."""
    def get(key):
        return row[prefix + key]

    return (f"{row['point']}: " if "point" in row else "") + verdict(
        row["arm"], get("baseline"), {"mean": get("diff_mean"), "std": get("diff_std"), "n": get("diff_n"),
                                      "ci": get("diff_ci"), "p": get("p"), "seeds_needed": get("seeds_needed")},
        get("p_holm") if row["comparisons"] > 1 else None, row["comparisons"], smoke=smoke)


def compute_note(metrics: dict) -> list[str]:
    """The report's explanation of the compute-matched scratches, when the run (or a sweep's point) has one: each
    with the matched scratch it lengthens, its extra steps and whose pre-training they match."""
    points = metrics["points"] if "points" in metrics else [{"arms": metrics["arms"]}]
    computes = [(name, entry) for point in points for name, entry in point["arms"].items() if entry.get("compute_of")]
    if not computes:
        return []
    lines = ["", "Compute-matched scratch (He et al. 2019, \"Rethinking ImageNet pre-training\"): the arm's matched "
             "scratch fine-tuned for as many more optimizer steps (batches) as the arm's pre-training took, on the "
             "same data in the same order; its Δ column asks whether pre-training helped beyond the extra training "
             "it buys."]
    if "points" not in metrics:
        lines.append("")
        for name, entry in computes:
            steps = ", ".join(str(n) for n in sorted(set(entry.get("finetune_extra_steps") or [])))
            lines.append(f"- `{name}`: `{entry.get('extends') or 'the matched scratch'}` + {steps} steps, the "
                         f"pre-training of " + ", ".join(f"`{arm}`" for arm in entry["compute_of"]))
    return lines


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


def run_report(metrics: dict) -> str:
    """The run's `report.md`."""
    lines = [f"# {metrics['recipe']}" + (SMOKE if metrics["smoke"] else ""), ""]
    lines += ["## Result", "", markdown_table(metrics), ""]
    lines += [f"- {line}" for line in verdict_lines(metrics)]
    lines += holm_note(metrics)
    lines += benefit_note(metrics)
    lines += compute_note(metrics)
    refreshed = "after refreshing" if metrics["evaluation"]["bn_refresh"] else "without refreshing"
    lines += ["", f"Test accuracy is measured {refreshed} "
              "the batch-norm moving statistics on training batches; the raw column shows the accuracy before.", ""]
    warnings = [*metrics["warnings"], *convergence_lines(metrics)]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    lines += _setup_section(metrics)
    averaged = averaging_lines(metrics)
    if averaged:
        lines += ["## Weight averaging", "", "Test accuracy, seed mean: the arm's headline is the averaged weights "
                  "after the batch-norm refresh; the other two are diagnostics (nothing is chosen from them).", ""]
        lines += [f"- {line}" for line in averaged] + [""]
    lines += _shortcut_section(metrics)
    taught = selftrain_lines(metrics)
    if taught:
        lines += ["## Self-training", "", "Per round, seed mean: pseudo labels kept (of the unlabelled pool), their "
                  "accuracy against the pool's hidden labels (a diagnostic: nothing is chosen from it), teacher and "
                  "student validation accuracy.", ""] + [f"- {line}" for line in taught] + [""]
    found = learning_rate_lines(metrics)
    if found:
        lines += ["## Learning rates found (`learning_rate: auto`)", ""] + [f"- {line}" for line in found] + [""]
    lines += _protocol_table(metrics) + _architecture_section(metrics) + _confusion_section(metrics)
    lines += _probe_section(metrics)
    if metrics.get("backbone"):
        b = metrics["backbone"]
        lines += ["## Exported backbone", "",
                  f"Pre-trained backbone of arm `{b['arm']}`, seed {b['seed']}: `backbone.keras` and the SavedModel "
                  "`backbone/` (endpoint `serve`, float32 images, see `backbone/kpretrain.json`).", ""]
    return "\n".join(lines)


def _architecture_section(metrics: dict) -> list[str]:
    """Each arm's backbone and its baseline's: the same architecture (a run before 0.5.2 records none)."""
    arms = {name: entry for name, entry in metrics["arms"].items() if entry.get("architecture")}
    if not arms:
        return []
    lines = ["## Architectures", "", "Each arm is compared with a baseline of the same architecture (re-initialised "
             "with the seed); blocks are what `transfer.frozen_depth` counts.", ""]
    for name, entry in arms.items():
        a = entry["architecture"]
        compared = [f"`{entry[key]}`" for key in ("baseline", "compute_baseline") if entry.get(key)]
        baseline = f"; compared with {' and '.join(compared)}" if compared else ""
        lines.append(f"- `{name}`: {a['name']}, {a['parameters']:,} parameters, blocks "
                     + ", ".join(f"{block} ({layers} layers)" for block, layers in a["blocks"]) + baseline)
    return lines + [""]


def sweep_report(metrics: dict) -> str:
    """The sweep's `report.md`: one table over every point and arm, verdicts, links to the points' reports."""
    lines = [f"# {metrics['recipe']}: sweep over " + ", ".join(f"{k} in {v}" for k, v in metrics["sweep"].items())
             + (SMOKE if metrics["smoke"] else ""), "",
             "## Result", "", markdown_table(metrics), ""]
    lines += [f"- {line}" for line in verdict_lines(metrics)]
    lines += benefit_note(metrics)
    lines += compute_note(metrics)
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


def _setup_section(metrics: dict) -> list[str]:
    """`## Setup`: data, labelled / validation / unlabelled / test sizes, seeds, time and environment."""
    d, env = metrics["data"], metrics["environment"]
    return ["## Setup", "",
            f"- data: {d['dataset']} ({d['source']}), image {tuple(d['image_shape'])}, {d['num_classes']} classes, "
            f"scaling {d['scaling']}",
            f"- per seed: {d['labelled']} labelled, {d['validation']} validation, {d['unlabelled']} unlabelled pool; "
            f"test {d['test']}",
            f"- seeds: {metrics['seeds']}",
            *_time_line(metrics),
            f"- wall time: {metrics['wall_time_s']:.0f} s on {env['device']} ({env['cpu_count']} cores), "
            f"TensorFlow {env['tensorflow']}, Keras {env['keras']}", ""]


def _time_line(metrics: dict) -> list[str]:
    split = metrics.get("time_split")
    if not split:
        return []
    wall = max(split["wall"], 1e-9)
    return [f"- time split: training {split['training']:.0f} s ({100 * split['training'] / wall:.0f} %), evaluation "
            f"{split['evaluation']:.0f} s ({100 * split['evaluation'] / wall:.0f} %), other {split['other']:.0f} s"]


def _shortcut_section(metrics: dict) -> list[str]:
    """`## Pretext shortcut check`, when metrics.json has one."""
    if not metrics.get("shortcut"):
        return []
    lines = ["## Pretext shortcut check", "", "Can the pretext label be read off low-level image statistics "
             "(16-bin intensity histogram, maximum, mean, ink fraction) instead of shape?  A logistic regression "
             "on those 19 numbers, cross-validated on pretext examples, next to chance and to the pretext "
             "network's validation accuracy (a warning when it gets 80 % of the network's margin over chance):", ""]
    for s in metrics["shortcut"]:
        network = "" if s["network_accuracy"] is None else f"; pretext network {s['network_accuracy']:.3f}"
        flag = " **(shortcut: the task can be solved without learning shape)**" if s["warning"] else ""
        lines.append(f"- {', '.join(s['arms'])} ({s['task']}): statistics {s['accuracy']:.3f}, chance "
                     f"{s['chance']:.3f}{network}{flag}")
    return lines + [""]


def _protocol_table(metrics: dict) -> list[str]:
    """Arm x its protocol (every setting that is not None); epochs as they ran (capped by a smoke run's budget)."""
    budget = metrics.get("budget") or {}
    lines = ["| arm | protocol |", "|---|---|"]
    for name, entry in metrics["arms"].items():
        p = dict(entry["protocol"])
        if entry.get("finetune_extra_steps"):  # a compute-matched scratch
            p["finetune_extra_steps"] = ", ".join(str(n) for n in sorted(set(entry["finetune_extra_steps"])))
        for key in ("pretrain_epochs", "finetune_epochs"):
            if budget.get("epochs") is not None and p.get(key) and p[key] > budget["epochs"]:
                p[key] = f"{budget['epochs']:g} (smoke; recipe: {p[key]:g})"
        lines.append(f"| {name} | " + ", ".join(f"{k}={v}" for k, v in p.items() if v is not None) + " |")
    if budget:
        lines += ["", f"Smoke budget: at most {budget['steps_per_epoch']} batches x {budget['epochs']} epoch per stage, "
                  f"{budget['train_examples']} train and {budget['test_examples']} test images."]
    return lines


def _confusion_section(metrics: dict) -> list[str]:
    """`## Confusions` and `## Plots`: each arm's most confused pairs, the curves and the confusion matrices."""
    lines = ["", "## Confusions", "", "The three class pairs each arm mistakes most often for each other (share of "
             "the two classes' test images predicted as the other, over the seeds); matrices in `confusion_<arm>.png` "
             "and `metrics.json`.", ""]
    for name, entry in metrics["arms"].items():
        pairs = most_confused(entry["confusion"], metrics["data"]["class_names"])
        lines.append(f"- {name}: " + "; ".join(f"{a} / {b} {100 * share:.1f} %" for a, b, share in pairs))
    lines += ["", "## Plots", "", "![learning curves](curves.png)", ""]
    return lines + [f"![confusion {name}](confusion_{name}.png)" for name in metrics["arms"]] + [""]


def _probe_section(metrics: dict) -> list[str]:
    """`## Probes during pre-training`: each probed unit's scores, its kept checkpoint, the probes' confusions."""
    probed = [p for p in metrics.get("pretraining", []) if any(k.startswith("val_probe_") for k in p["history"])]
    if not probed:
        return []
    lines = ["## Probes during pre-training", "", "![probes](probe.png)", ""]
    for p in probed:
        scores = {k.removeprefix("val_probe_"): [v for v in p["history"][k] if v is not None]
                  for k in p["history"] if k.startswith("val_probe_")}
        text = "; ".join(f"{k} " + ", ".join(f"{v:.3f}" for v in vs) for k, vs in scores.items())
        chosen = f" (checkpoint kept: epoch {p['selected_epoch']})" if p.get("selected_epoch") else ""
        lines.append(f"- {p['unit']}: {text}{chosen}")
    return lines + [""] + probe_confusion_lines(metrics) + [""]
