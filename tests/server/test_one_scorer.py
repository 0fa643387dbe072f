"""One scorer: the server (as a process and as its image), the registered pyfunc and the benches' in-process
scorer answer the same sentences with identical probabilities, because all three run the model's runtime
(sentclf_runtime.scorer) with the same settings."""

import importlib.util

import mlflow
import numpy as np
import tritonclient.grpc as triton

from sentclf.kserve_client import classify
from tests.conftest import REPO_ROOT

from pyfunc_model import log_text_model

SENTENCES = [
    "the cat sat on the mat",
    "colorless green ideas sleep furiously",
    "she reads the book very quickly",
    "the dog was bad",
    "a",
    "they ran",
]


def bench_scorer(model_dir):
    """bench/serving_peers/peer_common.py's scorer: what the benches run in-process and the peers serve."""
    path = REPO_ROOT / "bench" / "serving_peers" / "peer_common.py"
    spec = importlib.util.spec_from_file_location("peer_common_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.load_classifier(str(model_dir))


def test_server_pyfunc_and_bench_answer_identical_probabilities(
    server, model_dir, tracking_store, monkeypatch
):
    monkeypatch.setenv("SENTCLF_ORT_THREADS", "1")  # the server under test runs one ORT thread
    monkeypatch.setenv("BENCH_ORT_THREADS", "1")
    client = triton.InferenceServerClient(server.url)
    served = np.stack([classify(client, "cola", [text])[1][0] for text in SENTENCES])

    files = [model_dir / name for name in ("model.onnx", "tokenizer.json", "serving_config.json")]
    with mlflow.start_run():
        info = log_text_model(*files, registered_model_name="one-scorer")
    pyfunc = mlflow.pyfunc.load_model(f"models:/one-scorer/{info.registered_model_version}")
    in_pyfunc = np.stack([pyfunc.predict([text])["probabilities"][0] for text in SENTENCES])

    peers, scorer = bench_scorer(model_dir)
    in_bench = np.stack([peers.classify(scorer, [text])[1][0] for text in SENTENCES])

    assert served.dtype == in_pyfunc.dtype == in_bench.dtype == np.float32
    np.testing.assert_array_equal(served, in_pyfunc)
    np.testing.assert_array_equal(served, in_bench)
    assert len({tuple(row) for row in served}) == len(SENTENCES)  # the sentences' answers differ
