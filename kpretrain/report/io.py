"""Deprecated alias of `kpretrain.io` (atomic writes moved to the top level in 0.5.2; removed in 0.7)."""

from kpretrain.io import atomic_path, read_json, recover, save_figure, write_json, write_text  # noqa: F401
