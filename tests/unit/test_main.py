"""The conductor's plumbing: every root parameter reaches main.py, and every parameter main.py hands a step
is one that step's MLproject declares."""

import re
import shlex

import pytest
import yaml

import main
from conductor.parameters import STEPS, step_parameter_names
from tests.conftest import REPO_ROOT


def entry_point(project_dir) -> dict:
    return yaml.safe_load((project_dir / "MLproject").read_text())["entry_points"]["main"]


def test_root_mlproject_command_parses_with_its_defaults():
    entry = entry_point(REPO_ROOT)
    values = {name: shlex.quote(str(spec["default"])) for name, spec in entry["parameters"].items()}
    argv = shlex.split(entry["command"].format(**values))
    assert argv[:2] == ["python", "main.py"]
    args = main.parse_args(argv[2:])
    assert set(vars(args)) == set(entry["parameters"])


@pytest.mark.parametrize("step", STEPS)
def test_each_step_declares_what_main_hands_it(step):
    declared = set(entry_point(REPO_ROOT / step)["parameters"])
    assert set(step_parameter_names()[step]) <= declared
    handed_on = {
        "train": {"data_run_id"},
        "building": {"model_uri", "base_image"},
        "evaluate": {"server_image", "data_run_id", "model_version"},
    }.get(step, set())
    assert handed_on <= declared


def test_use_cache_is_a_boolean_flag():
    entry = entry_point(REPO_ROOT)
    values = {name: shlex.quote(str(spec["default"])) for name, spec in entry["parameters"].items()}
    values["use_cache"] = "false"
    args = main.parse_args(shlex.split(entry["command"].format(**values))[2:])
    assert args.use_cache is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"unlabelled": "/srv/captured"}, "unlabelled text is labelled by a teacher .* add -P teacher=mpnet"),
        (
            {"unlabelled": "/srv/captured", "teacher": "mpnet", "backend": "kubernetes"},
            "a Kubernetes pod does not see",
        ),
    ],
)
def test_unlabelled_text_without_a_teacher_or_on_kubernetes_is_refused_before_anything_runs(
    overrides, message, capsys
):
    entry = entry_point(REPO_ROOT)
    values = {name: shlex.quote(str(spec["default"])) for name, spec in entry["parameters"].items()}
    with pytest.raises(SystemExit):
        main.parse_args(shlex.split(entry["command"].format(**values | overrides))[2:])
    assert re.search(message, capsys.readouterr().err)
