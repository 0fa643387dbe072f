"""The evaluate step's figures: how latency is distributed one request at a time, and how throughput and
p99 latency move with concurrency. Logged as images and embedded in the HTML report."""

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def as_data_uri(figure: plt.Figure) -> str:
    """A PNG data: URI, so the HTML report needs no other file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
