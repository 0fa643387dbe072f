"""inference.GRPCInferenceService (KServe v2 / Open Inference Protocol): the gRPC shell over the data plane
(dataplane.py), which holds the model, the batcher, the request limits and the metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from . import SERVER_NAME, __version__
from .codec import CodecError, decode_bytes_tensor
from .config import Settings
from .dataplane import INPUT_NAME, PLATFORM, DataPlane, InferenceError, RequestOutcome
from .limits import LimitExceeded, RequestLimits

# `X as X`: the output names stay importable from here, where they lived before outputs.py.
from .outputs import LABEL_NAME_OUTPUT as LABEL_NAME_OUTPUT
from .outputs import LABEL_OUTPUT as LABEL_OUTPUT
from .outputs import (
    OUTPUT_NAMES,
    config_parameters,
    encode_outputs,
    served_metadata,
    served_outputs,
    thresholds_of,
)
from .outputs import PROBS_OUTPUT as PROBS_OUTPUT
from .pair_inputs import PairInputError, input_names, parse_grpc_pairs
from .versions import ROUTING_KEY_HEADER, ROUTING_KEY_PARAMETER

log = logging.getLogger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"
# The optional protocol features this server implements, as Triton names them in ServerMetadata.
EXTENSIONS = ("model_configuration",)
# Requested-output parameters that ask for features this server does not have.
_UNSUPPORTED_OUTPUT_PARAMS = ("classification", "shared_memory_region")
_INVALID = grpc.StatusCode.INVALID_ARGUMENT
Context = grpc.ServicerContext


class RequestError(Exception):
    """A request the server refuses, carrying the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# What the RPC handlers need to know about the process (the name it had before the HTTP shell shared it).
ServerState = DataPlane


def _status(err: InferenceError) -> RequestError:
    return RequestError(grpc.StatusCode[err.code], err.message)


def _utf8(item: bytes, index: int) -> str:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"input '{INPUT_NAME}' element {index} is not valid UTF-8: {exc}"
        raise RequestError(_INVALID, message) from None


def _text_tensor(request: service_pb2.ModelInferRequest) -> service_pb2.ModelInferRequest.InferInputTensor:
    names = [tensor.name for tensor in request.inputs]
    if INPUT_NAME not in names:
        raise RequestError(_INVALID, f"missing input '{INPUT_NAME}' (got {names}); expected one BYTES input")
    extra = [name for name in names if name != INPUT_NAME]
    if extra:
        raise RequestError(_INVALID, f"unexpected input(s) {extra}; the model takes only '{INPUT_NAME}'")
    if len(names) != 1:
        raise RequestError(_INVALID, f"input '{INPUT_NAME}' given {len(names)} times")
    return request.inputs[0]


def _check_shape(
    tensor: service_pb2.ModelInferRequest.InferInputTensor, max_request_batch: int, name: str = INPUT_NAME
) -> int:
    if tensor.datatype != "BYTES":
        raise RequestError(_INVALID, f"input '{name}' must be BYTES, got datatype {tensor.datatype!r}")
    shape = list(tensor.shape)
    if len(shape) != 1 or shape[0] < 0:
        raise RequestError(_INVALID, f"input '{name}' must have shape [batch] (1-D), got {shape}")
    try:
        RequestLimits(0, max_request_batch, 0).check_count(shape[0], name)
    except LimitExceeded as exc:
        raise RequestError(_INVALID, str(exc)) from None
    return shape[0]


def parse_text_input(request: service_pb2.ModelInferRequest, max_request_batch: int) -> list[str]:
    """Validate the request's single BYTES input and return its sentences (typed or raw contents)."""
    tensor = _text_tensor(request)
    count = _check_shape(tensor, max_request_batch)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            count_raw = len(request.raw_input_contents)
            raise RequestError(_INVALID, f"got {count_raw} raw_input_contents entries for 1 input")
        if tensor.contents.bytes_contents:
            raise RequestError(_INVALID, f"input '{INPUT_NAME}' has both contents and raw_input_contents")
        try:
            items = decode_bytes_tensor(request.raw_input_contents[0])
        except CodecError as exc:
            raise RequestError(_INVALID, f"input '{INPUT_NAME}' raw BYTES are malformed: {exc}") from None
    else:
        items = list(tensor.contents.bytes_contents)
    if len(items) != count:
        raise RequestError(_INVALID, f"input '{INPUT_NAME}' has shape [{count}] but {len(items)} elements")
    return [_utf8(item, i) for i, item in enumerate(items)]


def parse_pair_input(
    request: service_pb2.ModelInferRequest, max_request_batch: int, second: str
) -> tuple[list[str], list[str]]:
    """A sentence-pair model's two BYTES inputs, `text` and `second` (pair_inputs.py)."""
    try:
        return parse_grpc_pairs(
            request, second, lambda tensor, name: _check_shape(tensor, max_request_batch, name)
        )
    except PairInputError as exc:
        raise RequestError(_INVALID, str(exc)) from None


def requested_outputs(
    request: service_pb2.ModelInferRequest, available: Sequence[str] = OUTPUT_NAMES
) -> list[str]:
    """Names of the outputs to return, in request order; all of them when the request names none."""
    if not request.outputs:
        return list(available)
    names: list[str] = []
    for output in request.outputs:
        if output.name not in available:
            raise RequestError(_INVALID, f"unknown output '{output.name}'; available: {list(available)}")
        unsupported = [key for key in _UNSUPPORTED_OUTPUT_PARAMS if key in output.parameters]
        if unsupported:
            raise RequestError(_INVALID, f"output '{output.name}': parameters {unsupported} not supported")
        if output.name in names:
            raise RequestError(_INVALID, f"output '{output.name}' requested twice; name each output once")
        names.append(output.name)
    return names


def build_response(
    request: service_pb2.ModelInferRequest,
    settings: Settings,
    probs: np.ndarray,
    outputs: list[str],
    version: str | None = None,
    request_id: str | None = None,
) -> service_pb2.ModelInferResponse:
    """Pack outputs as raw little-endian tensors, the layout tritonclient's InferResult.as_numpy reads;
    `version` is the version that answered (default: the settings'), `request_id` the request's id."""
    response = service_pb2.ModelInferResponse(
        model_name=settings.model_name,
        model_version=version or settings.model_version,
        id=request.id if request_id is None else request_id,
    )
    for output in encode_outputs(probs, settings.labels, outputs, thresholds_of(settings.serving)):
        response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        response.raw_output_contents.append(output.raw)
    return response


def _routing_key(request: service_pb2.ModelInferRequest, context: Context | None) -> str | None:
    """The caller's key for a split route: the request parameter `routing_key`, else the metadata
    `x-routing-key`; None: the request id decides."""
    if ROUTING_KEY_PARAMETER in request.parameters:
        return request.parameters[ROUTING_KEY_PARAMETER].string_param or None
    if context is not None:
        for key, value in context.invocation_metadata() or ():
            if key == ROUTING_KEY_HEADER:
                return value if isinstance(value, str) else None
    return None


_TensorMetadata = service_pb2.ModelMetadataResponse.TensorMetadata


def _tensor_metadata(name: str, datatype: str, shape: list[int]) -> _TensorMetadata:
    return _TensorMetadata(name=name, datatype=datatype, shape=shape)


# KServe v2 datatypes as Triton's model configuration spells them.
_CONFIG_TYPES = {
    "BYTES": model_config_pb2.TYPE_STRING,
    "INT64": model_config_pb2.TYPE_INT64,
    "FP32": model_config_pb2.TYPE_FP32,
}


def model_config(settings: Settings) -> model_config_pb2.ModelConfig:
    """The Triton model configuration (the ModelConfig extension): the same tensors as ModelMetadata, with
    full shapes (max_batch_size 0: the batch dimension is part of dims, -1), and the class names in index
    order as the parameter `label_names`, a JSON list of strings."""
    outputs = [
        model_config_pb2.ModelOutput(name=name, data_type=_CONFIG_TYPES[datatype], dims=shape)
        for name, datatype, shape in served_metadata(settings.serving)
    ]
    return model_config_pb2.ModelConfig(
        name=settings.model_name,
        platform=PLATFORM,
        max_batch_size=0,
        input=[
            model_config_pb2.ModelInput(name=name, data_type=_CONFIG_TYPES["BYTES"], dims=[-1])
            for name in input_names(settings.pair_input)
        ],
        output=outputs,
        parameters={
            key: model_config_pb2.ModelParameter(string_value=value)
            for key, value in config_parameters(settings.serving).items()
        },
    )


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The KServe v2 RPCs this server implements; every other RPC answers UNIMPLEMENTED."""

    def __init__(self, state: DataPlane) -> None:
        self._state = state

    def _check_model(self, name: str, version: str) -> None:
        try:
            self._state.check_model(name, version)
        except InferenceError as err:
            raise _status(err) from None

    def ServerLive(
        self, request: service_pb2.ServerLiveRequest, context: Context
    ) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: service_pb2.ServerReadyRequest, context: Context
    ) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=self._state.ready)

    def ModelReady(
        self, request: service_pb2.ModelReadyRequest, context: Context
    ) -> service_pb2.ModelReadyResponse:
        return service_pb2.ModelReadyResponse(ready=self._state.model_ready(request.name, request.version))

    def ServerMetadata(
        self, request: service_pb2.ServerMetadataRequest, context: Context
    ) -> service_pb2.ServerMetadataResponse:
        # Of the optional extensions only Triton's model configuration (ModelConfig) is implemented: no
        # model repository, statistics, shared memory or classification.
        return service_pb2.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=list(EXTENSIONS)
        )

    def ModelMetadata(
        self, request: service_pb2.ModelMetadataRequest, context: Context
    ) -> service_pb2.ModelMetadataResponse:
        try:
            self._check_model(request.name, request.version)
        except RequestError as err:
            context.abort(err.code, err.message)
        settings = self._state.settings
        return service_pb2.ModelMetadataResponse(
            name=settings.model_name,
            versions=[v.version for v in self._state.served],
            platform=PLATFORM,
            inputs=[_tensor_metadata(name, "BYTES", [-1]) for name in input_names(settings.pair_input)],
            outputs=[_tensor_metadata(*output) for output in served_metadata(settings.serving)],
        )

    def ModelConfig(
        self, request: service_pb2.ModelConfigRequest, context: Context
    ) -> service_pb2.ModelConfigResponse:
        try:
            self._check_model(request.name, request.version)
        except RequestError as err:
            context.abort(err.code, err.message)
        return service_pb2.ModelConfigResponse(config=model_config(self._state.settings))

    def _infer(
        self,
        request: service_pb2.ModelInferRequest,
        context: Context | None = None,
        outcome: RequestOutcome | None = None,
    ) -> service_pb2.ModelInferResponse:
        self._check_model(request.model_name, request.model_version)
        state = self._state
        if state.batcher is None:
            raise _status(InferenceError("UNAVAILABLE", "model is still loading; retry when SERVING"))
        settings = state.settings
        text_pairs = None
        if settings.pair_input is None:
            texts = parse_text_input(request, settings.max_request_batch)
        else:
            texts, text_pairs = parse_pair_input(request, settings.max_request_batch, settings.pair_input)
        outputs = requested_outputs(request, served_outputs(settings.serving))
        try:
            answer = state.infer(
                texts,
                None if context is None else context.add_callback,
                version=request.model_version or None,
                request_id=request.id or None,
                routing_key=_routing_key(request, context),
                outcome=outcome,
                text_pairs=text_pairs,
            )
        except InferenceError as err:
            raise _status(err) from None
        return build_response(request, settings, answer.probs, outputs, answer.version, answer.id)

    def ModelInfer(
        self, request: service_pb2.ModelInferRequest, context: Context
    ) -> service_pb2.ModelInferResponse:
        message = ""
        with self._state.track("grpc") as outcome:
            try:
                return self._infer(request, context, outcome)
            except RequestError as err:
                outcome.code, message = err.code.name, err.message
                outcome.message = message
            except Exception as exc:
                # track() logs it (rate-limited); a model failure's traceback is logged by the batcher
                outcome.code, message = "INTERNAL", "internal error during inference; see server log"
                outcome.message = repr(exc)
        # Aborted outside track(): context.abort raises, which track() would count as INTERNAL.
        context.abort(grpc.StatusCode[outcome.code], message)


def _unimplemented(self: InferenceServicer, request: object, context: Context) -> None:
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "not implemented by sentclf-server")


# The generated base class answers UNIMPLEMENTED too, but by raising NotImplementedError, which the gRPC
# server logs as an application error; replace every RPC we do not implement with a quiet abort.
for _name, _member in vars(service_pb2_grpc.GRPCInferenceServiceServicer).items():
    if callable(_member) and not _name.startswith("_") and _name not in vars(InferenceServicer):
        setattr(InferenceServicer, _name, _unimplemented)
