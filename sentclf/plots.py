"""Figures more than one step logs."""

import json
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402

from sentclf.metrics import confusion_matrix, infer_num_classes  # noqa: E402

# Counts are written into the cells up to this many classes; beyond it the colours (and the JSON matrix
# logged beside the figure) carry them.
MAX_CLASSES_WITH_COUNTS = 30
MAX_FIGURE_INCHES = 30.0
MAX_TICK_LABEL_CHARS = 24


def tick_label(name: str) -> str:
    """A long name cut in the middle: names that differ at their end ("... 1", "... 2") stay apart."""
    if len(name) <= MAX_TICK_LABEL_CHARS:
        return name
    head = (MAX_TICK_LABEL_CHARS - 1) // 2
    return name[:head] + "…" + name[-(MAX_TICK_LABEL_CHARS - 1 - head) :]


def confusion_layout(num_classes: int, longest_name: int) -> dict:
    """Figure size and font sizes for an N x N matrix: two classes keep the original 4.5 x 4 in figure;
    beyond that the cells stay about 0.4 in wide (room for a 3-digit count) until the figure reaches
    MAX_FIGURE_INCHES, the fonts shrink with the cells, and the space for the tick labels grows with the
    longest name."""
    cell = min(0.4, (MAX_FIGURE_INCHES - 3.0) / num_classes)
    label_room = min(longest_name, MAX_TICK_LABEL_CHARS) * 0.07 if num_classes > 2 else 0.0
    side = 2.0 + label_room + cell * num_classes
    width, height = max(4.5, side + 0.8), max(4.0, side)  # 0.8 in for the colour bar
    tick_font = float(np.clip(cell * 26, 4, 10))
    return {
        "figsize": (min(width, MAX_FIGURE_INCHES + 2), min(height, MAX_FIGURE_INCHES + 2)),
        "tick_font": tick_font,
        "count_font": tick_font if num_classes > 2 else None,
        "counts": num_classes <= MAX_CLASSES_WITH_COUNTS,
        "rotate": num_classes > 2 or longest_name > 12,
    }


def confusion_figure(
    labels: np.ndarray, predictions: np.ndarray, title: str, class_names: Sequence[str] | None = None
) -> plt.Figure:
    """The confusion matrix (rows true, columns predicted) with the classes' names on the axes; without
    `class_names`, the classes are numbered."""
    num_classes = len(class_names) if class_names is not None else infer_num_classes(labels, predictions)
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(num_classes)]
    matrix = confusion_matrix(labels, predictions, num_classes)
    layout = confusion_layout(num_classes, max(len(n) for n in names))
    figure, axis = plt.subplots(figsize=layout["figsize"])
    image = axis.imshow(matrix, cmap="Blues")
    if num_classes > 2:
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    if layout["counts"]:
        text_options = {"fontsize": layout["count_font"]} if layout["count_font"] else {}
        for (row, column), count in np.ndenumerate(matrix):
            if num_classes > 2 and count == 0:
                continue  # an empty cell says it by its colour: fewer numbers to read
            color = "white" if count > matrix.max() / 2 else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=color, **text_options)
    ticks = [tick_label(n) for n in names]
    if num_classes > 2:
        axis.set_xticks(range(num_classes), ticks, fontsize=layout["tick_font"])
        axis.set_yticks(range(num_classes), ticks, fontsize=layout["tick_font"])
    else:
        axis.set_xticks(range(num_classes), ticks)
        axis.set_yticks(range(num_classes), ticks)
    if layout["rotate"]:
        plt.setp(axis.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def confusion_table(
    labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str] | None = None
) -> dict:
    """The matrix as data: {"labels": names in class order, "matrix": rows true, columns predicted}."""
    num_classes = len(class_names) if class_names is not None else infer_num_classes(labels, predictions)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    matrix = confusion_matrix(labels, predictions, num_classes)
    return {"labels": names, "rows": "true", "columns": "predicted", "matrix": matrix.tolist()}


def log_confusion_matrix(
    labels: np.ndarray,
    predictions: np.ndarray,
    title: str,
    artifact_file: str,
    class_names: Sequence[str] | None = None,
) -> None:
    """Log the confusion-matrix figure to the active run and free it (figures otherwise pile up), and the
    same matrix as JSON beside it (`artifact_file` with a .json suffix)."""
    figure = confusion_figure(labels, predictions, title, class_names)
    try:
        mlflow.log_figure(figure, artifact_file)
    finally:
        plt.close(figure)
    table = confusion_table(labels, predictions, class_names)
    mlflow.log_text(table_json(table), artifact_file.rsplit(".", 1)[0] + ".json")


def table_json(table: dict) -> str:
    """JSON with one line per matrix row: readable at 200 classes, where indent=1 gives 40,000 lines."""
    head = json.dumps({k: v for k, v in table.items() if k != "matrix"}, indent=1)[:-2]
    rows = ",\n  ".join(json.dumps(row) for row in table["matrix"])
    return f'{head},\n "matrix": [\n  {rows}\n ]\n}}\n'
