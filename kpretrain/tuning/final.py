"""`kpretrain tune --final`: scratch searched with the same budget as the searched arm, then every seed of the
best recipe against that tuned scratch (`scratch-tuned`), on test."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass

from kpretrain.errors import InputError, RecipeError
from kpretrain.experiment.loop import Experiment
from kpretrain.recipe import recipe_from_dict
from kpretrain.recipe.rules import ARM_SHARED
from kpretrain.recipe.values import dump_yaml, load_yaml
from kpretrain import io
from kpretrain.tuning.display import trial_name
from kpretrain.tuning.outputs import best_recipe_text, failed
from kpretrain.tuning.space import learning_rates, searched_arm, with_values

SCRATCH_SECTIONS = ("backbone", "finetune")  # what a scratch baseline's score depends on that an arm can set
SHARED_SECTIONS = ("data", "evaluation")  # what it depends on too, but every arm of the final run shares


def scratch_search_recipe(raw: dict, arm_name: str) -> dict:
    """The raw recipe whose search tunes the searched arm's matched scratch with the same budget: the searched keys
    that apply to scratch, plus its fine-tuning learning rate, schedule and epochs when those are not searched.
    A searched `data` or `evaluation` key is a RecipeError: the final run's `scratch-tuned` arm could not hold
    scratch's own best value of it."""
    recipe = recipe_from_dict(raw)
    arm = recipe.arm_recipes()[arm_name].to_dict()  # its backbone and fine-tuning; the arm's own keys included
    space = {}
    for key, spec in recipe.tune.space.items():
        local = key.removeprefix(f"arms.{arm_name}.")
        if local.split(".")[0] in SHARED_SECTIONS:
            raise RecipeError(f"recipe key 'tune.space.{key}': --final cannot search it: every arm of the final run "
                              f"shares {local.split('.')[0]}, so the tuned scratch could not keep its own best value; "
                              f"set it at the top level, or search without --final")
        if local.split(".")[0] in SCRATCH_SECTIONS and local != "backbone.from":
            space[local] = spec
    epochs = arm["finetune"]["epochs"]
    space.setdefault("finetune.optimizer.learning_rate",
                     learning_rates(arm["finetune"]["optimizer"]["learning_rate"], recipe.tune.tuner))
    space.setdefault("finetune.optimizer.schedule", {"choice": ["constant", "cosine"]})
    if recipe.tune.tuner != "hyperband":  # Hyperband's budget is the epochs
        space.setdefault("finetune.epochs", {"int": [max(1, epochs // 2), 2 * epochs]})
    scratch = {k: v for k, v in arm.items() if k not in ("arms", "sweep", "baseline", "reference")}
    scratch.update(name=f"{recipe.name}-scratch", baselines=["scratch"],
                   tune={**arm["tune"], "arm": "scratch", "space": space})
    return scratch


def final_recipe(raw: dict, best: dict, scratch_raw: dict, scratch_best: dict) -> dict:
    """The best recipe with the tuned scratch as arm `scratch-tuned`, the searched arm's baseline."""
    final = load_yaml(best_recipe_text(raw, best))
    arm_name = searched_arm(recipe_from_dict(final))
    tuned = recipe_from_dict(with_values(scratch_raw, scratch_best["values"])).arm_recipes()["scratch"].to_dict()
    arms = final.get("arms") or {arm_name: {}}
    # every key an arm can set, as the scratch search scored it: one the arm left out would be the best recipe's
    # (its `selftrain`, say: a tuned scratch that self-trained, which no trial of the scratch search did)
    arms["scratch-tuned"] = {k: v for k, v in tuned.items() if k not in (*ARM_SHARED, "baseline", "reference")}
    arms[arm_name] = {**(arms.get(arm_name) or {}), "baseline": "scratch-tuned"}
    final["arms"] = arms
    final["tune"] = {**final.get("tune", {}), "arm": arm_name}
    recipe_from_dict(final)  # runnable as written
    return final


@dataclass(frozen=True)
class FinalRun:
    """The final run of `--final`: its exit code, directory, and `metrics.json` as written (None if it failed)."""

    code: int
    run_dir: str
    metrics: dict | None = None


def run_final(project: str, raw: dict, best: dict, scratch_raw: dict, scratch_best: dict, smoke: bool,
              debug: bool) -> FinalRun:
    """Every seed of the best recipe, its searched arm against the scratch tuned with the same budget, on test.

    Args:
        project: the search's directory; the run goes to its `final/<UTC timestamp>/`.
        raw: the raw recipe searched.
        best: the best trial's row (`trial_id`, `score`, `values`).
        scratch_raw: the raw recipe of scratch's search (`scratch_search_recipe`).
        scratch_best: the best trial's row of scratch's search.
        smoke: run with `--smoke`'s budget.
        debug: a failure prints its traceback.

    Returns:
        A `FinalRun`; a failure while training is exit code 1, an InputError is raised.
    """
    from kpretrain.report.terminal import print_results

    final = final_recipe(raw, best, scratch_raw, scratch_best)
    io.write_text(os.path.join(project, "final_recipe.yaml"),
                  f"# kpretrain tune {raw['name']} --final: the best recipe ({trial_name(best['trial_id'])}) against "
                  f"scratch tuned with the same budget (scratch/{trial_name(scratch_best['trial_id'])})\n"
                  + dump_yaml(final))
    recipe = recipe_from_dict(final)
    out = os.path.join(project, "final", dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    print(f"final: best recipe against the tuned scratch (scratch-tuned), seeds {recipe.seeds}, into {out}")
    try:
        metrics = Experiment(recipe, smoke=smoke).run(out)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        return FinalRun(failed("final run", exc, debug), out)
    print_results(metrics)
    return FinalRun(0, out, json.loads(json.dumps(metrics)))  # as its metrics.json holds them
