"""What the monitor reads: the capture folder on the host, and the model version with its lineage."""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from sentclf.contract import ModelRef, parse_model_uri
from sentclf.tracking import StepInputError, version_data_run_id
from sentclf_runtime.config import ServingConfig
from sentclf_runtime.files import model_files

# Inside the step's container: the host's root, mounted read-only, and the repository's host path.
HOST_ROOT = Path(os.environ.get("SENTCLF_HOST_ROOT", "/mlflow/host"))
STEP_DIR = Path(__file__).resolve().parent


def repo_dir() -> Path:
    return Path(os.environ.get("SENTCLF_HOST_REPO") or STEP_DIR.parent)


def host_folder(value: str, parameter: str, hint: str) -> Path:
    """The host folder `value` names (absolute, or relative to the repository root), read through the
    host-root mount inside the container."""
    given = Path(value).expanduser()
    host_path = given if given.is_absolute() else repo_dir() / given
    path = HOST_ROOT / host_path.relative_to("/") if HOST_ROOT.is_dir() else host_path
    if not path.is_dir():
        raise StepInputError(f"{parameter}={value!r}: no folder {host_path} on this machine; {hint}")
    return path


def traffic_folder(traffic: str) -> Path:
    """The capture folder `traffic` names."""
    return host_folder(traffic, "traffic", "give the folder the server's CAPTURE_DIR is mounted from")


def feedback_folder(feedback: str) -> Path:
    """The folder of labels `feedback` names."""
    return host_folder(
        feedback,
        "feedback",
        "give the folder the labels are written to (the server's feedback folder, or a labelling team's "
        "CSV / JSON lines files with `id` and `label` columns)",
    )


@dataclass
class ModelInputs:
    name: str
    version: str
    data_run_id: str
    model_dir: Path  # model.onnx, tokenizer.json, serving_config.json
    tmp: tempfile.TemporaryDirectory

    @property
    def labels(self) -> list[str]:
        return list(ServingConfig.read(self.model_dir).labels)


def resolve_model(uri: str) -> ModelInputs:
    """A models:/ URI -> the version, the preprocess run it was trained on, and its ONNX files."""
    try:
        ref = parse_model_uri(uri)
    except ValueError as error:
        raise StepInputError(f"model={error}") from None
    client = mlflow.MlflowClient()
    name = ref.name
    try:
        if ref.alias:
            version = client.get_model_version_by_alias(name, ref.alias).version
        else:
            version = client.get_model_version(name, ref.version).version
    except MlflowException as error:
        raise StepInputError(
            f"model={uri}: no such version ({error.message.splitlines()[0]}); the evaluate step's gate moves "
            "`champion`, `-P model=models:/<name>/<version>` names a version"
        ) from None
    data_run_id = version_data_run_id(name, str(version))
    if not data_run_id:
        raise StepInputError(f"{name} version {version} records no preprocess run: nothing to compare with")
    tmp = tempfile.TemporaryDirectory(prefix="sentclf-monitor-")
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=ModelRef(name, str(version)).uri, dst_path=tmp.name)
    )
    model_dir = Path(tmp.name) / "model"
    model_dir.mkdir()
    for target, path in model_files(local).items():  # the pyfunc's artifacts/ or an onnx flavor's files
        (model_dir / target).symlink_to(path)
    return ModelInputs(name, str(version), data_run_id, model_dir, tmp)
