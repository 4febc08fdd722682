"""Shared fixtures."""

import pytest
import yaml

from tests.helpers import tiny_npz, tiny_recipe_dict


@pytest.fixture
def tiny_recipe(tmp_path):
    recipe = tiny_recipe_dict(tiny_npz(tmp_path / "tiny.npz"))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)
