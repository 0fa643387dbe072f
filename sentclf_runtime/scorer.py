"""The scorer: tokenizer + ONNX Runtime session for a BERT-style sequence classifier, texts in, class
probabilities out. The server's batches, the pyfunc's frames, evaluate's offline reference, the monitor and
the benches all call this one class.

A call is tokenised once, without padding; its sentences are then sorted by token count and cut into
length buckets, each padded only to its own longest sentence and run as one ORT call (see plan_buckets),
and the probabilities are put back in input order. CoLA sentences are 4-40 tokens long, so a batch padded
to its longest sentence is about half padding, and the model computes every padded position; one extra
ORT call costs a fixed overhead, measured at warm-up in token units (calibrate_run_cost).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .config import ServingConfig
from .multilabel import sigmoid
from .outputs import KNOWN_INPUTS, LOGITS_OUTPUT
from .pairs import pair_input

log = logging.getLogger(__name__)

GRAPH_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Used when calibration cannot tell (a fit that makes no sense, e.g. under heavy foreign load), and by
# callers that do not calibrate: the value measured for the fp32 MiniLM model on 2 cores, one ORT call ~ 8
# sentence-tokens of work.
DEFAULT_RUN_COST_TOKENS = 8.0
RUN_COST_BOUNDS = (1.0, 256.0)
# Sentences sorted by length together in one call of `predict`: large enough for buckets of one length,
# small enough that the tokenizer's output for a million-sentence call is not held at once.
SORT_WINDOW = 4096


class ModelError(RuntimeError):
    """The model files are unusable (wrong inputs/outputs, label count mismatch, ...)."""


@dataclass(frozen=True)
class ScorerOptions:
    """How the session runs and how sentences are grouped into ORT calls."""

    max_batch_size: int = 32  # rows in one ORT call
    length_bucketing: bool = True  # False: input order in chunks of max_batch_size
    intra_op_threads: int = 0  # 0: ORT picks (one per core)
    graph_optimization: str = "all"
    allow_spinning: bool = False


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
    """Row-wise softmax, computed in float64 (shifted by the row max) and returned as float32."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


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


def load_tokenizer(path: str | os.PathLike, max_seq_length: int) -> tuple[Tokenizer, int]:
    """A HF fast tokenizer truncating to max_seq_length, without padding (buckets are padded here), and
    the pad id: [PAD] if the vocabulary has it, else the file's configured pad id, else 0 (the attention
    mask hides padding anyway, so the exact id does not change the result)."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_seq_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        pad_id = (tokenizer.padding or {}).get("pad_id", 0)
    tokenizer.no_padding()
    return tokenizer, pad_id


def make_session(model_path: str | os.PathLike, options: ScorerOptions) -> ort.InferenceSession:
    """A CPU InferenceSession configured from `options`."""
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = GRAPH_OPTIMIZATION_LEVELS[options.graph_optimization]
    session_options.intra_op_num_threads = options.intra_op_threads
    # Callers run several calls at once from their own threads (the server's batches), each parallelised
    # over the cores by ORT's intra-op pool; inter-op parallelism buys nothing for this sequential graph.
    session_options.inter_op_num_threads = 1
    # ORT's pool threads busy-wait between ops by default. In the server they share the cores with the
    # protocol threads (and, in a pod with a CPU limit, with a quota), where spinning measured slower.
    spinning = "1" if options.allow_spinning else "0"
    session_options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return ort.InferenceSession(str(model_path), session_options, providers=["CPUExecutionProvider"])


class Scorer:
    """Turns a list of sentences into class probabilities. Thread-safe: the tokenizer and the ORT session
    may be called from several threads at once."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        tokenizer_path: str | os.PathLike,
        config: ServingConfig,
        options: ScorerOptions | None = None,
        observer: Callable[[BatchStats], None] | None = None,
    ) -> None:
        options = options or ScorerOptions()
        self.config = config
        self.labels = config.labels
        self.max_batch_size = options.max_batch_size
        self.length_bucketing = options.length_bucketing
        self.run_cost_tokens = DEFAULT_RUN_COST_TOKENS
        self.observer = observer
        self.tokenizer, self.pad_id = load_tokenizer(tokenizer_path, config.max_seq_length)
        self.session = make_session(model_path, options)
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = [name for name in self.input_names if name not in KNOWN_INPUTS]
        if unknown or "input_ids" not in self.input_names:
            raise ModelError(
                f"model inputs {self.input_names} must be input_ids plus optional {list(KNOWN_INPUTS[1:])}"
            )
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.output_name = LOGITS_OUTPUT if LOGITS_OUTPUT in outputs else next(iter(outputs))
        classes = outputs[self.output_name].shape[-1]
        if not config.labels_given and isinstance(classes, int) and classes != len(self.labels):
            self.labels = tuple(str(index) for index in range(classes))

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike, options: ScorerOptions | None = None, **kwargs) -> Scorer:
        """From a folder of the three plain files or a downloaded version (either layout)."""
        from .files import model_files

        files = model_files(Path(model_dir))
        config = ServingConfig.read(files["serving_config.json"])
        return cls(files["model.onnx"], files["tokenizer.json"], config, options, **kwargs)

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
        return self.probabilities(logits)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The model's logits [batch, labels] as its probabilities (what predict returns)."""
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            expected = f"[batch, {len(self.labels)}]"
            raise ModelError(f"model returned logits of shape {list(logits.shape)}, expected {expected}")
        # Several labels per text: each label is its own yes/no (sentclf_runtime.multilabel).
        return sigmoid(logits) if self.config.multi_label else softmax(logits)

    def buckets(self, lengths: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """(order, [start, end) ranges into order): the sentences of each ORT run. Without bucketing,
        input order in chunks of max_batch_size."""
        count = len(lengths)
        if not self.length_bucketing:
            step = self.max_batch_size
            return list(range(count)), [(i, min(i + step, count)) for i in range(0, count, step)]
        order = sorted(range(count), key=lengths.__getitem__)
        sorted_lengths = [lengths[i] for i in order]
        return order, plan_buckets(sorted_lengths, self.max_batch_size, self.run_cost_tokens)

    def predict(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> np.ndarray:
        """Float32 probabilities [len(texts), len(labels)], in the order of `texts`. A long input runs in
        windows of SORT_WINDOW sentences, so the tokenizer's output is never held for all of it at once.
        A pairs model (sentclf_runtime.pairs) takes `text_pairs`, one per text, or items that are already
        (text, text_pair) tuples (what the server's batcher hands on); each pair is encoded together."""
        if text_pairs is not None:
            texts = list(zip(texts, text_pairs, strict=True))
        texts = list(texts)
        if len(texts) <= SORT_WINDOW:
            return self._predict_window(texts)
        probs = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), SORT_WINDOW):
            probs[start : start + SORT_WINDOW] = self._predict_window(texts[start : start + SORT_WINDOW])
        return probs

    def _predict_window(self, texts: list[str]) -> np.ndarray:
        began = time.perf_counter()
        probs = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return probs
        # encode_batch_fast: no character offsets, which nothing here uses.
        encodings = self.tokenizer.encode_batch_fast(texts)
        rows = [encoding.ids for encoding in encodings]
        type_rows = (
            [encoding.type_ids for encoding in encodings] if "token_type_ids" in self.input_names else None
        )
        tokenized = time.perf_counter()
        lengths = [len(row) for row in rows]
        order, ranges = self.buckets(lengths)
        padded = 0
        for start, end in ranges:
            members = order[start:end]
            feeds = self._feeds(
                [rows[i] for i in members], None if type_rows is None else [type_rows[i] for i in members]
            )
            padded += feeds["input_ids"].size
            probs[members] = self._run(feeds)
        if self.observer is not None:
            model_s = time.perf_counter() - tokenized
            self.observer(
                BatchStats(len(texts), len(ranges), sum(lengths), padded, tokenized - began, model_s)
            )
        return probs

    def calibrate_run_cost(self, repeats: int = 5) -> float:
        """Fit the cost of one ORT call, in sentence-token units, from timed runs of four shapes (rows x
        tokens, all real tokens): time = a + b x rows x tokens, cost = a / b. Each shape's fastest of
        `repeats` runs is used (other work on the cores only ever adds time). Falls back to
        DEFAULT_RUN_COST_TOKENS when the fit makes no sense; the result is clamped to RUN_COST_BOUNDS."""
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
        low, high = RUN_COST_BOUNDS
        return float(min(max(intercept / slope, low), high))

    def warm_up(self) -> None:
        """One dummy inference (triggers ORT's lazy allocations and checks the output shape early), then,
        with length bucketing, the run-cost calibration."""
        self.predict([("warm up", "warm up") if pair_input(self.config) else "warm up"])
        if self.length_bucketing:
            self.run_cost_tokens = self.calibrate_run_cost()
            log.info("length bucketing: one ORT call costs about %.1f sentence tokens", self.run_cost_tokens)
