"""Figures more than one step logs."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402

from sentclf.metrics import confusion_matrix  # noqa: E402
from sentclf.schema import LABEL_NAMES  # noqa: E402


def confusion_figure(labels: np.ndarray, predictions: np.ndarray, title: str) -> plt.Figure:
    matrix = confusion_matrix(labels, predictions, len(LABEL_NAMES))
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        axis.text(column, row, str(count), ha="center", va="center", color=color)
    axis.set_xticks(range(len(LABEL_NAMES)), LABEL_NAMES)
    axis.set_yticks(range(len(LABEL_NAMES)), LABEL_NAMES)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def log_confusion_matrix(labels: np.ndarray, predictions: np.ndarray, title: str, artifact_file: str) -> None:
    """Log the confusion-matrix figure to the active run and free it (figures otherwise pile up)."""
    figure = confusion_figure(labels, predictions, title)
    try:
        mlflow.log_figure(figure, artifact_file)
    finally:
        plt.close(figure)
