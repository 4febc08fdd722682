"""The pretext shortcut check of a run's pre-training tasks, made when the run starts."""

from __future__ import annotations

import json
from typing import Callable

from kpretrain.experiment.preparation import Prepared
from kpretrain.pretext import create_task
from kpretrain.pretext.shortcut import ShortcutResult, checkable_tasks, shortcut_check
from kpretrain.protocol.pretrain import pretraining_images
from kpretrain.recipe import pretrains


def shortcut_checks(prepared: Prepared, log: Callable[[str], None]) -> list[tuple[list[str], ShortcutResult]]:
    """Check every pretext task the arms pre-train with (each task of a mixed one) for shortcuts.

    The check (can image statistics alone predict the pretext label?) runs on pretext examples of the first seed's
    pre-training images; it depends on the task, its options and the images only, so arms that share those share
    one check.

    Args:
        prepared: the run's `Prepared`.
        log: where each result's line goes.

    Returns:
        ([arms with that task and options], `ShortcutResult`) per checked task.
    """
    inputs = prepared.first
    tasks: dict[str, list[str]] = {}
    for name, arm in prepared.arms.items():
        if pretrains(arm):
            p = arm.pretrain
            tasks.setdefault(json.dumps([p.task, p.options, p.dataset], sort_keys=True), []).append(name)
    checks = []
    for users in tasks.values():
        arm = prepared.arms[users[0]]
        found = pretraining_images(arm, inputs)
        task = create_task(arm.pretrain.task, arm.pretrain.options, seed=inputs.seed, num_classes=found[5])
        for sub in checkable_tasks(task):
            result = shortcut_check(sub, found[0], seed=inputs.seed)
            checks.append((users, result))
            log(f"shortcut check | {result.line()} (arms {', '.join(users)})")
    return checks
