"""TLS channel credentials from PEM files, and the bearer-token metadata a server with tokens needs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

__all__ = ["call_metadata", "tls_credentials", "token_metadata"]


def tls_credentials(
    ca_cert: str | Path | None = None,
    client_cert: str | Path | None = None,
    client_key: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials for Client(credentials=...): `ca_cert` is the PEM root(s) that signed the server's
    certificate (None: the system's roots); `client_cert` and `client_key` (PEM, both or neither) are this
    client's certificate for a server that requires one (mTLS, `lipstream serve --tls-client-ca`)."""
    if (client_cert is None) != (client_key is None):
        raise ValueError("a client certificate needs both client_cert and client_key (PEM files)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read("ca_cert", ca_cert),
        private_key=_read("client_key", client_key),
        certificate_chain=_read("client_cert", client_cert),
    )


def _read(name: str, path: str | Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{name} {path}: {error.strerror or error}") from None


def token_metadata(token: str) -> tuple[str, str]:
    """The ("authorization", "Bearer <token>") metadata pair; surrounding whitespace (a file's newline) is
    dropped. The error never shows the token."""
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, got {type(token).__name__}")
    token = token.strip()
    if not token:
        raise ValueError("the token is empty: pass the token the server's --auth-token-file holds")
    if token[:7].lower() == "bearer ":
        raise ValueError("pass the token without 'Bearer ': it is added to the authorization header for you")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("the token must be printable ASCII with no spaces: check how it was copied")
    return ("authorization", f"Bearer {token}")


Pairs = tuple[tuple[str, str | bytes], ...]


def call_metadata(token: str | None, metadata: Sequence[tuple[str, str | bytes]]) -> Pairs:
    """`metadata` plus the token's authorization pair; a token and an authorization entry together are a
    mistake (which one should the server see?)."""
    pairs = tuple(metadata)
    if token is None:
        return pairs
    if any(key.lower() == "authorization" for key, _ in pairs):
        raise ValueError("pass the token once: either token=... or an 'authorization' metadata entry")
    return (*pairs, token_metadata(token))
