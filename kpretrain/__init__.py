"""kpretrain: does pre-training help my model, and under which settings?

The Python API (see docs/guide/python-api.md):

    import kpretrain
    result = kpretrain.run("recipes/fashion_overlay.yaml", smoke=True)
    result.arms["overlay"].mean, result.verdicts, result.report()

`kpretrain.run`, `kpretrain.tune`, `kpretrain.lr_find`, `kpretrain.show_task`, `kpretrain.compare` (the command
`kpretrain report`: `kpretrain.report` is the subpackage of report writers), `kpretrain.load_backbone`, their results
`RunResult`, `TuneResult`, `LRFindRun`, `TaskPreview`, `Comparison`, what callbacks are told (`CallbackContext`),
and the errors `InputError`, `RecipeError`, `DataError`; the pretext tasks are Keras layers in `kpretrain.pretext`.

Importing kpretrain sets `TF_CPP_MIN_LOG_LEVEL=2` unless it is set (TensorFlow's C++ info and warning lines off).
"""

from kpretrain._version import __version__
from kpretrain.errors import DataError, InputError, RecipeError
from kpretrain.runtime_logs import quiet_native_logs

quiet_native_logs()  # before anything imports TensorFlow; the user's TF_CPP_MIN_LOG_LEVEL is kept

_API = ("run", "tune", "lr_find", "show_task", "compare", "load_backbone", "RunResult", "TuneResult", "ArmResult",
        "LRFindRun", "TaskPreview", "Comparison", "CallbackContext")
__all__ = [*_API, "DataError", "InputError", "RecipeError", "__version__"]


def __getattr__(name):  # PEP 562: TensorFlow loads when the API is first used, not at `import kpretrain`
    if name in _API:
        from kpretrain import api

        return getattr(api, name)
    raise AttributeError(f"module 'kpretrain' has no attribute {name!r}")
