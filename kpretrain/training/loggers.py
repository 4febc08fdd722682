"""`runtime.loggers`: each logging library's own Keras callback, one per unit (seed x arm) and stage.

- csv: `keras.callbacks.CSVLogger` to `logs/<seed>/<arm>/<stage>.csv` in the run directory (a stage resumed from
  its backup appends to its file);
- tensorboard: `keras.callbacks.TensorBoard` to `tb/<seed>/<arm>/<stage>/`, with the unit's HParams (the arm's
  recipe, flattened) and, once the stage is evaluated, its final metrics (fine-tuning: the test accuracy);
- mlflow: `mlflow.keras.MlflowCallback` in one MLflow run per unit and stage (nested in the active run, if any),
  named `<arm>/seed<k>/<stage>`, the context as `kpretrain.*` tags and the arm's settings as params;
- wandb: `wandb.integration.keras.WandbMetricsLogger` in one W&B run per unit and stage, grouped by arm, named
  `<arm>/seed<k>/<stage>`, the context and the arm's settings as its config.

mlflow and wandb are optional extras (`pip install 'kpretrain[mlflow]'`); `check_loggers` refuses a recipe that
names one that is not installed before anything trains.  Loggers only watch: no number of a run changes.
"""

from __future__ import annotations

import importlib.util
import json
import os

import keras

from kpretrain.errors import RecipeError

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # logger -> the package it needs


def check_loggers(names) -> None:
    """Refuse loggers whose package is not installed.

    Args:
        names: logger names (`RuntimeConfig.active_loggers`).

    Raises:
        RecipeError: one line naming `runtime.loggers`, the package and how to install it.

    Example:
        >>> check_loggers(("csv",))  # csv needs nothing beyond Keras
    """
    for name in names:
        package = PACKAGES.get(name)
        if package is not None and not _installed(package):
            raise RecipeError(f"recipe key 'runtime.loggers': {name} is not installed; pip install {package} "
                              f"(or 'kpretrain[{name}]')")


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # imported already, without a spec (a stand-in module)
        return True


def flat_settings(tree: dict, prefix: str = "") -> dict:
    """A recipe (nested dicts) as {dotted key: bool, int, float or str}: lists and null as JSON text.

    Example:
        >>> flat_settings({"finetune": {"epochs": 3, "select": None}})
        {'finetune.epochs': 3, 'finetune.select': 'null'}
    """
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat_settings(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            out[f"{prefix}{key}"] = value
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, default=str)
    return out


class StageLoggers:
    """The loggers of one unit and stage, opened: their Keras callbacks, `finish(metrics)` once the stage is
    evaluated, then `close()`.

    Args:
        names: logger names, in `runtime.loggers`' order.
        context: the stage's `kpretrain.CallbackContext` (stage, arm, seed, run_dir, unit, arms).
        settings: the unit's HParams: the arm's recipe flattened (`flat_settings`).

    Example:
        >>> loggers = StageLoggers(("csv",), context, {})
        >>> model.fit(..., callbacks=loggers.callbacks); loggers.finish({"test_accuracy": 0.9}); loggers.close()
    """

    def __init__(self, names, context, settings: dict):
        self._open = []
        try:
            for name in names:
                self._open.append(_OPENERS[name](context, settings))
        except BaseException:
            self.close(failed=True)
            raise
        self.callbacks = [logger.callback for logger in self._open]

    def finish(self, metrics: dict) -> None:
        """Log the stage's final numbers (`{name: float}`) to every logger that records them."""
        for logger in self._open:
            logger.finish(metrics)

    def close(self, failed: bool = False) -> None:
        """End what each logger opened (MLflow and W&B runs, TensorBoard's HParams writer), `failed` if training
        raised."""
        while self._open:
            self._open.pop().close(failed)


def _name(context) -> str:
    return f"{context.arm}/seed{context.seed}/{context.stage}"


def _tags(context) -> dict:
    return {"kpretrain.stage": context.stage, "kpretrain.arm": context.arm, "kpretrain.seed": str(context.seed),
            "kpretrain.unit": context.unit, "kpretrain.arms": ",".join(context.arms),
            "kpretrain.run_dir": os.path.abspath(context.run_dir)}


class _Logger:
    """A logger opened for one stage: its Keras `callback`; `finish` and `close` do nothing unless overridden."""

    callback: keras.callbacks.Callback

    def finish(self, metrics: dict) -> None:
        pass

    def close(self, failed: bool) -> None:
        pass


class _ResumingCSVLogger(keras.callbacks.CSVLogger):
    """`CSVLogger` that opens its file at the first epoch: a stage resumed from its backup (first epoch > 0)
    appends to the rows written before it was stopped; a stage run from its start writes the file afresh."""

    def on_train_begin(self, logs=None):
        self._opened = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._opened:
            self.append, self._opened = epoch > 0, True
            super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        if self._opened:  # a stage resumed after its last epoch runs none: no file was opened
            super().on_train_end(logs)


class _Csv(_Logger):
    def __init__(self, context, settings: dict):
        path = os.path.join(context.run_dir, "logs", str(context.seed), context.arm, f"{context.stage}.csv")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.callback = _ResumingCSVLogger(path)


class _TensorBoard(_Logger):
    """Keras' TensorBoard callback; the HParams summary and the final metrics in the stage directory itself (Keras
    logs its epochs in its `train/` and `validation/` sub-directories)."""

    def __init__(self, context, settings: dict):
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        log_dir = os.path.join(context.run_dir, "tb", str(context.seed), context.arm, context.stage)
        self.callback = keras.callbacks.TensorBoard(log_dir=log_dir)
        self.writer = tf.summary.create_file_writer(log_dir)
        with self.writer.as_default():
            hp.hparams({**settings, "kpretrain.stage": context.stage, "kpretrain.arm": context.arm,
                        "kpretrain.seed": context.seed}, trial_id=context.unit)
        self.writer.flush()

    def finish(self, metrics: dict) -> None:
        import tensorflow as tf

        with self.writer.as_default():
            for name, value in metrics.items():
                tf.summary.scalar(name, value, step=0)
        self.writer.flush()

    def close(self, failed: bool) -> None:
        self.writer.close()


class _Mlflow(_Logger):
    def __init__(self, context, settings: dict):
        import mlflow
        import mlflow.keras

        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=_name(context), nested=mlflow.active_run() is not None,
                                    tags=_tags(context))
        mlflow.log_params(settings)
        self.callback = mlflow.keras.MlflowCallback()

    def finish(self, metrics: dict) -> None:
        self.mlflow.log_metrics(metrics)

    def close(self, failed: bool) -> None:
        self.mlflow.end_run(status="FAILED" if failed else "FINISHED")


class _Wandb(_Logger):
    def __init__(self, context, settings: dict):
        import wandb
        from wandb.integration.keras import WandbMetricsLogger

        project = None if os.environ.get("WANDB_PROJECT") else settings.get("name") or None
        self.run = wandb.init(project=project, group=context.arm, name=_name(context), job_type=context.stage,
                              config={**settings, **_tags(context)}, reinit=True)
        self.callback = WandbMetricsLogger()

    def finish(self, metrics: dict) -> None:
        self.run.summary.update(metrics)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


_OPENERS = {"csv": _Csv, "tensorboard": _TensorBoard, "mlflow": _Mlflow, "wandb": _Wandb}
