"""The live promotion command against a real MLflow sqlite store with two real registered versions (each an
MLflow 3 logged model): a clearly better challenger on shadow traffic is promoted, a worse one kept, too
few labels kept with "kept: N labelled requests, need M"; the figures land on each version's model."""

import json

import mlflow
import numpy as np
import pytest

from ops import promote_live
from sentclf.contract import LIVE_DECISION_TAG
from tests.unit.test_live import LABELS, shadow_traffic, write_lines

MODEL = "live-classifier"  # served as `live` (sentclf.server_images.served_model_name)


def register_version(client: mlflow.MlflowClient) -> str:
    """A registered version backed by a logged model of its own, as train registers one (no files: the
    live loop reads only the capture and the registry)."""
    with mlflow.start_run():
        logged = mlflow.initialize_logged_model(name="model")
        mlflow.finalize_logged_model(logged.model_id, "READY")
    version = mlflow.register_model(f"models:/{logged.model_id}", MODEL)
    client.set_model_version_tag(MODEL, version.version, "label_names", json.dumps(LABELS))
    return str(version.version)


@pytest.fixture
def registry(tracking_store):
    client = mlflow.MlflowClient()
    champion, challenger = register_version(client), register_version(client)
    client.set_registered_model_alias(MODEL, "champion", champion)
    client.set_registered_model_alias(MODEL, "challenger", challenger)
    return client


def traffic(tmp_path, n: int, champion_error: float, challenger_error: float):
    capture, feedback = tmp_path / "capture", tmp_path / "feedback"
    capture.mkdir()
    feedback.mkdir()
    truth, _, _, rows = shadow_traffic(np.random.default_rng(5), n, champion_error, challenger_error)
    write_lines(capture / "capture-20261204T110000Z-h-1-1.jsonl", [r | {"model": "live"} for r in rows])
    (feedback / "labels.csv").write_text(
        "id,label\n" + "".join(f"r{i},{LABELS[t]}\n" for i, t in enumerate(truth))
    )
    return ["--traffic", str(capture), "--feedback", str(feedback), "--model", MODEL]


def promote(args: list[str], capsys) -> str:
    assert promote_live.main(args) == 0
    return capsys.readouterr().out


def last_run(client):
    (run,) = client.search_runs(
        [mlflow.get_experiment_by_name("test").experiment_id],
        "tags.`sentclf.step` = 'promote_live'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return run


def test_a_clearly_better_challenger_is_promoted(registry, tmp_path, capsys):
    out = promote(traffic(tmp_path, 400, 0.35, 0.05), capsys)
    assert str(registry.get_model_version_by_alias(MODEL, "champion").version) == "2"
    assert "live promotion: promoted (v2 against champion v1 on 400 labelled live requests" in out
    assert (
        "live live-classifier v2: 400 requests (0 sentences served, 400 in shadow), 400 labelled: MCC" in out
    )
    run = last_run(registry)
    assert run.data.tags["live.decision"] == "promoted"
    assert run.data.tags["live.reason.0"].startswith("evidence: 400 labelled requests")
    assert "confidence passed" in run.data.tags["live.reason.2"]
    assert registry.get_model_version(MODEL, "2").tags[LIVE_DECISION_TAG] == "promoted"
    # The figures on each version's own model, as evaluate logs its test figures there.
    for version in ("1", "2"):
        model_id = registry.get_model_version(MODEL, version).model_id or registry.get_model_version(
            MODEL, version
        ).source.removeprefix("models:/")
        metrics = {m.key: m.value for m in registry.get_logged_model(model_id).metrics}
        assert metrics["live_labels"] == 400 and "live_mcc_low" in metrics
        assert metrics["live_mcc"] == run.data.metrics[f"live_v{version}_mcc"]
    assert run.data.metrics["live_v2_vs_v1_share_better"] >= 0.9


def test_a_worse_challenger_is_kept(registry, tmp_path, capsys):
    out = promote(traffic(tmp_path, 400, 0.05, 0.35), capsys)
    assert str(registry.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert (
        "live promotion: kept (v2 against champion v1 on 400 labelled live requests; confidence failed" in out
    )
    assert registry.get_model_version(MODEL, "2").tags[LIVE_DECISION_TAG] == "kept"


def test_too_few_labels_are_kept_and_say_how_many_are_needed(registry, tmp_path, capsys):
    out = promote(traffic(tmp_path, 150, 0.35, 0.05), capsys)
    assert str(registry.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert out.strip().splitlines()[-1] == "live promotion: kept: 150 labelled requests, need 200"


def test_a_dry_run_moves_nothing_and_bad_input_is_a_clear_exit(registry, tmp_path, capsys):
    args = traffic(tmp_path, 400, 0.35, 0.05)
    summary = tmp_path / "summary.json"
    out = promote([*args, "--dry-run", "--summary-file", str(summary)], capsys)
    assert "(dry run: no alias moved)" in out
    assert str(registry.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert json.loads(summary.read_text())["promoted"] is False
    with pytest.raises(SystemExit) as exit_:
        promote_live.main([*args[:2], "--feedback", str(tmp_path / "nowhere"), "--model", MODEL])
    assert exit_.value.code == 1 and "--feedback" in str(exit_.value) and "no such folder" in str(exit_.value)


def test_the_nightly_loop_runs_it_on_a_skipped_night_and_notifies_the_live_figures(
    registry, tmp_path, monkeypatch
):
    from ops import nightly

    args = traffic(tmp_path, 400, 0.35, 0.05)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "test")  # the subprocess's runs stay in the test's store
    monkeypatch.setenv("RETRAIN_TRAFFIC", args[1])
    monkeypatch.setenv("RETRAIN_LIVE_FEEDBACK", args[3])
    monkeypatch.setenv("RETRAIN_NOTIFY", "json://localhost:1/")
    sent = []
    monkeypatch.setattr(nightly.notify, "send", lambda urls, title, body: sent.append((title, body)))
    monkeypatch.setattr(nightly, "count_missed", lambda log: 0)
    log = tmp_path / "retrain-20261204T230000Z-1.log"
    skipped = "skipped: no drift in the served traffic"
    argv = ["--log", str(log), "--stamp", "20261204T230000Z", "--skipped", skipped]
    status = nightly.run_night([*argv, "--", "-P", f"registered_model_name={MODEL}"])
    assert status == 0
    last = log.read_text().splitlines()[-1]
    assert last.startswith(f"retrain 20261204T230000Z: exit 0: {skipped}; live: promoted (v2 against")
    assert str(registry.get_model_version_by_alias(MODEL, "champion").version) == "2"
    ((title, body),) = sent
    assert title.endswith("skipped, champion promoted on live traffic")
    assert (
        "live traffic:" in body
        and "  v1: 400 requests (400 sentences served, 0 in shadow), 400 labelled" in body
    )
