"""Atomic artifact writing: every file is written to a temporary name, then renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path`; on success it is renamed to `path` (file or directory).

    The block writes a file or a directory at the yielded path.  When the block ends without an error it replaces
    `path` (an existing directory is moved to `path.old` first, then removed: `recover` finishes a swap a kill
    cut short); the temporary folder is removed either way, so an error leaves `path` as it was.

    Args:
        path: the final path; its parent directory is created if needed.

    Yields:
        The temporary path to write, in a hidden temporary folder beside `path`.
    """
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
    """Finish a directory swap of `atomic_path` that a kill cut between its two renames (only `path.old` left).

    Args:
        path: the final path of the directory; nothing happens unless it is missing and `path.old` exists.
    """
    old = path + ".old"
    if not os.path.isdir(path) and os.path.isdir(old):
        os.replace(old, path)


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8; see `atomic_path`).

    Args:
        path: the file to write; its parent directory is created if needed.
        text: the file's content.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def write_json(path: str, data) -> None:
    """Write `data` as indented JSON atomically (keys in their order, a final newline).

    Args:
        path: the file to write; its parent directory is created if needed.
        data: a JSON-serialisable value.
    """
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str):
    """The JSON document in `path`.

    Args:
        path: a UTF-8 JSON file.

    Returns:
        The decoded value.
    """
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def save_figure(fig, path: str, **kwargs) -> None:
    """Save a matplotlib figure atomically and close it.

    Args:
        fig: the matplotlib figure.
        path: the file to write; its extension is the format (png when it has none).
        **kwargs: keyword arguments of `fig.savefig`, e.g. `dpi`.
    """
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=os.path.splitext(path)[1].lstrip(".") or "png", **kwargs)
    plt.close(fig)
