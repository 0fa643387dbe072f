"""The benchmark scripts' own logic (their figures come from running them, not from tests)."""

import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import recipe_sweep  # noqa: E402


def test_recipe_sweep_types_the_mlproject_defaults():
    """YAML reads `2e-4` (no dot) as a string: an empty recipe must still train at a float rate."""
    defaults = recipe_sweep.mlproject_defaults(REPO_ROOT / "train" / "MLproject")
    recipe = recipe_sweep.parse_recipe("", defaults)
    assert isinstance(recipe["learning_rate"], float) and recipe["learning_rate"] > 0
    assert isinstance(recipe["tune_threshold"], bool)
    assert recipe_sweep.parse_recipe("lr=1e-4,seed=7", defaults)["learning_rate"] == pytest.approx(1e-4)


def test_recipe_sweep_rejects_an_unknown_key():
    defaults = recipe_sweep.mlproject_defaults(REPO_ROOT / "train" / "MLproject")
    with pytest.raises(SystemExit, match="unknown recipe key 'learning_rate'"):
        recipe_sweep.parse_recipe("learning_rate=1e-4", defaults)
