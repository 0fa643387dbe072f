"""The Open Inference Protocol's HTTP/JSON bodies: an infer request in, its response and metadata out.

JSON tensors (`{"name", "shape", "datatype", "data"}`, BYTES elements as JSON strings) and Triton's binary
tensor data extension, which tritonclient.http uses by default: the body is a JSON header of
`Inference-Header-Content-Length` bytes followed by raw tensors, each input announcing its size in
`parameters.binary_data_size` (a raw BYTES tensor: 4-byte little-endian length + bytes per element, as
over gRPC), and an output asked for with `parameters.binary_data` (or the request's
`parameters.binary_data_output`) is sent the same way after the response's JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sentclf_runtime.outputs import TEXT_INPUT

from .codec import CodecError, decode_bytes_tensor
from .outputs import OUTPUT_NAMES, OutputTensor
from .pair_inputs import PairInputError, parse_http_pairs

INPUT_NAME = TEXT_INPUT  # the runtime's name, shared with the clients
HEADER_LENGTH = "Inference-Header-Content-Length"
_UNSUPPORTED_OUTPUT_PARAMS = ("classification", "shared_memory_region")


class BadRequest(ValueError):
    """The body is not a valid infer request for this model (HTTP 400)."""


@dataclass(frozen=True)
class InferRequest:
    texts: list[str]
    outputs: list[str]
    binary: dict[str, bool]  # output name -> sent as binary data
    id: str | None
    routing_key: str | None = None  # parameters.routing_key: the caller's key for a split route
    text_pairs: list[str] | None = None  # a sentence-pair model's second texts (pair_inputs.py)


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def _header(body: bytes, header_length: int | None) -> tuple[dict, bytes]:
    if header_length is None:
        json_part, binary = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise BadRequest(f"{HEADER_LENGTH} {header_length} does not fit a body of {len(body)} bytes")
        json_part, binary = body[:header_length], body[header_length:]
    try:
        return _object(json.loads(json_part), "the request body"), binary
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"malformed JSON in the request body: {exc}") from None
    except RecursionError:
        # The C parser counts its depth against the recursion limit and stops there, before the nesting
        # has cost more than the (size-limited) body itself.
        raise BadRequest("the request body's JSON is nested too deep; an infer request is 3 levels") from None


def _text_tensor(request: dict) -> dict:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(item, dict) for item in inputs):
        raise BadRequest(f"'inputs' must be a list of tensors; expected one BYTES input '{INPUT_NAME}'")
    names = [item.get("name") for item in inputs]
    if INPUT_NAME not in names:
        raise BadRequest(f"missing input '{INPUT_NAME}' (got {names}); expected one BYTES input")
    extra = [name for name in names if name != INPUT_NAME]
    if extra:
        raise BadRequest(f"unexpected input(s) {extra}; the model takes only '{INPUT_NAME}'")
    if len(names) != 1:
        raise BadRequest(f"input '{INPUT_NAME}' given {len(names)} times")
    return inputs[0]


def _count(tensor: dict, name: str = INPUT_NAME) -> int:
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(f"input '{name}' must be BYTES, got datatype {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 1
        or not isinstance(shape[0], int)
        or isinstance(shape[0], bool)
        or shape[0] < 0
    ):
        raise BadRequest(f"input '{name}' must have shape [batch] (1-D), got {shape}")
    return shape[0]


def _strings(tensor: dict, binary: bytes, count: int, name: str = INPUT_NAME) -> list[str]:
    parameters = _object(tensor.get("parameters", {}), f"input '{name}' parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise BadRequest(f"input '{name}' has both 'data' and binary_data_size")
        if not isinstance(size, int) or size != len(binary):
            raise BadRequest(f"input '{name}' binary_data_size {size} but {len(binary)} bytes follow")
        try:
            items = decode_bytes_tensor(binary)
        except CodecError as exc:
            raise BadRequest(f"input '{name}' binary BYTES are malformed: {exc}") from None
        texts = []
        for index, item in enumerate(items):
            try:
                texts.append(item.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise BadRequest(f"input '{name}' element {index} is not valid UTF-8: {exc}") from None
    else:
        if binary:
            raise BadRequest(f"{len(binary)} bytes follow the JSON, but no input announces binary data")
        data = tensor.get("data")
        if not isinstance(data, list):
            raise BadRequest(f"input '{name}' needs 'data': a list of strings")
        if not all(isinstance(item, str) for item in data):
            raise BadRequest(f"input '{name}' data must be JSON strings (BYTES elements)")
        texts = data
    if len(texts) != count:
        raise BadRequest(f"input '{name}' has shape [{count}] but {len(texts)} elements")
    return texts


def _outputs(request: dict, available: Sequence[str] = OUTPUT_NAMES) -> tuple[list[str], dict[str, bool]]:
    parameters = _object(request.get("parameters", {}), "'parameters'")
    default_binary = parameters.get("binary_data_output") is True
    asked = request.get("outputs")
    if asked is None or asked == []:
        return list(available), dict.fromkeys(available, default_binary)
    if not isinstance(asked, list) or not all(isinstance(item, dict) for item in asked):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    names: list[str] = []
    binary: dict[str, bool] = {}
    for output in asked:
        name = output.get("name")
        if name not in available:
            raise BadRequest(f"unknown output '{name}'; available: {list(available)}")
        out_params = _object(output.get("parameters", {}), f"output '{name}' parameters")
        unsupported = [key for key in _UNSUPPORTED_OUTPUT_PARAMS if key in out_params]
        if unsupported:
            raise BadRequest(f"output '{name}': parameters {unsupported} not supported")
        if name in names:
            raise BadRequest(f"output '{name}' requested twice; name each output once")
        names.append(name)
        binary[name] = bool(out_params.get("binary_data", default_binary))
    return names, binary


def parse_infer_request(
    body: bytes,
    header_length: int | None,
    pair_input: str | None = None,
    available: Sequence[str] = OUTPUT_NAMES,
) -> InferRequest:
    """The sentences, outputs and id of an infer request body; BadRequest for anything malformed.
    The sentence count is checked against the request limits by the caller (empty batch included).
    `pair_input`: a sentence-pair model's second input, read beside `text` (pair_inputs.py)."""
    request, binary = _header(body, header_length)
    text_pairs = None
    if pair_input is None:
        tensor = _text_tensor(request)
        count = _count(tensor)
        texts = _strings(tensor, binary, count)
    else:
        try:
            texts, text_pairs = parse_http_pairs(request, binary, pair_input, _count, _strings)
        except PairInputError as exc:
            raise BadRequest(str(exc)) from None
    outputs, binary_outputs = _outputs(request, available)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    routing_key = _object(request.get("parameters", {}), "'parameters'").get("routing_key")
    if routing_key is not None and not isinstance(routing_key, str):
        raise BadRequest("parameters.routing_key must be a string (the caller's key for a split route)")
    return InferRequest(texts, outputs, binary_outputs, request_id, routing_key, text_pairs)


def _json_data(tensor: OutputTensor) -> list:
    if tensor.datatype == "INT64":
        return np.frombuffer(tensor.raw, dtype="<i8").tolist()
    if tensor.datatype == "FP32":
        return np.frombuffer(tensor.raw, dtype="<f4").tolist()  # row-major, flattened (the protocol's)
    return [item.decode("utf-8") for item in decode_bytes_tensor(tensor.raw)]


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    tensors: Sequence[OutputTensor],
    binary: dict[str, bool],
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None): the response JSON, then any binary outputs in order."""
    outputs, blobs = [], []
    for tensor in tensors:
        entry: dict = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if binary.get(tensor.name):
            entry["parameters"] = {"binary_data_size": len(tensor.raw)}
            blobs.append(tensor.raw)
        else:
            entry["data"] = _json_data(tensor)
        outputs.append(entry)
    response: dict = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if request_id:
        response["id"] = request_id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def error_body(message: str) -> bytes:
    """The protocol's error JSON."""
    return json.dumps({"error": message}).encode()
