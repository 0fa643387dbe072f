"""What a person wants to look at after training besides the confusion matrix: misclassified samples and
a classification report, both with the classes' names."""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sentclf.metrics import classification_metrics

MAX_NAME_WIDTH = 40


def misclassified_table(
    texts: list[str], labels: np.ndarray, logits: np.ndarray, class_names: Sequence[str]
) -> pd.DataFrame:
    """Wrong predictions, most confident first: the class indices and their names."""
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predictions = probabilities.argmax(axis=1)
    wrong = predictions != labels
    names = np.asarray(class_names, dtype=object)
    return pd.DataFrame(
        {
            "sentence": np.asarray(texts, dtype=object)[wrong],
            "label": labels[wrong],
            "prediction": predictions[wrong],
            "label_name": names[labels[wrong]],
            "prediction_name": names[predictions[wrong]],
            "probability": probabilities[wrong, predictions[wrong]],
        }
    ).sort_values("probability", ascending=False)


def classification_report(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]) -> str:
    """Per-class precision/recall/F1/support by name, the macro and weighted averages, accuracy and MCC."""
    metrics = classification_metrics(labels, predictions, len(class_names))  # per-class keys by index
    counts = np.bincount(labels, minlength=len(class_names))
    shown = [
        name if len(name) <= MAX_NAME_WIDTH else name[: MAX_NAME_WIDTH - 1] + "…" for name in class_names
    ]
    width = max(14, max(len(name) for name in shown) + 2)
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for index, name in enumerate(shown):
        lines.append(
            f"{name:<{width}}{metrics[f'precision_class_{index}']:>10.4f}"
            f"{metrics[f'recall_class_{index}']:>10.4f}{metrics[f'f1_class_{index}']:>10.4f}"
            f"{counts[index]:>10d}"
        )
    for average in ("macro", "weighted"):
        lines.append(
            f"{average + ' avg':<{width}}{metrics[f'precision_{average}']:>10.4f}"
            f"{metrics[f'recall_{average}']:>10.4f}{metrics[f'f1_{average}']:>10.4f}{len(labels):>10d}"
        )
    lines.append(f"accuracy {metrics['accuracy']:.4f}   MCC {metrics['mcc']:.4f}")
    return "\n".join(lines) + "\n"
