"""The UI address the conductor's links use: a tracking server is its own UI, else `make ui`'s port."""

from conductor.ui_links import default_ui


def test_a_local_store_links_to_make_uis_port(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/mlflow.db")
    monkeypatch.delenv("UI_PORT", raising=False)
    assert default_ui() == "http://127.0.0.1:5000"
    monkeypatch.setenv("UI_PORT", "5001")  # make ui UI_PORT=5001
    assert default_ui() == "http://127.0.0.1:5001"


def test_a_tracking_server_is_its_own_ui(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5050/")
    assert default_ui() == "http://127.0.0.1:5050"
