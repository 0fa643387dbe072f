"""Talking to the inference server with the standard KServe v2 gRPC client (tritonclient)."""

import numpy as np
import tritonclient.grpc as grpcclient

from sentclf.containers import LOOPBACK
from sentclf_runtime.outputs import LABEL_NAME_OUTPUT, LABEL_OUTPUT, TEXT_INPUT
from sentclf_runtime.outputs import PROBS_OUTPUT as PROBABILITIES_OUTPUT
from sentclf_runtime.pairs import TEXT_PAIR_INPUT, split_items

# `label_name` is answered by servers built since label sets are data; older ones answer only the other two.
__all__ = ["LABEL_NAME_OUTPUT", "LABEL_OUTPUT", "PROBABILITIES_OUTPUT", "TEXT_INPUT", "classify", "connect"]


def connect(port: int) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url=f"{LOOPBACK}:{port}")


def build_inputs(texts: list[str]) -> list[grpcclient.InferInput]:
    """One BYTES input of shape [len(texts)], sent as raw contents (tritonclient's default). Texts given
    as (text, text_pair) tuples, for a sentence-pair model (sentclf_runtime.pairs), go as two inputs."""
    texts, text_pairs = split_items(texts)
    named = [(TEXT_INPUT, texts)] + ([] if text_pairs is None else [(TEXT_PAIR_INPUT, text_pairs)])
    tensors = []
    for name, values in named:
        tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode("utf-8") for t in values], dtype=np.object_))
        tensors.append(tensor)
    return tensors


def requested_outputs() -> list[grpcclient.InferRequestedOutput]:
    return [
        grpcclient.InferRequestedOutput(LABEL_OUTPUT),
        grpcclient.InferRequestedOutput(PROBABILITIES_OUTPUT),
    ]


def classify(
    client: grpcclient.InferenceServerClient, model_name: str, texts: list[str], model_version: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (int64 [n]) and probabilities (float32 [n, 2]) for `texts`."""
    result = client.infer(
        model_name, build_inputs(texts), model_version=model_version, outputs=requested_outputs()
    )
    return result.as_numpy(LABEL_OUTPUT), result.as_numpy(PROBABILITIES_OUTPUT)
