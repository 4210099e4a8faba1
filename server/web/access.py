"""Which `Host` and `Origin` headers the kiosk port answers: the guards against DNS rebinding and against
other web pages driving the WebSocket (cross-site WebSocket hijacking).

- **Host.** A rebinding attack points the attacker's own name at this machine, so the browser sends that
  name as `Host`. The port answers only names it serves: any IP literal (an address cannot be rebound),
  `localhost`, the `--host` it is bound to when that is a name, and the hosts of the allowed origins.
- **Origin.** A browser sends `Origin` with every WebSocket handshake. It must be the page's own origin
  (the scheme served, and the `Host` the request came to) or one of the allowed origins. A handshake with
  no `Origin` does not come from a browser: it is let through, since a program could send any `Origin` it
  likes; the token (`--auth-token-file`) is what keeps programs out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Origin", "SiteGuard", "parse_host"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# A Host header as browsers send it: a DNS name or IPv4 address, or a bracketed IPv6 one, and a port.
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?")
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class Origin:
    """scheme://host:port, lower case, with the port always given (the scheme's default when absent)."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Origin:
        """An origin from `scheme://host[:port]`; ValueError saying what a good one looks like."""
        try:
            parts = urlsplit(text.strip())
            port = parts.port
        except ValueError:
            parts, port = None, None
        if (
            parts is None
            or parts.scheme not in _DEFAULT_PORTS
            or not parts.hostname
            or parts.username is not None
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                f"{text[:80]!r} is not an origin: give scheme://host[:port] with scheme http or https, "
                "for example https://kiosk.example.com"
            )
        return cls(parts.scheme, parts.hostname.rstrip("."), port or _DEFAULT_PORTS[parts.scheme])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = _DEFAULT_PORTS[self.scheme] == self.port
        return f"{self.scheme}://{host}" if default else f"{self.scheme}://{host}:{self.port}"


def parse_host(header: str) -> tuple[str, int | None] | None:
    """(host in lower case, port or None) of a Host header; None when it is not a well-formed one."""
    match = _HOST.fullmatch(header.strip())
    if match is None:
        return None
    port = int(match["port"]) if match["port"] else None
    if port is not None and port > 65535:
        return None
    host = match["ipv6"] or match["name"]
    return host.lower().rstrip("."), port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SiteGuard:
    """The Host and Origin checks of one web port."""

    def __init__(self, bound_host: str, scheme: str, allowed_origins: Iterable[str] = ()) -> None:
        self.scheme = scheme
        origins: list[Origin] = []
        for text in allowed_origins:
            try:
                origins.append(Origin.parse(text))
            except ValueError as error:
                raise ValueError(f"--web-allowed-origin {error}") from None
        self.allowed_origins = frozenset(origins)
        names = {"localhost"} | {origin.host for origin in origins}
        bound = bound_host.lower().strip("[]").rstrip(".")
        if bound not in _WILDCARDS and not _is_ip(bound):
            names.add(bound)
        self.names = frozenset(names)

    def host_refusal(self, header: str | None) -> str | None:
        """None when the port serves this Host, else the reason, which says what to do."""
        parsed = parse_host(header or "")
        if parsed is None:
            return f"Host {(header or '')[:80]!r} is not a host name: open the page by its address"
        host, _ = parsed
        if _is_ip(host) or host in self.names:
            return None
        return (
            f"this server does not serve the name {host[:80]!r} (a DNS rebinding guard): open it by its IP "
            f"address or localhost, or start it with --web-allowed-origin {self.scheme}://{host[:80]}[:port]"
        )

    def origin_refusal(
        self, origin: str | None, host_header: str | None, use: str = "the WebSocket"
    ) -> str | None:
        """None when a request with this Origin may go on, else the reason; `use`: what it is refused."""
        if origin is None:
            return None  # not a browser (see the module's docstring)
        try:
            given = Origin.parse(origin)
        except ValueError:
            return f"Origin {origin[:80]!r} is not allowed: open the page from this server"
        if given in self.allowed_origins:
            return None
        parsed = parse_host(host_header or "")
        if parsed is not None:
            host, port = parsed
            own = Origin(self.scheme, host, port or _DEFAULT_PORTS[self.scheme])
            if given == own:
                return None
        return (
            f"Origin {str(given)[:80]!r} is not this page's origin: open the page from this server, or start "
            f"it with --web-allowed-origin {str(given)[:80]} to let that site use {use}"
        )
