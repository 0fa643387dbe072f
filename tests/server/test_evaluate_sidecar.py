"""The evaluate step in a Kubernetes Job: the server is a sidecar at SENTCLF_SERVER_ADDRESS, and evaluate
measures it there without starting a container or touching a Docker engine (there is none in a pod).
Here the sidecar is the real server, started as a process on loopback."""

import argparse

import numpy as np
import pytest

import evaluate
import load
from inputs import EvaluationInputs

ONE_REQUEST = argparse.Namespace(concurrency_levels=[1], requests_per_level=1, latency_requests=1)
SENTENCES = [
    "the cat sat on the mat",
    "mat the on sat cat the",
    "green ideas sleep furiously",
    "he reads",
] * 5


@pytest.fixture
def no_docker(monkeypatch):
    """Any use of a Docker engine fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("evaluate touched Docker although a sidecar serves the model")

    monkeypatch.setattr(evaluate, "docker_client", refuse)
    monkeypatch.setattr(evaluate, "running_server", refuse)


def test_evaluate_measures_the_sidecar_at_the_address_it_is_given(
    server, reference_probs, model_dir, monkeypatch, no_docker
):
    monkeypatch.setenv(evaluate.SERVER_ADDRESS_ENV, server.url)
    inputs = EvaluationInputs(
        "cola-classifier", "1", "registry.example/cola-classifier-server:1@sha256:00", "data", "cola"
    )
    args = argparse.Namespace(concurrency_levels=[1, 2], requests_per_level=20, latency_requests=3)
    served = evaluate.serve_and_measure(inputs, SENTENCES, args)
    expected = reference_probs(model_dir / "tokenizer.json", SENTENCES)
    assert np.allclose(served.scores.probabilities, expected, atol=1e-5)
    assert (
        served.latency["latency_p50_ms"]
        <= served.latency["latency_p99_ms"]
        <= served.latency["latency_max_ms"]
    )
    assert len(served.latency_samples) == 3  # latency_requests: the first 3 sentences, one at a time
    assert [row["concurrency"] for row in served.load] == [1, 2]
    assert all(row["errors"] == 0 for row in served.load)
    # Not measurable from inside the pod: left out rather than made up.
    assert (
        np.isnan(served.seconds_to_serving)
        and np.isnan(served.memory_peak_mb)
        and np.isnan(served.image_size_mb)
    )


def test_a_sidecar_address_that_is_not_loopback_is_refused(monkeypatch, no_docker):
    monkeypatch.setenv(evaluate.SERVER_ADDRESS_ENV, "10.0.0.5:8001")
    inputs = EvaluationInputs("m", "1", "image", "data")
    with pytest.raises(evaluate.StepInputError, match="expected 127.0.0.1:<port>"):
        evaluate.serve_and_measure(inputs, SENTENCES, ONE_REQUEST)


def test_a_sidecar_that_dies_fails_the_evaluation_naming_it(
    server_factory, model_dir, tmp_path, monkeypatch, no_docker
):
    sidecar = server_factory(model_dir, tmp_path / "server.log")
    monkeypatch.setenv(evaluate.SERVER_ADDRESS_ENV, sidecar.url)
    monkeypatch.setattr(evaluate, "SIDECAR_WAIT_S", 2.0)
    sidecar.stop()
    inputs = EvaluationInputs("m", "1", "image", "data")
    with pytest.raises(load.ServerFailed, match="not SERVING|could not be scored"):
        evaluate.serve_and_measure(inputs, SENTENCES, ONE_REQUEST)
