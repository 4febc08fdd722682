"""Atomic artifact writing: every file is written to a temporary name, then renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path`; on success it is renamed to `path` (file or directory)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    tmp = tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    target = os.path.join(tmp, base)
    try:
        yield target
        if os.path.isdir(path) and not os.path.islink(path):
            old = path + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover(path: str) -> None:
    """Finish a directory swap of `atomic_path` that a kill cut between its two renames (only `path.old` left)."""
    old = path + ".old"
    if not os.path.isdir(path) and os.path.isdir(old):
        os.replace(old, path)


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def write_json(path: str, data) -> None:
    """Write `data` as indented JSON atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str):
    """The JSON document in `path`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def save_figure(fig, path: str, **kwargs) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=os.path.splitext(path)[1].lstrip(".") or "png", **kwargs)
    plt.close(fig)
