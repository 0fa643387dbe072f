"""What keys a step's cache: its own directory and what the step image is built from (the shared package,
the Dockerfile, the step requirements), never the conductor, the tests, the benches or the docs. Checked
on a copy of the repository's tracked files, edited one at a time."""

import shutil
import subprocess

import pytest

from conductor.parameters import STEPS
from conductor.step_cache import code_fingerprint
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkout")
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if (REPO_ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, root / name)
    return root


def fingerprints(root) -> dict[str, str]:
    return {step: code_fingerprint(root, step) for step in STEPS}


def append_comment(path) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original + b"\n# an edit\n")
    return original


def conductor_only_files(root) -> list[str]:
    files = [p.relative_to(root) for p in (root / "conductor").rglob("*.py")]
    docs = ["README.md", "kubernetes/README.md", "mkdocs.yml", "docs/index.md", "docs/benchmarks.md"]
    return [str(p) for p in files] + ["main.py", "MLproject", "Makefile", *docs]


def test_no_conductor_file_changes_a_steps_key(checkout):
    before = fingerprints(checkout)
    for name in conductor_only_files(checkout):
        original = append_comment(checkout / name)
        try:
            assert fingerprints(checkout) == before, f"editing {name} would rerun steps"
        finally:
            (checkout / name).write_bytes(original)


@pytest.mark.parametrize("step", STEPS)
def test_a_steps_own_file_changes_its_key_alone(checkout, step):
    before = fingerprints(checkout)
    name = next(p for p in sorted((checkout / step).glob("*.py")))
    original = append_comment(name)
    try:
        after = fingerprints(checkout)
    finally:
        name.write_bytes(original)
    assert {s for s in STEPS if after[s] != before[s]} == {step}


def test_the_shared_package_changes_every_key(checkout):
    before = fingerprints(checkout)
    original = append_comment(checkout / "sentclf" / "schema.py")
    try:
        after = fingerprints(checkout)
    finally:
        (checkout / "sentclf" / "schema.py").write_bytes(original)
    assert all(after[s] != before[s] for s in STEPS)
