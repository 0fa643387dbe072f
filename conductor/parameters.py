"""The pipeline's parameters, read from the MLproject files rather than listed again in Python.

The root MLproject declares every parameter a user can give `mlflow run .` and its default; each step's
MLproject declares what that step takes. A root parameter goes to every step that declares one of the same
name; the root parameters no step declares are the conductor's own (cache, backend, images). The defaults
of a parameter declared in both places must agree (tests/unit/test_parameters.py checks it), so
`mlflow run train` alone trains the same recipe as `mlflow run .`.
"""

from functools import cache
from pathlib import Path

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
STEPS = ("preprocess", "train", "building", "evaluate")
ENTRY_POINT = "main"


@cache
def declared(project_dir: Path, entry_point: str = ENTRY_POINT) -> dict[str, dict]:
    """name -> {type, default} of an MLproject's entry point, in the file's order."""
    spec = yaml.safe_load((project_dir / "MLproject").read_text())
    return dict(spec["entry_points"][entry_point].get("parameters") or {})


def root_parameters(project_dir: Path = PROJECT_DIR) -> dict[str, dict]:
    return declared(project_dir)


def step_parameter_names(project_dir: Path = PROJECT_DIR) -> dict[str, tuple[str, ...]]:
    """For each step, the root parameters it declares too (in the root's order): what the conductor hands
    it from the pipeline's own parameters. Run ids, URIs and image tags are handed on besides."""
    root = root_parameters(project_dir)
    return {step: tuple(name for name in root if name in declared(project_dir / step)) for step in STEPS}


def conductor_parameter_names(project_dir: Path = PROJECT_DIR) -> tuple[str, ...]:
    """The root parameters no step declares: the conductor's own."""
    taken = {name for names in step_parameter_names(project_dir).values() for name in names}
    return tuple(name for name in root_parameters(project_dir) if name not in taken)


def typed_default(spec: dict) -> object:
    """A parameter's default as its declared type would read it (YAML reads `2e-4` as a string)."""
    kind, value = spec.get("type", "string"), spec.get("default")
    if value is None:
        return None
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    return str(value)
