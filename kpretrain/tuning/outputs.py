"""What `kpretrain tune` writes and prints in `DIR/<name>/`: `search.json` (what a resumed search must match),
`best.json`, `best_recipe.yaml`, `tune.png`, the trials table, and a failed stage's message."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass

import keras_tuner

from kpretrain.errors import print_failure
from kpretrain.recipe import recipe_from_dict
from kpretrain.recipe.values import dump_yaml, load_yaml
from kpretrain import io
from kpretrain.tuning.conditions import trial_values
from kpretrain.tuning.display import trial_name
from kpretrain.tuning.space import Dimension, with_values

SIGNATURE_FILE = "search.json"  # the searched arm's recipe and --smoke: what a trial's score depends on


def write_signature(project: str, signature: dict) -> None:
    """Record in `project/search.json` what the search's trials are scored with, for a later resume to compare."""
    io.write_json(os.path.join(project, SIGNATURE_FILE), signature)


@dataclass(frozen=True)
class SearchOutputs:
    """What `write_search_outputs` wrote of a search: `best`, the best trial's row (None when no trial completed),
    and as a reader of the files gets them, `written` (best.json) and `best_recipe` (best_recipe.yaml, or None)."""

    best: dict | None
    written: dict
    best_recipe: dict | None


def write_outputs(oracle: keras_tuner.Oracle, dims: list[Dimension], raw: dict, project: str, debug: bool,
                  info: dict) -> dict | None:
    """Print the summary; write best.json, and when a trial completed best_recipe.yaml and tune.png; returns the best."""
    return write_search_outputs(oracle, dims, raw, project, debug, info).best


def write_search_outputs(oracle: keras_tuner.Oracle, dims: list[Dimension], raw: dict, project: str, debug: bool,
                         info: dict) -> SearchOutputs:
    """`write_outputs`, returning what it wrote.

    Args:
        oracle: the search's KerasTuner oracle, its trials finished.
        dims: the searched dimensions.
        raw: the raw recipe searched.
        project: the search's directory, `DIR/<name>/`.
        debug: print each failed trial's whole message.
        info: the search's description, the first keys of best.json.

    Returns:
        A `SearchOutputs`.
    """
    rows = trial_rows(oracle, dims)
    print(summary_table(rows, dims))
    for row in rows:
        if "error" in row:
            print(f"{trial_name(row['trial_id'])} {row['status'].lower()}: {row['error']}", file=sys.stderr)
            if debug:
                print(oracle.trials[row["trial_id"]].message, file=sys.stderr)
    best = rows[0] if rows and rows[0]["status"] == "COMPLETED" else None
    written = {**info, "best": best, "trials": rows}
    io.write_json(os.path.join(project, "best.json"), written)
    recipe_text = None
    if best is not None:
        recipe_text = best_recipe_text(raw, best)
        io.write_text(os.path.join(project, "best_recipe.yaml"), recipe_text)
        plot_search(rows, dims, os.path.join(project, "tune.png"), smoke=bool(info.get("smoke")))
        print(f"best: {trial_name(best['trial_id'])}, val_accuracy {best['score']:.4f}: {json.dumps(best['values'])}")
        print(f"results: {project}/best.json, {project}/tune.png; run it: kpretrain run {project}/best_recipe.yaml")
    return SearchOutputs(best, json.loads(json.dumps(written)),  # as io.write_json wrote it
                         None if recipe_text is None else load_yaml(recipe_text))


def trial_rows(oracle: keras_tuner.Oracle, dims: list[Dimension]) -> list[dict]:
    """Every trial (KerasTuner's id, status, score, recipe values, error), completed ones best first; `values` holds the
    keys active in the trial (a pre-training key of a trial that does not pre-train is absent)."""
    rows = []
    for trial in oracle.trials.values():
        row = {"trial_id": trial.trial_id, "status": trial.status, "score": trial.score,
               "values": trial_values(dims, trial.hyperparameters.values)}
        if trial.message:
            row["error"] = trial.message.strip().splitlines()[-1]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["status"] != "COMPLETED", -(r["score"] or 0.0), r["trial_id"]))


def summary_table(rows: list[dict], dims: list[Dimension]) -> str:
    """Markdown table: trial (`trial_name`), values (— where the trial leaves a key inactive), score, status; best
    first."""
    lines = ["| trial | " + " | ".join(d.key for d in dims) + " | val_accuracy | status |",
             "|---" * (len(dims) + 3) + "|"]
    for row in rows:
        cells = [_fmt(row["values"][d.key]) if d.key in row["values"] else "—" for d in dims]
        score = "—" if row["score"] is None else f"{row['score']:.4f}"
        lines.append(f"| {trial_name(row['trial_id'])} | " + " | ".join(cells) + f" | {score} | {row['status']} |")
    return "\n".join(lines)


def _fmt(value) -> str:
    """A searched value as the recipe writes it: a number, a name, null, or a section in flow style."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None or isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def best_recipe_text(raw: dict, best: dict) -> str:
    """The recipe with the best values set as keys (tune section kept), as YAML with a provenance comment."""
    text = dump_yaml(with_values(raw, best["values"]))
    recipe_from_dict(load_yaml(text))  # runnable as written
    return (f"# best of kpretrain tune {raw['name']}: {trial_name(best['trial_id'])}, "
            f"val_accuracy {best['score']:.4f}\n"
            + text)


def plot_search(rows: list[dict], dims: list[Dimension], path: str, smoke: bool = False) -> None:
    """Objective against each hyperparameter, one subplot each (a trial where the key is inactive is not in its
    subplot); the best trial in red, named in the title (`smoke`: marked so)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "COMPLETED"]
    cols = min(4, len(dims))
    fig, axes = plt.subplots(math.ceil(len(dims) / cols), cols, figsize=(4 * cols, 3.2 * math.ceil(len(dims) / cols)),
                             squeeze=False)
    for ax, dim in zip(axes.flat, dims):
        points = [(r["values"][dim.key], r["score"]) for r in done if dim.key in r["values"]]
        if dim.kind == "choice":  # every choice on the axis, in the recipe's order
            labels = [str(v) for v in dim.values]
            xs = [labels.index(str(x)) for x, _ in points]
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:  # the whole range searched
            xs = [x for x, _ in points]
            lo, hi = dim.values
            if dim.sampling == "log":
                ax.set_xscale("log")
                ax.set_xlim(lo / (hi / lo) ** 0.05, hi * (hi / lo) ** 0.05)
            else:
                ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        ax.scatter(xs, [y for _, y in points], color="C0")
        if done and dim.key in done[0]["values"]:  # the best trial is the first of `done`
            ax.scatter(xs[:1], [y for _, y in points[:1]], color="red", zorder=3)
        ax.set_xlabel(dim.key + (f"\n(searched when {dim.parent} > 0)" if dim.parent else ""))
        ax.set_ylabel("val_accuracy")
    for ax in list(axes.flat)[len(dims):]:
        ax.axis("off")
    best = f", best {trial_name(done[0]['trial_id'])} in red" if done else ""
    fig.suptitle(f"{len(done)} completed trials{best}" + (" (smoke run: numbers mean nothing)" if smoke else ""))
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)


def failed(stage: str, exc: Exception, debug: bool) -> int:
    """Print that `stage` failed (its first line; the traceback with `debug`); returns exit code 1."""
    print_failure(stage, exc, debug)
    return 1
