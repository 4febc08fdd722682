"""What `kpretrain tune` shows while it searches, through kpretrain's `Progress` (KerasTuner's own display is off:
`search(verbose=0)`): a line when a trial starts (its name and values), the trial as a unit of the progress display
(`unit k/N` counts the trials this process may run; its status line follows the trial's stages), and a line when it
ends (its score and the best so far).

A trial is named as KerasTuner names its directory, `trial_<id>` (`trial_0`, ..., or `trial_00`, ... when
`max_trials` has two digits), in every output: these lines, the trials table, `best: trial_<id>`, the comments of
`best_recipe.yaml` and `final_recipe.yaml`, and `tune.png`; best.json and `TuneResult.trials` hold the id itself
(`trial_id`, as in KerasTuner's `trial.json`).
"""

from __future__ import annotations

import json
import time

from kpretrain.tuning.conditions import trial_values

FINISHED = ("COMPLETED", "FAILED")  # KerasTuner statuses of trials that will not run again


def trial_name(trial_id: str) -> str:
    """A trial's name in every output: KerasTuner's directory name of the trial.

    Args:
        trial_id: KerasTuner's trial id, e.g. "03".

    Returns:
        "trial_<id>", e.g. "trial_03" (the trial's directory in the search's project).
    """
    return f"trial_{trial_id}"


class TrialDisplay:
    """KerasTuner tuner mixin: each trial's start and end as `Progress` lines, its stages on the status line.

    The `Progress` is the hypermodel's `progress` (a `ProtocolHyperModel`); without one the mixin shows nothing.
    """

    def on_search_begin(self):
        super().on_search_begin()
        progress = getattr(self.hypermodel, "progress", None)
        if progress is not None:  # the trials this process may run (a resumed search's finished ones excluded;
            # a worker's oracle, a client of the chief's, has no `trials`)
            finished = sum(t.status in FINISHED for t in getattr(self.oracle, "trials", {}).values())
            progress.add_units(max(0, (self.oracle.max_trials or 0) - finished))

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        progress = getattr(self.hypermodel, "progress", None)
        if progress is None:
            return
        values = trial_values(self.hypermodel.dims, trial.hyperparameters.values)
        name = trial_name(trial.trial_id)
        self._trial_started = time.perf_counter()
        progress.unit(self.hypermodel.seed, self.hypermodel.arm_name, name)  # one of the trials this process runs
        progress.log(f"{name}: {json.dumps(values)}")

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # the oracle scores the trial
        progress = getattr(self.hypermodel, "progress", None)
        if progress is None:
            return
        progress.unit_done()
        ended = self.oracle.get_trial(trial.trial_id)  # a worker asks the chief
        seconds = time.perf_counter() - getattr(self, "_trial_started", time.perf_counter())
        if ended.status == "COMPLETED":
            result = f"val_accuracy {ended.score:.4f} in {seconds:.0f} s"
        else:
            result = f"{ended.status.lower()} after {seconds:.0f} s: " + (
                (ended.message or trial.message or "").strip().splitlines() or ["no message"])[-1]
        best = [t for t in self.oracle.get_best_trials(1) if t.score is not None]
        so_far = f"best so far {trial_name(best[0].trial_id)} ({best[0].score:.4f})" if best else "none completed yet"
        show = progress.log if ended.status == "COMPLETED" else progress.warn  # a failed trial: on stderr
        show(f"{trial_name(trial.trial_id)}: {result}; {so_far}")
