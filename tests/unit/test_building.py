"""The building room without a Docker engine, as it runs in a Kubernetes Job: `--prepare-only` writes the
server's build context, its destination and base image for kaniko; `--record-pushed-image` tags the run
and the version with what kaniko pushed. Against a real registry in a temporary store."""

import json

import mlflow
import mlflow.onnx
import pytest

from sentclf.server_images import served_model_name
from tests.unit.test_evaluate import MEDIOCRE, threshold_model, tokenizer_file

import building


@pytest.fixture
def version(tracking_store, tmp_path):
    """A registered version logged as the train step logs one (ONNX model, tokenizer, serving config)."""
    config = tmp_path / "serving_config.json"
    config.write_text(json.dumps({"model_name": "cola", "max_seq_length": 16}))
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            threshold_model(MEDIOCRE),
            name="model",
            registered_model_name="built",
            extra_files=[str(tokenizer_file(tmp_path / "tokenizer.json")), str(config)],
        )
    return str(info.registered_model_version)


def argv(context, *flags: str) -> list[str]:
    return ["--model-uri", "models:/built/1", "--base-image", "auto", "--context-dir", str(context),
            *flags]  # fmt: skip


def test_prepare_only_writes_the_build_context_and_where_it_goes(version, tmp_path, monkeypatch):
    monkeypatch.setenv(building.REGISTRY_ENV, "registry.example.com/sentclf/")
    context = tmp_path / "workspace"
    context.mkdir()
    with mlflow.start_run() as run:
        building.run(building.parse_args(argv(context, "--prepare-only")))
    assert {p.name for p in context.iterdir()} >= {
        "Dockerfile",
        "requirements.txt",
        "sentclf_server",
        "model",
    }
    assert (context / "destination").read_text() == f"registry.example.com/sentclf/built-server:{version}\n"
    assert (context / "base-image").read_text() == "python:3.11-slim\n"
    config = json.loads((context / "model" / "serving_config.json").read_text())
    assert (config["model_name"], config["model_version"]) == ("built", version)  # the registered name
    assert mlflow.get_run(run.info.run_id).data.params["resolved_base_image"] == "python:3.11-slim"
    assert "server_image" not in mlflow.get_run(run.info.run_id).data.tags  # nothing built or tagged yet


def test_prepare_only_needs_the_registry(version, tmp_path, monkeypatch):
    monkeypatch.delenv(building.REGISTRY_ENV, raising=False)
    with mlflow.start_run(), pytest.raises(building.StepInputError, match="SENTCLF_REGISTRY is not set"):
        building.run(building.parse_args(argv(tmp_path, "--prepare-only")))


def test_record_pushed_image_pins_the_digest_on_the_run_and_the_version(version, tmp_path, monkeypatch):
    monkeypatch.setenv(building.REGISTRY_ENV, "registry.example.com/sentclf")
    named = [*argv(tmp_path, "--prepare-only"), "--serving-model-name", "grammar"]
    with mlflow.start_run():
        building.run(building.parse_args(named))  # the prepare container, then kaniko pushes:
    (tmp_path / "digest").write_text("sha256:" + "ab" * 32 + "\n")
    with mlflow.start_run() as run:
        building.run(building.parse_args(argv(tmp_path, "--record-pushed-image")))
    pushed = f"registry.example.com/sentclf/built-server:{version}@sha256:" + "ab" * 32
    tags = mlflow.get_run(run.info.run_id).data.tags
    version_tags = mlflow.MlflowClient().get_model_version("built", version).tags
    assert tags["server_image"] == version_tags["server_image"] == pushed
    assert tags["served_model_name"] == version_tags["served_model_name"] == "grammar"  # as prepared


@pytest.mark.parametrize(
    ("registered", "served"),
    [
        ("cola-classifier", "cola"),
        ("trec-classifier", "trec"),
        ("Support Tickets-Classifier", "support-tickets"),
        ("spam", "spam"),
        ("-classifier", "model"),
    ],
)
def test_the_served_name_is_the_registered_name_without_classifier(registered, served):
    assert served_model_name(registered) == served


def test_record_without_a_digest_says_the_push_did_not_happen(version, tmp_path):
    (tmp_path / "destination").write_text("registry.example.com/sentclf/built-server:1\n")
    with mlflow.start_run(), pytest.raises(building.StepInputError, match="digest is missing or empty"):
        building.run(building.parse_args(argv(tmp_path, "--record-pushed-image")))


def test_the_cluster_flags_need_a_context_and_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit):
        building.parse_args(argv(tmp_path, "--prepare-only", "--record-pushed-image"))
    with pytest.raises(SystemExit):
        building.parse_args(argv(tmp_path, "--prepare-only")[:4] + ["--prepare-only"])  # no --context-dir


def test_a_model_uri_naming_no_version_is_an_input_error_naming_the_parameter(tracking_store):
    from sentclf.tracking import StepInputError

    with pytest.raises(StepInputError, match=r"^model_uri: models:/nothing@champion: no such version"):
        building.resolve_model_version("models:/nothing@champion")
    with pytest.raises(StepInputError, match=r"^model_uri: "):
        building.resolve_model_version("runs:/abc/model")
