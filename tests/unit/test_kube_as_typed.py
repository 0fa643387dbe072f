"""kubernetes/README.md as typed, as far as it runs without a cluster: its `python -m conductor.kube` lines
in a shell, as printed, in the venv `make run` makes, after the exports of its Commands block (placeholders
filled). Rendering and the backend config need no cluster; `delete` must say, in one line, which context it
could not load. The kubectl lines and `mlflow run train --backend kubernetes ...` need a cluster and a
registry: that line is checked against what `backend-config` prints (tests/unit/test_kubernetes.py checks
that MLflow submits what `render` shows)."""

import json
import os
import re
import shlex

import pytest
import yaml

from tests.conftest import venv_shell
from tests.typed_blocks import REPO_ROOT, typed_block

README = REPO_ROOT / "kubernetes" / "README.md"
DATA_RUN_ID = "fedcba9876543210fedcba9876543210"
PARENT_RUN_ID = "0123456789abcdef0123456789abcdef"
PLACEHOLDERS = {"<id>": DATA_RUN_ID, "<parent run id>": PARENT_RUN_ID, "<host>": "127.0.0.1"}


def filled(line: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        line = line.replace(placeholder, value)
    return line


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """A shell after the Commands block's `export` lines, on a machine with no kubeconfig."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SENTCLF_", "KUBE"))}
    for line in re.findall(r"^export (.+?)(?:\s+#.*)?$", README.read_text(), re.M):
        for assignment in shlex.split(filled(line)):
            name, _, value = assignment.partition("=")
            env[name] = value
    assert {"MLFLOW_TRACKING_URI", "SENTCLF_REGISTRY", "SENTCLF_KUBE_CONTEXT"} <= set(env)
    return env | {"KUBECONFIG": str(tmp_path / "no-kubeconfig")}


def test_render_prints_the_job_with_the_parameters_as_printed(env):
    line = typed_block("kube-look").line("python -m conductor.kube render")
    result = venv_shell(filled(line), env, timeout_s=120)
    assert result.returncode == 0, result.stderr
    (job,) = yaml.safe_load_all(result.stdout)
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == env["SENTCLF_KUBE_NAMESPACE"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith(f"{env['SENTCLF_REGISTRY']}/sentclf-train:")
    command = " ".join(container["command"])
    assert f"--data-run-id {DATA_RUN_ID} --epochs 1 " in command


def test_delete_without_a_cluster_names_the_context_in_one_line(env):
    line = typed_block("kube-look").line("python -m conductor.kube delete")
    result = venv_shell(filled(line), env, timeout_s=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (message,) = result.stderr.strip().splitlines()
    assert f"kube context {env['SENTCLF_KUBE_CONTEXT']!r} cannot be loaded" in message
    assert "SENTCLF_KUBE_CONTEXT" in message.split(":", 2)[-1]


def test_backend_config_writes_what_the_mlflow_line_reads(env, tmp_path):
    block = typed_block("kube-one-step")
    out = tmp_path / "kube"  # /tmp/kube as printed, one of this test's own
    line = block.line("python -m conductor.kube backend-config")
    result = venv_shell(line.replace("/tmp/kube", str(out)), env)
    assert result.returncode == 0, result.stderr
    printed = block.line("mlflow run train").removesuffix("\\").strip()
    assert result.stdout.strip() == printed.replace("/tmp/kube", str(out))
    config = json.loads((out / "train-backend-config.json").read_text())
    assert config["kube-context"] == env["SENTCLF_KUBE_CONTEXT"]
    assert config["repository-uri"] == f"{env['SENTCLF_REGISTRY']}/sentclf-train"
    assert yaml.safe_load((out / "train-job.yaml").read_text())["kind"] == "Job"


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ("render train -P epochs", "'epochs' is not NAME=VALUE"),
        ("render train -P epoch=1", "train has no parameter epoch: its parameters are"),
        ("render train -P epochs=1", "would pass --data-run-id '' with literal quotes"),
        ("render evaluate -P model_version=1", "server_image '' is not in SENTCLF_REGISTRY"),
    ],
)
def test_a_bad_parameter_is_one_line_naming_it(env, arguments, says):
    result = venv_shell(f"python -m conductor.kube {arguments}", env, timeout_s=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and says in result.stderr


def test_a_missing_setting_is_one_line_naming_it(env):
    del env["SENTCLF_REGISTRY"]
    result = venv_shell(filled(typed_block("kube-look").line("python -m conductor.kube render")), env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "python -m conductor.kube render: SENTCLF_REGISTRY is not set: name the registry the cluster pulls "
        "from and you can push to, e.g. SENTCLF_REGISTRY=registry.example.com/sentclf"
    ]


@pytest.mark.parametrize("registry", [True, False], ids=["no-such-version", "no-registry"])
def test_serving_manifests_of_a_version_not_there_is_one_line_and_no_yaml(
    env, tmp_path, empty_store_file, registry
):
    """The serving-manifests block's first line (`... > serving.yaml`) in a store without that version."""
    store = tmp_path / "mlflow.db"
    store.write_bytes(empty_store_file.read_bytes())
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    line = typed_block("serving-manifests").lines[0]
    if not registry:
        line = line.removeprefix("SENTCLF_REGISTRY=registry.example.com/sentclf ")
        env.pop("SENTCLF_REGISTRY")
    result = venv_shell(f"cd {tmp_path} && {line}", env, timeout_s=120)
    assert result.returncode == 2
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith("python -m tools.serving_manifests: ")
    assert ("no such version" if registry else "SENTCLF_REGISTRY is not set") in message
    assert (tmp_path / "serving.yaml").read_text() == ""
