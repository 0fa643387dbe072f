"""The evaluate step's figures: the test confusion matrix with the data's class names, how latency is
distributed one request at a time, how throughput and p99 latency move with concurrency, and accuracy
by slice. Logged as
images and embedded in the HTML report."""

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Above this many classes the cells are too small for their counts: the colour carries the share alone
# (the report's HTML table has every count).
MAX_ANNOTATED_CLASSES = 25


def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str) -> plt.Figure:
    """Counts with true classes on rows and predictions on columns, named; coloured by the share of each
    true class (row), so a rare class reads as clearly as a common one. Grows with the number of classes."""
    classes = len(names)
    side = max(4.5, 2.5 + 0.42 * classes)
    figure, axis = plt.subplots(figsize=(side, side * 0.9))
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if classes <= MAX_ANNOTATED_CLASSES:
        size = 10 if classes <= 6 else 7
        for (row, column), count in np.ndenumerate(matrix):
            color = "white" if shares[row, column] > 0.5 else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=color, fontsize=size)
    rotate = classes > 4 or max(len(name) for name in names) > 14
    axis.set_xticks(range(classes), names, rotation=90 if rotate else 0, fontsize=10 if classes <= 6 else 8)
    axis.set_yticks(range(classes), names, fontsize=10 if classes <= 6 else 8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def latency_histogram(latencies_s: list[float], p50_ms: float, p99_ms: float) -> plt.Figure:
    values = np.asarray(latencies_s) * 1000
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.hist(values, bins=min(60, max(10, len(values) // 10)), color="#4C72B0")
    for value, name, style in ((p50_ms, "p50", "--"), (p99_ms, "p99", ":")):
        axis.axvline(value, color="black", linestyle=style, label=f"{name} {value:.1f} ms")
    axis.set_xlabel("latency (ms), one request at a time")
    axis.set_ylabel("requests")
    axis.set_title("Latency at concurrency 1")
    axis.legend()
    figure.tight_layout()
    return figure


def load_curve(rows: list[dict[str, float]]) -> plt.Figure:
    levels = [row["concurrency"] for row in rows]
    figure, throughput_axis = plt.subplots(figsize=(6, 3.6))
    throughput_axis.plot(levels, [row["throughput_rps"] for row in rows], "o-", color="#4C72B0")
    throughput_axis.set_xscale("log", base=2)
    throughput_axis.set_xticks(levels, [str(level) for level in levels])
    throughput_axis.set_xlabel("concurrent callers")
    throughput_axis.set_ylabel("throughput (requests/s)", color="#4C72B0")
    latency_axis = throughput_axis.twinx()
    latency_axis.plot(levels, [row["p99_ms"] for row in rows], "s--", color="#C44E52")
    latency_axis.set_ylabel("p99 latency (ms)", color="#C44E52")
    throughput_axis.set_title("Throughput and p99 latency against concurrency")
    figure.tight_layout()
    return figure


def slice_figure(slices: Sequence, overall_accuracy: float) -> plt.Figure:
    """Accuracy per slice with its 95% interval, one row per slice grouped by dimension; flagged slices
    (significantly worse than the rest) red, slices too small to compare grey; the overall accuracy as a
    line. `slices` are slices.SliceScore values."""
    labels = [f"{s.dimension}: {s.value} ({s.rows})" for s in slices]
    colors = ["#C44E52" if s.flagged else "#999999" if s.note else "#4C72B0" for s in slices]
    figure, axis = plt.subplots(figsize=(8, 1.2 + 0.28 * max(len(slices), 1)))
    for row, (score, color) in enumerate(zip(slices, colors, strict=True)):
        accuracy = score.accuracy
        axis.errorbar(
            accuracy.value,
            row,
            xerr=[[accuracy.value - accuracy.low], [accuracy.high - accuracy.value]],
            fmt="o",
            color=color,
            capsize=3,
        )
    axis.axvline(overall_accuracy, color="black", linestyle="--", label=f"all rows {overall_accuracy:.3f}")
    axis.set_yticks(range(len(slices)), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel(
        "accuracy, 95% bootstrap interval (red: worse than the rest; grey: too few rows)", fontsize=9
    )
    axis.set_title("Accuracy by slice (served model)")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def as_data_uri(figure: plt.Figure) -> str:
    """A PNG data: URI, so the HTML report needs no other file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
