"""The Kubernetes backend without a cluster: every manifest a tiny run would submit is valid against the
Kubernetes OpenAPI schema (offline, strict), carries the same parameters, run ids and model URIs the local
backend hands on, and stays off host paths; a tracking store pods cannot reach is refused; and the Job
watcher deletes what it submitted when the conductor is stopped."""

import json
import re
import shlex
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import kubernetes
import kubernetes_validate
import mlflow
import pytest
import yaml
from kubernetes.client.rest import ApiException
from mlflow.entities import RunStatus
from mlflow.projects import _parse_kubernetes_config
from mlflow.projects.kubernetes import _get_kubernetes_job_definition

import main
from conductor import pipeline
from conductor.kube import (
    JobClient,
    JobFailed,
    KubernetesBackend,
    KubernetesStepFailed,
    KubeSettings,
    KubeSettingsError,
    ManifestError,
    TrackingUriError,
    backend_config,
)
from conductor.kube import backend as backend_module
from conductor.kube.manifests import LABEL_PIPELINE, LABEL_RUN, LABEL_STEP, SERVER_ADDRESS, STEPS
from conductor.kube.settings import TEMPLATE_DIR, check_artifact_location
from sentclf.images import pinned_image
from sentclf.tracking import StepCancelled
from tests.conftest import REPO_ROOT

# 1.29: the oldest release with native sidecars on by default; 1.37: the newest the pinned
# kubernetes-validate ships. Strict: a field the schema does not know fails.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
REGISTRY = "registry.example.com/sentclf"
TRACKING_URI = "http://mlflow.example.com:5000"
EXPERIMENT_ID = "7"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def run_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def http_tracking(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", TRACKING_URI)
    monkeypatch.delenv("KUBE_MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(TRACKING_URI)
    yield TRACKING_URI
    mlflow.set_tracking_uri(None)


@pytest.fixture
def settings() -> KubeSettings:
    return KubeSettings(
        registry=REGISTRY, namespace="sentclf", pull_secret="regcred", env_secret="mlflow-auth"
    )


@pytest.fixture
def backend(http_tracking, settings) -> KubernetesBackend:
    return KubernetesBackend(REPO_ROOT, settings)


@pytest.fixture
def tiny_args():
    """The root MLproject's defaults with epochs=1 and max_train_samples=64, parsed by main.py."""
    entry = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]["main"]
    values = {name: str(spec["default"]) for name, spec in entry["parameters"].items()}
    values.update(epochs="1", max_train_samples="64")
    return main.parse_args(
        [arg for name, value in values.items() for arg in (f"--{name.replace('_', '-')}", value)]
    )


@pytest.fixture
def tiny_pipeline(tiny_args):
    """What main.py hands each step of a tiny run: its parameter dict and the step's run id."""
    data_run_id, model_version = run_id(), "3"
    name = tiny_args.registered_model_name
    server_image = f"{REGISTRY}/{name}-server:{model_version}@sha256:{'ab' * 32}"
    handed_on = {
        "preprocess": {},
        "train": {"data_run_id": data_run_id},
        "building": {
            "model_uri": f"models:/{name}/{model_version}",
            "base_image": tiny_args.server_base_image,
        },
        "evaluate": {
            "server_image": server_image,
            "data_run_id": data_run_id,
            "model_version": model_version,
        },
    }
    return {
        step: {
            "parameters": pipeline.step_parameters(step, tiny_args, **handed_on[step]),
            "run_id": data_run_id if step == "preprocess" else run_id(),
        }
        for step in STEPS
    }


@pytest.fixture
def rendered(backend, tiny_pipeline):
    pipeline_run_id = run_id()
    return {
        step: {
            **inputs,
            "pipeline_run_id": pipeline_run_id,
            "jobs": backend.render_step(
                step, inputs["parameters"], inputs["run_id"], EXPERIMENT_ID, pipeline_run_id=pipeline_run_id
            ),
        }
        for step, inputs in tiny_pipeline.items()
    }


def all_containers(job: dict) -> list[dict]:
    spec = job["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def container(job: dict, name: str) -> dict:
    return next(c for c in all_containers(job) if c["name"] == name)


def step_containers(step: str, job: dict) -> list[dict]:
    """The containers that run the step's own code (not kaniko, not the server)."""
    names = {"building": ("prepare", "record"), "evaluate": ("evaluate",)}.get(step)
    return [c for c in all_containers(job) if names is None or c["name"] in names]


def env(c: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in c.get("env", [])}


def local_backend_argv(step: str, parameters: dict[str, str]) -> list[str]:
    """The command the local backend runs for these parameters (MLflow's entry point, through bash)."""
    project = mlflow.projects._project_spec.load_project(str(REPO_ROOT / step))
    return shlex.split(project.get_entry_point("main").compute_command(parameters, None))


def walk(node, path=""):
    """Every (path, key or value) in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")
    else:
        yield path, node


def test_the_room_does_not_shadow_the_kubernetes_client():
    assert not (REPO_ROOT / "kubernetes" / "__init__.py").exists()
    assert "site-packages" in kubernetes.__file__ and hasattr(kubernetes, "client")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_of_a_tiny_run_is_valid_kubernetes(rendered, version):
    for step, result in rendered.items():
        assert len(result["jobs"]) == 1, step
        for job in result["jobs"]:
            kubernetes_validate.validate(job, version, strict=True)
            yaml.safe_load(yaml.safe_dump(job))  # plain data: what the API client serialises


def test_what_the_schema_does_not_check(rendered):
    """Names and label values the API server would refuse, and the settings every Job needs."""
    for step, result in rendered.items():
        (job,) = result["jobs"]
        assert len(job["metadata"]["name"]) <= 63 and DNS_LABEL.match(job["metadata"]["name"]), step
        assert job["metadata"]["namespace"] == "sentclf"
        spec = job["spec"]
        assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] > 0
        assert spec["activeDeadlineSeconds"] > 0
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        for labels in (job["metadata"]["labels"], spec["template"]["metadata"]["labels"]):
            assert all(LABEL_VALUE.match(value) and len(value) <= 63 for value in labels.values()), labels
        for c in all_containers(job):
            assert DNS_LABEL.match(c["name"]), c["name"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) <= set(c["resources"]["limits"])


def test_train_is_sized_for_cpu_fine_tuning(rendered):
    (job,) = rendered["train"]["jobs"]
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "2", "memory": "4Gi"}
    (preprocess,) = rendered["preprocess"]["jobs"]
    assert preprocess["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"


@pytest.mark.parametrize("step", STEPS)
def test_parameters_flow_as_with_the_local_backend(rendered, step):
    """The step's command in the cluster is the local backend's, built from pipeline.step_parameters' dict."""
    result = rendered[step]
    parameters = result["parameters"]
    expected = local_backend_argv(step, parameters)
    (job,) = result["jobs"]
    extra = {"prepare": ["--context-dir", "/workspace", "--prepare-only"]}
    extra["record"] = ["--context-dir", "/workspace", "--record-pushed-image"]
    for c in step_containers(step, job):
        command = c["command"]
        assert command == expected + extra.get(c["name"], []), c["name"]
        for name, value in parameters.items():
            flag = f"--{name.replace('_', '-')}"
            assert command[command.index(flag) + 1] == value, (step, name)


def test_run_ids_and_model_uris_are_handed_on(rendered):
    preprocess_run_id = rendered["preprocess"]["run_id"]
    train = container(rendered["train"]["jobs"][0], "train")["command"]
    assert train[train.index("--data-run-id") + 1] == preprocess_run_id
    evaluate = container(rendered["evaluate"]["jobs"][0], "evaluate")["command"]
    assert evaluate[evaluate.index("--data-run-id") + 1] == preprocess_run_id
    prepare = container(rendered["building"]["jobs"][0], "prepare")["command"]
    assert prepare[prepare.index("--model-uri") + 1] == "models:/cola-classifier/3"
    assert evaluate[evaluate.index("--model-version") + 1] == "3"


def test_pods_carry_the_run_ids_and_the_tracking_server(rendered):
    for step, result in rendered.items():
        (job,) = result["jobs"]
        for c in step_containers(step, job):
            assert env(c)["MLFLOW_RUN_ID"] == result["run_id"], (step, c["name"])
            assert env(c)["MLFLOW_EXPERIMENT_ID"] == EXPERIMENT_ID
            assert env(c)["MLFLOW_TRACKING_URI"] == TRACKING_URI
            assert c["envFrom"] == [{"secretRef": {"name": "mlflow-auth"}}]
        for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
            assert labels[LABEL_PIPELINE] == result["pipeline_run_id"]
            assert labels[LABEL_STEP] == step
            # MLflow creates preprocess/train runs while submitting: run_step labels their Job afterwards.
            assert labels.get(LABEL_RUN) == (None if step in ("preprocess", "train") else result["run_id"])


def test_pods_see_the_tracking_server_under_kube_mlflow_tracking_uri(backend, tiny_pipeline, monkeypatch):
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", "http://mlflow.sentclf.svc:5000")
    for step, inputs in tiny_pipeline.items():
        (job,) = backend.render_step(step, inputs["parameters"], inputs["run_id"], EXPERIMENT_ID)
        for c in step_containers(step, job):
            assert env(c)["MLFLOW_TRACKING_URI"] == "http://mlflow.sentclf.svc:5000", step


def test_images_come_from_the_named_registry(rendered, settings):
    git_sha = re.compile(r"^[0-9a-f]{7}$")
    for step, result in rendered.items():
        (job,) = result["jobs"]
        for c in all_containers(job):
            if c["name"] == "kaniko":
                assert c["image"] == settings.kaniko_image
                continue
            assert c["image"].startswith(f"{REGISTRY}/"), (step, c["image"])
            name, digest = c["image"].split("@")
            assert digest.startswith("sha256:"), c["image"]
        for c in step_containers(step, job):
            repository, tag = c["image"].split("@")[0].rsplit(":", 1)
            assert repository == f"{REGISTRY}/sentclf-{step}" and git_sha.match(tag), c["image"]
    evaluate = rendered["evaluate"]
    assert container(evaluate["jobs"][0], "server")["image"] == evaluate["parameters"]["server_image"]


def test_no_host_path_and_no_docker_socket_anywhere(rendered):
    for step, result in rendered.items():
        for path, item in walk(result["jobs"]):
            assert item != "hostPath", (step, path)
            assert not (isinstance(item, str) and "docker.sock" in item), (step, path)
            assert item != "privileged", (step, path)


def test_building_prepares_builds_with_kaniko_then_records(rendered, settings):
    (job,) = rendered["building"]["jobs"]
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["prepare", "kaniko"]
    assert [c["name"] for c in pod["containers"]] == ["record"]
    assert pod["volumes"][0] == {"name": "workspace", "emptyDir": {"sizeLimit": "2Gi"}}
    for c in all_containers(job):
        assert {"name": "workspace", "mountPath": "/workspace"}.items() <= c["volumeMounts"][0].items()
    for name in ("prepare", "record"):
        assert env(container(job, name))["SENTCLF_REGISTRY"] == REGISTRY
    script = " ".join(container(job, "kaniko")["command"] + container(job, "kaniko")["args"])
    for piece in (
        "/kaniko/executor",
        "--context=dir:///workspace",
        '--destination="$(cat /workspace/destination)"',
        '--build-arg=BASE_IMAGE="$(cat /workspace/base-image)"',
        "--digest-file=/workspace/digest",
    ):
        assert piece in script
    assert settings.kaniko_image.endswith("-debug")  # the busybox shell that reads the files


def test_kaniko_gets_push_credentials_and_plain_http_when_asked(http_tracking):
    settings = KubeSettings(registry="localhost:5001", push_secret="pusher", insecure_registry=True)
    parameters = {"model_uri": "models:/m/1", "base_image": "auto"}
    (job,) = KubernetesBackend(REPO_ROOT, settings).render_step("building", parameters, run_id(), "1")
    kaniko = container(job, "kaniko")
    assert kaniko["args"][-2:] == ["--insecure", "--insecure-pull"]
    assert {"name": "push-credentials", "mountPath": "/kaniko/.docker", "readOnly": True} in kaniko[
        "volumeMounts"
    ]
    secret = job["spec"]["template"]["spec"]["volumes"][-1]["secret"]
    assert secret == {"secretName": "pusher", "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)


def test_evaluate_measures_a_native_sidecar_server(rendered):
    (job,) = rendered["evaluate"]["jobs"]
    pod = job["spec"]["template"]["spec"]
    (server,) = pod["initContainers"]
    assert server["restartPolicy"] == "Always"
    assert server["startupProbe"]["grpc"] == {"port": 8001}
    assert {"name": "grpc", "containerPort": 8001} in server["ports"]
    (evaluate,) = pod["containers"]
    assert env(evaluate)["SENTCLF_SERVER_ADDRESS"] == SERVER_ADDRESS == "127.0.0.1:8001"


def test_a_typo_in_a_template_fails_validation(http_tracking, tmp_path, tiny_pipeline):
    """The validation can fail: a misspelt field in a template is caught before any cluster sees it."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    for step, field in (("building", "backoffLimit"), ("train", "restartPolicy")):
        path = templates / f"{step}-job.yaml"
        path.write_text(path.read_text().replace(f"{field}:", f"{field[:-1]}:", 1))
    backend = KubernetesBackend(REPO_ROOT, KubeSettings(registry=REGISTRY, template_dir=templates))
    for step in ("building", "train"):
        inputs = tiny_pipeline[step]
        (job,) = backend.render_step(step, inputs["parameters"], inputs["run_id"], EXPERIMENT_ID)
        with pytest.raises(kubernetes_validate.ValidationError, match="Additional properties"):
            kubernetes_validate.validate(job, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("uri", ["sqlite:///tmp/mlflow.db", "/tmp/mlruns", "file:///tmp/mlruns"])
def test_a_tracking_store_pods_cannot_reach_is_refused(monkeypatch, settings, uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        with pytest.raises(TrackingUriError, match=r"make tracking-server.*--serve-artifacts"):
            KubernetesBackend(REPO_ROOT, settings)
    finally:
        mlflow.set_tracking_uri(None)


def test_pods_tracking_uri_must_be_http_too(http_tracking, monkeypatch, settings):
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", "sqlite:////data/mlflow.db")
    with pytest.raises(TrackingUriError, match="make tracking-server"):
        KubernetesBackend(REPO_ROOT, settings)


@pytest.mark.parametrize("location", ["/srv/mlruns", "file:///srv/mlruns"])
def test_artifacts_on_a_filesystem_path_are_refused(location):
    with pytest.raises(TrackingUriError, match="--serve-artifacts"):
        check_artifact_location(location, "3")


@pytest.mark.parametrize("location", ["mlflow-artifacts:/3", "s3://bucket/mlflow/3"])
def test_proxied_or_object_store_artifacts_are_accepted(location):
    check_artifact_location(location, "3")


def test_settings_come_from_the_environment():
    settings = KubeSettings.from_env(
        {
            "SENTCLF_REGISTRY": "registry.example.com/team/",
            "SENTCLF_KUBE_CONTEXT": "prod",
            "SENTCLF_KUBE_NAMESPACE": "ml",
            "SENTCLF_KUBE_PULL_SECRET": "regcred",
            "SENTCLF_REGISTRY_INSECURE": "true",
        }
    )
    assert settings.registry == "registry.example.com/team"
    assert (settings.kube_context, settings.namespace) == ("prod", "ml")
    assert settings.push_secret == settings.pull_secret == "regcred"
    assert (
        settings.insecure_registry
        and settings.repository("train") == "registry.example.com/team/sentclf-train"
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "SENTCLF_REGISTRY is not set"),
        ({"SENTCLF_REGISTRY": "https://registry.example.com"}, "without a scheme"),
        ({"SENTCLF_REGISTRY": "Registry.Example.com/Team"}, "lower"),
        ({"SENTCLF_REGISTRY": "r.example.com", "SENTCLF_KUBE_NAMESPACE": "My_NS"}, "SENTCLF_KUBE_NAMESPACE"),
    ],
)
def test_bad_settings_name_the_variable(environ, message):
    with pytest.raises(KubeSettingsError, match=message):
        KubeSettings.from_env(environ)


def test_a_value_mlflow_would_quote_twice_is_refused(backend, tiny_args):
    parameters = pipeline.step_parameters("preprocess", tiny_args) | {"dataset": "data/my file.csv"}
    with pytest.raises(ManifestError, match="literal quotes"):
        backend.render_step("preprocess", parameters, run_id(), EXPERIMENT_ID)


def test_a_server_image_outside_the_registry_is_refused(backend, tiny_pipeline):
    parameters = tiny_pipeline["evaluate"]["parameters"] | {"server_image": "cola-classifier-server:3"}
    with pytest.raises(ManifestError, match="SENTCLF_REGISTRY"):
        backend.render_step("evaluate", parameters, run_id(), EXPERIMENT_ID)


def test_mlflow_accepts_our_backend_config_and_submits_what_render_step_shows(
    backend, settings, tiny_pipeline, tmp_path
):
    """MLflow's own parser reads the config and template run_step hands it, and its own Job definition
    from them equals render_step's (apart from the timestamped name and the digest a push returns)."""
    inputs, pipeline_run_id = tiny_pipeline["train"], run_id()
    template = backend_module.write_mlflow_template(settings, "train", pipeline_run_id, tmp_path / "t.yaml")
    config = _parse_kubernetes_config(backend_config(settings, "train", template))
    assert config["repository-uri"] == f"{REGISTRY}/sentclf-train"
    (rendered,) = backend.render_step(
        "train", inputs["parameters"], inputs["run_id"], EXPERIMENT_ID, pipeline_run_id=pipeline_run_id
    )
    c = rendered["spec"]["template"]["spec"]["containers"][0]
    run_env = {
        name: env(c)[name] for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    }
    submitted = _get_kubernetes_job_definition(
        "train",
        c["image"].split("@")[0],
        "sha256:" + "1" * 64,
        c["command"],
        run_env,
        config["kube-job-template"],
    )
    for job in (rendered, submitted):
        job["metadata"]["name"] = "train"
        job["spec"]["template"]["spec"]["containers"][0]["image"] = "image"
    assert json.dumps(submitted, sort_keys=True) == json.dumps(rendered, sort_keys=True)


# --- the cluster side, against a fake API --------------------------------------------------------------


class FakeBatch:
    def __init__(self, conditions=()):
        self.conditions = list(conditions)
        self.deleted = []
        self.created = []

    def read_namespaced_job_status(self, name, namespace):
        condition = self.conditions.pop(0) if self.conditions else None
        conditions = [SimpleNamespace(type=condition, status="True", message="")] if condition else None
        return SimpleNamespace(status=SimpleNamespace(conditions=conditions, active=1))

    def create_namespaced_job(self, namespace, body, field_validation):
        self.created.append((namespace, body, field_validation))

    def delete_namespaced_job(self, name, namespace, propagation_policy):
        self.deleted.append((name, namespace, propagation_policy))
        if name == "gone":
            raise ApiException(status=404)


class FakeCore:
    def __init__(self, waiting_reason=None):
        self.waiting_reason = waiting_reason

    def list_namespaced_pod(self, namespace, label_selector):
        waiting = (
            SimpleNamespace(reason=self.waiting_reason, message="not found") if self.waiting_reason else None
        )
        status = SimpleNamespace(name="server", state=SimpleNamespace(waiting=waiting))
        pod_status = SimpleNamespace(init_container_statuses=[status], container_statuses=None)
        return SimpleNamespace(
            items=[SimpleNamespace(metadata=SimpleNamespace(name="pod-1"), status=pod_status)]
        )


def job_client(batch, core=None, clock=None) -> JobClient:
    ticks = iter(range(0, 10_000, 60))
    return JobClient(
        "ns", batch, core or FakeCore(), sleep=lambda s: None, clock=clock or (lambda: next(ticks))
    )


@pytest.mark.parametrize(
    ("conditions", "succeeded"), [([None, None, "Complete"], True), ([None, "Failed"], False)]
)
def test_the_watcher_reports_how_the_job_ended(conditions, succeeded):
    assert job_client(FakeBatch(conditions)).wait("job") is succeeded


def test_the_api_server_is_asked_to_reject_unknown_fields():
    batch = FakeBatch()
    assert job_client(batch).create({"metadata": {"name": "sentclf-evaluate-x"}}) == "sentclf-evaluate-x"
    assert batch.created[0][2] == "Strict"


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "InvalidImageName"])
def test_a_pod_that_cannot_start_fails_the_step(reason):
    """InvalidImageName at once; ImagePullBackOff once it has lasted the grace period (5 polls here)."""
    with pytest.raises(JobFailed, match=f"pod-1/server cannot start: {reason}"):
        job_client(FakeBatch([None] * 20), FakeCore(reason)).wait("job")


def test_deleting_propagates_to_the_pods_and_tolerates_a_job_already_gone():
    batch = FakeBatch()
    client = job_client(batch)
    client.delete("job")
    client.delete("gone")
    assert batch.deleted == [("job", "ns", "Background"), ("gone", "ns", "Background")]


class FakeJobs:
    """JobClient's interface, ending the wait as told."""

    namespace = "ns"

    def __init__(self, outcome):
        self.outcome = outcome
        self.deleted = []

    def wait(self, name):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def delete(self, name):
        self.deleted.append(name)


@pytest.fixture
def waiting_backend(tracking_store, monkeypatch, settings):
    """A backend over the sqlite test store (run statuses only; the http check is not under test here)."""
    monkeypatch.setattr(backend_module, "check_tracking_uris", lambda: None)

    def make(outcome, run_status=None):
        run = mlflow.MlflowClient().create_run(tracking_store)
        if run_status:
            mlflow.MlflowClient().set_terminated(run.info.run_id, run_status)
        jobs = FakeJobs(outcome)
        return KubernetesBackend(REPO_ROOT, settings, jobs=jobs), jobs, run.info.run_id

    return make


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), StepCancelled("signal SIGTERM")])
def test_stopping_the_conductor_deletes_the_job(waiting_backend, interruption):
    backend, jobs, run_id_ = waiting_backend(interruption)
    with pytest.raises(type(interruption)):
        backend._wait("train", run_id_, "train-2026")
    assert jobs.deleted == ["train-2026"]
    assert mlflow.get_run(run_id_).info.status == "KILLED"


def test_a_pod_that_cannot_start_deletes_the_job_and_fails_the_run(waiting_backend):
    backend, jobs, run_id_ = waiting_backend(JobFailed("pod p/server cannot start: ImagePullBackOff"))
    with pytest.raises(KubernetesStepFailed, match="ImagePullBackOff"):
        backend._wait("evaluate", run_id_, "sentclf-evaluate-x")
    assert jobs.deleted == ["sentclf-evaluate-x"]
    assert mlflow.get_run(run_id_).info.status == "FAILED"


def test_a_failed_job_fails_its_run_even_if_a_container_finished_it(waiting_backend):
    """building's prepare container ends the run FINISHED before kaniko runs: a kaniko failure fails it."""
    backend, _, run_id_ = waiting_backend(False, run_status="FINISHED")
    with pytest.raises(KubernetesStepFailed, match=r"kubectl logs -n sentclf job/sentclf-building-x"):
        backend._wait("building", run_id_, "sentclf-building-x")
    assert mlflow.get_run(run_id_).info.status == "FAILED"


def test_a_completed_job_returns_the_finished_run(waiting_backend):
    backend, jobs, run_id_ = waiting_backend(True)
    run = backend._wait("preprocess", run_id_, "preprocess-2026")
    assert run.info.status == RunStatus.to_string(RunStatus.FINISHED) and jobs.deleted == []


def test_the_mlflow_template_example_files_parse(settings):
    for step in STEPS:
        job = yaml.safe_load((TEMPLATE_DIR / f"{step}-job.yaml").read_text())
        assert job["kind"] == "Job" and job["spec"]["backoffLimit"] == 0, step
    example = json.loads((REPO_ROOT / "kubernetes" / "backend-config.example.json").read_text())
    assert set(example) == {"kube-context", "kube-job-template-path", "repository-uri"}
    assert Path(REPO_ROOT / example["kube-job-template-path"]).is_file()


def test_find_picks_the_job_that_runs_the_mlflow_run():
    def job(name, run):
        env = [SimpleNamespace(name="MLFLOW_RUN_ID", value=run)]
        spec = SimpleNamespace(
            template=SimpleNamespace(spec=SimpleNamespace(containers=[SimpleNamespace(env=env)]))
        )
        return SimpleNamespace(metadata=SimpleNamespace(name=name), spec=spec)

    batch = SimpleNamespace(
        list_namespaced_job=lambda namespace, label_selector: SimpleNamespace(
            items=[job("a", "r1"), job("b", "r2")]
        )
    )
    client = job_client(batch)
    assert client.find("sentclf.step=train", "r2") == "b"
    with pytest.raises(JobFailed, match="runs MLflow run r3"):
        client.find("sentclf.step=train", "r3")


class RecordingJobs(FakeJobs):
    """Submission as well: what was created, found and labelled."""

    def __init__(self):
        super().__init__(True)
        self.created, self.labelled = [], []

    def create(self, manifest):
        self.created.append(manifest)
        return manifest["metadata"]["name"]

    def find(self, label_selector, run_id):
        self.found = (label_selector, run_id)
        return "train-2026-11-24"

    def label(self, name, labels):
        self.labelled.append((name, labels))


@pytest.fixture
def submitting_backend(tracking_store, monkeypatch, settings):
    """run_step over the sqlite test store, with MLflow's image build and push and the cluster faked."""
    monkeypatch.setattr(backend_module, "check_tracking_uris", lambda: None)
    monkeypatch.setattr(backend_module, "check_artifact_location", lambda location, experiment_id: None)
    jobs = RecordingJobs()
    return KubernetesBackend(REPO_ROOT, settings, jobs=jobs), jobs


def finish(run_id_: str) -> None:
    """What the step's container does: resume the run by MLFLOW_RUN_ID and end it."""
    mlflow.MlflowClient().set_terminated(run_id_, "FINISHED")


def test_run_step_hands_preprocess_and_train_to_mlflows_backend(
    submitting_backend, tiny_pipeline, monkeypatch
):
    backend, jobs = submitting_backend
    seen = {}

    def fake_projects_run(**kwargs):
        seen.update(kwargs)
        # MLflow reads the template while the call lasts: parse it as MLflow does.
        seen["config"] = _parse_kubernetes_config(kwargs["backend_config"])
        child = mlflow.MlflowClient().create_run(kwargs["experiment_id"])
        finish(child.info.run_id)
        return SimpleNamespace(run_id=child.info.run_id)

    monkeypatch.setattr(mlflow.projects, "run", fake_projects_run)
    parameters = tiny_pipeline["train"]["parameters"]
    with mlflow.start_run() as parent:
        run = backend.run_step("train", parameters, run_name="train")
    assert seen["backend"] == "kubernetes" and seen["build_image"] is True and seen["synchronous"] is False
    assert seen["parameters"] == parameters and seen["uri"] == str(REPO_ROOT / "train")
    assert seen["experiment_id"] == parent.info.experiment_id
    assert seen["config"]["repository-uri"] == f"{REGISTRY}/sentclf-train"
    labels = seen["config"]["kube-job-template"]["spec"]["template"]["metadata"]["labels"]
    assert labels[LABEL_PIPELINE] == parent.info.run_id and labels[LABEL_STEP] == "train"
    assert not Path(seen["backend_config"]["kube-job-template-path"]).exists()  # a temporary file
    assert jobs.found == (f"{LABEL_PIPELINE}={parent.info.run_id},{LABEL_STEP}=train", run.info.run_id)
    assert jobs.labelled == [("train-2026-11-24", {LABEL_RUN: run.info.run_id})]
    assert run.info.status == "FINISHED" and run.data.tags["kubernetes.job"] == "sentclf/train-2026-11-24"


def test_run_step_submits_building_and_evaluate_as_our_own_jobs(
    submitting_backend, tiny_pipeline, monkeypatch
):
    backend, jobs = submitting_backend
    digest = "sha256:" + "cd" * 32
    built = []

    def fake_build(work_dir, repository_uri, base_image, run_id, build_image, docker_auth):
        built.append((Path(work_dir).name, repository_uri, base_image, build_image))
        return SimpleNamespace(tags=[f"{repository_uri}:abc1234"])

    monkeypatch.setattr(backend_module, "build_docker_image", fake_build)
    monkeypatch.setattr(backend_module, "push_image_to_registry", lambda tag: digest)
    monkeypatch.setattr(jobs, "wait", lambda name: finish(name.removeprefix("sentclf-evaluate-")) or True)
    parameters = tiny_pipeline["evaluate"]["parameters"]
    with mlflow.start_run() as parent:
        run = backend.run_step("evaluate", parameters, run_name="evaluate")
    # The checkout's step image as the evaluate MLproject names it (make images pins it; `latest` before).
    assert built == [("evaluate", f"{REGISTRY}/sentclf-evaluate", pinned_image(REPO_ROOT / "evaluate"), True)]
    (manifest,) = jobs.created
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)
    evaluate = container(manifest, "evaluate")
    assert evaluate["image"] == f"{REGISTRY}/sentclf-evaluate:abc1234@{digest}"
    assert env(evaluate)["MLFLOW_RUN_ID"] == run.info.run_id
    assert manifest["metadata"]["labels"][LABEL_PIPELINE] == parent.info.run_id
    # MLflow's own run creation: a child of the parent with the step's parameters logged.
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["mlflow.project.backend"] == "kubernetes"
    assert run.data.params["server_image"] == parameters["server_image"]
    assert run.info.status == "FINISHED"


def test_a_refused_push_is_one_clear_step_failure(submitting_backend, tiny_pipeline, monkeypatch):
    backend, jobs = submitting_backend

    created = []

    def refused(**kwargs):
        # As MLflow does: the child run first, then the build and push, which fails.
        child = mlflow.MlflowClient().create_run(
            kwargs["experiment_id"],
            tags={
                "mlflow.parentRunId": mlflow.active_run().info.run_id,
                "mlflow.project.backend": "kubernetes",
            },
        )
        created.append(child.info.run_id)
        raise mlflow.exceptions.ExecutionException("Error while pushing to docker registry: denied")

    monkeypatch.setattr(mlflow.projects, "run", refused)
    with mlflow.start_run(), pytest.raises(KubernetesStepFailed, match="step preprocess: .*denied"):
        backend.run_step("preprocess", tiny_pipeline["preprocess"]["parameters"], run_name="preprocess")
    assert jobs.created == []
    # MLflow would leave its run RUNNING: the conductor ends it FAILED.
    assert mlflow.get_run(created[0]).info.status == "FAILED"
