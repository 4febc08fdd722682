"""`RunResult.history`: one stage's per-epoch record of an arm and seed, read from metrics.json (of a run, or of one
point of a sweep)."""

from __future__ import annotations

from kpretrain.errors import InputError

STAGES = ("pretrain", "finetune")  # what `RunResult.history` reads: metrics.json's `pretext`, `history`


def stage_history(metrics: dict, arm: str, seed: int, stage: str = "finetune", point=None) -> dict:
    """{metric: [value per epoch]} of one arm, seed and stage, with `epoch` (1-based) for fine-tuning.

    Args:
        metrics: the run's (or sweep's) metrics.json.
        arm, seed, stage, point: as `RunResult.history` takes them.

    Returns:
        A new dict of lists.

    Raises:
        InputError: an unknown arm, seed, stage or point, or an arm without pre-training for "pretrain".
    """
    if stage not in STAGES:
        raise InputError(f"history(stage={stage!r}): expected one of {', '.join(STAGES)}")
    arms = _point(metrics, point)["arms"]
    if arm not in arms:
        raise InputError(f"history: unknown arm {arm!r}; the run has {', '.join(arms)}")
    key = "history" if stage == "finetune" else "pretext"
    records = arms[arm].get(key) or []
    found = next((h for h in records if h.get("seed") == seed), None)
    if found is None:
        why = " (it does not pre-train)" if not records and stage == "pretrain" else ""
        raise InputError(f"history: arm {arm!r} has no {stage} record for seed {seed!r}{why}")
    out = {k: list(v) for k, v in found.items() if isinstance(v, list)}
    if stage == "finetune":
        out = {"epoch": list(range(1, len(next(iter(out.values()), [])) + 1)), **out}
    return out


def _point(metrics: dict, point) -> dict:
    """The run itself, or one point of a sweep (`point`: index, directory name or values)."""
    if "points" not in metrics:
        if point is not None:
            raise InputError("history(point=...): only a sweep has points")
        return metrics
    points = metrics["points"]
    for i, p in enumerate(points):
        if point in (i, p["dir"]) or point == p["values"]:
            return p
    found = "a sweep needs point=" if point is None else f"point {point!r} not found; point="
    raise InputError(f"history: {found} one of {', '.join(p['dir'] for p in points)} (or its index)")
