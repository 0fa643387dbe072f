"""How the conductor hands tracking credentials to a step container: a read-only mounted file, removed
when the step ends; never a variable or a command-line argument."""

import configparser
import os
import stat

from conductor.tracking_credentials import CONTAINER_CA, CONTAINER_DIR, load_password_file, step_credentials


def test_a_local_store_needs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-for-sqlite")
    with step_credentials(tmp_path, f"sqlite:///{tmp_path}/mlflow.db") as arguments:
        assert arguments == {}


def test_the_password_file_becomes_mlflows_credentials_file_mounted_read_only(tmp_path, monkeypatch):
    password = tmp_path / "password"
    password.write_text("s3cret-for-the-job\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "nightly")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD_FILE", str(password))
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(ca))
    with step_credentials(tmp_path, "https://tracking.example:5000") as arguments:
        source, target, mode = arguments["volume"].rsplit(":", 2)
        assert (target, mode) == (CONTAINER_DIR, "ro")
        assert arguments["env"] == f"MLFLOW_TRACKING_SERVER_CERT_PATH={CONTAINER_CA}"
        assert "s3cret" not in repr(arguments)  # what `docker run` and `docker inspect` show
        credentials = configparser.ConfigParser()
        credentials.read(f"{source}/credentials")
        assert dict(credentials["mlflow"]) == {
            "mlflow_tracking_username": "nightly",
            "mlflow_tracking_password": "s3cret-for-the-job",
        }
        assert stat.S_IMODE((tmp_path / source / "credentials").stat().st_mode) == 0o600
    assert not list((tmp_path / ".build" / "step-credentials").iterdir())


def test_a_password_given_directly_wins_over_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "direct")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD_FILE", str(tmp_path / "missing"))
    load_password_file()
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "direct"
