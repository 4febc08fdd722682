"""`kpretrain tune`: a KerasTuner search over any recipe keys (`tune.space`), scored on validation, never on test.

A trial is the searched arm with the trial's values set as recipe keys: pre-train, transfer, fine-tune on the
recipe's first seed; a pre-training key is searched only in trials that pre-train (`conditions`).  Outputs go to the
search's project, `DIR/<name>/` (`DIR/<name>-smoke/` with `--smoke`), beside KerasTuner's own files: `best.json`,
`best_recipe.yaml` (runnable with `kpretrain run`) and `tune.png`.  The same command resumes a stopped search
(KerasTuner's reload: finished trials are kept, the one that was running is run again); one process at a time
owns a project (its `.lock`).  Trials are named `trial_<id>` as KerasTuner names their directories (`display`).

The package, from the bottom layer up:
    space       the search space: `Dimension`, `parse_space`, the default space, a trial's recipe
    conditions  pre-training keys active only in trials that pre-train: `conditional`, `declare_space`
    display     the lines and status shown per trial (`TrialDisplay`, through `Progress`) and `trial_name`
    hypermodel  KerasTuner's side: `ProtocolHyperModel` (a trial through `protocol.run_unit`), the tuners
    outputs     best.json, search.json, best_recipe.yaml, tune.png and the trials table
    final       `--final`: the tuned-scratch search's recipe and the final run
    search      the command, `tune()` (its exit code) or `run_search()` (a `SearchResult`), with its resume
                guard

(Not `kpretrain/tune/`: a submodule `tune` would shadow the API function `kpretrain.tune` once imported.)
Every name `kpretrain.tuning` had as one module is importable from here (to patch one, patch it in the
submodule that uses it, e.g. `kpretrain.tuning.hypermodel.run_unit`).
"""


from kpretrain.errors import InputError, RecipeError
from kpretrain.experiment import Experiment  # noqa: F401 - one-module name
from kpretrain.models.backbones import block_names
from kpretrain.protocol import build_model, initial_backbone, pretraining_key, run_unit
from kpretrain.recipe import Recipe, apply_overrides, load_raw, pretrains, recipe_from_dict, with_defaults
from kpretrain.recipe.values import dump_yaml, format_value, load_yaml
from kpretrain import io
from kpretrain.rundir import LOCK_NAME, DirectoryLock
from kpretrain.training.runtime import configure_runtime, describe_device, distribution_strategy
from kpretrain.tuning import conditions, display, final, hypermodel, outputs, search, space
from kpretrain.tuning.conditions import EPOCHS, conditional, declare_space, trial_values
from kpretrain.tuning.display import TrialDisplay, trial_name
from kpretrain.tuning.final import (
    SCRATCH_SECTIONS, SHARED_SECTIONS, FinalRun, final_recipe, run_final, scratch_search_recipe)
from kpretrain.tuning.hypermodel import (
    _MISSING, PRETRAININGS_KEPT, TUNERS, ProtocolHyperModel, _FromTheStart, _lookup, _NoTensorBoard,
    atomic_state_files, make_tuner, save_scored)
from kpretrain.tuning.outputs import (
    SIGNATURE_FILE, SearchOutputs, _fmt, best_recipe_text, failed, plot_search, summary_table, trial_rows,
    write_outputs, write_search_outputs, write_signature)
from kpretrain.tuning.search import (
    SMOKE_SUFFIX, SMOKE_TRIALS, SearchResult, _check_resumable, _clear, _difference, _load, _runtime, _search,
    _unwritable, is_worker, project_name, run_search, tune)
from kpretrain.tuning.space import (
    SPEC_HINT, SPEC_OPTIONS, UNSEARCHABLE, Dimension, _is, _protocol_arms, check_space, default_space,
    learning_rates, parse_space, searched_arm, trial_recipe, with_values)

# the one-module names of what is now shared between submodules
_atomic_state_files, _failed, _final, _learning_rates = atomic_state_files, failed, run_final, learning_rates

__all__ = [
    # space
    "Dimension", "parse_space", "check_space", "with_values", "trial_recipe", "searched_arm", "default_space",
    "learning_rates", "SPEC_OPTIONS", "SPEC_HINT", "UNSEARCHABLE",
    # conditions, display
    "conditional", "declare_space", "trial_values", "EPOCHS", "TrialDisplay", "trial_name",
    # hypermodel
    "ProtocolHyperModel", "save_scored", "TUNERS", "make_tuner", "atomic_state_files", "PRETRAININGS_KEPT",
    # outputs
    "write_outputs", "write_search_outputs", "SearchOutputs", "write_signature", "trial_rows", "summary_table",
    "best_recipe_text", "plot_search", "failed", "SIGNATURE_FILE",
    # final
    "scratch_search_recipe", "final_recipe", "run_final", "FinalRun", "SCRATCH_SECTIONS", "SHARED_SECTIONS",
    # search
    "tune", "run_search", "SearchResult", "is_worker", "SMOKE_TRIALS", "SMOKE_SUFFIX", "project_name",
    # what the one module imported from kpretrain, still here to import
    "run_unit", "build_model", "initial_backbone", "pretraining_key", "block_names", "Experiment",
    "configure_runtime", "describe_device", "distribution_strategy", "InputError", "RecipeError", "Recipe",
    "apply_overrides", "load_raw", "pretrains", "recipe_from_dict", "with_defaults", "dump_yaml", "format_value",
    "load_yaml", "io", "LOCK_NAME", "DirectoryLock",
]
