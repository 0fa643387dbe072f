"""What runs on the host (main.py, the Makefile's `python -m conductor.*`, the Kubernetes backend) imports
only what `make venv` installs: requirements/host.txt and its dependencies. The tests run in the dev venv,
which has far more (grpc, torch, ...), so a top-level `import grpc` in a module the conductor imports
passed every test while `make run` on a fresh clone failed at once. Here the modules are imported in a
subprocess that refuses every package outside host.txt's dependency closure."""

import importlib.metadata
import re
import subprocess
import sys

from packaging.requirements import Requirement

from tests.conftest import REPO_ROOT

HOST_ENTRY_MODULES = (
    "main",
    "conductor.step_image",
    "conductor.ui_links",
    "conductor.kube",
    "tools.serve",
    "tools.serving_manifests",
    "tools.tracking_users",
    "tools.tune",
    "tools.explore",  # make explore (onnx, onnxruntime, tokenizers, Starlette: requirements/host.txt)
    "tools.label_next",  # make label-next
    "conductor.spark_cluster",  # make spark-cluster
    "ops.nightly",
    "ops.retrain_when",
    "ops.promote_live",
)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def host_closure() -> set[str]:
    """Distributions `pip install -r requirements/host.txt -e .` brings (as installed in this venv)."""
    lines = (REPO_ROOT / "requirements" / "host.txt").read_text().splitlines()
    pending = [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]
    pending.append(Requirement("sentclf"))  # the project itself, installed editable
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = normalise(requirement.name)
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.distribution(requirement.name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            dependency = Requirement(text)
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                pending.append(dependency)
    return found


def foreign_modules() -> set[str]:
    """Top-level modules of installed distributions that the host venv does not have."""
    closure = host_closure()
    return {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if not any(normalise(d) in closure for d in distributions)
    }


GUARD = """
import sys
BLOCKED = set(sys.argv[1].split(","))

class HostVenvOnly:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} in the host venv (requirements/host.txt)")
        return None

sys.meta_path.insert(0, HostVenvOnly())
sys.path[:0] = [sys.argv[2]]
import importlib
for module in sys.argv[3:]:
    importlib.import_module(module)
"""


def test_the_closure_is_read_from_host_txt():
    closure = host_closure()
    assert {"mlflow", "docker", "kubernetes", "sqlalchemy"} <= closure
    # onnxruntime and tokenizers are in it on purpose: the registered text model runs in the make-run venv
    # (`mlflow models predict ... --env-manager local`); PyTorch, gRPC and the test tools are not.
    assert {"onnxruntime", "tokenizers"} <= closure
    assert not {"grpcio", "torch", "pytest"} & closure
    assert {"grpc", "torch"} <= foreign_modules()


def test_what_the_host_runs_imports_with_the_host_venv_alone():
    blocked = foreign_modules()
    result = subprocess.run(
        [sys.executable, "-c", GUARD, ",".join(sorted(blocked)), str(REPO_ROOT), *HOST_ENTRY_MODULES],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
