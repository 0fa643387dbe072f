"""`make explore`: a what-if page for one registered version, on this machine, offline.

    python -m tools.explore [--model models:/cola-classifier@champion] [--port 8502]

A person types or edits a sentence and sees, from the version's own files (its ONNX model, tokenizer and
serving config, scored by sentclf_runtime's Scorer: no torch, no server):

- the predicted class and every class's probability;
- which words moved the decision: occlusion, each word removed in turn and the sentence scored again; a
  word's weight is how much the predicted class's probability drops without it (negative: the word
  pulled the other way);
- the nearest training sentences by the model's own embedding, with their labels, and the nearest ones of
  another class than the predicted one (what the model sees as the closest counterexamples).

The model's own embedding: the ONNX graph has only `logits`, so the page adds the input of the graph's final
linear layer (the pooled sentence vector the classifier head reads) as a second output of a copy of the
graph, at load time. Every version has one, old or new, so no re-export is needed. A graph whose head is
not a plain MatMul/Gemm (an int8 variant) falls back to its logits as the embedding, and the page says so.

A sentence-pair version (docs/pairs.md) gets two text boxes: the pair is scored and embedded together, as
the model reads it, occlusion removes each word of either text in turn (the other text kept whole), and
the neighbours are training pairs.

The training sentences are the version's own data (its preprocess run's train split, up to --max-index
rows, a seeded sample above). Bad input (empty, huge, binary) gets a message, not a stack trace. The page
listens on 127.0.0.1 only; it is a host tool, not part of the inference server.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentclf.contract import DEFAULT_CHAMPION_URI, MODEL_URI_FORMS, model_uri

logger = logging.getLogger("explore")

DEFAULT_MODEL = DEFAULT_CHAMPION_URI
DEFAULT_PORT = 8502
MAX_CHARS = 1000  # a sentence classifier reads one sentence; the model truncates long text anyway
MAX_WORDS = 120  # occlusion scores one variant per word
NEIGHBOURS = 5
MAX_INDEX_ROWS = 20000
PAGE = Path(__file__).resolve().parent / "explore_page.html"
EMBEDDING_OUTPUT = "sentclf_explore_embedding"


class ExploreInputError(ValueError):
    """The text cannot be explained; the message says why and what to type instead."""


def check_text(text: object) -> str:
    """The text to explain, stripped; a clear error for what is not a sentence."""
    if not isinstance(text, str):
        raise ExploreInputError('send a JSON object {"text": "a sentence"}')
    text = text.strip()
    if not text:
        raise ExploreInputError("type a sentence first: the text is empty")
    if len(text) > MAX_CHARS:
        raise ExploreInputError(
            f"the text has {len(text)} characters; this page explains one sentence of up to {MAX_CHARS}"
        )
    controls = [c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co") and c not in "\t\n\r"]
    if controls or "\ufffd" in text:
        raise ExploreInputError(
            "the text holds control or undecodable characters (binary data?): paste plain text"
        )
    if len(text.split()) > MAX_WORDS:
        raise ExploreInputError(f"the text has more than {MAX_WORDS} words; explain one sentence at a time")
    return text


def expose_embedding(model_bytes: bytes) -> tuple[bytes, str | None]:
    """A copy of the ONNX graph with the input of its final linear layer (the vector the classifier head
    reads) as an extra output, and that output's name; (the bytes unchanged, None) when the head is not a
    MatMul(+Add) or Gemm."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    logits = graph.output[0].name
    node = producers.get(logits)
    hops = 0
    while node is not None and node.op_type in ("Add", "Identity") and hops < 4:  # bias, renames
        variable = [name for name in node.input if name not in constants]
        node = producers.get(variable[0]) if len(variable) == 1 else None
        hops += 1
    if node is None or node.op_type not in ("MatMul", "Gemm"):
        return model_bytes, None
    source = node.input[0] if node.input[0] not in constants else None
    if source is None:
        return model_bytes, None
    graph.node.append(onnx.helper.make_node("Identity", [source], [EMBEDDING_OUTPUT]))
    graph.output.append(onnx.helper.make_tensor_value_info(EMBEDDING_OUTPUT, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString(), EMBEDDING_OUTPUT


def occlusion(scorer_predict, text: str, predicted: int) -> list[tuple[str, float]]:
    """(word, weight) per whitespace word: the predicted class's probability minus its probability with
    the word removed. Scored in one call."""
    words = text.split()
    if len(words) < 2:
        return [(word, 0.0) for word in words]
    variants = [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
    probabilities = scorer_predict([text, *variants])
    full = float(probabilities[0, predicted])
    return [(word, full - float(p)) for word, p in zip(words, probabilities[1:, predicted], strict=True)]


def pair_occlusion(scorer_predict, text: str, text_pair: str, predicted: int) -> list[tuple[str, str, float]]:
    """(side, word, weight) per whitespace word of both texts of a pair ("text", then "text_pair"): the
    predicted class's probability minus its probability with that word removed, the other text whole.
    The only word of a text is not removed (an empty side is no pair): weight 0. Scored in one call."""
    sides = {"text": text.split(), "text_pair": text_pair.split()}
    variants, keys = [(text, text_pair)], []
    for side, words in sides.items():
        for i in range(len(words)):
            keys.append((side, words[i]))
            if len(words) < 2:
                continue
            shorter = " ".join(words[:i] + words[i + 1 :])
            variants.append((shorter, text_pair) if side == "text" else (text, shorter))
    probabilities = scorer_predict([v[0] for v in variants], [v[1] for v in variants])
    full, scored = float(probabilities[0, predicted]), iter(probabilities[1:, predicted])
    return [(side, word, 0.0 if len(sides[side]) < 2 else full - float(next(scored))) for side, word in keys]


def check_pair(text: object, text_pair: object) -> tuple[str, str]:
    """Both texts of a pair checked as check_text checks one; the second's problem says it is the second's."""
    first = check_text(text)
    try:
        second = check_text(text_pair) if text_pair is not None else None
    except ExploreInputError as error:
        raise ExploreInputError(f"the second text: {error}") from None
    if second is None:
        raise ExploreInputError('this version reads sentence pairs: send {"text": "...", "text_pair": "..."}')
    return first, second


def normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


@dataclass(frozen=True)
class Neighbour:
    text: str
    label: str
    similarity: float


class Explorer:
    """One version's files and its training sentences, ready to explain a sentence."""

    def __init__(self, model_dir: Path, texts: list, labels: list[int], source: str = "") -> None:
        """`texts`: the training sentences, or a pairs version's (text, text_pair) tuples."""
        from sentclf_runtime.config import ServingConfig
        from sentclf_runtime.files import model_files
        from sentclf_runtime.pairs import pair_input
        from sentclf_runtime.scorer import Scorer

        files = model_files(model_dir)
        rewritten, self.embedding_output = expose_embedding(files["model.onnx"].read_bytes())
        self._tmp = tempfile.TemporaryDirectory(prefix="sentclf-explore-")
        path = Path(self._tmp.name) / "model.onnx"
        path.write_bytes(rewritten)
        self.scorer = Scorer(path, files["tokenizer.json"], ServingConfig.read(files["serving_config.json"]))
        self.names = list(self.scorer.labels)
        self.pair_input = pair_input(self.scorer.config)  # the second input's name; None: single sentences
        self.source = source
        self.texts, self.labels = list(texts), np.asarray(labels, dtype=np.int64)
        self.index = normalised(self.embed(self.texts)) if self.texts else np.zeros((0, 1), np.float32)

    @property
    def embedding_kind(self) -> str:
        return "the model's pooled sentence vector" if self.embedding_output else "the model's logits"

    def embed(self, texts: list) -> np.ndarray:
        """The model's own vectors of `texts` (see the module docstring), in their order; (text, text_pair)
        tuples are encoded together, as the scorer encodes them."""
        return self.score_and_embed(texts)[1]

    def score_and_embed(self, texts: list) -> tuple[np.ndarray, np.ndarray]:
        """Each text's probabilities (as the scorer's predict gives them) and its vector, from one run of
        the graph (its logits come with the vector), in windows of SORT_WINDOW texts grouped into ORT calls
        as the scorer groups them (by length: a call padded to its longest text wastes little). label_next
        scores and embeds thousands of candidates."""
        from sentclf_runtime.scorer import SORT_WINDOW

        windows = [self._run_window(texts[i : i + SORT_WINDOW]) for i in range(0, len(texts), SORT_WINDOW)]
        if not windows:
            return np.zeros((0, len(self.names)), np.float32), np.zeros((0, 1), np.float32)
        return np.concatenate([p for p, _ in windows]), np.concatenate([v for _, v in windows])

    def _run_window(self, texts: list) -> tuple[np.ndarray, np.ndarray]:
        scorer = self.scorer
        # Without a vector output (an int8 graph), the logits are the vector too (the module docstring).
        outputs = [scorer.output_name, *([self.embedding_output] if self.embedding_output else [])]
        encodings = scorer.tokenizer.encode_batch_fast(texts)
        with_types = "token_type_ids" in scorer.input_names
        order, ranges = scorer.buckets([len(encoding.ids) for encoding in encodings])
        probabilities = np.empty((len(encodings), len(self.names)), dtype=np.float32)
        vectors = None
        for start, end in ranges:
            members = order[start:end]
            types = [encodings[i].type_ids for i in members] if with_types else None
            feeds = scorer._feeds([encodings[i].ids for i in members], types)  # the Scorer's padding, inputs
            results = scorer.session.run(outputs, feeds)
            probabilities[members] = scorer.probabilities(results[0])
            vector = np.asarray(results[-1], dtype=np.float32).reshape(len(members), -1)
            if vectors is None:
                vectors = np.empty((len(encodings), vector.shape[1]), dtype=np.float32)
            vectors[members] = vector
        return probabilities, vectors

    def neighbours(self, vector: np.ndarray, exclude: int | None, k: int = NEIGHBOURS) -> list[Neighbour]:
        """The k training sentences nearest `vector` (cosine), those of class `exclude` left out."""
        if not len(self.texts):
            return []
        similarity = self.index @ normalised(vector[None, :])[0]
        if exclude is not None:
            similarity = np.where(self.labels == exclude, -np.inf, similarity)
        best = np.argsort(-similarity, kind="stable")[:k]
        return [
            Neighbour(_shown(self.texts[i]), self.names[self.labels[i]], float(similarity[i]))
            for i in best
            if np.isfinite(similarity[i])
        ]

    def explain(self, raw: object, raw_pair: object = None) -> dict:
        """What the page shows for one sentence (or a pairs version's pair); ExploreInputError for bad
        input."""
        if self.pair_input:
            return self.explain_pair(*check_pair(raw, raw_pair))
        if raw_pair is not None:
            raise ExploreInputError('this version reads single sentences: send only {"text": "..."}')
        text = check_text(raw)
        probabilities = self.scorer.predict([text])[0]
        predicted = int(np.argmax(probabilities))
        words = [
            {"word": w, "weight": weight} for w, weight in occlusion(self.scorer.predict, text, predicted)
        ]
        return self._answer(text, probabilities, words, self.embed([text])[0])

    def explain_pair(self, text: str, text_pair: str) -> dict:
        """explain() of a pairs version: both texts scored together, occlusion over both."""
        probabilities = self.scorer.predict([text], [text_pair])[0]
        predicted = int(np.argmax(probabilities))
        words = [
            {"side": side, "word": w, "weight": weight}
            for side, w, weight in pair_occlusion(self.scorer.predict, text, text_pair, predicted)
        ]
        vector = self.embed([(text, text_pair)])[0]
        return self._answer(text, probabilities, words, vector) | {"text_pair": text_pair}

    def _answer(self, text: str, probabilities: np.ndarray, words: list[dict], vector: np.ndarray) -> dict:
        predicted = int(np.argmax(probabilities))
        return {
            "text": text,
            "label": self.names[predicted],
            "probabilities": [
                {"label": name, "probability": float(p)}
                for name, p in zip(self.names, probabilities, strict=True)
            ],
            "words": words,
            "neighbours": [n.__dict__ for n in self.neighbours(vector, None)],
            "other_class": [n.__dict__ for n in self.neighbours(vector, predicted)],
            "embedding": self.embedding_kind,
            "index_rows": len(self.texts),
            "source": self.source,
        }


def app(explorer: Explorer):
    """The Starlette app: the page at /, the explanation at POST /api/explain."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    page = PAGE.read_text()

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    texts = 2 if explorer.pair_input else 1

    async def explain(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > texts * (4 * MAX_CHARS + 100):
            return JSONResponse(
                {"error": f"the text is too long: one sentence of up to {MAX_CHARS} characters"}, 400
            )
        try:
            payload = json.loads(body.decode("utf-8"))
            payload = payload if isinstance(payload, dict) else {}
            return JSONResponse(explorer.explain(payload.get("text"), payload.get("text_pair")))
        except (UnicodeDecodeError, ValueError) as error:  # ExploreInputError and bad JSON alike
            message = str(error) if isinstance(error, ExploreInputError) else 'send JSON {"text": "..."}'
            return JSONResponse({"error": message}, 400)

    async def info(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "labels": explorer.names,
                "embedding": explorer.embedding_kind,
                "index_rows": len(explorer.texts),
                "source": explorer.source,
                "pair_input": explorer.pair_input,
            }
        )

    return Starlette(
        routes=[Route("/", index), Route("/api/explain", explain, methods=["POST"]), Route("/api/info", info)]
    )


def _shown(item) -> str:
    """A training sentence, or a pair as one text (`text [SEP] text_pair`), for the neighbour tables."""
    from sentclf_runtime.pairs import joined_texts

    return joined_texts([item[0]], [item[1]])[0] if isinstance(item, tuple) else item


def training_items(train) -> list:
    """The train split's sentences, or (text, text_pair) tuples where it holds a second text."""
    from sentclf.schema import TEXT_COLUMN, TEXT_PAIR_COLUMN

    if TEXT_PAIR_COLUMN in train.columns:
        return list(zip(train[TEXT_COLUMN].tolist(), train[TEXT_PAIR_COLUMN].tolist(), strict=True))
    return train[TEXT_COLUMN].tolist()


def load_version(uri: str, max_rows: int, work_dir: Path, seed: int = 0) -> Explorer:
    """An Explorer of a registered version and its training sentences (its preprocess run's train split)."""
    import mlflow

    from sentclf.data import read_split
    from sentclf.schema import LABEL_COLUMN
    from sentclf.tracking import registered_version, version_data_run_id

    try:
        version = registered_version(uri)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    name, number = version.name, str(version.version)
    model_dir = Path(
        mlflow.artifacts.download_artifacts(model_uri(name, number), dst_path=str(work_dir / "model"))
    )
    texts, labels, source = [], [], "no training data found: neighbours are not shown"
    data_run_id = version_data_run_id(name, number)
    if data_run_id:
        train = read_split(data_run_id, "train")
        if len(train) > max_rows:
            train = train.sample(max_rows, random_state=seed)
        texts, labels = training_items(train), train[LABEL_COLUMN].tolist()
        source = f"{len(texts)} training sentences of preprocess run {data_run_id}"
    logger.info("%s version %s; %s", name, number, source)
    return Explorer(model_dir, texts, labels, f"{name} version {number}: {source}")


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_URI_FORMS)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--max-index", type=int, default=MAX_INDEX_ROWS, help="training sentences indexed at most"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # uvicorn stops on SIGTERM, then raises it again; Python's default action would end the process before
    # the temporary model copies below are removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="sentclf-explore-") as tmp:
        explorer = load_version(args.model or DEFAULT_MODEL, args.max_index, Path(tmp))
        print(
            f"what-if page of {explorer.source}: http://127.0.0.1:{args.port}/  (Ctrl-C stops it)", flush=True
        )
        uvicorn.run(app(explorer), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
