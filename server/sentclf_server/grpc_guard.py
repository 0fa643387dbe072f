"""A gRPC server interceptor that counts every call, including the ones the gRPC layer refuses by itself.

grpcio answers a message over its receive limit and an RPC no handler serves in its core, before any
handler runs, so those refusals would never reach the metrics. This interceptor therefore:
  * serves an unknown method itself: UNIMPLEMENTED, counted;
  * takes each unary call's message as raw bytes (a stream-unary handler with no deserializer, whose
    request iterator is read once): a message over MAX_MESSAGE_BYTES is refused here with
    RESOURCE_EXHAUSTED and counted before it is parsed; the core's own limit is a ceiling of
    CEILING_FACTOR x MAX_MESSAGE_BYTES, and a call the core cuts off there (or that the client cancels
    before its message arrives) ends the iterator without a message and is counted as CANCELLED;
  * counts every call's final status (`context.code()` after the handler) in sentclf_requests_total, and
    the refused ModelInfer calls in the model's inference failure counter too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from .dataplane import DataPlane, InferenceError
from .metrics import count_request

CEILING_FACTOR = 4
_INFER = "ModelInfer"


def core_receive_limit(max_message_bytes: int) -> int:
    """grpc.max_receive_message_length: the ceiling above which the core cuts a call off itself."""
    return min(max_message_bytes * CEILING_FACTOR, 2**31 - 1)


def _count(endpoint: str, code: str) -> None:
    count_request("grpc", endpoint, code)


class GuardInterceptor(grpc.ServerInterceptor):
    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        endpoint = method.rsplit("/", 1)[-1] or "unknown"
        handler = continuation(handler_call_details)
        if handler is None:
            return grpc.stream_unary_rpc_method_handler(self._unimplemented(method))
        if handler.request_streaming or handler.unary_stream is not None:
            _count(endpoint, "OK")  # health Watch: counted when it starts; nothing else streams here
            return handler
        return grpc.stream_unary_rpc_method_handler(
            self._guarded(handler, endpoint), response_serializer=handler.response_serializer
        )

    def _unimplemented(self, method: str) -> Callable:
        def behavior(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> None:
            _count("unknown", "UNIMPLEMENTED")
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"method {method} is not implemented here")

        return behavior

    def _refuse(self, endpoint: str, code: str) -> None:
        _count(endpoint, code)
        if endpoint == _INFER:
            self._plane.metrics.observe_refusal("grpc", code)

    def _guarded(self, handler: grpc.RpcMethodHandler, endpoint: str) -> Callable:
        deserialize, behavior = handler.request_deserializer, handler.unary_unary
        plane = self._plane

        def guarded(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> object:
            try:
                raw = next(request_iterator)
            except (grpc.RpcError, StopIteration):
                self._refuse(endpoint, "CANCELLED")  # cut off by the core, or the client went away
                raise
            try:
                plane.check_size(len(raw))
            except InferenceError as err:
                self._refuse(endpoint, err.code)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, err.message)
            try:
                request = deserialize(raw) if deserialize is not None else raw
            except Exception:
                self._refuse(endpoint, "INVALID_ARGUMENT")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {endpoint} message")
            try:
                response = behavior(request, context)
            except BaseException:
                code = context.code()
                _count(endpoint, code.name if code is not None else "UNKNOWN")
                raise
            _count(endpoint, "OK")
            return response

        return guarded
