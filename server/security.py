"""Who may use the server: bearer tokens from a file and the TLS key pair, shared by gRPC and the web port.

Tokens are compared in constant time and never logged; the file is reread on SIGHUP (`reload`).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TLSFiles", "TokenSet", "bearer_token", "is_loopback", "missing_protection"]

log = logging.getLogger(__name__)


class TokenSet:
    """The accepted bearer tokens: one per line of `path`, blank lines and `#` comments ignored."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tokens: tuple[bytes, ...] = ()
        self.reload()

    def reload(self) -> None:
        """Rereads the file; on an error the tokens in force stay and the error is raised (a ValueError)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the auth token file {self.path}: {exc}") from exc
        tokens = tuple(
            line.strip().encode("utf-8")
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
        )
        if not tokens:
            raise ValueError(
                f"the auth token file {self.path} holds no token: write one token per line "
                "(for example the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        self._tokens = tokens
        log.info("auth tokens loaded from %s: %d", self.path, len(tokens))

    def __len__(self) -> int:
        return len(self._tokens)

    def accepts(self, token: str | None) -> bool:
        """True when `token` is one of the file's; every stored token is compared, in constant time."""
        if not token:
            return False
        given = token.encode("utf-8", "surrogateescape")
        found = False
        for known in self._tokens:
            found |= hmac.compare_digest(given, known)
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: the server's certificate chain and key, and optionally the CA that signs client certs."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """(cert, key, client CA) bytes; a ValueError names the file that cannot be read."""
        client_ca = None if self.client_ca is None else _read("--tls-client-ca", self.client_ca)
        return _read("--tls-cert", self.cert), _read("--tls-key", self.key), client_ca

    def ssl_context(self) -> ssl.SSLContext:
        """The web port's context (HTTPS/WSS) from the same pair; client certificates required with a CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(str(self.cert), str(self.key))
            if self.client_ca is not None:
                context.load_verify_locations(cafile=str(self.client_ca))
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the TLS files {self.cert}, {self.key}: {exc}") from exc
        return context


def _read(flag: str, path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror or exc}") from exc


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (brackets allowed); any other name or address is not."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def missing_protection(host: str, *, tls: bool, tokens: bool) -> str | None:
    """What serving on `host` lacks, as the flags that add it ("TLS (--tls-cert ...) and tokens (...)"), or
    None when nothing is missing: loopback needs nothing, any other address both TLS and tokens."""
    if is_loopback(host):
        return None
    missing = []
    if not tls:
        missing.append("TLS (--tls-cert PATH --tls-key PATH)")
    if not tokens:
        missing.append("tokens (--auth-token-file PATH)")
    return " and ".join(missing) or None
