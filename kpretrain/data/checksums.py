"""Provenance of the data a run read: a SHA-256 of each data file, and of the arrays made from them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

MAX_LISTED = 64  # image folders: beyond this many files, one digest of all of them (listed in path order)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_checksums(paths) -> dict[str, str]:
    """{path: sha256} of every file; a folder of more than MAX_LISTED files is one entry `<folder>/ (N files)`."""
    paths = sorted(Path(p) for p in paths)
    if len(paths) <= MAX_LISTED:
        return {str(p): file_sha256(p) for p in paths}
    combined = hashlib.sha256()
    for p in paths:
        combined.update(f"{p}\0{file_sha256(p)}\n".encode())
    return {f"{os.path.commonpath(paths)}/ ({len(paths)} files)": combined.hexdigest()}


def arrays_sha256(*arrays: np.ndarray) -> str:
    """One digest of the arrays' shapes, dtypes and bytes (what training actually read, whatever the source)."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.data)
    return digest.hexdigest()
