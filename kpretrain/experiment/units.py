"""The `units/` directory of a run: the only code that knows its file names.

A unit is one piece of a run recorded on its own, so that a stopped run resumes where it stopped:

- `seed<k>.<arm>.pretrain`: a pre-training shared by the arms of seed k with the same pre-training settings,
  named after the first of them: `<unit>.json` (the `PretrainResult` record) and `<unit>.weights.h5` (the
  pre-trained backbone);
- `seed<k>.<arm>.finetune`: one seed x arm: `<unit>.json` (the `UnitResult` record) and `<unit>.weights.h5` (the
  fine-tuned classifier);
- `seed<k>.<arm>.<stage>.backup/`: a stage's last backed-up epoch while it runs (`BackupAndRestore`).

A record is written last: it marks its unit finished.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import keras

from kpretrain import io
from kpretrain.protocol.results import PretrainResult, UnitResult

UNITS_DIR = "units"


def pretrain_unit(seed: int, arm: str) -> str:
    """The name of the pre-training unit of `seed` that arm `arm` (the first arm sharing it) names."""
    return f"seed{seed}.{arm}.pretrain"


def finetune_unit(seed: int, arm: str) -> str:
    """The name of the unit of one seed x arm."""
    return f"seed{seed}.{arm}.finetune"


def unit_seed(unit: str) -> int:
    """The seed of a unit, from its name (`seed<k>.<arm>.<stage>`)."""
    return int(unit.split(".")[0].removeprefix("seed"))


class UnitStore:
    """Reads and writes the units of the run directory `run_dir`.

    Args:
        run_dir: the run directory (`units/` is created inside it on first write).

    Example:
        >>> store = UnitStore("runs/fashion_overlay/20261127T201500Z")
        >>> store.weights(finetune_unit(0, "scratch"))
        'runs/fashion_overlay/20261127T201500Z/units/seed0.scratch.finetune.weights.h5'
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.directory = os.path.join(run_dir, UNITS_DIR)

    def record(self, unit: str) -> str:
        """Path of the unit's record (`<unit>.json`)."""
        return os.path.join(self.directory, f"{unit}.json")

    def weights(self, unit: str) -> str:
        """Path of the unit's weights (`<unit>.weights.h5`)."""
        return os.path.join(self.directory, f"{unit}.weights.h5")

    def backup(self, seed: int, arm: str) -> str:
        """Path prefix of the stage backups of one seed x arm (`run_unit` appends `.<stage>.backup`)."""
        return os.path.join(self.directory, f"seed{seed}.{arm}")

    def pretrain_backup(self, unit: str) -> str:
        """The backup directory of a shared pre-training unit while it trains."""
        return os.path.join(self.directory, f"{unit}.backup")

    def create(self) -> None:
        os.makedirs(self.directory, exist_ok=True)

    # ---- one seed x arm ------------------------------------------------------------------------------
    def finished_unit(self, seed: int, arm: str, pretrained: PretrainResult | None) -> UnitResult | None:
        """The unit of `seed` x `arm` an earlier run of this directory finished, or None."""
        path = self.record(finetune_unit(seed, arm))
        if not os.path.exists(path):
            return None
        return UnitResult.from_record(io.read_json(path), pretrained)

    def save_unit(self, unit: UnitResult) -> UnitResult:
        """Save the unit's classifier weights, then its record; returns the unit without its model (not kept in
        memory for the rest of the run)."""
        name = finetune_unit(unit.seed, unit.arm)
        with io.atomic_path(self.weights(name)) as tmp:
            unit.model.save_weights(tmp)
        unit = dataclasses.replace(unit, model=None)
        io.write_json(self.record(name), unit.record())
        return unit

    # ---- shared pre-trainings ------------------------------------------------------------------------
    def has_pretraining(self, unit: str) -> bool:
        return os.path.exists(self.record(unit)) and os.path.exists(self.weights(unit))

    def load_pretraining(self, unit: str, backbone: keras.Model) -> PretrainResult:
        """The recorded pre-training `unit`, its weights loaded into `backbone`."""
        backbone.load_weights(self.weights(unit))
        return PretrainResult.from_record(io.read_json(self.record(unit)), backbone.get_weights())

    def save_pretraining_weights(self, unit: str, backbone: keras.Model) -> None:
        with io.atomic_path(self.weights(unit)) as tmp:
            backbone.save_weights(tmp)

    def save_pretraining_record(self, result: PretrainResult) -> None:
        """The record of a pre-training whose weights are saved: the unit is finished."""
        io.write_json(self.record(result.unit), result.record())

    def copy_pretraining(self, record: str, weights: str, unit: str, arms: list[str]) -> str | None:
        """Copy the pre-training another sweep point recorded (`record`, `weights`) as `unit` for `arms`, unless this
        directory has its own record; returns where it came from (relative to the sweep's directory), or None."""
        if os.path.exists(self.record(unit)):
            return None
        with io.atomic_path(self.weights(unit)) as tmp:
            shutil.copyfile(weights, tmp)
        origin = os.path.relpath(record, os.path.dirname(os.path.abspath(self.run_dir)))
        io.write_json(self.record(unit), {**io.read_json(record), "unit": unit, "arms": arms, "reused_from": origin})
        return origin
