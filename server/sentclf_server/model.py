"""Tokenizer + ONNX Runtime session for a BERT-style sequence classifier.

A batch is tokenised once, without padding; its sentences are then sorted by token count and cut into
length buckets, each padded only to its own longest sentence and run as one ORT call (see plan_buckets),
and the probabilities are put back in request order. CoLA sentences are 4-40 tokens long, so a batch padded
to its longest sentence is about half padding, and the model computes every padded position; one extra
ORT call costs a fixed overhead, measured at warm-up in token units (calibrate_run_cost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .config import Settings

log = logging.getLogger(__name__)

_GRAPH_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Inputs we know how to fill from a tokenizer Encoding.
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Used when calibration cannot tell (a fit that makes no sense, e.g. under heavy foreign load): the value
# measured for the fp32 MiniLM model on 2 cores, one ORT call ~ 8 sentence-tokens of work.
DEFAULT_RUN_COST_TOKENS = 8.0
_RUN_COST_BOUNDS = (1.0, 256.0)


class ModelError(RuntimeError):
    """The model files are unusable (wrong inputs/outputs, label count mismatch, ...)."""


@dataclass(frozen=True)
class BatchStats:
    """What one predict() call did, for metrics: sentence tokens vs padded positions the model computed."""

    sentences: int
    runs: int
    tokens: int
    padded_tokens: int
    tokenize_s: float
    model_s: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, shifted by the row max for numerical stability."""
    shifted = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def plan_buckets(lengths: Sequence[int], max_rows: int, run_cost_tokens: float) -> list[tuple[int, int]]:
    """Cut `lengths` (sorted ascending) into contiguous [start, end) buckets of at most `max_rows` rows
    that minimise the modelled work: each bucket costs `run_cost_tokens` + rows x its longest length.
    Exact dynamic programme over prefixes, O(n x max_rows)."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        longest = lengths[end - 1]
        for start in range(max(0, end - max_rows), end):
            cost = best[start] + run_cost_tokens + (end - start) * longest
            if cost < best[end]:
                best[end], cut[end] = cost, start
    buckets = []
    end = n
    while end > 0:
        buckets.append((cut[end], end))
        end = cut[end]
    return buckets[::-1]


def load_tokenizer(path: str, max_seq_length: int) -> tuple[Tokenizer, int]:
    """A HF fast tokenizer truncating to max_seq_length, without padding (buckets are padded here), and
    the pad id: [PAD] if the vocabulary has it, else the file's configured pad id, else 0 (the attention
    mask hides padding anyway, so the exact id does not change the result)."""
    tokenizer = Tokenizer.from_file(path)
    tokenizer.enable_truncation(max_length=max_seq_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        pad_id = (tokenizer.padding or {}).get("pad_id", 0)
    tokenizer.no_padding()
    return tokenizer, pad_id


def make_session(settings: Settings) -> ort.InferenceSession:
    """Create a CPU InferenceSession configured from ORT_* settings."""
    options = ort.SessionOptions()
    options.graph_optimization_level = _GRAPH_OPT[settings.ort_graph_optimization]
    options.intra_op_num_threads = settings.ort_intra_op_threads  # 0 = ORT picks (one per core)
    # Batches run in the gRPC handler threads (at most MAX_CONCURRENT_BATCHES at once), each parallelised
    # over the cores by ORT's intra-op pool; inter-op parallelism buys nothing for this sequential graph.
    options.inter_op_num_threads = 1
    # ORT's pool threads busy-wait between ops by default. Here they share the cores with gRPC (and, in a
    # pod with a CPU limit, with a quota), where spinning measured slower.
    spinning = "1" if settings.ort_allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return ort.InferenceSession(str(settings.model_path), options, providers=["CPUExecutionProvider"])


class SentenceClassifier:
    """Turns a list of sentences into class probabilities. Thread-safe: the tokenizer and the ORT session
    may be called from several threads at once."""

    def __init__(self, settings: Settings, observer: Callable[[BatchStats], None] | None = None) -> None:
        self.labels = settings.labels
        self.max_batch_size = settings.max_batch_size
        self.length_bucketing = settings.length_bucketing
        self.run_cost_tokens = DEFAULT_RUN_COST_TOKENS
        self.observer = observer
        self.tokenizer, self.pad_id = load_tokenizer(str(settings.tokenizer_path), settings.max_seq_length)
        self.session = make_session(settings)
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = [name for name in self.input_names if name not in _KNOWN_INPUTS]
        if unknown or "input_ids" not in self.input_names:
            raise ModelError(
                f"model inputs {self.input_names} must be input_ids plus optional {list(_KNOWN_INPUTS[1:])}"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "logits" if "logits" in outputs else outputs[0]

    def _feeds(self, rows: list[list[int]], type_rows: list[list[int]] | None) -> dict[str, np.ndarray]:
        """The declared inputs for token-id rows, padded to the longest row."""
        width = max(len(row) for row in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = row
            mask[index, : len(row)] = 1
            if type_rows is not None:
                types[index, : len(row)] = type_rows[index]
        columns = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        # Feed only what the graph declares: exports differ (e.g. DistilBERT has no token_type_ids).
        return {name: columns[name] for name in self.input_names}

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (logits,) = self.session.run([self.output_name], feeds)
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            expected = f"[batch, {len(self.labels)}]"
            raise ModelError(f"model returned logits of shape {list(logits.shape)}, expected {expected}")
        return softmax(logits)

    def buckets(self, lengths: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """(order, [start, end) ranges into order): the sentences of each ORT run. Without bucketing,
        request order in chunks of max_batch_size."""
        count = len(lengths)
        if not self.length_bucketing:
            step = self.max_batch_size
            return list(range(count)), [(i, min(i + step, count)) for i in range(0, count, step)]
        order = sorted(range(count), key=lengths.__getitem__)
        sorted_lengths = [lengths[i] for i in order]
        return order, plan_buckets(sorted_lengths, self.max_batch_size, self.run_cost_tokens)

    def predict(self, texts: list[str]) -> np.ndarray:
        """Float32 probabilities [len(texts), num_labels], in the order of `texts`."""
        began = time.perf_counter()
        # encode_batch_fast: no character offsets, which nothing here uses.
        encodings = self.tokenizer.encode_batch_fast(texts)
        rows = [encoding.ids for encoding in encodings]
        type_rows = (
            [encoding.type_ids for encoding in encodings] if "token_type_ids" in self.input_names else None
        )
        tokenized = time.perf_counter()
        lengths = [len(row) for row in rows]
        order, ranges = self.buckets(lengths)
        probs = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        padded = 0
        for start, end in ranges:
            members = order[start:end]
            feeds = self._feeds(
                [rows[i] for i in members], None if type_rows is None else [type_rows[i] for i in members]
            )
            padded += feeds["input_ids"].size
            probs[members] = self._run(feeds)
        if self.observer is not None:
            stats = BatchStats(
                len(texts),
                len(ranges),
                sum(lengths),
                padded,
                tokenized - began,
                time.perf_counter() - tokenized,
            )
            self.observer(stats)
        return probs

    def calibrate_run_cost(self, repeats: int = 5) -> float:
        """Fit the cost of one ORT call, in sentence-token units, from timed runs of four shapes (rows x
        tokens, all real tokens): time = a + b x rows x tokens, cost = a / b. Each shape's fastest of
        `repeats` runs is used (other work on the cores only ever adds time). Falls back to
        DEFAULT_RUN_COST_TOKENS when the fit makes no sense; the result is clamped to _RUN_COST_BOUNDS."""
        shapes = [(1, 8), (1, 32), (8, 8), (8, 32)]
        points = []
        for rows, tokens in shapes:
            feeds = self._feeds([[self.pad_id + 1] * tokens] * rows, None)
            self._run(feeds)  # the first run of a shape allocates
            timings = []
            for _ in range(repeats):
                began = time.perf_counter()
                self._run(feeds)
                timings.append(time.perf_counter() - began)
            points.append((rows * tokens, min(timings)))
        work, seconds = (np.array(column, dtype=np.float64) for column in zip(*points, strict=True))
        slope, intercept = np.polyfit(work, seconds, 1)
        if slope <= 0 or intercept <= 0:
            log.warning("run-cost calibration inconclusive (%s); using %s", points, DEFAULT_RUN_COST_TOKENS)
            return DEFAULT_RUN_COST_TOKENS
        low, high = _RUN_COST_BOUNDS
        return float(min(max(intercept / slope, low), high))

    def warm_up(self) -> None:
        """One dummy inference (triggers ORT's lazy allocations and checks the output shape early), then,
        with length bucketing, the run-cost calibration."""
        self.predict(["warm up"])
        if self.length_bucketing:
            self.run_cost_tokens = self.calibrate_run_cost()
            log.info("length bucketing: one ORT call costs about %.1f sentence tokens", self.run_cost_tokens)
