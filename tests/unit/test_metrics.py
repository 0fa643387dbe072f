import re

import numpy as np
import pytest

from sentclf.metrics import (
    classification_metrics,
    confusion_matrix,
    matthews_corrcoef,
    mcc_from_confusion,
    mcc_per_resample,
    metric_key_names,
    percentile_ms,
)


def test_confusion_matrix_counts_rows_true_columns_predicted():
    matrix = confusion_matrix(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]))
    assert matrix.tolist() == [[1, 1], [1, 2]]


def test_mcc_hand_computed_case():
    # tp=2 tn=1 fp=1 fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert matthews_corrcoef(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0])) == pytest.approx(1 / 6)


def test_mcc_perfect_inverse_and_constant():
    labels = np.array([0, 1, 0, 1])
    assert matthews_corrcoef(labels, labels) == pytest.approx(1.0)
    assert matthews_corrcoef(labels, 1 - labels) == pytest.approx(-1.0)
    assert matthews_corrcoef(labels, np.ones(4, dtype=int)) == 0.0  # undefined -> 0, as GLUE reports


def test_classification_metrics_macro_and_per_class():
    labels = np.array([0, 0, 0, 1])
    predictions = np.array([0, 0, 1, 1])
    metrics = classification_metrics(labels, predictions)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["precision_class_0"] == pytest.approx(1.0)
    assert metrics["recall_class_0"] == pytest.approx(2 / 3)
    assert metrics["precision_class_1"] == pytest.approx(0.5)
    assert metrics["recall_class_1"] == pytest.approx(1.0)
    assert metrics["f1_class_0"] == pytest.approx(0.8)
    assert metrics["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert metrics["f1_micro"] == pytest.approx(0.75)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.array([0, 1]), np.array([0]))


def test_percentile_ms_converts_seconds():
    assert percentile_ms([0.001, 0.002, 0.003], 50) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        percentile_ms([], 50)


# ---- the binary path, value for value as it was before multi-class support --------------------------------


def _binary_example() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 50)
    return labels, np.where(rng.random(50) < 0.7, labels, 1 - labels)


def test_binary_mcc_values_are_unchanged():
    # Recorded with the binary-only implementation: equal to the last bit, not approximately.
    labels, predictions = _binary_example()
    assert matthews_corrcoef(labels, predictions) == 0.5974235104669887
    assert matthews_corrcoef(labels, predictions, 2) == 0.5974235104669887
    draws = np.random.default_rng(8).integers(0, 50, (3, 50))
    assert mcc_per_resample(labels, predictions, draws).tolist() == [
        0.6103059581320451,
        0.5897678246195885,
        0.6280916963166586,
    ]
    metrics = classification_metrics(labels, predictions)
    assert metrics["mcc"] == 0.5974235104669887
    assert metrics["f1_macro"] == 0.7987117552334944
    assert metrics["precision_class_0"] == 0.782608695652174  # no names: keys by index, as before


# ---- N classes ------------------------------------------------------------------------------------------


def _multiclass_example(classes: int, rows: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    return labels, np.where(rng.random(rows) < 0.6, labels, rng.integers(0, classes, rows))


def test_multiclass_mcc_hand_computed_case():
    # 3 classes, rows true / columns predicted: [[2, 1, 0], [0, 2, 0], [1, 0, 1]]; c = 5, s = 7,
    # t = (3, 2, 2), p = (3, 3, 1): (5*7 - (9 + 6 + 2)) / sqrt((49 - 19) * (49 - 17)) = 18 / sqrt(960).
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 0, 1, 1, 1, 0, 2])
    assert confusion_matrix(labels, predictions, 3).tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert matthews_corrcoef(labels, predictions) == pytest.approx(18 / np.sqrt(960))
    assert mcc_from_confusion([[2, 1, 0], [0, 2, 0], [1, 0, 1]]) == pytest.approx(18 / np.sqrt(960))


def test_gorodkin_mcc_equals_the_binary_mcc_for_two_classes():
    labels, predictions = _binary_example()
    assert mcc_from_confusion(confusion_matrix(labels, predictions)) == pytest.approx(
        matthews_corrcoef(labels, predictions), abs=1e-12
    )


@pytest.mark.parametrize("classes", [3, 7, 20])
def test_multiclass_mcc_and_f1_match_scikit_learn(classes):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    labels, predictions = _multiclass_example(classes)
    metrics = classification_metrics(labels, predictions, classes)
    assert metrics["mcc"] == pytest.approx(sklearn_metrics.matthews_corrcoef(labels, predictions), abs=1e-12)
    for average in ("macro", "weighted"):
        expected = sklearn_metrics.f1_score(labels, predictions, average=average, zero_division=0)
        assert metrics[f"f1_{average}"] == pytest.approx(expected, abs=1e-12)
        precision = sklearn_metrics.precision_score(labels, predictions, average=average, zero_division=0)
        assert metrics[f"precision_{average}"] == pytest.approx(precision, abs=1e-12)
    assert metrics["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predictions))


def test_multiclass_mcc_perfect_constant_and_absent_classes():
    labels = np.array([0, 1, 2, 3, 1, 2])
    assert matthews_corrcoef(labels, labels) == pytest.approx(1.0)
    assert matthews_corrcoef(labels, np.zeros(6, dtype=int)) == 0.0  # undefined -> 0
    # A class absent from labels and predictions changes nothing.
    assert matthews_corrcoef(labels, labels[::-1], 4) == matthews_corrcoef(labels, labels[::-1], 9)


@pytest.mark.parametrize("classes", [3, 12, 200])
def test_resampled_multiclass_mcc_equals_the_exact_mcc_of_each_draw(classes):
    labels, predictions = _multiclass_example(classes, rows=300, seed=classes)
    draws = np.random.default_rng(1).integers(0, 300, (25, 300))
    expected = [matthews_corrcoef(labels[d], predictions[d], classes) for d in draws]
    assert np.allclose(mcc_per_resample(labels, predictions, draws), expected, atol=1e-12)
    # A draw where one class takes every row: MCC undefined, 0.
    assert mcc_per_resample(labels, predictions, np.zeros((1, 300), dtype=int)).tolist() == [0.0]


def test_per_class_metrics_are_keyed_by_sanitised_class_name():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    names = ["negative", "neutral / mixed", "positive"]
    metrics = classification_metrics(labels, predictions, 3, names)
    assert metrics["recall_class_negative"] == pytest.approx(0.5)
    assert metrics["precision_class_neutral_mixed"] == pytest.approx(2 / 3)
    assert metrics["support_class_positive"] == 2
    assert not any(key.endswith("_class_0") for key in metrics)
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        classification_metrics(labels, predictions, 3, names[:2])


def test_metric_key_names_are_safe_and_unique():
    keys = metric_key_names(["a b", "a_b", "a/b", "Ünïcode", "", "ok-1.5", "x" * 100, "a_b_1"])
    assert len(set(keys)) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", key) for key in keys)
    assert keys[0] == "a_b_0" and keys[5] == "ok-1.5" and len(keys[6]) == 64
    assert metric_key_names(["unacceptable", "acceptable"]) == ["unacceptable", "acceptable"]
    assert metric_key_names(["0", "1", "-1"]) == ["0", "1", "-1"]


def test_indices_outside_the_classes_are_an_error():
    with pytest.raises(ValueError, match="outside 0..1"):
        confusion_matrix(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, -1]), np.array([0, 1]))
