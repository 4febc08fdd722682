"""Deprecated alias of `kpretrain.experiment.progress` (moved in 0.5.2; removed in 0.7)."""

from kpretrain.experiment.progress import REDRAW_S, Progress, ProgressCallback  # noqa: F401
