"""NumPy .npz data sets with arrays x_train, y_train, x_test, y_test (and optionally class_names)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from kpretrain.errors import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def find_npz(folder, name: str) -> Path | None:
    """The .npz in folder: <name>.npz, data.npz, or the only .npz there; None if there is none."""
    folder = Path(folder)
    for candidate in (folder / f"{name}.npz", folder / "data.npz"):
        if candidate.is_file():
            return candidate
    found = sorted(p for p in folder.glob("*.npz") if p.is_file())
    if len(found) > 1:
        raise DataError(f"folder {folder}: several .npz files ({', '.join(p.name for p in found)}); name the right one {name}.npz or set data.path to it")
    return found[0] if found else None


def load_npz_arrays(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str] | None]:
    """Read (x_train, y_train, x_test, y_test, class_names or None) from an .npz file, without pickle."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"npz file {path}: no array {', '.join(missing)} (it has {', '.join(npz.files) or 'none'}); save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
            arrays = [npz[k] for k in NPZ_KEYS]
            names = [str(c) for c in npz["class_names"]] if "class_names" in npz.files else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"npz file {path}: cannot be read ({type(err).__name__}: {err}); save it again with np.savez and plain (non-object) arrays") from None
    return (*arrays, names)
