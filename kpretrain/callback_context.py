"""What a callback is told before each stage it watches: `kpretrain.CallbackContext` (no TensorFlow import here:
`kpretrain.CallbackContext` is importable before TensorFlow loads)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CallbackContext:
    """Which unit and stage a callback is watching, so that its logs can be grouped by arm, seed and stage.

    Before each stage, every callback of that stage (the user's, the progress display's and those of
    `runtime.loggers`) gets it as the attribute `kpretrain_context`, and its method `set_context(context)` is
    called when it defines one.  The same callback object watches every unit: read the context when a stage begins
    (`on_train_begin`), not when the callback is made.

    Attributes:
        stage: "pretrain" or "finetune".
        arm: the arm being fine-tuned; for a pre-training, the first of the arms that share it (the one the unit is
            named after).
        seed: the seed.
        run_dir: the run directory (a sweep point's directory for a sweep).
        unit: the unit's name in `units/`, e.g. `seed0.overlay.pretrain`.
        arms: every arm this stage trains for: the arms sharing a pre-training, or `(arm,)` for fine-tuning.

    Example:

    ```python
    class Grouped(keras.callbacks.Callback):
        def set_context(self, context):
            self.run = tracker.start(group=context.arm, name=f"{context.arm}/seed{context.seed}/{context.stage}")

    kpretrain.run("recipes/fashion_overlay.yaml", callbacks=[Grouped()], smoke=True)
    ```
    """

    stage: str
    arm: str
    seed: int
    run_dir: str
    unit: str
    arms: tuple = ()
