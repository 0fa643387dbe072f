import numpy as np
import pytest

from sentclf.metrics import classification_metrics, confusion_matrix, matthews_corrcoef, percentile_ms


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
