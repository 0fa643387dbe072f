"""The monitor with `--feedback`, in this process against a real sqlite store: two registered ONNX versions
(champion and challenger, trained on a preprocess run of their own), a capture folder of shadow traffic as
the server writes it and a folder of labels. Each version's live MCC on the run and on its own model equals
what the answers and labels give; the report has its "Versions on live traffic" section; without
`--feedback` nothing live is logged; a missing labels folder fails the run with a message naming it."""

import json
import sys
from pathlib import Path

import mlflow
import mlflow.onnx
import numpy as np
import pandas as pd
import pytest

from sentclf.metrics import matthews_corrcoef
from sentclf.schema import split_artifact_path
from tests.conftest import REPO_ROOT
from tests.unit.test_evaluate import BAD_WORDS, GOOD_WORDS, MAX_SEQ_LENGTH, threshold_model, tokenizer_file
from tests.unit.test_live import LABELS, record, write_lines

sys.path.insert(0, str(REPO_ROOT / "monitor"))
import monitor  # noqa: E402

NAME = "gated"  # served as `gated`


def sentences(rng, n: int) -> list[str]:
    return [" ".join(rng.choice(GOOD_WORDS + BAD_WORDS, 6)) for _ in range(n)]


@pytest.fixture
def versions(tracking_store, tmp_path):
    rng = np.random.default_rng(0)
    with mlflow.start_run() as data_run:
        for split in ("train", "test"):
            frame = pd.DataFrame({"sentence": sentences(rng, 80), "label": rng.integers(0, 2, 80)})
            path = tmp_path / f"{split}.parquet"
            frame.to_parquet(path)
            mlflow.log_artifact(str(path), str(Path(split_artifact_path(split)).parent))
    tokenizer = tokenizer_file(tmp_path / "tokenizer.json")
    config = tmp_path / "serving_config.json"
    config.write_text(json.dumps({"model_name": NAME, "max_seq_length": MAX_SEQ_LENGTH, "labels": LABELS}))
    for threshold in (11.6, 10.1):
        with mlflow.start_run():
            mlflow.set_tag("input.data_run_id", data_run.info.run_id)
            mlflow.onnx.log_model(
                threshold_model(threshold),
                name="model",
                registered_model_name=NAME,
                extra_files=[str(tokenizer), str(config)],
            )
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(NAME, "champion", "1")
    client.set_registered_model_alias(NAME, "challenger", "2")
    return client


def shadow_folders(tmp_path: Path):
    """120 one-sentence requests answered by v1 (served) and v2 (shadow); labels for 100 of them."""
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 2, 120)
    v1 = np.where(rng.random(120) < 0.3, 1 - truth, truth)
    v2 = np.where(rng.random(120) < 0.1, 1 - truth, truth)
    capture, labels = tmp_path / "capture", tmp_path / "labels"
    capture.mkdir()
    labels.mkdir()
    rows = []
    for i in range(120):
        rows.append(record(f"q{i}", 0, "1", int(v1[i]), True, "champion", model=NAME, age=10))
        rows.append(record(f"q{i}", 0, "2", int(v2[i]), False, "shadow", model=NAME, age=10))
    write_lines(capture / "capture-20261204T000000Z-h-1-1.jsonl", rows)
    (labels / "team.csv").write_text("id,label\n" + "".join(f"q{i},{LABELS[truth[i]]}\n" for i in range(100)))
    return capture, labels, truth[:100], v1[:100], v2[:100]


def monitor_run(client) -> mlflow.entities.Run:
    (run,) = client.search_runs(
        [mlflow.get_experiment_by_name("test").experiment_id], "tags.`sentclf.step` = 'monitor'"
    )
    return run


def test_the_monitor_judges_each_version_on_the_labels(versions, tmp_path):
    capture, labels, truth, v1, v2 = shadow_folders(tmp_path)
    argv = ["--traffic", str(capture), "--model", f"models:/{NAME}@champion", "--since", "all"]
    monitor.main([*argv, "--min-records", "10", "--feedback", str(labels)])
    client = versions
    run = monitor_run(client)
    assert run.data.metrics["live_v1_mcc"] == pytest.approx(matthews_corrcoef(truth, v1))
    assert run.data.metrics["live_v2_mcc"] == pytest.approx(matthews_corrcoef(truth, v2))
    assert run.data.metrics["live_v2_vs_v1_paired_labels"] == 100
    assert run.data.tags["live.versions"] == "1,2" and run.data.tags["live.models_logged"] == "1,2"
    for version in ("1", "2"):
        model_id = client.get_model_version(NAME, version).source.removeprefix("models:/")
        metrics = {m.key: m.value for m in client.get_logged_model(model_id).metrics}
        assert metrics["live_mcc"] == run.data.metrics[f"live_v{version}_mcc"]
        assert metrics["live_requests"] == 120 and metrics["live_labels"] == 100
    report = Path(
        client.download_artifacts(run.info.run_id, "monitor/report.html", str(tmp_path))
    ).read_text()
    assert "<h2>Versions on live traffic</h2>" in report and "<td>v2 against v1</td>" in report
    verdict = json.loads(
        Path(client.download_artifacts(run.info.run_id, "monitor/verdict.json", str(tmp_path))).read_text()
    )
    assert verdict["live"]["joined"] == {"used": 100}


def test_without_feedback_nothing_live_and_a_missing_folder_is_named(versions, tmp_path):
    capture, _, _, _, _ = shadow_folders(tmp_path)
    argv = ["--traffic", str(capture), "--model", f"models:/{NAME}@champion", "--since", "all"]
    monitor.main([*argv, "--min-records", "10", "--feedback", ""])
    run = monitor_run(versions)
    assert not [key for key in run.data.metrics if key.startswith("live_")]
    with pytest.raises(SystemExit) as exit_:
        monitor.main([*argv, "--min-records", "10", "--feedback", str(tmp_path / "nowhere")])
    assert f"feedback='{tmp_path / 'nowhere'}': no folder" in str(exit_.value)
