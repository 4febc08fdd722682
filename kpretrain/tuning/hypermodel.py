"""KerasTuner's side of `kpretrain tune`: a trial as a `keras_tuner.HyperModel` over `protocol.run_unit`, the
tuners (`TUNERS`, `make_tuner`) and KerasTuner's state files written atomically."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

import keras_tuner
import tensorflow as tf
from keras_tuner.src.engine.tuner_utils import SaveBestEpoch  # the best-epoch checkpoint Tuner.run_trial adds

from kpretrain.errors import InputError, RecipeError
from kpretrain.experiment.preparation import Prepared, prepare
from kpretrain.experiment.progress import Progress, ProgressCallback
from kpretrain.protocol import build_model, run_unit
from kpretrain.protocol.pretrain import pretraining_key
from kpretrain.recipe import Recipe, pretrains, recipe_from_dict
from kpretrain import io
from kpretrain.training.runtime import configure_runtime
from kpretrain.tuning.conditions import conditional, declare_space
from kpretrain.tuning.display import TrialDisplay
from kpretrain.tuning.grid import ResumableGridSearch
from kpretrain.tuning.space import check_space, parse_space, searched_arm, trial_recipe

PRETRAININGS_KEPT = 8  # pre-trained weights a search keeps in memory for later trials with the same pre-training
_MISSING = object()


class ProtocolHyperModel(keras_tuner.HyperModel):
    """A trial: the searched arm with the trial's values on the first seed, through `protocol.run_unit` (the
    sequence `kpretrain run` executes); `fit` returns validation accuracy only and never touches test data.
    `progress`, when set, shows the trial's stages (and the tuner's `TrialDisplay` its start and end)."""

    def __init__(self, raw: dict, *, smoke: bool = False, strategy: tf.distribute.Strategy | None = None,
                 datasets: dict | None = None, progress: Progress | None = None):
        super().__init__(name=raw.get("name"))
        self.raw = raw
        recipe = recipe_from_dict(raw)
        self.arm_name = searched_arm(recipe)
        self.seed = recipe.seeds[0]
        self.dims = conditional(parse_space(recipe.tune.space), self.arm_name)
        check_space(recipe, self.dims)
        self.smoke = smoke
        self.strategy = strategy
        self.progress = progress
        self.datasets = datasets if datasets is not None else {}  # loaded once for every trial (`prepare`'s cache)
        self._last: tuple | None = None  # (values, prepared, arm) of the latest trial built or fitted
        self._pretrained: dict = {}  # pre-training settings and data -> PretrainResult, for later trials

    def check(self) -> None:
        """Before any trial: each bound and choice, set alone, validates and reaches the searched arm."""
        for dim in self.dims:
            for value in dim.corners():
                try:
                    _, arm = self.trial({dim.key: value})
                    local = dim.key.removeprefix(f"arms.{self.arm_name}.")
                    if not _received(_lookup(arm.to_dict(), local), value):
                        raise RecipeError(f"the searched arm {self.arm_name!r} does not receive it"
                                          + ("" if local != dim.key else f" (it sets {local} itself: search "
                                                                         f"'arms.{self.arm_name}.{local}')"))
                except InputError as exc:
                    raise RecipeError(f"recipe key 'tune.space.{dim.key}': {value!r} fails: {exc}") from None

    def trial(self, values: dict) -> tuple[Prepared, Recipe]:
        """The recipe with `values` set, prepared (its data sets loaded once for the whole search), and its searched
        arm."""
        if self._last is None or self._last[0] != values:
            prepared = prepare(trial_recipe(self.raw, values), smoke=self.smoke, datasets=self.datasets)
            self._last = (values, prepared, prepared.arms[searched_arm(prepared.recipe)])
        return self._last[1:]

    def declare(self, hp: keras_tuner.HyperParameters) -> dict:
        """Register every dimension in `hp`; returns the trial's values by recipe key (the active ones)."""
        return declare_space(self.dims, hp)

    def build(self, hp):
        prepared, arm = self.trial(self.declare(hp))
        configure_runtime(prepared.recipe.runtime)  # KerasTuner's clear_session() resets the dtype policy
        return build_model(arm, prepared.first)

    def fit(self, hp, model, callbacks=(), epochs=None, initial_epoch=0, **kwargs):
        """`run_unit` on the trial's model: what `kpretrain run` records for the searched arm and first seed, with
        `epochs` (a Hyperband round's budget, `tuner/epochs`) as its `finetune.epochs`.  A Hyperband trial that
        continues an earlier one is trained from its start for that whole budget (`initial_epoch` is ignored;
        its model is built fresh, see `_FromTheStart`).  KerasTuner's checkpoint holds the model scored.
        Other `fit` arguments of `search(...)` (`verbose`) are KerasTuner's display settings, not the recipe's."""
        prepared, arm = self.trial(self.declare(hp))
        if epochs is not None:
            arm = replace(arm, finetune=replace(arm.finetune, epochs=epochs))
        checkpoints = [c for c in callbacks if isinstance(c, SaveBestEpoch)]
        shown = {stage: [ProgressCallback(self.progress, stage)] if self.progress else []
                 for stage in ("pretrain", "finetune")}
        key = pretraining_key(arm, prepared.recipe)
        unit = run_unit(arm, prepared.first, model=model,
                        pretrained=self._pretrained.get(key), test=False, scope=self._scope,
                        callbacks=[c for c in callbacks if not isinstance(c, SaveBestEpoch)] + shown["finetune"],
                        pretrain_callbacks=shown["pretrain"])
        if pretrains(arm) and unit.pretrain is not None:  # trials differing only after pre-training reuse it
            self._pretrained.pop(key, None)
            self._pretrained[key] = unit.pretrain
            while len(self._pretrained) > PRETRAININGS_KEPT:
                self._pretrained.pop(next(iter(self._pretrained)))
        scores = {"val_accuracy": unit.finetune.val_accuracy, "val_accuracy_raw": unit.finetune.val_accuracy_raw}
        save_scored(checkpoints, unit.model, scores)
        return scores

    def _scope(self):
        return self.strategy.scope() if self.strategy else contextlib.nullcontext()


def save_scored(checkpoints: list, model, scores: dict) -> None:
    """KerasTuner's best-epoch checkpoints (`get_best_models`) get the model the trial scores, once, after training:
    per epoch they would keep the best validated epoch's weights with training's BN statistics, or those of an
    epoch `evaluation.validate_every` left unvalidated, which nothing scored."""
    for checkpoint in checkpoints:
        checkpoint.set_model(model)
        checkpoint.on_epoch_end(0, dict(scores))  # has the objective and beats -inf: saved


def _received(got, value) -> bool:
    """Whether the arm holds `value`: equal, or for a mapping (a whole section searched, e.g. `selftrain`), each of
    its keys with its value (the section's other keys keep their defaults)."""
    if isinstance(value, dict) and isinstance(got, dict):
        return all(k in got and _received(got[k], v) for k, v in value.items())
    return got == value


def _lookup(tree: dict, key: str):
    for part in key.split("."):
        tree = tree.get(part, _MISSING) if isinstance(tree, dict) else _MISSING
    return tree


class _NoTensorBoard:
    """KerasTuner imports tensorboard in every trial to patch TensorBoard callbacks; none are used here, and
    TensorFlow 2.21 no longer installs tensorboard."""

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        pass


class _FromTheStart:
    """Hyperband continues a trial of the previous round by loading that trial's checkpoint into the model it
    builds, then fits the remaining epochs with a new optimizer (its schedule restarted).  Here the model is built
    fresh, and `ProtocolHyperModel.fit` trains it for the round's whole budget: the score `kpretrain run` records
    with that many fine-tuning epochs (continued trials repeat their earlier rounds' epochs)."""

    def _build_hypermodel(self, hp):
        return keras_tuner.Tuner._build_hypermodel(self, hp)  # Hyperband's own loads the checkpoint


TUNERS = {kind: type(cls.__name__, (TrialDisplay, _NoTensorBoard, *([_FromTheStart] if kind == "hyperband" else []),
                                    cls), {})
          for kind, cls in {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization,
                            "hyperband": keras_tuner.Hyperband, "grid": ResumableGridSearch}.items()}


def make_tuner(kind: str, hypermodel: ProtocolHyperModel, *, max_trials: int, max_epochs: int, directory: str,
               project_name: str, overwrite: bool, seed: int) -> keras_tuner.Tuner:
    """KerasTuner tuner maximising validation accuracy; Hyperband's budget is the fine-tuning epochs."""
    common = dict(hypermodel=hypermodel, objective=keras_tuner.Objective("val_accuracy", "max"), seed=seed,
                  directory=directory, project_name=project_name, overwrite=overwrite,
                  distribution_strategy=hypermodel.strategy)
    if kind == "hyperband":
        tuner = TUNERS[kind](max_epochs=max_epochs, **common)
        tuner.oracle.max_trials = max_trials  # the base Oracle stops there; it is not part of the saved state
        return tuner
    return TUNERS[kind](max_trials=max_trials, **common)


@contextlib.contextmanager
def atomic_state_files():
    """KerasTuner writes its state (oracle.json, trial_*/trial.json, tuner0.json) in place: opening truncates,
    so a process killed between truncating and writing leaves an empty or partial file from which the search
    can never be reloaded.  During the search its JSON writes go to a temporary file renamed into place."""
    from keras_tuner.src import utils as tuner_utils  # every KerasTuner state write calls utils.save_json

    original = tuner_utils.save_json

    def save_json(path, obj):
        if "://" in str(path):  # a remote file system (gs://, ...) has no atomic rename: KerasTuner's own write
            return original(path, obj)
        text = json.dumps(obj)
        io.write_text(str(path), text)
        return text

    tuner_utils.save_json = save_json
    try:
        yield
    finally:
        tuner_utils.save_json = original
