"""The serving manifests of a registered version, without a cluster: a Deployment, Service and
HorizontalPodAutoscaler valid against the Kubernetes 1.29 and 1.37 schemas (strict), and an InferenceService
valid against KServe's published CRD schema (vendored, strict); probes on the protocol's health, the three
ports, memory from the version's evaluate run, and a termination grace that covers the server's drain."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import mlflow
import pytest
import yaml

from conductor.kube.manifests import ManifestError
from conductor.kube.settings import KubeSettings
from tests.conftest import REPO_ROOT
from tools.serving_manifests import ServedVersion, memory_quantities, render_serving, serving_manifests

KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
KSERVE_SCHEMA = Path(__file__).parent / "schemas" / "kserve-inferenceservice-v1beta1.schema.json.gz"
IMAGE = "cola-classifier-server:3-0123456789ab"
SETTINGS = KubeSettings(registry="registry.example.com/sentclf", namespace="sentclf", pull_secret="regcred")


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    rendered = render_serving(ServedVersion("cola-classifier", "3", IMAGE, 301.2), SETTINGS)
    return {doc["kind"]: doc for doc in rendered}


def strict(schema: object) -> object:
    """The schema with additionalProperties: false wherever properties are listed and nothing else is
    allowed (kubernetes-validate's strict mode, for a CRD schema)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def kserve() -> jsonschema.protocols.Validator:
    """A validator of KServe's CRD schema, made strict, its own validity checked once: jsonschema.validate
    checks the large schema again on each call (some 7 s here)."""
    schema = strict(json.loads(gzip.decompress(KSERVE_SCHEMA.read_bytes())))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_objects_are_valid(docs, version):
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
        kubernetes_validate.validate(docs[kind], version, strict=True)


def test_inference_service_is_valid_against_kserves_crd(docs, kserve):
    kserve.validate(docs["InferenceService"])
    broken = json.loads(json.dumps(docs["InferenceService"]))
    broken["spec"]["predictor"]["containers"][0]["imag"] = "typo"
    with pytest.raises(jsonschema.ValidationError):
        kserve.validate(broken)


def test_deployment_serves_the_protocol(docs):
    deployment = docs["Deployment"]
    assert deployment["metadata"]["name"] == "cola-classifier"
    assert deployment["metadata"]["namespace"] == "sentclf"
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["image"] == f"registry.example.com/sentclf/{IMAGE}"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["resources"]["requests"]["memory"] == "464Mi"  # 301.2 MB x 1.5, to 16 MiB
    assert container["resources"]["limits"]["memory"] == "928Mi"
    env = {item["name"]: item["value"] for item in container["env"]}
    drain = float(env["DRAIN_DELAY_S"]) + float(env["GRACE_PERIOD_S"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > drain
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    service = docs["Service"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "cola-classifier"
    (predictor,) = docs["InferenceService"]["spec"]["predictor"]["containers"]
    assert predictor["image"] == container["image"]
    assert predictor["resources"] == container["resources"]


def test_memory_quantities():
    assert memory_quantities(10) == ("128Mi", "256Mi")
    assert memory_quantities(300) == ("464Mi", "928Mi")


def test_manifests_of_a_registered_version_use_its_evaluate_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = mlflow.MlflowClient()
    client.create_registered_model("cola-classifier")
    experiment = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    version = client.create_model_version("cola-classifier", str(tmp_path), run.info.run_id)
    client.set_model_version_tag("cola-classifier", version.version, "server_image", IMAGE)
    client.set_registered_model_alias("cola-classifier", "champion", version.version)
    with pytest.raises(ManifestError, match="no evaluate run measured"):
        serving_manifests("models:/cola-classifier@champion", SETTINGS)
    evaluate = client.create_run(experiment, tags={"input.server_image": IMAGE})
    client.log_metric(evaluate.info.run_id, "server_memory_peak_mb", 250.0)
    docs = serving_manifests("models:/cola-classifier@champion", SETTINGS)
    (container,) = docs[0]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["memory"] == "384Mi"
    # the command line prints the same four documents
    printed = subprocess.run(
        [sys.executable, "-m", "tools.serving_manifests", "models:/cola-classifier/1"],
        cwd=REPO_ROOT,
        env={**os.environ, "SENTCLF_REGISTRY": "registry.example.com/sentclf"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds = [doc["kind"] for doc in yaml.safe_load_all(printed)]
    assert kinds == ["Deployment", "Service", "HorizontalPodAutoscaler", "InferenceService"]


CHALLENGER_IMAGE = "cola-classifier-server:4-0123456789ab"


@pytest.fixture(scope="module", params=["shadow", "split:10"])
def two_version_docs(request) -> tuple[str, dict[str, dict]]:
    from tools.serving_manifests import ChallengerVersion

    challenger = ChallengerVersion("4", CHALLENGER_IMAGE, 200.0, request.param)
    rendered = render_serving(
        ServedVersion("cola-classifier", "3", IMAGE, 301.2), SETTINGS, challenger=challenger
    )
    return request.param, {doc["kind"]: doc for doc in rendered}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_two_versions_render_valid_objects(two_version_docs, version, kserve):
    _, docs = two_version_docs
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
        kubernetes_validate.validate(docs[kind], version, strict=True)
    kserve.validate(docs["InferenceService"])


def test_two_versions_in_the_pod_and_kserves_canary(two_version_docs):
    route, docs = two_version_docs
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == f"registry.example.com/sentclf/{CHALLENGER_IMAGE}"
    assert init["command"][:2] == ["python3", "-c"] and "copytree('/models/model'" in init["command"][2]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert (env["CHALLENGER_DIR"], env["ROUTE"]) == ("/models/challenger/model", route)
    assert container["volumeMounts"] == [
        {"name": "challenger-model", "mountPath": "/models/challenger", "readOnly": True}
    ]
    assert container["resources"]["requests"]["memory"] == "752Mi"  # (301.2 + 200) x 1.5, to 16 MiB
    assert docs["Deployment"]["metadata"]["annotations"]["sentclf.route"] == route
    inference = docs["InferenceService"]
    predictor = inference["spec"]["predictor"]
    if route == "shadow":  # KServe has no mirroring: shadow inside the predictor's pod, as in the Deployment
        assert predictor["initContainers"][0]["image"] == init["image"]
        assert "canaryTrafficPercent" not in predictor
        assert predictor["containers"][0]["image"] == container["image"]
    else:  # KServe's canary: the challenger's image takes 10% of requests, the champion's revision the rest
        assert predictor["canaryTrafficPercent"] == 10
        assert predictor["containers"][0]["image"] == init["image"]
        assert "initContainers" not in predictor
        assert inference["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_a_canary_takes_a_whole_percent():
    from tools.serving_manifests import ChallengerVersion

    challenger = ChallengerVersion("4", CHALLENGER_IMAGE, 200.0, "split:2.5")
    with pytest.raises(ManifestError, match="whole percent"):
        render_serving(ServedVersion("cola-classifier", "3", IMAGE, 301.2), SETTINGS, challenger=challenger)
