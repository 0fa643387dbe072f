"""The evaluate room: paired bootstrap statistics, the gate's checks, and the whole decision path (parity,
comparison with the champion, report, alias) against a real registry in a temporary store, with tiny
ONNX models whose quality the test controls. Serving over gRPC is covered end to end elsewhere; here the
served answers are the registered model's own, or another model's where parity must fail."""

import argparse
import json
from pathlib import Path

import mlflow
import mlflow.onnx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from sentclf.contract import SERVED_NAME_TAG
from sentclf.metrics import matthews_corrcoef, mcc_per_resample
from sentclf.schema import COLA_LABELS

import evaluate
from gate import GateConfig, decide
from inputs import EvaluationInputs, resolve_served_name
from offline import score_files
from results import EvaluationData, Served
from stats import paired_bootstrap, resample_indices

# ---- statistics ------------------------------------------------------------------------------------------


def test_resampled_mcc_equals_the_plain_mcc_of_each_draw():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    draws = resample_indices(200, 20, seed=1)
    expected = [matthews_corrcoef(labels[d], predictions[d]) for d in draws]
    assert np.allclose(mcc_per_resample(labels, predictions, draws), expected)
    assert (resample_indices(200, 20, seed=1) == draws).all()  # seeded: the same draws every time


def test_a_model_compared_with_itself_is_never_better():
    rng = np.random.default_rng(1)
    labels, predictions = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    comparison = paired_bootstrap(labels, predictions, predictions, resample_indices(300, 1000, 2))
    assert comparison.delta_mcc.value == comparison.delta_mcc.low == comparison.delta_mcc.high == 0.0
    assert comparison.share_better == 0.0


def test_a_clearly_better_model_wins_nearly_every_resample_and_noise_does_not():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 527)
    good = np.where(rng.random(527) < 0.85, labels, 1 - labels)
    coin = rng.integers(0, 2, 527)
    draws = resample_indices(527, 2000, 4)
    clear = paired_bootstrap(labels, good, coin, draws)
    assert clear.share_better > 0.99 and clear.delta_mcc.low > 0.5
    # A retrain of the same recipe: it disagrees on a few rows, fixing as many as it breaks. The interval
    # straddles 0 and the share stays far from the 0.9 gate.
    wrong, right = np.flatnonzero(good != labels), np.flatnonzero(good == labels)
    retrain = good.copy()
    for rows in (rng.choice(wrong, 15, replace=False), rng.choice(right, 15, replace=False)):
        retrain[rows] = 1 - retrain[rows]
    noise = paired_bootstrap(labels, retrain, good, draws)
    assert noise.delta_mcc.low < 0 < noise.delta_mcc.high
    assert 0.1 < noise.share_better < 0.9


# ---- the gate's checks -----------------------------------------------------------------------------------

CONFIG = GateConfig(min_delta=0.0, confidence=0.9, latency_budget_ms=100.0, min_mcc=0.2)


def test_without_a_champion_only_floor_and_latency_count():
    assert decide(CONFIG, challenger_mcc=0.3, latency_p99_ms=20).promote
    below = decide(CONFIG, challenger_mcc=0.1, latency_p99_ms=20)
    assert not below.promote and "floor failed: test MCC 0.1000 vs min_mcc 0.2000" in below.summary
    slow = decide(CONFIG, challenger_mcc=0.3, latency_p99_ms=250)
    assert not slow.promote and "latency failed" in slow.summary


def test_min_delta_is_mlflows_absolute_change_check():
    labels = np.array([0, 1] * 50)
    comparison = paired_bootstrap(labels, labels, 1 - labels, resample_indices(100, 1000, 0))
    strict = GateConfig(min_delta=0.05, confidence=0.9, latency_budget_ms=100, min_mcc=0.2)
    assert decide(strict, 0.50, 10, champion_mcc=0.40, comparison=comparison).promote
    held = decide(strict, 0.43, 10, champion_mcc=0.40, comparison=comparison)
    assert not held.promote and "delta failed" in held.summary


# ---- the decision path against a real registry -----------------------------------------------------------

BAD_WORDS = [f"bad{i}" for i in range(10)]
GOOD_WORDS = [f"good{i}" for i in range(10)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
MAX_SEQ_LENGTH = 16


def tokenizer_file(path: Path) -> Path:
    """Bad words get ids 4-13 and good words 14-23, so a sentence's mean token id grows with its good
    words; [CLS] and [SEP] are added as a real BERT tokenizer would."""
    vocab = {token: i for i, token in enumerate(SPECIALS + BAD_WORDS + GOOD_WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(path))
    return path


def threshold_model(threshold: float) -> onnx.ModelProto:
    """logits = [0, mean token id - threshold]: 'acceptable' when the mean id is above the threshold."""
    h = helper
    dims = ["batch", "seq"]
    nodes = [
        h.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        h.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        h.make_node("Mul", ["ids", "mask"], ["kept"]),
        h.make_node("ReduceSum", ["kept", "axis"], ["total"], keepdims=1),
        h.make_node("ReduceSum", ["mask", "axis"], ["count"], keepdims=1),
        h.make_node("Div", ["total", "count"], ["mean"]),
        h.make_node("Sub", ["mean", "threshold"], ["margin"]),
        h.make_node("Mul", ["mean", "zero"], ["nothing"]),
        h.make_node("Concat", ["nothing", "margin"], ["logits"], axis=1),
    ]
    graph = h.make_graph(
        nodes,
        "threshold_classifier",
        [h.make_tensor_value_info(name, TensorProto.INT64, dims) for name in ("input_ids", "attention_mask")],
        [h.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [
            h.make_tensor("axis", TensorProto.INT64, [1], [1]),
            h.make_tensor("threshold", TensorProto.FLOAT, [], [threshold]),
            h.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def sample_rows(rows: int = 400, seed: int = 5) -> tuple[list[str], np.ndarray]:
    """Six-word sentences; acceptable when at least three words are good."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(rows):
        good = int(rng.integers(0, 7))
        words = list(rng.choice(GOOD_WORDS, good)) + list(rng.choice(BAD_WORDS, 6 - good))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(int(good >= 3))
    return texts, np.array(labels)


# Mean ids: ([CLS]=2 + [SEP]=3 + six words of 4-13 (bad) or 14-23 (good)) / 8, about 7 + 1.25 per good word.
PERFECT, MEDIOCRE, WORSE = 10.1, 11.6, 12.9  # test MCC 0.88, 0.68, 0.48 on sample_rows()


@pytest.fixture
def registry(tracking_store, tmp_path):
    """A registered-model factory in the temporary store: register(threshold) -> version."""
    tokenizer = tokenizer_file(tmp_path / "tokenizer.json")
    config = tmp_path / "serving_config.json"
    config.write_text(json.dumps({"model_name": "cola", "max_seq_length": MAX_SEQ_LENGTH}))

    def register(threshold: float) -> str:
        with mlflow.start_run():
            info = mlflow.onnx.log_model(
                threshold_model(threshold),
                name="model",
                registered_model_name="gated",
                extra_files=[str(tokenizer), str(config)],
            )
        return str(info.registered_model_version)

    return register


def served_by(version: str, texts: list[str], tmp_path: Path) -> Served:
    """What serving the version would have measured: its registered model's own answers."""
    model_dir = Path(
        mlflow.artifacts.download_artifacts(f"models:/gated/{version}", dst_path=str(tmp_path / version))
    )
    for name in ("tokenizer.json", "serving_config.json"):
        (model_dir / name).symlink_to(model_dir / "extra_files" / name)
    scores = score_files(model_dir, texts)
    latency = {"latency_p50_ms": 4.0, "latency_p90_ms": 5.0, "latency_p99_ms": 7.0, "latency_max_ms": 9.0}
    load = [{"concurrency": 1, "throughput_rps": 200.0, "p50_ms": 4.0, "p99_ms": 7.0, "errors": 0}]
    return Served(scores, latency, [0.004] * len(texts), load, 150.0, 0.5, 300.0)


ARGS = argparse.Namespace(bootstrap_resamples=1000, seed=42, requests_per_level=10)


def gate(version: str, texts, labels, tmp_path, served: Served | None = None, config=CONFIG):
    inputs = EvaluationInputs("gated", version, f"gated-server:{version}", "data-run")
    with mlflow.start_run() as run:
        evaluation = evaluate.conclude(
            config,
            inputs,
            EvaluationData(texts, labels, COLA_LABELS),
            served or served_by(version, texts, tmp_path),
            ARGS,
        )
    return evaluation.decision, mlflow.get_run(run.info.run_id)


def champion() -> str | None:
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias("gated", "champion").version)
    except mlflow.exceptions.MlflowException:
        return None


def test_a_first_model_above_the_floor_becomes_champion(registry, tmp_path):
    texts, labels = sample_rows()
    first = registry(MEDIOCRE)
    decision, run = gate(first, texts, labels, tmp_path)
    assert decision.promote and champion() == first
    assert run.data.tags["gate.decision"] == "promoted"
    assert "no champion yet" in run.data.tags["gate.summary"]
    assert run.data.metrics["test_mcc_low"] < run.data.metrics["test_mcc"] < run.data.metrics["test_mcc_high"]
    assert run.data.metrics["parity_served_agreement"] == 1.0
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/report.html",
        "evaluation/latency_histogram.png",
        "evaluation/load_curve.png",
    } <= artifacts


def test_a_first_model_below_the_floor_is_not_promoted(registry, tmp_path):
    texts, labels = sample_rows()
    first = registry(WORSE)
    floor = GateConfig(min_delta=0.0, confidence=0.9, latency_budget_ms=100, min_mcc=0.9)
    decision, run = gate(first, texts, labels, tmp_path, config=floor)
    assert not decision.promote and champion() is None
    assert run.data.tags["gate.check.floor"].startswith("floor failed")


def test_the_same_model_retrained_with_the_same_seed_is_kept(registry, tmp_path):
    texts, labels = sample_rows()
    first = registry(MEDIOCRE)
    gate(first, texts, labels, tmp_path)
    again = registry(MEDIOCRE)  # byte for byte the same model, as a retrain with the same seed gives
    decision, run = gate(again, texts, labels, tmp_path)
    assert not decision.promote and champion() == first
    assert run.data.metrics["delta_mcc"] == 0.0
    assert run.data.metrics["share_resamples_challenger_better"] == 0.0
    assert run.data.tags["gate.check.confidence"].startswith("confidence failed")


def test_a_worse_challenger_is_kept(registry, tmp_path):
    texts, labels = sample_rows()
    first = registry(MEDIOCRE)
    gate(first, texts, labels, tmp_path)
    worse = registry(WORSE)
    decision, run = gate(worse, texts, labels, tmp_path)
    assert not decision.promote and champion() == first
    assert run.data.metrics["delta_mcc_high"] < 0
    assert run.data.tags["champion_before"] == first


def test_a_clearly_better_challenger_is_promoted(registry, tmp_path):
    texts, labels = sample_rows()
    first = registry(MEDIOCRE)
    gate(first, texts, labels, tmp_path)
    better = registry(PERFECT)
    decision, run = gate(better, texts, labels, tmp_path)
    assert decision.promote and champion() == better
    assert run.data.metrics["delta_mcc_low"] > 0
    assert run.data.metrics["share_resamples_challenger_better"] >= 0.9
    report = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/evaluation/report.html")
    assert "Promoted to champion" in report and f"champion: version {first}" in report


# The metric names a CoLA evaluation against a champion logs: the docs and the retrain summary quote them.
COLA_METRICS = {
    *(f"test_{name}" for name in ("accuracy", "mcc", "f1_macro", "f1_micro", "precision_macro")),
    *(f"test_{name}" for name in ("precision_micro", "recall_macro", "recall_micro")),
    *(f"test_{kind}_class_{i}" for kind in ("precision", "recall", "f1") for i in (0, 1)),
    *(f"{name}_{end}" for name in ("test_mcc", "test_accuracy") for end in ("low", "high")),
    *("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"),
    *("throughput_rps", "throughput_rps_c1", "latency_p50_ms_c1", "latency_p99_ms_c1"),
    *("server_memory_peak_mb", "server_image_size_mb", "server_seconds_to_serving"),
    *("parity_served_agreement", "parity_served_max_abs_prob_diff"),
    *("champion_test_mcc", "champion_test_mcc_low", "champion_test_mcc_high"),
    *(f"delta_{name}{end}" for name in ("mcc", "accuracy") for end in ("", "_low", "_high")),
    "share_resamples_challenger_better",
}
# Added with label sets from the data: F1 intervals, weighted F1, each class's support and answer share.
ADDED_METRICS = {
    *(f"test_f1_{name}" for name in ("macro_low", "macro_high", "weighted", "weighted_low", "weighted_high")),
    *(f"test_{kind}_class_{i}" for kind in ("support", "prediction_share") for i in (0, 1)),
}


def test_colas_metric_names_are_todays_plus_the_additions(registry, tmp_path):
    texts, labels = sample_rows()
    gate(registry(MEDIOCRE), texts, labels, tmp_path)
    _, run = gate(registry(PERFECT), texts, labels, tmp_path)
    assert len(COLA_METRICS) == 41 and set(run.data.metrics) == COLA_METRICS | ADDED_METRICS


def test_an_evaluation_that_fails_halfway_moves_nothing(registry, tmp_path):
    """Served answers that are not the registered model's (a wrong image): parity fails, nothing moves."""
    texts, labels = sample_rows()
    first = registry(MEDIOCRE)
    gate(first, texts, labels, tmp_path)
    better = registry(PERFECT)
    impostor = served_by(registry(WORSE), texts, tmp_path)
    with pytest.raises(evaluate.ParityError, match="agrees with the registered model on only"):
        gate(better, texts, labels, tmp_path, served=impostor)
    assert champion() == first


def test_parameters_are_checked_before_any_work():
    base = ["--model-version", "1", "--registered-model-name", "m"]
    good = [
        "--concurrency-levels",
        "1,4",
        "--requests-per-level",
        "10",
        "--latency-requests",
        "50",
        "--min-delta",
        "0",
        "--confidence",
        "0.9",
    ]
    good += ["--latency-budget-ms", "100", "--min-mcc", "0.2", "--seed", "1"]
    with pytest.raises(SystemExit):
        evaluate.parse_args([*base, *good, "--bootstrap-resamples", "100"])
    with pytest.raises(SystemExit):
        evaluate.parse_args([*base, *good[:1], "1,x", *good[2:], "--bootstrap-resamples", "1000"])
    latency = good.index("--latency-requests") + 1
    with pytest.raises(SystemExit):
        evaluate.parse_args(
            [*base, *good[:latency], "0", *good[latency + 1 :], "--bootstrap-resamples", "99"]
        )
    args = evaluate.parse_args([*base, *good, "--bootstrap-resamples", "1000"])
    assert args.concurrency_levels == [1, 4] and args.latency_requests == 50


def test_the_served_name_is_the_given_one_else_the_recorded_one_else_cola(registry):
    version = registry(MEDIOCRE)
    assert resolve_served_name("gated", version, "") == "cola"  # an image built before names were recorded
    mlflow.MlflowClient().set_model_version_tag("gated", version, SERVED_NAME_TAG, "gated")
    assert resolve_served_name("gated", version, "") == "gated"  # what building recorded with the image
    assert resolve_served_name("gated", version, "grammar") == "grammar"  # -P serving_model_name=grammar
