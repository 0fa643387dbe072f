"""Parameters are declared once per project file: the conductor reads which root parameter goes to which
step from the MLproject files, and a default written in the root and in a step must be the same value."""

import pytest

from conductor.parameters import (
    PROJECT_DIR,
    STEPS,
    conductor_parameter_names,
    declared,
    root_parameters,
    step_parameter_names,
    typed_default,
)


@pytest.mark.parametrize("step", STEPS)
def test_a_root_default_equals_the_steps(step):
    root, own = root_parameters(), declared(PROJECT_DIR / step)
    shared = set(root) & set(own)
    disagree = {
        name: (root[name].get("default"), own[name].get("default"))
        for name in shared
        if typed_default(root[name]) != typed_default(own[name]) or root[name]["type"] != own[name]["type"]
    }
    assert not disagree, f"root MLproject and {step}/MLproject disagree on (root, step): {disagree}"


def test_each_root_parameter_is_a_steps_or_the_conductors():
    taken = {name for names in step_parameter_names().values() for name in names}
    assert set(conductor_parameter_names()) == set(root_parameters()) - taken
    # The conductor's own: what decides how steps run, not what they compute.
    assert set(conductor_parameter_names()) == {"server_base_image", "use_cache", "keep_images", "backend"}


def test_the_table_is_what_the_steps_declare():
    table = step_parameter_names()
    assert "learning_rate" in table["train"] and "learning_rate" not in table["preprocess"]
    assert "seed" in table["preprocess"] and "seed" in table["train"] and "seed" in table["evaluate"]
    assert table["building"] == ()


def test_typed_default_reads_yaml_strings_by_type():
    assert typed_default({"type": "float", "default": "2e-4"}) == 2e-4
    assert typed_default({"type": "int", "default": 5}) == 5
    assert typed_default({"type": "string", "default": "false"}) == "false"


def test_the_root_tune_entry_point_hands_each_parameter_to_a_step_with_the_same_default():
    root = declared(PROJECT_DIR, "tune")
    steps = declared(PROJECT_DIR / "preprocess") | declared(PROJECT_DIR / "train", "tune")
    assert set(root) == set(steps) - {"data_run_id"}
    disagree = {n: (root[n], steps[n]) for n in root if typed_default(root[n]) != typed_default(steps[n])}
    assert not disagree
    train_main, train_tune = declared(PROJECT_DIR / "train"), declared(PROJECT_DIR / "train", "tune")
    assert all(typed_default(train_tune[n]) == typed_default(spec) for n, spec in train_main.items())
