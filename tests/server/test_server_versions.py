"""Two versions in one server: shadow and split routes over HTTP and gRPC (tritonclient), a version reached
directly, every answer naming its version and id, the capture's id/index/served/route fields, per-version
and shadow metrics, and labels posted back to the feedback endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from sentclf.server_images import SERVER_PYTHONPATH
from sentclf_server.config import ConfigError, load_settings
from sentclf_server.versions import Route, load_versions, parse_route

SENTENCES = ["the cat sat on the mat", "dog", "colorless green ideas sleep furiously"]


def _version_dir(model_dir_factory, path: Path, version: str) -> Path:
    directory = model_dir_factory(path)
    config = json.loads((directory / "serving_config.json").read_text())
    (directory / "serving_config.json").write_text(json.dumps({**config, "model_version": version}))
    return directory


@pytest.fixture(scope="module")
def two_versions(model_dir_factory, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("versions")
    return _version_dir(model_dir_factory, root / "champion", "1"), _version_dir(
        model_dir_factory, root / "challenger", "2"
    )


def _records(folder: Path, prefix: str = "capture-") -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob(f"{prefix}*.jsonl")) for line in path.open()]


def _wait_for(check, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _metric(server, name: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name)
    }


def _grpc_input(sentences: list[str]) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("text", [len(sentences)], "BYTES")
    tensor.set_data_from_numpy(np.array(sentences, dtype=object))
    return tensor


def _http_input(sentences: list[str]) -> triton_http.InferInput:
    tensor = triton_http.InferInput("text", [len(sentences)], "BYTES")
    tensor.set_data_from_numpy(np.array(sentences, dtype=object), binary_data=False)
    return tensor


# --- units -------------------------------------------------------------------------------------------


def test_route_parsing_and_sticky_split() -> None:
    assert parse_route("", False) == Route("single")
    assert parse_route("", True) == Route("shadow") == parse_route("SHADOW", True)
    assert parse_route("split:10", True) == Route("split", 10.0)
    for bad in ("split:", "split:101", "split:-1", "mirror", "split:ten"):
        with pytest.raises(ConfigError, match="ROUTE must be"):
            parse_route(bad, True)
    with pytest.raises(ConfigError, match="needs a challenger"):
        parse_route("shadow", False)
    route = Route("split", 10.0)
    keys = [f"user-{i}" for i in range(5000)]
    share = sum(route.answers_from_challenger(key) for key in keys) / len(keys)
    assert 0.08 <= share <= 0.12, share
    assert all(route.answers_from_challenger(k) == route.answers_from_challenger(k) for k in keys[:100])
    assert not any(Route("split", 0.0).answers_from_challenger(k) for k in keys[:500])
    assert all(Route("split", 100.0).answers_from_challenger(k) for k in keys[:500])


def test_versions_must_differ_and_share_the_label_set(two_versions, model_dir_factory, tmp_path) -> None:
    champion, challenger = two_versions
    settings = load_settings({"MODEL_DIR": str(champion)})
    versions = load_versions(settings, {"CHALLENGER_DIR": str(challenger), "ROUTE": "split:10"})
    assert (versions.challenger.model_version, versions.route) == ("2", Route("split", 10.0))
    with pytest.raises(ConfigError, match="both version '1'"):
        load_versions(settings, {"CHALLENGER_DIR": str(champion)})
    other = model_dir_factory(tmp_path / "tickets", labels=("a", "b", "c"))
    with pytest.raises(ConfigError, match="same label set"):
        load_versions(settings, {"CHALLENGER_DIR": str(other), "CHALLENGER_VERSION": "7"})


def test_bad_route_settings_exit_2(two_versions, server_cmd) -> None:
    champion, challenger = two_versions
    env = {"MODEL_DIR": str(champion), "BIND_ADDRESS": "127.0.0.1", "GRPC_PORT": "0", "METRICS_PORT": "0"}
    for extra, message in (
        ({"ROUTE": "split:10"}, "needs a challenger"),
        ({"CHALLENGER_DIR": str(challenger), "ROUTE": "split:x"}, "ROUTE must be"),
        ({"CHALLENGER_DIR": str(champion)}, "both version"),
    ):
        done = subprocess.run(
            server_cmd,
            env={"PYTHONPATH": SERVER_PYTHONPATH, **env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr


# --- shadow ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shadow_server(two_versions, server_factory, tmp_path_factory):
    champion, challenger = two_versions
    root = tmp_path_factory.mktemp("shadow")
    (root / "traffic").mkdir()
    (root / "labels").mkdir()
    server = server_factory(
        champion,
        root / "server.log",
        CHALLENGER_DIR=str(challenger),
        ROUTE="shadow",
        CAPTURE_DIR=str(root / "traffic"),
        FEEDBACK_DIR=str(root / "labels"),
    )
    server.root = root
    yield server
    server.stop()


def test_shadow_answers_from_the_champion_and_captures_both(shadow_server) -> None:
    server = shadow_server
    ids = []
    with triton_grpc.InferenceServerClient(server.url) as client:
        for i in range(20):
            result = client.infer("cola", [_grpc_input(SENTENCES)], request_id=f"g-{i}")
            response = result.get_response()
            assert (response.model_version, response.id) == ("1", f"g-{i}")
            ids.append(f"g-{i}")
    with triton_http.InferenceServerClient(server.http_url) as client:
        for i in range(20):
            result = client.infer("cola", [_http_input(SENTENCES)], request_id=f"h-{i}")
            assert (result.get_response()["model_version"], result.get_response()["id"]) == ("1", f"h-{i}")
            ids.append(f"h-{i}")
        # no id sent: the server generates one and returns it
        generated = client.infer("cola", [_http_input(SENTENCES[:1])]).get_response()["id"]
        assert len(generated) == 32
    folder = server.root / "traffic"
    shadow = {"done": 0.0}

    def shadow_settled() -> bool:
        counts = _metric(server, "sentclf_shadow_requests_total")
        shadow.update({key.split('outcome="')[1].split('"')[0]: value for key, value in counts.items()})
        return shadow["done"] + shadow.get("dropped", 0) + shadow.get("failed", 0) == 41

    _wait_for(shadow_settled)
    assert shadow.get("failed") == 0
    # every scored copy is captured: 3 sentences a request, 1 for the generated-id one if it was scored
    scored_generated = lambda: any(r["id"] == generated and not r["served"] for r in _records(folder))  # noqa: E731
    _wait_for(
        lambda: sum(not r["served"] for r in _records(folder)) == 3 * shadow["done"] - 2 * scored_generated()
    )
    records = _records(folder)
    served = [r for r in records if r["served"]]
    shadowed = [r for r in records if not r["served"]]
    assert {(r["version"], r["route"]) for r in served} == {("1", "champion")}
    assert {(r["version"], r["route"]) for r in shadowed} == {("2", "shadow")}
    assert len(served) == 3 * 40 + 1
    by_key = {(r["id"], r["index"]): r for r in served}
    for record in shadowed:  # the shadow answer of the same sentence of the same request
        twin = by_key[(record["id"], record["index"])]
        assert twin["text"] == record["text"]
        np.testing.assert_allclose(twin["probabilities"], record["probabilities"], atol=1e-5)
    assert {r["id"] for r in served} == {*ids, generated}
    routed = _metric(server, "sentclf_routed_requests_total")
    assert routed['sentclf_routed_requests_total{model="cola",route="champion",version="1"}'] == 41


def test_a_version_is_reached_directly_over_both_protocols(shadow_server) -> None:
    server = shadow_server
    with triton_grpc.InferenceServerClient(server.url) as client:
        result = client.infer("cola", [_grpc_input(["dog"])], model_version="2", request_id="direct-g")
        assert result.get_response().model_version == "2"
        metadata = client.get_model_metadata("cola")
        assert list(metadata.versions) == ["1", "2"]
    with triton_http.InferenceServerClient(server.http_url) as client:
        result = client.infer("cola", [_http_input(["dog"])], model_version="2", request_id="direct-h")
        assert result.get_response()["model_version"] == "2"
        assert client.is_model_ready("cola", "2") and not client.is_model_ready("cola", "3")
    _wait_for(lambda: {"direct-g", "direct-h"} <= {r["id"] for r in _records(server.root / "traffic")})
    direct = [r for r in _records(server.root / "traffic") if r["id"].startswith("direct-")]
    assert {(r["version"], r["route"], r["served"]) for r in direct} == {("2", "direct", True)}


def _post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_feedback_appends_labels_and_refuses_bad_ones(shadow_server) -> None:
    server = shadow_server
    url = f"http://{server.http_url}/v2/models/cola/feedback"
    assert _post(url, {"id": "g-1", "index": 2, "label": "acceptable"}) == (200, {"accepted": 1})
    assert _post(url, [{"id": "h-1", "label": 0}, {"id": "h-2", "index": 1, "label": "acceptable"}]) == (
        200,
        {"accepted": 2},
    )
    status, body = _post(url, [{"id": "h-3", "label": "acceptable"}, {"id": "h-4", "label": "maybe"}])
    assert status == 400 and "not in the model's label set" in body["error"] and "item 1" in body["error"]
    assert _post(url, {"id": "", "label": 1})[0] == 400
    assert _post(url, {"id": "x", "label": 2})[0] == 400  # index 2 of a binary model
    assert _post(url.replace("/cola/", "/trec/"), {"id": "x", "label": 1})[0] == 404  # another model's
    labels = _records(server.root / "labels", "feedback-")
    assert [(r["id"], r["index"], r["label"], r["model"]) for r in labels] == [
        ("g-1", 2, "acceptable", "cola"),
        ("h-1", 0, "unacceptable", "cola"),
        ("h-2", 1, "acceptable", "cola"),
    ]
    assert set(labels[0]) == {"id", "index", "label", "model", "time"}


def test_feedback_is_404_without_feedback_dir(server) -> None:
    status, body = _post(f"http://{server.http_url}/v2/models/cola/feedback", {"id": "a", "label": 1})
    assert status == 404 and "FEEDBACK_DIR" in body["error"]


# --- split -------------------------------------------------------------------------------------------


def test_split_answers_ten_percent_of_callers_from_the_challenger_sticky(
    two_versions, server_factory, tmp_path
):
    champion, challenger = two_versions
    server = server_factory(
        champion, tmp_path / "server.log", CHALLENGER_DIR=str(challenger), ROUTE="split:10"
    )
    try:
        callers = [f"caller-{i}" for i in range(600)]
        answered: dict[str, str] = {}
        with triton_http.InferenceServerClient(server.http_url) as client:
            for caller in callers[:300]:
                result = client.infer("cola", [_http_input(["dog"])], parameters={"routing_key": caller})
                answered[caller] = result.get_response()["model_version"]
        with triton_grpc.InferenceServerClient(server.url) as client:
            for caller in callers[300:]:
                result = client.infer("cola", [_grpc_input(["dog"])], headers={"x-routing-key": caller})
                answered[caller] = result.get_response().model_version
            # the same caller, again and over the other protocol, gets the same version
            for caller in callers[:60]:
                result = client.infer("cola", [_grpc_input(["dog"])], parameters={"routing_key": caller})
                assert result.get_response().model_version == answered[caller], caller
        with triton_http.InferenceServerClient(server.http_url) as client:
            for caller in callers[300:360]:
                result = client.infer("cola", [_http_input(["dog"])], headers={"x-routing-key": caller})
                assert result.get_response()["model_version"] == answered[caller], caller
        share = sum(v == "2" for v in answered.values()) / len(answered)
        assert 0.07 <= share <= 0.13, share
        assert set(answered.values()) == {"1", "2"}
        routed = _metric(server, "sentclf_routed_requests_total")
        assert routed['sentclf_routed_requests_total{model="cola",route="challenger",version="2"}'] > 0
        success = _metric(server, "sentclf_inference_request_success_total")
        assert any('version="2"' in key and value > 0 for key, value in success.items())
    finally:
        assert server.stop() == 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


@pytest.mark.docker
def test_one_image_holds_both_versions(server_image, image_factory) -> None:
    """make serve's image for a champion and a challenger: the champion's server image with the
    challenger's model copied from its image (here the same image, the challenger named version 2)."""
    import docker

    from tools.serve import CHALLENGER_MODEL_DIR, both_versions_image

    engine = docker.from_env()
    tag = both_versions_image(engine, server_image, server_image, "2")
    try:
        server = image_factory(
            tag, CHALLENGER_DIR=CHALLENGER_MODEL_DIR, CHALLENGER_VERSION="2", ROUTE="split:50"
        )
        try:
            versions = set()
            with triton_http.InferenceServerClient(server.http_url) as client:
                assert client.get_model_metadata("cola")["versions"] == ["1", "2"]
                for i in range(40):
                    result = client.infer("cola", [_http_input(["dog"])], parameters={"routing_key": f"k{i}"})
                    versions.add(result.get_response()["model_version"])
            assert versions == {"1", "2"}
        finally:
            server.stop()
    finally:
        engine.images.remove(tag, force=True)
