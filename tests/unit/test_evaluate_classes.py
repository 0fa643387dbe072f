"""The evaluate room for any label set: the N-class bootstrap against exact per-draw metrics (and CoLA's
binary values unchanged), the per-class table and the named N x N confusion matrix in the rendered report
at 4 and 20 classes, the label-set checks, and a 4-class version through the whole decision path."""

import argparse
import json
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import mlflow.onnx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sklearn.metrics import f1_score
from sklearn.metrics import matthews_corrcoef as sklearn_mcc

from sentclf.contract import LABEL_NAMES_TAG
from sentclf.metrics import confusion_matrix, mcc_per_resample
from sentclf.schema import COLA_LABELS, SCHEMA_ARTIFACT, LabelSet
from sentclf.tracking import StepInputError
from tests.unit.test_evaluate import BAD_WORDS, GOOD_WORDS, MAX_SEQ_LENGTH, tokenizer_file

import evaluate
import figures
import report
from gate import Check, Decision, GateConfig
from inputs import EvaluationInputs, resolve_label_set
from offline import Scores, score_files
from results import Evaluation, EvaluationData, Parity, Served, score_model
from stats import (
    class_counts,
    f1_macro,
    f1_weighted,
    mcc,
    mcc_from_counts,
    paired_bootstrap,
    resample_indices,
    resampled_class_counts,
    resampled_mcc,
)


def noisy_predictions(labels: np.ndarray, classes: int, accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(labels)) < accuracy, labels, rng.integers(0, classes, len(labels)))


# ---- the N-class bootstrap -------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [3, 4, 7])
def test_resampled_n_class_metrics_equal_the_exact_metrics_of_each_draw(classes):
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, 150)
    predictions = noisy_predictions(labels, classes, 0.6, seed=1)
    draws = resample_indices(150, 30, seed=2)
    every = list(range(classes))
    expected_mcc = [sklearn_mcc(labels[d], predictions[d]) for d in draws]
    assert np.allclose(resampled_mcc(labels, predictions, draws, classes), expected_mcc)
    counts = resampled_class_counts(labels, predictions, draws, classes)
    for draw, true, predicted, correct in zip(
        draws, counts.true, counts.predicted, counts.correct, strict=True
    ):
        matrix = confusion_matrix(labels[draw], predictions[draw], classes)
        assert (true == matrix.sum(axis=1)).all() and (predicted == matrix.sum(axis=0)).all()
        assert (correct == np.diag(matrix)).all()
    for average, resampled in (("macro", f1_macro(counts)), ("weighted", f1_weighted(counts))):
        expected = [
            f1_score(labels[d], predictions[d], labels=every, average=average, zero_division=0) for d in draws
        ]
        assert np.allclose(resampled, expected)
    assert mcc(labels, predictions, classes) == pytest.approx(sklearn_mcc(labels, predictions))


def test_two_classes_keep_todays_binary_values_bit_for_bit():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 527)
    challenger, champion = noisy_predictions(labels, 2, 0.7, 1), noisy_predictions(labels, 2, 0.6, 2)
    draws = resample_indices(527, 2000, seed=42)
    assert (resampled_mcc(labels, challenger, draws, 2) == mcc_per_resample(labels, challenger, draws)).all()
    assert paired_bootstrap(labels, challenger, champion, draws) == paired_bootstrap(
        labels, challenger, champion, draws, num_classes=2
    )
    # The multi-class formula is the binary MCC for two classes: the binary one is kept for exact values.
    general = mcc_from_counts(resampled_class_counts(labels, challenger, draws, 2))
    assert np.allclose(general, mcc_per_resample(labels, challenger, draws))
    assert float(mcc_from_counts(class_counts(labels, challenger, 2))) == pytest.approx(
        mcc(labels, challenger, 2)
    )


def test_a_better_n_class_model_wins_the_paired_bootstrap_and_itself_never_does():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 5, 600)
    good, poor = noisy_predictions(labels, 5, 0.8, 1), noisy_predictions(labels, 5, 0.4, 2)
    draws = resample_indices(600, 1000, seed=3)
    clear = paired_bootstrap(labels, good, poor, draws, num_classes=5)
    assert clear.share_better > 0.99 and clear.delta_mcc.low > 0.2
    same = paired_bootstrap(labels, good, good, draws, num_classes=5)
    assert same.delta_mcc.value == same.delta_mcc.high == 0.0 and same.share_better == 0.0


def test_a_class_missing_from_a_draw_does_not_break_the_scores():
    labels = np.array([0, 0, 1, 1, 2, 3] * 5)
    predictions = labels.copy()
    draws = np.array([np.zeros(30, dtype=np.int64), np.arange(30)])  # the first draw holds one row only
    counts = resampled_class_counts(labels, predictions, draws, 4)
    assert mcc_from_counts(counts).tolist() == [0.0, 1.0]  # a constant column: 0, as for two classes
    assert f1_macro(counts).tolist() == [0.25, 1.0] and f1_weighted(counts).tolist() == [1.0, 1.0]


# ---- the report at 4 and 20 classes ----------------------------------------------------------------------


def an_evaluation(label_set: LabelSet, rows: int = 800, seed: int = 0, champion: bool = True) -> Evaluation:
    """An Evaluation as the step would build it, from synthetic answers (no server, no registry)."""
    classes = label_set.size
    rng = np.random.default_rng(seed)
    labels = rng.choice(classes, rows, p=np.linspace(2, 1, classes) / np.linspace(2, 1, classes).sum())
    served = noisy_predictions(labels, classes, 0.7, seed + 1)
    previous = noisy_predictions(labels, classes, 0.5, seed + 2)
    draws = resample_indices(rows, 1000, seed)
    probabilities = np.eye(classes, dtype=np.float32)[served]
    latency = {"latency_p50_ms": 4.0, "latency_p90_ms": 5.0, "latency_p99_ms": 7.0, "latency_max_ms": 9.0}
    load = [{"concurrency": 1, "throughput_rps": 200.0, "p50_ms": 4.0, "p99_ms": 7.0, "errors": 0}]
    challenger = score_model("2", labels, served, draws, label_set)
    return Evaluation(
        inputs=EvaluationInputs("tickets", "2", "tickets-server:2", "data-run"),
        label_set=label_set,
        rows=rows,
        challenger=challenger,
        champion=score_model("1", labels, previous, draws, label_set) if champion else None,
        comparison=paired_bootstrap(labels, served, previous, draws, classes) if champion else None,
        no_comparison="" if champion else "No champion yet.",
        decision=Decision(True, (Check("floor", True, "test MCC above the floor"),), "every check passed"),
        parity=Parity(1.0, 0.0, 0.995),
        served=Served(Scores(served, probabilities), latency, [0.004] * 10, load, 150.0, 0.5, 300.0),
        resamples=1000,
        requests_per_level=10,
    )


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts, with each table's class attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append((dict(attrs).get("class", ""), []))
        elif tag == "tr":
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def rendered_tables(evaluation: Evaluation, tmp_path: Path) -> dict[str, list[list[str]]]:
    page = tmp_path / "report.html"
    page.write_text(
        report.render(evaluation, run_id="run-1", figures=[("a figure", "data:image/png;base64,")])
    )
    parser = Tables()
    parser.feed(page.read_text())
    return {kind: rows for kind, rows in parser.tables if kind}


@pytest.mark.parametrize("classes", [4, 20])
def test_the_report_shows_the_per_class_table_and_the_named_confusion_matrix(classes, tmp_path):
    names = ["billing", "refund", "login", "other"] if classes == 4 else [f"topic <{i}>" for i in range(20)]
    label_set = LabelSet.from_values(names)
    evaluation = an_evaluation(label_set)
    tables = rendered_tables(evaluation, tmp_path)

    per_class = tables["classes"]
    assert per_class[0] == [
        "#", "class", "support", "share of answers", "precision", "recall", "F1", "champion F1"
    ]  # fmt: skip
    assert [row[1] for row in per_class[1:]] == names  # escaped in the page, the names again when parsed
    for row, scores in zip(per_class[1:], evaluation.challenger.classes, strict=True):
        assert int(row[2]) == scores.support
        assert float(row[4]) == pytest.approx(scores.precision, abs=5e-5)
        assert float(row[5]) == pytest.approx(scores.recall, abs=5e-5)
        assert float(row[6]) == pytest.approx(scores.f1, abs=5e-5)
    assert sum(int(row[2]) for row in per_class[1:]) == evaluation.rows

    confusion = tables["confusion"]
    assert confusion[0][1:] == [*names, "support"]
    assert [row[0] for row in confusion[1:]] == names
    counts = np.array([[int(cell) for cell in row[1:-1]] for row in confusion[1:]])
    assert counts.shape == (classes, classes)
    assert (counts == evaluation.challenger.confusion).all()
    assert "&lt;" in (tmp_path / "report.html").read_text() or classes == 4  # class names are escaped


def test_colas_report_keeps_what_it_shows(tmp_path):
    evaluation = an_evaluation(COLA_LABELS, rows=527, champion=False)
    page = report.render(evaluation, run_id="run-1", figures=[("test confusion matrix", "data:,")])
    for shown in (
        "Not promoted" if not evaluation.decision.promote else "Promoted to champion",
        f"challenger: version 2 (served)</td><td>{evaluation.challenger.mcc}</td>",
        "No champion yet.",
        "The gate",
        "Served vs registered model (parity)",
        "one request at a time",
        "Server memory under load",
        'alt="test confusion matrix"',
    ):
        assert shown in page
    tables = rendered_tables(evaluation, tmp_path)
    assert [row[1] for row in tables["classes"][1:]] == ["unacceptable", "acceptable"]
    assert "champion F1" not in tables["classes"][0]


@pytest.mark.parametrize("classes", [2, 20])
def test_the_confusion_figure_names_every_class(classes):
    names = [f"class {i}" for i in range(classes)]
    matrix = np.arange(classes * classes).reshape(classes, classes)
    figure = figures.confusion_figure(matrix, names, "Test confusion matrix")
    try:
        axis = figure.axes[0]
        assert [label.get_text() for label in axis.get_xticklabels()] == names
        assert [label.get_text() for label in axis.get_yticklabels()] == names
        assert figures.as_data_uri(figure).startswith("data:image/png;base64,")
    finally:
        plt.close(figure)


def test_the_metrics_name_every_class_by_index_and_keep_the_binary_names():
    metrics = an_evaluation(LabelSet.from_values(list("abcd"))).metrics()
    for index in range(4):
        for kind in ("precision", "recall", "f1", "support", "prediction_share"):
            assert f"test_{kind}_class_{index}" in metrics
    assert sum(metrics[f"test_prediction_share_class_{i}"] for i in range(4)) == pytest.approx(1.0)
    for name in ("test_mcc", "test_accuracy", "test_f1_macro", "test_f1_weighted", "delta_mcc"):
        assert metrics[f"{name}_low"] <= metrics[name] <= metrics[f"{name}_high"]


# ---- the label set: from the data, checked against the version ------------------------------------------


def a_data_run(label_set: LabelSet) -> str:
    with mlflow.start_run(run_name="preprocess") as run:
        mlflow.log_dict({"label_set": label_set.as_dict()}, SCHEMA_ARTIFACT)
    return run.info.run_id


def a_version(tag: str | None) -> str:
    client = mlflow.MlflowClient()
    with mlflow.start_run(run_name="train") as run:
        mlflow.log_text("-", "model/MLmodel")
    if not client.search_registered_models(filter_string="name = 'tickets'"):
        client.create_registered_model("tickets")
    version = client.create_model_version("tickets", f"runs:/{run.info.run_id}/model", run.info.run_id)
    if tag is not None:
        client.set_model_version_tag("tickets", version.version, LABEL_NAMES_TAG, tag)
    return str(version.version)


TICKETS = LabelSet.from_values(["billing", "login", "other", "refund"])


def test_a_version_trained_on_other_classes_is_refused_naming_both_lists_and_the_fix(tracking_store):
    data = a_data_run(TICKETS)
    version = a_version(json.dumps(["billing", "login", "refund"]))
    with pytest.raises(StepInputError) as refused:
        resolve_label_set("tickets", version, data)
    message = str(refused.value)
    assert "['billing', 'login', 'refund']" in message  # the version's classes
    assert "['billing', 'login', 'other', 'refund']" in message  # the data's
    assert LABEL_NAMES_TAG in message and "-P data_run_id=" in message and data in message
    assert "Nothing was promoted" in message


def test_the_same_classes_in_another_order_are_refused_too(tracking_store):
    data = a_data_run(TICKETS)
    version = a_version(json.dumps(["login", "billing", "other", "refund"]))
    with pytest.raises(StepInputError, match="was trained on the classes"):
        resolve_label_set("tickets", version, data)


def test_matching_classes_and_an_untagged_older_version_take_the_datas_label_set(tracking_store):
    data = a_data_run(TICKETS)
    assert resolve_label_set("tickets", a_version(TICKETS.names_json()), data) == TICKETS
    assert resolve_label_set("tickets", a_version(None), a_data_run(COLA_LABELS)) == COLA_LABELS


def test_answers_of_another_width_than_the_label_set_are_refused():
    inputs = EvaluationInputs("tickets", "3", "image", "data-run")
    binary = Scores(np.zeros(5, dtype=np.int64), np.full((5, 2), 0.5, dtype=np.float32))
    with pytest.raises(StepInputError, match=r"answers with 2 class probabilities, .* has 4 classes"):
        evaluate.check_classes(binary, inputs, TICKETS)


# ---- a 4-class version through the whole decision path --------------------------------------------------


def nearest_center_model(centers: list[float]) -> onnx.ModelProto:
    """logits[k] = -|mean token id - centers[k]|: the class whose center the sentence's mean id is nearest."""
    h = helper
    dims = ["batch", "seq"]
    nodes = [
        h.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        h.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        h.make_node("Mul", ["ids", "mask"], ["kept"]),
        h.make_node("ReduceSum", ["kept", "axis"], ["total"], keepdims=1),
        h.make_node("ReduceSum", ["mask", "axis"], ["count"], keepdims=1),
        h.make_node("Div", ["total", "count"], ["mean"]),
        h.make_node("Sub", ["mean", "centers"], ["offset"]),
        h.make_node("Abs", ["offset"], ["distance"]),
        h.make_node("Neg", ["distance"], ["logits"]),
    ]
    graph = h.make_graph(
        nodes,
        "nearest_center_classifier",
        [h.make_tensor_value_info(name, TensorProto.INT64, dims) for name in ("input_ids", "attention_mask")],
        [h.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(centers)])],
        [
            h.make_tensor("axis", TensorProto.INT64, [1], [1]),
            h.make_tensor("centers", TensorProto.FLOAT, [len(centers)], centers),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    return model


# Mean ids are about 7 + 1.25 per good word (test_evaluate.py): classes 0-1, 2-3, 4-5 and 6 good words.
SHARP = [7.6, 10.1, 12.6, 14.5]
BLUNT = [6.0, 12.5, 13.0, 17.0]  # test MCC about 0.51; SHARP about 0.69


def ticket_rows(rows: int = 400, seed: int = 5) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(rows):
        good = int(rng.integers(0, 7))
        words = list(rng.choice(GOOD_WORDS, good)) + list(rng.choice(BAD_WORDS, 6 - good))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(min(good // 2, 3))
    return texts, np.array(labels)


def test_a_four_class_version_is_measured_compared_and_promoted_by_name(tracking_store, tmp_path):
    tokenizer = tokenizer_file(tmp_path / "tokenizer.json")
    config = tmp_path / "serving_config.json"
    config.write_text(json.dumps({"model_name": "tickets", "max_seq_length": MAX_SEQ_LENGTH}))

    def register(centers: list[float]) -> str:
        with mlflow.start_run():
            info = mlflow.onnx.log_model(
                nearest_center_model(centers),
                name="model",
                registered_model_name="tickets",
                extra_files=[str(tokenizer), str(config)],
            )
        version = str(info.registered_model_version)
        mlflow.MlflowClient().set_model_version_tag("tickets", version, LABEL_NAMES_TAG, TICKETS.names_json())
        return version

    def served(version: str) -> Served:
        model_dir = Path(
            mlflow.artifacts.download_artifacts(f"models:/tickets/{version}", dst_path=str(tmp_path))
        )
        for name in ("tokenizer.json", "serving_config.json"):
            (model_dir / name).unlink(missing_ok=True)
            (model_dir / name).symlink_to(model_dir / "extra_files" / name)
        latency = {"latency_p50_ms": 4.0, "latency_p90_ms": 5.0, "latency_p99_ms": 7.0, "latency_max_ms": 9.0}
        load = [{"concurrency": 1, "throughput_rps": 200.0, "p50_ms": 4.0, "p99_ms": 7.0, "errors": 0}]
        return Served(score_files(model_dir, texts), latency, [0.004] * 10, load, 150.0, 0.5, 300.0)

    texts, labels = ticket_rows()
    data = EvaluationData(texts, labels, TICKETS)
    gate = GateConfig(min_delta=0.0, confidence=0.9, latency_budget_ms=100.0, min_mcc=0.2)
    args = argparse.Namespace(bootstrap_resamples=1000, seed=42, requests_per_level=10)
    results = []
    for centers in (BLUNT, SHARP):
        version = register(centers)
        inputs = EvaluationInputs("tickets", version, f"tickets-server:{version}", "data-run")
        with mlflow.start_run() as run:
            results.append((evaluate.conclude(gate, inputs, data, served(version), args), run.info.run_id))
    (first, _), (second, run_id) = results
    assert first.decision.promote and first.no_comparison == "No champion yet."
    assert second.decision.promote and second.comparison.delta_mcc.low > 0
    assert second.challenger.mcc.value > first.challenger.mcc.value
    assert second.challenger.mcc.value == pytest.approx(sklearn_mcc(labels, second.served.scores.labels))

    metrics = mlflow.get_run(run_id).data.metrics
    assert metrics["parity_served_agreement"] == 1.0
    assert metrics["test_mcc"] == second.challenger.mcc.value and "champion_test_mcc" in metrics
    assert {f"test_support_class_{i}" for i in range(4)} <= set(metrics)
    summary = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/evaluation/report.json"))
    assert summary["label_set"]["names"] == list(TICKETS.names)
    assert [c["name"] for c in summary["classes"]] == list(TICKETS.names)
    page = mlflow.artifacts.load_text(f"runs:/{run_id}/evaluation/report.html")
    parser = Tables()
    parser.feed(page)
    tables = {kind: rows for kind, rows in parser.tables if kind}
    assert [row[1] for row in tables["classes"][1:]] == list(TICKETS.names)
    assert tables["confusion"][0][1:] == [*TICKETS.names, "support"]
