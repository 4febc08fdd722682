"""The grid tuner, resumable: KerasTuner's `GridSearch` with the grid's bookkeeping rebuilt when a search reloads.

KerasTuner's grid oracle keeps, in memory only, the tried combinations in grid order and the queue of trials whose
next combination is still to be made (keras-team/keras-tuner#1055, KerasTuner 1.4.8).  A search started again in a
new process (after Ctrl-C, a kill, or a session's end) reloads its finished trials, then fails on the first trial
it completes: `KeyError: '<trial id>'`.  `ResumableGridOracle` rebuilds both from the reloaded trials, so a resumed
grid search goes on to the combinations not yet tried, each once, in the order an uninterrupted search takes.
"""

from __future__ import annotations

import functools

import keras_tuner


class ResumableGridOracle(keras_tuner.oracles.GridSearchOracle):
    """`keras_tuner.oracles.GridSearchOracle` that can be reloaded from its directory by a new process.

    Example:
        >>> oracle = ResumableGridOracle(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=16)
    """

    def set_state(self, state):
        super().set_state(state)
        values = {trial_id: trial.hyperparameters.values for trial_id, trial in self.trials.items()}
        in_grid_order = sorted(values, key=functools.cmp_to_key(lambda a, b: self._compare(values[a], values[b])))
        self._ordered_ids = type(self._ordered_ids)()  # KerasTuner's linked list of trial ids, in grid order
        for trial_id in in_grid_order:
            self._ordered_ids.insert(trial_id)
        # every tried combination may have an untried successor; one already tried is skipped by `populate_space`
        self._populate_next = list(in_grid_order)


class ResumableGridSearch(keras_tuner.Tuner):
    """`keras_tuner.GridSearch` (which only makes its oracle) over a `ResumableGridOracle`."""

    def __init__(self, hypermodel=None, objective=None, max_trials=None, seed=None, **kwargs):
        self.seed = seed
        oracle = ResumableGridOracle(objective=objective, max_trials=max_trials, seed=seed)
        super().__init__(oracle, hypermodel, **kwargs)
