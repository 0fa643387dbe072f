"""What a person wants to look at after training besides the confusion matrix: misclassified samples and
a classification report."""

import numpy as np
import pandas as pd

from sentclf.metrics import classification_metrics
from sentclf.schema import LABEL_NAMES


def misclassified_table(texts: list[str], labels: np.ndarray, logits: np.ndarray) -> pd.DataFrame:
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predictions = probabilities.argmax(axis=1)
    wrong = predictions != labels
    return pd.DataFrame(
        {
            "sentence": np.asarray(texts, dtype=object)[wrong],
            "label": labels[wrong],
            "prediction": predictions[wrong],
            "probability": probabilities[wrong, predictions[wrong]],
        }
    ).sort_values("probability", ascending=False)


def classification_report(labels: np.ndarray, predictions: np.ndarray) -> str:
    metrics = classification_metrics(labels, predictions, len(LABEL_NAMES))
    counts = np.bincount(labels, minlength=len(LABEL_NAMES))
    lines = [f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for index, name in enumerate(LABEL_NAMES):
        lines.append(
            f"{name:<14}{metrics[f'precision_class_{index}']:>10.4f}{metrics[f'recall_class_{index}']:>10.4f}"
            f"{metrics[f'f1_class_{index}']:>10.4f}{counts[index]:>10d}"
        )
    lines.append(
        f"{'macro avg':<14}{metrics['precision_macro']:>10.4f}{metrics['recall_macro']:>10.4f}"
        f"{metrics['f1_macro']:>10.4f}{len(labels):>10d}"
    )
    lines.append(f"accuracy {metrics['accuracy']:.4f}   MCC {metrics['mcc']:.4f}")
    return "\n".join(lines) + "\n"
