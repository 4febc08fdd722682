"""Recipe: YAML -> validated, typed config.  `--set key=value` overrides; every error names the key.

A recipe describes one experiment.  The top-level `pretrain` / `transfer` / `finetune` sections are the
default protocol; `arms` lists named protocols that override any key of it, and `baselines` adds the
reference arms (`scratch`: the same model trained from random initialisation with the same budget).

Modules, lowest layer first (each imports only those before it):
    values     the recipe YAML loader/dumper (1e-3 is a number) and the one value <-> `--set` text encoding
    coerce     building a dataclass from raw values: coercion, ranges, choices, one-line errors
    fields     `_spec`: a field's default, range, choices and documentation
    stage_config, run_config   the config dataclasses of a stage (optimizer, averaging, select) and of the run
               (evaluation, runtime, tune)
    schema     the sections' config dataclasses and `Recipe`
    overrides  `--set` overrides, and merging an arm's overrides
    arms       each arm's resolved recipe, its matched and compute-matched baselines; `pretrains`, `transfers`
    sweep      the keys a `sweep:` may vary, its check and its grid points
    rules      `recipe_from_dict`: the rules across keys, in order
    files      reading recipe files; `with_defaults` for stored recipes
`Recipe`'s methods that resolve arms or sweep points import `arms`, `sweep` and `rules` when called.
"""

from kpretrain.recipe.arms import _baseline, _default_arm_name, pretrains, transfers
from kpretrain.recipe.coerce import (_build, _check_choice, _coerce, _describe, _range_text, _seeds, _to_plain,
                                     _yaml_key)
from kpretrain.recipe.files import load_raw, load_recipe, read_yaml, with_defaults
from kpretrain.recipe.overrides import _deep_merge, apply_overrides
from kpretrain.recipe.rules import recipe_from_dict
from kpretrain.recipe.schema import (BASELINES, PRETEXT_TASKS, RECIPE_KEYS, AveragingConfig, BackboneConfig,
                                     DataConfig, EvaluationConfig, FinetuneConfig, LRFindConfig, OptimizerConfig,
                                     PretrainConfig, ProbeConfig, Recipe, RuntimeConfig, SelectConfig,
                                     SelfTrainConfig, TransferConfig, TuneConfig, UnfreezeConfig, _spec)
from kpretrain.recipe.sweep import SWEEP_FIXED, _check_sweep
from kpretrain.recipe.values import dump_yaml, format_value, load_yaml, parse_value

__all__ = [
    "AveragingConfig", "BackboneConfig", "BASELINES", "DataConfig", "EvaluationConfig", "FinetuneConfig",
    "LRFindConfig", "OptimizerConfig", "PRETEXT_TASKS", "PretrainConfig", "ProbeConfig", "Recipe", "RECIPE_KEYS",
    "RuntimeConfig", "SelectConfig", "SelfTrainConfig", "SWEEP_FIXED", "TransferConfig", "TuneConfig",
    "UnfreezeConfig", "apply_overrides", "dump_yaml", "format_value", "load_raw", "load_recipe", "load_yaml",
    "parse_value", "pretrains", "read_yaml", "recipe_from_dict", "transfers", "with_defaults",
]
