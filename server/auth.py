"""Bearer tokens on gRPC: an interceptor refuses every `lipstream.v1.LipStream` call without a known token.

Health and reflection stay open: load balancers and `grpcurl list` probe them without credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from lipstream.server.security import TokenSet, bearer_token
from lipstream.v1 import lipstream_pb2 as pb

__all__ = ["UNAUTHENTICATED_MESSAGE", "UNKNOWN_TOKEN_MESSAGE", "TokenInterceptor"]

log = logging.getLogger(__name__)

_PROTECTED_PREFIX = "/" + pb.DESCRIPTOR.services_by_name["LipStream"].full_name + "/"

_HOW = "send metadata 'authorization: Bearer <token>' (lipstream --token, LIPSTREAM_TOKEN, Client(token=...))"
UNAUTHENTICATED_MESSAGE = f"this server needs a bearer token: {_HOW}"
UNKNOWN_TOKEN_MESSAGE = f"the bearer token is not one this server accepts (see its --auth-token-file): {_HOW}"


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """Lets a LipStream call through only with metadata `authorization: Bearer <token>` that `tokens` accepts;
    other calls get UNAUTHENTICATED before the servicer sees them. Calls to other services pass untouched."""

    def __init__(self, tokens: TokenSet) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(_PROTECTED_PREFIX):
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        given = [value for key, value in metadata if key == "authorization"]
        token = bearer_token(given[0]) if len(given) == 1 and isinstance(given[0], str) else None
        if self.tokens.accepts(token):
            return handler
        message = UNAUTHENTICATED_MESSAGE if token is None else UNKNOWN_TOKEN_MESSAGE
        return _refusal(handler, method, message)


def _refusal(handler: grpc.RpcMethodHandler, method: str, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call with UNAUTHENTICATED at once."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        # DEBUG only: a client that retries in a loop must not be able to flood the log. The token itself is
        # never written.
        log.debug("refused %s from %s: %s", method, context.peer(), message.partition(":")[0])
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # No request deserializer: a caller without a token never reaches the protobuf parser.
    codecs = {"request_deserializer": None, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **codecs)
    return grpc.unary_unary_rpc_method_handler(refuse, **codecs)
