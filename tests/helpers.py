"""Small data the tests make themselves."""

import numpy as np


def tiny_npz(path, n_train=400, n_test=100, classes=4, seed=0, size=16):
    """An .npz of size x size images whose class is a bright cell of a grid (quadrants for 4 classes):
    learnable in a few steps."""
    rng = np.random.default_rng(seed)
    grid = int(np.ceil(np.sqrt(classes)))
    cell = size // grid

    def make(n):
        y = rng.integers(0, classes, n)
        x = rng.integers(0, 60, (n, size, size, 1)).astype(np.uint8)
        for i, c in enumerate(y):
            r, q = divmod(int(c), grid)
            x[i, r * cell:(r + 1) * cell, q * cell:(q + 1) * cell] += 150
        return x, y

    (x_train, y_train), (x_test, y_test) = make(n_train), make(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


def tiny_recipe_dict(data_path: str, name: str = "tiny") -> dict:
    """A recipe on `tiny_npz` data: overlay pre-training vs scratch, tiny backbone, two seeds."""
    return {
        "name": name,
        "seeds": [0, 1],
        "data": {"dataset": "tiny", "path": data_path, "labels_per_class": 20, "validation": 40, "batch_size": 32},
        "backbone": {"name": "small_cnn", "options": {"widths": [4, 8, 8]}},
        "pretrain": {"task": "overlay", "epochs": 1},
        "transfer": {"frozen_depth": 1},
        "finetune": {"epochs": 2},
    }
