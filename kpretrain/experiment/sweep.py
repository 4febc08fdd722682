"""A recipe with `sweep:`: one `Experiment` per grid point, sharing loaded data and identical pre-trainings."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable

from kpretrain import io
from kpretrain._version import __version__
from kpretrain.experiment.loop import Experiment
from kpretrain.experiment.metrics import SCHEMA_VERSION
from kpretrain.experiment.progress import Progress
from kpretrain.protocol import SMOKE
from kpretrain.recipe import Recipe
from kpretrain.recipe.values import dump_yaml, format_value
from kpretrain.report.tables import run_report, store_sweep_holm
from kpretrain.rundir import RUN_FILE, recipe_sha256


class Sweep:
    """A recipe with `sweep:`: every grid point is an `Experiment` run into its own sub-directory `<key>=<value>/`;
    the points share loaded data and, per seed, identical pre-trainings.  The top-level `metrics.json` lists the
    points (each with a single run's `arms` layout); `report.md` has one table over all of them, with Holm-adjusted
    p-values across every comparison, and `label_efficiency.png` when `data.labels_per_class` is swept."""

    def __init__(self, recipe: Recipe, *, smoke: bool = False, log: Callable[[str], None] | None = None,
                 callbacks=None, progress: Progress | None = None):
        self.progress = progress if progress is not None else Progress(live=False)
        self.recipe, self.smoke, self.log = recipe, smoke, log if log is not None else self.progress.log
        self.sweep = smoke_sweep(recipe.sweep) if smoke else dict(recipe.sweep)
        shared_with: dict = {"datasets": {}, "pretrained": {}}
        swept = dataclasses.replace(recipe, sweep=self.sweep)
        self.points = [(at, point_dir(at), Experiment(point, smoke=smoke, log=log, shared_with=shared_with,
                                                      callbacks=callbacks, progress=self.progress))
                       for at, point in swept.sweep_points()]
        for _, _, experiment in self.points:
            experiment.holm_family = "point"
        self.started: float | None = None  # when a distributed run started (`executor.execute`), for the wall time

    @property
    def strategy(self):
        return self.points[0][2].strategy

    def prepare(self) -> list[str]:
        lines = [f"sweep of recipe {self.recipe.name}: {len(self.points)} points over "
                 + ", ".join(f"{k} in {v}" for k, v in self.sweep.items())
                 + (f" (--smoke: scaled down from {self.recipe.sweep})" if self.sweep != self.recipe.sweep else "")]
        for _, name, experiment in self.points:
            lines += [f"point {name}:"] + [f"  {line}" for line in experiment.prepare()]
        return lines

    def run(self, out_dir: str) -> dict:
        """Run every point into `out_dir/<point>/`; write the sweep's metrics, report and plot."""
        os.makedirs(out_dir, exist_ok=True)
        io.write_text(os.path.join(out_dir, "recipe.yaml"), dump_yaml(self.recipe.to_dict()))
        io.write_json(os.path.join(out_dir, RUN_FILE), {"smoke": self.smoke})
        started = self.started or time.perf_counter()
        finished = []
        self.progress.add_units(sum(experiment.unit_count() for _, _, experiment in self.points))
        for _, _, experiment in self.points:
            experiment.counted = True
        for at, name, experiment in self.points:
            self.log(f"== point {name}")
            finished.append((at, name, experiment.run(os.path.join(out_dir, name))))
            io.write_json(os.path.join(out_dir, "metrics.json"),
                          self.metrics(finished, time.perf_counter() - started, complete=False))
        holm = self.adjust_points(out_dir, finished)
        metrics = self.metrics(finished, time.perf_counter() - started, complete=True, holm=holm)
        from kpretrain.report import write_sweep_report

        write_sweep_report(out_dir, metrics)
        io.write_json(os.path.join(out_dir, "metrics.json"), metrics)
        return metrics

    def adjust_points(self, out_dir: str, finished: list) -> dict:
        """Holm-adjust every comparison of the sweep as one family, once all points are done, and rewrite each
        point's `metrics.json` and `report.md` with it (each written when its point finished, adjusted over that
        point's comparisons only), so a point's report and the sweep's table give the same adjusted p-values.
        Returns the family's `holm` record.  The sweep's own metrics.json, written after, marks it finished."""
        holm = store_sweep_holm([m for _, _, m in finished])
        for _, name, m in finished:
            io.write_text(os.path.join(out_dir, name, "report.md"), run_report(m))
            io.write_json(os.path.join(out_dir, name, "metrics.json"), m)
        return holm

    def metrics(self, finished: list, wall: float, complete: bool, holm: dict | None = None) -> dict:
        """The sweep's `metrics.json`: its points (each one run's `arms` layout) and, once `adjust_points` stored the
        sweep's Holm family in them, its `holm` record."""
        first = finished[0][2]
        points = [{"values": at, "dir": name, **{k: m[k] for k in ("arms", "pretraining", "data", "warnings")}}
                  for at, name, m in finished]
        reused = sum(1 for p in points for unit in p["pretraining"] if unit.get("reused_from"))
        return {
            "schema_version": SCHEMA_VERSION, "kpretrain_version": __version__, "recipe": self.recipe.name,
            "complete": complete, "smoke": self.smoke, "seeds": list(self.recipe.seeds),
            "recipe_sha256": recipe_sha256(self.recipe.to_dict()), "sweep": self.sweep, "points": points,
            "pretraining_reused": reused,
            "warnings": [f"{p['dir']}: {w}" for p in points for w in p["warnings"]],
            "data_files": {k: v for _, _, m in finished for k, v in m["data_files"].items()},
            "data_sha256": {k: v for _, _, m in finished for k, v in m["data_sha256"].items()},
            "evaluation": first["evaluation"], "environment": first["environment"], "wall_time_s": wall,
            "reference": first.get("reference"),
            **({"holm": holm} if holm else {}),
        }


def point_dir(at: dict) -> str:
    """Sub-directory of a sweep point: `data.labels_per_class=10` (several keys joined by `,`), each value as
    `--set` writes it (`format_value`: `finetune.optimizer.learning_rate=1.0e-05`)."""
    return ",".join(f"{key}={format_value(value)}" for key, value in at.items())


def smoke_sweep(sweep: dict) -> dict:
    """`--smoke` caps labels per class at its budget; swept values are scaled down by rank so the points stay
    distinct (10, 100, 1000 -> 3, 7, 10)."""
    out = dict(sweep)
    values = sweep.get("data.labels_per_class")
    if values:
        cap = SMOKE.labels_per_class
        order = sorted(range(len(values)), key=lambda i: math.inf if values[i] is None else values[i])
        scaled = [0] * len(values)
        for rank, i in enumerate(order):
            scaled[i] = max(1, round(cap * (rank + 1) / len(values)))
        out["data.labels_per_class"] = scaled
    return out
