"""A tracking server a team shares, as the tracking page's team block runs it: `make tracking-server` beyond
loopback (MLflow's basic-auth app, PostgreSQL with passwords, nginx with a self-signed certificate in
front), users added with `make tracking-user`, and the tiny pipeline as the job user over HTTPS. Then no
password may be found in the runs' parameters, tags and artifacts, the logs, or the step containers'
`docker inspect`. One server for the module; stopped, its ports free and its files removed afterwards."""

import json
import os
import secrets
import shlex
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import docker
import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException

from sentclf.containers import PIPELINE_LABEL, free_port, free_ports
from sentclf.contract import STEP_TAG
from sentclf.engine import containers_where
from sentclf.images import step_image

from .conftest import REPO_ROOT, remove_store_images, require_docker, venv_shell
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

TINY = (
    "-P epochs=1 -P max_train_samples=64 -P use_cache=false -P label_audit=false -P requests_per_level=50"
    " -P latency_requests=200"
)


def team_commands() -> list[str]:
    """The lines of the tracking page's team block (docs/tracking-and-kubernetes.md), comments stripped."""
    return list(typed_block("team").lines)


def typed(prefix: str) -> str:
    return typed_block("team").line(prefix)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Team:
    """The server, its people (admin, nightly job, reader) and their passwords, each in its own file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.directory = root / "tracking"
        self.port, self.backend_port, self.pg_port = free_ports(3)
        self.url = f"https://127.0.0.1:{self.port}"
        self.cert = self.directory / "tls" / "self-signed.crt"
        self.passwords = {name: secrets.token_urlsafe(18) for name in ("admin", "nightly", "alice")}
        self.files = {}
        for name, password in self.passwords.items():
            path = root / f"{name}.password"
            path.touch(mode=0o600)
            path.write_text(password + "\n")
            self.files[name] = path
        base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.server_env = base | {
            "TRACKING_DIR": str(self.directory),
            "TRACKING_PORT": str(self.port),
            "TRACKING_BACKEND_PORT": str(self.backend_port),
            "PG_PORT": str(self.pg_port),
        }
        self.experiment = f"team-{uuid.uuid4().hex[:8]}"

    def env(self, user: str) -> dict[str, str]:
        """A person's shell: the server's address and certificate, their name and password file."""
        return self.server_env | {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.cert),
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD_FILE": str(self.files[user]),
            "MLFLOW_EXPERIMENT_NAME": self.experiment,
        }

    def client(self, user: str, monkeypatch) -> mlflow.MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", self.passwords[user])
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(self.cert))
        return mlflow.MlflowClient(tracking_uri=self.url)

    def all_secrets(self) -> list[str]:
        pg_password = self.directory / "secrets" / "pg-password"
        found = [pg_password.read_text().strip()] if pg_password.exists() else []
        return [*self.passwords.values(), *found]


@pytest.fixture(scope="module")
def team():
    require_docker()
    root = REPO_ROOT / ".build" / f"test-tracking-auth-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    team = Team(root)
    admin = team.server_env | {"TRACKING_ADMIN_PASSWORD_FILE": str(team.files["admin"])}
    started = venv_shell(typed("make tracking-server "), admin)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "SELF-SIGNED" in started.stdout
    for user in ("nightly", "alice"):  # the page's lines grant `job` and `reader`
        env = team.env("admin") | {"TRACKING_USER_PASSWORD_FILE": str(team.files[user])}
        added = venv_shell(typed(f"make tracking-user TRACKING_USER={user} "), env)
        assert added.returncode == 0, added.stdout + added.stderr
    try:
        yield team
    finally:
        stopped = venv_shell(typed("make tracking-server-stop"), team.server_env)
        subprocess.run(["rm", "-rf", str(root)], check=False)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        for port in (team.port, team.backend_port, team.pg_port):
            assert not listening(port), f"port {port} still listening"


def test_beyond_loopback_there_is_no_server_without_a_login_and_an_admin_password():
    directory = REPO_ROOT / ".build" / f"test-tracking-refused-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKING_"))}
    env |= {"TRACKING_DIR": str(directory), "TRACKING_HOST": "0.0.0.0", "TRACKING_PORT": str(free_port())}
    no_password = subprocess.run(
        ["scripts/tracking-server.sh", "start"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert no_password.returncode != 0 and "admin's password" in no_password.stderr
    no_login = subprocess.run(
        ["scripts/tracking-server.sh", "start"],
        cwd=REPO_ROOT,
        env=env | {"TRACKING_AUTH": "false", "TRACKING_ADMIN_PASSWORD": "x" * 16},
        capture_output=True,
        text=True,
    )
    assert no_login.returncode != 0 and "login and TLS" in no_login.stderr
    started_anything = (directory / "postgres").exists()
    subprocess.run(["rm", "-rf", str(directory)], check=False)
    assert not started_anything  # refused before anything started


def test_a_request_without_a_login_gets_401(team):
    search = f"{team.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, verify=team.cert, timeout=10).status_code == 401
    assert requests.get(search, verify=team.cert, auth=("alice", "wrong"), timeout=10).status_code == 401
    assert requests.get(search, verify=team.cert, auth=("alice", team.passwords["alice"]), timeout=10).ok
    with pytest.raises(requests.exceptions.SSLError):  # TLS, with a certificate nobody trusts blindly
        requests.get(search, timeout=10)
    # A right password after a wrong one, and a wrong one after a right one: the credential cache the
    # login runs with (each password's slow hash checked once a minute) remembers only what passed.
    assert requests.get(search, verify=team.cert, auth=("alice", "wrong"), timeout=10).status_code == 401
    ini = (team.directory / "secrets" / "basic-auth.ini").read_text()
    assert "\nauth_cache_ttl_seconds = 60\n" in ini


def test_the_pipeline_runs_as_the_job_user_over_https_and_no_password_leaks(team, monkeypatch):
    inspected: dict[str, dict] = {}
    done = threading.Event()

    def watch() -> None:  # every step container's `docker inspect`, while it runs (they are --rm)
        engine = docker.from_env()
        while not done.is_set():
            # Colleagues' pipelines carry the label too: ours are picked out by run id afterwards.
            for container in containers_where(engine, stopped=False, label=PIPELINE_LABEL):
                inspected.setdefault(container.id, container.attrs)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = venv_shell(
            f"{typed('make run')} ARGS={shlex.quote(TINY)}", team.env("nightly"), timeout_s=1800
        )
    finally:
        done.set()
        watcher.join()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    client = team.client("nightly", monkeypatch)
    experiment_id = client.get_experiment_by_name(team.experiment).experiment_id
    runs = client.search_runs([experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags[STEP_TAG]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert set(children) == {"preprocess", "train", "building", "evaluate"}
    assert all(r.info.status == "FINISHED" for r in [parent, *children.values()])
    version = children["train"].data.tags["registered_model_version"]
    assert "challenger" in client.get_model_version("cola-classifier", version).aliases
    ours = [a for a in inspected.values() if a["Config"]["Labels"].get(PIPELINE_LABEL) == parent.info.run_id]
    steps = [attrs for attrs in ours if attrs["Config"]["Image"] == step_image(REPO_ROOT)]
    assert len(steps) >= 4, f"saw {len(steps)} step containers"
    for attrs in steps:  # the credentials arrive as a read-only file, never a variable
        env_names = {entry.split("=", 1)[0] for entry in attrs["Config"]["Env"]}
        assert not env_names & {"MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME"}
        assert any(m["Destination"] == "/root/.mlflow" and not m["RW"] for m in attrs["Mounts"])
    assert not list((REPO_ROOT / ".build" / "step-credentials").glob("*")), "credentials left behind"

    # Where a password could end up: params and tags of every run, the command's output, the step
    # containers' inspect output, and on disk every artifact and the server's, nginx's and PostgreSQL's logs
    # (all but the secrets directory, which holds PostgreSQL's password by design).
    text = "\n".join(
        [result.stdout, result.stderr, json.dumps(ours)]
        + [json.dumps([run.data.params, run.data.tags]) for run in runs]
    )
    for secret in team.all_secrets():
        assert secret not in text
    patterns = team.root / "patterns"
    patterns.write_text("\n".join(team.all_secrets()) + "\n")
    # the grep below reads what the server stored: the steps' artifacts are there
    assert (team.directory / "artifacts" / experiment_id / children["preprocess"].info.run_id).is_dir()
    found = subprocess.run(
        ["grep", "-r", "-l", "-a", "-F", "-f", str(patterns), "--exclude-dir=secrets", str(team.directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 1, f"a password is in {found.stdout or found.stderr}"
    remove_store_images(client)


def test_a_reader_browses_runs_and_models_but_cannot_log_or_promote(team, monkeypatch):
    reader = team.client("alice", monkeypatch)
    experiment = reader.get_experiment_by_name(team.experiment)
    runs = reader.search_runs([experiment.experiment_id])
    assert runs, "the reader sees the job's runs"
    versions = reader.search_model_versions("name = 'cola-classifier'")
    assert versions
    with pytest.raises(MlflowException) as denied:
        reader.set_registered_model_alias("cola-classifier", "champion", versions[0].version)
    assert denied.value.get_http_status_code() == 403
    with pytest.raises(MlflowException) as denied:
        reader.create_run(experiment.experiment_id)
    assert denied.value.get_http_status_code() == 403
