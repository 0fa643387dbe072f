"""The step image's lock agrees with its direct requirements (a bump in step.txt needs `make step-lock`)."""

import re

from conductor.step_image import STEP_LOCK_HEADER
from tests.conftest import REPO_ROOT

PIN = re.compile(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s#]+)")


def pins(path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return found


def test_step_lock_pins_every_direct_requirement_at_the_same_version():
    direct = pins(REPO_ROOT / "requirements" / "step.txt")
    locked = pins(REPO_ROOT / "requirements" / "step.lock")
    assert direct, "no pins read from step.txt"
    mismatched = {
        name: (version, locked.get(name)) for name, version in direct.items() if locked.get(name) != version
    }
    assert not mismatched, (
        f"step.txt and step.lock disagree (step.txt, lock): {mismatched}: run make step-lock"
    )


def test_step_lock_is_generated_and_leaves_torch_to_torch_txt():
    text = (REPO_ROOT / "requirements" / "step.lock").read_text()
    assert text.startswith(STEP_LOCK_HEADER)
    locked = pins(REPO_ROOT / "requirements" / "step.lock")
    assert "torch" not in locked and "pip" not in locked
    assert len(locked) > 50  # transitive dependencies too, not just the direct ones


def test_the_make_run_venv_has_what_the_registered_model_needs_at_the_locked_versions():
    """`mlflow models predict ... --env-manager local` in the venv `make run` makes loads the text pyfunc:
    each package of its pip requirements (train/pyfunc_model.py) but mlflow's own is in host.txt, pinned as
    the step image's lock pins it (the versions the model records)."""
    source = (REPO_ROOT / "train" / "pyfunc_model.py").read_text()
    needed = set(re.findall(r'f"([a-z_-]+)==\{', source))
    assert {"onnxruntime", "tokenizers", "numpy", "pandas", "mlflow"} <= needed
    host = pins(REPO_ROOT / "requirements" / "host.txt")
    locked = pins(REPO_ROOT / "requirements" / "step.lock")
    # numpy and pandas come with mlflow itself; the two a bare mlflow lacks must be named.
    for name in ("onnxruntime", "tokenizers"):
        assert name in host, f"requirements/host.txt lacks {name}: mlflow models predict fails without it"
        assert host[name] == locked[name], f"{name}: host.txt {host[name]}, step.lock {locked[name]}"
    assert host["mlflow"] == locked["mlflow"]


def test_the_docs_generator_is_pinned_for_the_development_venv():
    assert "mkdocs" in pins(REPO_ROOT / "requirements" / "dev.txt")
