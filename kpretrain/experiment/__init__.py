"""A run of a recipe: preparation, the seed x arm loop, its records and its metrics.

The package, from the bottom layer up:
    preparation validation, data loading (the `--smoke` shrink), each seed's splits: a typed `Prepared`
    plan       the plan text (`--dry-run`)
    units      `UnitStore`: the `units/` directory (the only code that knows its file names)
    metrics    `metrics.json` built from the units' typed results; its layout as dataclasses
    shortcuts  the pretext shortcut check made when a run starts
    progress   the live progress display
    callbacks  the user's Keras callbacks per stage
    loop       `Experiment`: the seed x arm loop over `protocol.run_unit`
    sweep      `Sweep`: one `Experiment` per grid point of `sweep:`
    executor   the units of a run or sweep as one graph of tasks, on workers (`execute`); `dask_executor` runs
               them on a Dask cluster, `worker` is what a worker process does with one

(Not `kpretrain/run/`: a submodule `run` would shadow the API function `kpretrain.run` once imported.)
"""

from kpretrain.experiment.callbacks import STAGES, stage_callbacks
from kpretrain.experiment.loop import Experiment
from kpretrain.experiment.metrics import SCHEMA_VERSION, RunMetrics, protocol, run_metrics
from kpretrain.experiment.plan import plan_lines
from kpretrain.experiment.preparation import Prepared, prepare
from kpretrain.experiment.sweep import Sweep, point_dir, smoke_sweep
from kpretrain.experiment.units import UnitStore, finetune_unit, pretrain_unit


def make_run(recipe, *, smoke: bool = False, callbacks=None, progress=None):
    """The run of a recipe: an `Experiment`, or a `Sweep` of them when the recipe has `sweep:`.

    Args:
        recipe: a resolved `Recipe`.
        smoke: the `--smoke` budget.
        callbacks: the user's Keras callbacks (see `stage_callbacks`).
        progress: the progress display (`Progress`).

    Returns:
        An object with `prepare()` (the plan's lines) and `run(out_dir)` (the metrics).
    """
    return (Sweep if recipe.sweep else Experiment)(recipe, smoke=smoke, callbacks=callbacks, progress=progress)


__all__ = ["Experiment", "Sweep", "make_run", "prepare", "Prepared", "plan_lines", "UnitStore", "finetune_unit",
           "pretrain_unit", "run_metrics", "RunMetrics", "SCHEMA_VERSION", "protocol", "point_dir", "smoke_sweep",
           "stage_callbacks", "STAGES"]
