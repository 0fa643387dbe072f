"""The second input of a sentence-pair model (sentclf_runtime.pairs): reading a request's two BYTES
tensors, `text` and the serving config's `text_pair_input`, over HTTP/JSON (with Triton's binary data
extension) and over gRPC, and naming them in the model's metadata and configuration.

A single-sentence model never comes here: its requests are read as before (one input). For a pairs model
a request must send both inputs with as many elements each; a missing second input or another length is
that request's INVALID_ARGUMENT (HTTP 400), never its batch-mates' failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sentclf_runtime.outputs import TEXT_INPUT

from .codec import CodecError, decode_bytes_tensor


class PairInputError(ValueError):
    """The request's inputs do not fit a pairs model (the shells map it to INVALID_ARGUMENT / 400)."""


def input_names(second: str | None) -> list[str]:
    """The model's inputs in order: `text`, and the second one of a pairs model."""
    return [TEXT_INPUT] if second is None else [TEXT_INPUT, second]


def check_names(names: Sequence[object], second: str) -> None:
    """Both inputs present, each once, nothing else."""
    expected = input_names(second)
    missing = [name for name in expected if name not in names]
    if missing:
        raise PairInputError(
            f"missing input(s) {missing} (got {list(names)}); this model reads sentence pairs: send "
            f"'{TEXT_INPUT}' and '{second}', BYTES [n] each, element i of both being one pair"
        )
    extra = [name for name in names if name not in expected]
    if extra:
        raise PairInputError(f"unexpected input(s) {extra}; the model takes {expected}")
    for name in expected:
        if list(names).count(name) != 1:
            raise PairInputError(f"input '{name}' given {list(names).count(name)} times")


def check_lengths(texts: list[str], pairs: list[str], second: str) -> None:
    if len(texts) != len(pairs):
        raise PairInputError(
            f"input '{TEXT_INPUT}' has {len(texts)} element(s) but '{second}' has {len(pairs)}: send one "
            f"'{second}' per '{TEXT_INPUT}'"
        )


def parse_http_pairs(
    request: dict,
    binary: bytes,
    second: str,
    count_of: Callable[[dict, str], int],
    strings_of: Callable[[dict, bytes, int, str], list[str]],
) -> tuple[list[str], list[str]]:
    """(texts, text_pairs) of an HTTP/JSON request body; each input's binary data follows the JSON in the
    order of the inputs (tritonclient.http sends it so). `count_of`/`strings_of` are the one-input codec's
    readers (http_codec), named for the input they read."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(item, dict) for item in inputs):
        raise PairInputError(f"'inputs' must be a list of tensors; expected {input_names(second)}")
    check_names([item.get("name") for item in inputs], second)
    values: dict[str, list[str]] = {}
    offset = 0
    for tensor in inputs:
        name = tensor["name"]
        count = count_of(tensor, name)
        parameters = tensor.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        chunk = b""
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            chunk, offset = binary[offset : offset + size], offset + size
        values[name] = strings_of(tensor, chunk, count, name)
    if offset != len(binary):
        raise PairInputError(f"{len(binary) - offset} bytes follow the JSON that no input announces")
    texts, pairs = values[TEXT_INPUT], values[second]
    check_lengths(texts, pairs, second)
    return texts, pairs


def parse_grpc_pairs(
    request: object, second: str, check_shape: Callable[[object, str], int]
) -> tuple[list[str], list[str]]:
    """(texts, text_pairs) of a ModelInferRequest: typed contents, or raw_input_contents (one entry per
    input, in the order of the inputs). `check_shape(tensor, name)` is the one-input shell's check."""
    inputs = list(request.inputs)
    check_names([tensor.name for tensor in inputs], second)
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(inputs):
        raise PairInputError(f"got {len(raw)} raw_input_contents entries for {len(inputs)} inputs")
    values: dict[str, list[str]] = {}
    for index, tensor in enumerate(inputs):
        name = tensor.name
        count = check_shape(tensor, name)
        if raw:
            if tensor.contents.bytes_contents:
                raise PairInputError(f"input '{name}' has both contents and raw_input_contents")
            try:
                items = decode_bytes_tensor(raw[index])
            except CodecError as exc:
                raise PairInputError(f"input '{name}' raw BYTES are malformed: {exc}") from None
        else:
            items = list(tensor.contents.bytes_contents)
        if len(items) != count:
            raise PairInputError(f"input '{name}' has shape [{count}] but {len(items)} elements")
        values[name] = [_utf8(item, position, name) for position, item in enumerate(items)]
    texts, pairs = values[TEXT_INPUT], values[second]
    check_lengths(texts, pairs, second)
    return texts, pairs


def _utf8(item: bytes, index: int, name: str) -> str:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PairInputError(f"input '{name}' element {index} is not valid UTF-8: {exc}") from None
