"""Credentials for a tracking server with a login, on the host and in the step containers.

On the host, MLflow reads MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials);
MLFLOW_TRACKING_PASSWORD_FILE names a file holding the password instead, so that no password has to sit in
a shell's history, a crontab or a make command line: `python -m conductor.tracking_credentials exec <cmd>`
(what `make run` and `scripts/retrain.sh` go through) reads it into the environment of <cmd>.

A step container gets neither variable. `mlflow run` would put any variable it hands on into the
`docker run` command line and the container's configuration (`docker inspect`: Config.Env), so the
conductor instead writes MLflow's own credentials file (`~/.mlflow/credentials`, which MLflow's client
reads when the variables are unset) into a private directory of this checkout and mounts that directory
read-only at the step image's ~/.mlflow for the step's lifetime, with the server's CA certificate beside
it. `docker inspect` then shows a path, never the password, and the directory goes when the step ends.
"""

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

PASSWORD_FILE_ENV = "MLFLOW_TRACKING_PASSWORD_FILE"
# The step image runs as root: MLflow's client looks for ~/.mlflow/credentials there.
CONTAINER_DIR = "/root/.mlflow"
CONTAINER_CA = f"{CONTAINER_DIR}/server-ca.pem"


def load_password_file() -> None:
    """MLFLOW_TRACKING_PASSWORD from MLFLOW_TRACKING_PASSWORD_FILE, unless it is set already."""
    path = os.environ.get(PASSWORD_FILE_ENV)
    if path and not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = handle.readline().rstrip("\r\n")


def server_ca() -> str | None:
    """The CA certificate the host trusts the tracking server with, if one is named."""
    for name in ("MLFLOW_TRACKING_SERVER_CERT_PATH", "REQUESTS_CA_BUNDLE"):
        if os.environ.get(name):
            return os.environ[name]
    return None


@contextlib.contextmanager
def step_credentials(project_dir: Path, tracking_uri: str) -> Iterator[dict[str, str]]:
    """The `docker run` arguments that give one step container the host's tracking credentials and CA
    (none for a local store or a server without them); the files are removed on exit."""
    if not tracking_uri.startswith(("http://", "https://")):
        yield {}
        return
    from mlflow.utils.credentials import read_mlflow_creds

    load_password_file()
    username, password = read_mlflow_creds()
    ca = server_ca()
    if not (username and password) and not ca:
        yield {}
        return
    parent = project_dir / ".build" / "step-credentials"
    parent.mkdir(parents=True, exist_ok=True)
    os.chmod(parent, 0o700)
    directory = Path(tempfile.mkdtemp(prefix="step-", dir=parent))
    try:
        arguments = {"volume": f"{directory}:{CONTAINER_DIR}:ro"}
        if username and password:
            credentials = directory / "credentials"
            credentials.touch(mode=0o600)
            credentials.write_text(
                f"[mlflow]\nmlflow_tracking_username = {username}\nmlflow_tracking_password = {password}\n"
            )
        if ca:
            shutil.copyfile(ca, directory / "server-ca.pem")
            arguments["env"] = f"MLFLOW_TRACKING_SERVER_CERT_PATH={CONTAINER_CA}"
        yield arguments
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] != "exec":
        raise SystemExit("usage: python -m conductor.tracking_credentials exec <command> [args...]")
    load_password_file()
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
