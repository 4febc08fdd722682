"""Shared fixtures, and the order in which pytest-xdist hands out the test files."""

import pytest
import yaml

from tests.helpers import tiny_npz, tiny_recipe_dict


@pytest.fixture
def tiny_recipe(tmp_path):
    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz"))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


# The files whose shared runs take longest (measured by `--durations` on a clean clone), first: with `--dist
# loadfile` and `--no-loadscope-reorder` (Makefile) the two workers take whole files in this order, so the long
# ones do not end up last on one worker while the other idles (xdist would order files by their number of tests,
# putting these few-test, long-running files at the end).  A file not listed runs after them, in collection order.
SLOWEST_FIRST = ("test_recipes.py", "test_tuning.py", "test_cli.py", "test_reliability.py", "test_momentum.py",
                 "test_interactions_b.py", "test_interactions.py", "test_toolkit.py", "test_notebook_api.py", "test_api.py",
                 "test_experiment_transfer.py", "test_own_model.py", "test_sweep.py", "test_tune_reliability.py",
                 "test_ssl.py", "test_selftrain.py", "test_scratch_compute.py", "test_masked_image.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept
