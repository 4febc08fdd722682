"""Pretext tasks as Keras layers, and `create_task` building one from a recipe's `pretrain` section.

Task names come from `kpretrain.pretext.registry` (no TensorFlow needed); the classes load on first access.
"""

from __future__ import annotations

from kpretrain.pretext.registry import (DEFAULT_MIXED_TASKS, LABELLED_TASKS, SYNTHETIC_TASKS, TASK_CLASSES, TASK_NAMES,
                                        create_task, task_class, task_options)

_CLASSES = {path.split(":")[1]: path for path in TASK_CLASSES.values()}
_CLASSES.update({"PretextTask": "kpretrain.pretext.base:PretextTask", "OptionError": "kpretrain.pretext.base:OptionError",
                 "SyntheticTask": "kpretrain.pretext.synthetic:SyntheticTask",
                 "ContrastiveModel": "kpretrain.pretext.contrastive:ContrastiveModel",
                 "TwoViewTask": "kpretrain.pretext.views:TwoViewTask",
                 "JointEmbeddingModel": "kpretrain.pretext.joint:JointEmbeddingModel",
                 "MomentumModel": "kpretrain.pretext.momentum:MomentumModel"})

__all__ = [*_CLASSES, "TASKS", "TASK_NAMES", "TASK_CLASSES", "LABELLED_TASKS", "SYNTHETIC_TASKS", "DEFAULT_MIXED_TASKS",
           "create_task", "task_class", "task_options"]


def __getattr__(name):  # PEP 562: task classes (and TASKS) import TensorFlow only when first used
    import importlib

    if name == "TASKS":
        return {task: task_class(task) for task in TASK_NAMES}
    if name in _CLASSES:
        module, cls = _CLASSES[name].split(":")
        return getattr(importlib.import_module(module), cls)
    raise AttributeError(f"module 'kpretrain.pretext' has no attribute {name!r}")
