"""The package version: one source, read by `kpretrain.__version__`, `kpretrain --version` and metrics.json."""

__version__ = "0.9.2"
