"""A model with more than two classes, named by the data (billing, refund, login, other), served from the
source tree and from the image: the names come back per sentence in `label_name`, and a client finds them
in order in the model's Triton ModelConfig (`parameters["label_names"]`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

# Sentences whose words fall in each of the fixture model's four classes (its head is nearest-centre on
# the mean token id), plus text the tokenizer does not know.
SENTENCES = [
    "the cat sat on the mat",
    "it was very good",
    "colorless green ideas sleep furiously",
    "they read quickly",
    "slowly slowly slowly slowly slowly",
    "héllo wörld ✓",
]


@pytest.fixture(scope="module")
def client(ticket_server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(ticket_server.url) as triton_client:
        yield triton_client


def text_input(sentences: list[str]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(sentences)], "BYTES")
    tensor.set_data_from_numpy(np.array(sentences, dtype=object))
    return tensor


def test_metadata_and_model_config_list_the_classes_in_order(client, ticket_labels) -> None:
    assert client.is_model_ready("tickets")
    metadata = client.get_model_metadata("tickets", as_json=True)
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": ["-1"]},
        {"name": "probabilities", "datatype": "FP32", "shape": ["-1", "4"]},
        {"name": "label_name", "datatype": "BYTES", "shape": ["-1"]},
    ]
    config = client.get_model_config("tickets", as_json=True)["config"]
    names = json.loads(config["parameters"]["label_names"]["string_value"])
    assert names == list(ticket_labels) == ["billing", "refund", "login", "other"]
    assert config["output"][1]["dims"] == ["-1", "4"]


def test_label_name_is_the_name_of_label(
    client, ticket_labels, ticket_model_dir: Path, reference_probs
) -> None:
    result = client.infer("tickets", [text_input(SENTENCES)])
    labels = result.as_numpy("label")
    probs = result.as_numpy("probabilities")
    names = result.as_numpy("label_name")
    assert probs.shape == (len(SENTENCES), 4) and names.shape == (len(SENTENCES),)
    np.testing.assert_allclose(
        probs, reference_probs(ticket_model_dir / "tokenizer.json", SENTENCES), atol=1e-5
    )
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))
    assert [name.decode() for name in names] == [ticket_labels[i] for i in labels]
    assert set(labels) == {0, 1, 2, 3}  # every class is answered for some sentence


def test_requested_outputs_with_names(client, ticket_labels) -> None:
    requested = [triton.InferRequestedOutput("label_name"), triton.InferRequestedOutput("label")]
    result = client.infer("tickets", [text_input(SENTENCES[:3])], outputs=requested)
    assert [o.name for o in result.get_response().outputs] == ["label_name", "label"]
    assert result.as_numpy("probabilities") is None
    expected = [ticket_labels[i].encode() for i in result.as_numpy("label")]
    assert result.as_numpy("label_name").tolist() == expected
    old_client = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("probabilities")]
    result = client.infer("tickets", [text_input(SENTENCES[:3])], outputs=old_client)
    assert [o.name for o in result.get_response().outputs] == ["label", "probabilities"]
