"""Exceptions that carry the server's gRPC status code and message."""

from __future__ import annotations

import grpc

__all__ = [
    "CallCancelledError",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "LipStreamError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "from_rpc_error",
]


class LipStreamError(Exception):
    """A call failed; `code` is the gRPC status code and `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str, target: str = "") -> None:
        where = f" (target {target})" if target else ""
        super().__init__(f"{code.name}{where}: {details}")
        self.code = code
        self.details = details
        self.target = target


class InvalidArgumentError(LipStreamError, ValueError):
    """The server rejected the request: unknown voice, speaker or avatar, a bad value, too much text."""


class ResourceExhaustedError(LipStreamError):
    """The server is at its session limit: retry later or use another replica."""


class UnavailableError(LipStreamError):
    """No server answers at the target, or it is shutting down."""


class UnauthenticatedError(LipStreamError):
    """The server needs a bearer token and got none or an unknown one: pass Client(token=...) (CLI: --token or
    LIPSTREAM_TOKEN) with a token from the server's --auth-token-file."""


class DeadlineExceededError(LipStreamError):
    """The call's deadline (`timeout=`) passed before the server finished."""


class CallCancelledError(LipStreamError):
    """The call was cancelled (by this client's close() or by the server)."""


_BY_CODE: dict[grpc.StatusCode, type[LipStreamError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CallCancelledError,
}


def from_rpc_error(error: grpc.RpcError, target: str = "") -> LipStreamError:
    """The LipStreamError subclass for a grpc.RpcError (sync or asyncio), keeping its code and details."""
    code_of = getattr(error, "code", None)
    details_of = getattr(error, "details", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details = details_of() if callable(details_of) else str(error)
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    failure = _BY_CODE.get(code, LipStreamError)(code, details or "", target)
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in failure.details:
        # A TLS mismatch looks like any refused connection ("Socket closed"): name the likely causes.
        failure.add_note(
            "no connection: is a server running at the target, and does the client use TLS as the server "
            "does? (a TLS server: Client(credentials=tls_credentials(ca_cert=...)); one that requires client "
            "certificates: tls_credentials(..., client_cert=..., client_key=...))"
        )
    return failure
