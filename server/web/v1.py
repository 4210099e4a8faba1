"""What every ``/v1`` route of the kiosk port shares: the Origin and token checks, the CORS answers, OpenAI's
error shape, the log line of each refusal, and the 404 / 405 of paths and methods no route serves.

A route set (speech.py, channels.py, the avatar listing in app.py) registers its routes with `V1Routes.add`;
app.py calls `add_catch_all` once, after every route set, so that the catch-all is the last /v1 resource.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from lipstream.server.security import TokenSet, bearer_token
from lipstream.server.web.access import Origin, SiteGuard

__all__ = ["ApiError", "Handler", "V1Routes", "log_refusal", "read_body"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MAX_ERROR_CHARS = 600
_EXPOSED = "X-Sample-Rate, X-Lipstream-Warning"
_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


class ApiError(Exception):
    """An OpenAI-shaped error: HTTP status, message (with the fix), type, the parameter at fault, a code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or ("server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def response(self) -> web.Response:
        message = self.message
        if len(message) > _MAX_ERROR_CHARS:  # a value echoed whole must not come back whole
            message = message[: _MAX_ERROR_CHARS - 3] + "..."
        body = {"error": {"message": message, "type": self.kind, "param": self.param, "code": self.code}}
        headers = {"Retry-After": "1"} if self.status in (429, 503) else {}
        return web.json_response(body, status=self.status, headers={**headers, **self.headers})


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The request's whole body, or None when it is over `limit` bytes (by its Content-Length, before any is
    read). One read returns what has arrived so far: a body sent in pieces is read to its end."""
    if request.content_length is not None and request.content_length > limit:
        return None
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = await request.content.read(limit + 1 - size)
        if not part:
            return b"".join(parts)
        parts.append(part)
        size += len(part)
    return None


def log_refusal(request: web.Request, status: int, message: str) -> None:
    """One INFO line per refused request (WARNING for the server's own faults); the path without its query,
    which may hold ?token=."""
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(level, "HTTP %s %s refused %d: %s", request.method, request.path[:200], status, message[:300])


class V1Routes:
    """The checks of the port's /v1 routes; `tokens` and `guard` are the web server's own."""

    def __init__(self, *, tokens: TokenSet | None, guard: SiteGuard) -> None:
        self.tokens = tokens
        self.guard = guard
        self._routes: list[tuple[str, str, re.Pattern[str]]] = []  # method, path template, its pattern

    def add(self, router: web.UrlDispatcher, method: str, path: str, handler: Handler) -> None:
        """Registers a /v1 route behind the checks. GET routes answer no HEAD (HEAD of a speech would speak
        the whole text to send no body)."""
        pattern = re.compile(re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path)))
        self._routes.append((method, path, pattern))
        router.add_route(method, path, self.checked(handler))

    def add_catch_all(self, router: web.UrlDispatcher) -> None:
        """The 404 / 405 of every other /v1 request, and the preflights; call it after every route set."""
        router.add_route("*", "/v1/{tail:.*}", self.checked(self._not_served))

    def served(self) -> str:
        """The routes, for a message: 'GET /v1/models, POST /v1/audio/speech, ...'."""
        return ", ".join(f"{method} {path}" for method, path, _ in self._routes)

    def methods(self, path: str) -> list[str]:
        """The methods the routes serve at `path` ([] for a path no route serves)."""
        return sorted({m for m, _, pattern in self._routes if pattern.fullmatch(path)})

    async def _not_served(self, request: web.Request) -> web.StreamResponse:
        allowed = self.methods(request.path)
        if allowed:
            raise ApiError(
                405,
                f"{request.method} {request.path[:80]} is not served: use {' or '.join(allowed)}",
                code="method_not_allowed",
                headers={"Allow": ", ".join(allowed)},
            )
        raise ApiError(
            404,
            f"{request.method} {request.path[:80]} is not served: this server has {self.served()}",
            code="unknown_url",
        )

    def checked(self, handler: Handler) -> Handler:
        """The site and token checks, CORS headers and OpenAI's error shape around a handler."""

        async def checked(request: web.Request) -> web.StreamResponse:
            cors: dict[str, str] = {}
            try:
                self.check_site(request)
                cors = self.cors_headers(request)
                served = self.methods(request.path) if request.method == "OPTIONS" else []
                if served:  # a preflight (it carries no token), or asking what a path serves
                    allowed = ", ".join(served)
                    if "Origin" not in request.headers:
                        return web.Response(status=204, headers={"Allow": allowed})
                    if not cors:
                        raise ApiError(
                            403, "no cross-origin requests here but from --web-allowed-origin sites"
                        )
                    headers = {**cors, **_PREFLIGHT_HEADERS, "Access-Control-Allow-Methods": allowed}
                    return web.Response(status=204, headers=headers)
                self.check_token(request)
                response = await handler(request)
            except ApiError as error:
                log_refusal(request, error.status, error.message)
                response = error.response()
            if not response.prepared:  # a streamed response has them from its handler
                response.headers.update(cors)
            return response

        return checked

    def cors_headers(self, request: web.Request) -> dict[str, str]:
        """CORS answers for a page of an allowed origin (--web-allowed-origin), so that its fetch() and
        `<audio crossorigin>` may read the answer; none for any other (same-origin requests need none)."""
        origin = request.headers.get("Origin")
        try:
            allowed = origin is not None and Origin.parse(origin) in self.guard.allowed_origins
        except ValueError:
            allowed = False
        if not allowed or origin is None:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Vary": "Origin",
            "Access-Control-Expose-Headers": _EXPOSED,
        }

    def check_site(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        refusal = (
            self.guard.origin_refusal(origin, request.headers.get("Host"), use="this server's HTTP API")
            if origin
            else None
        )
        if origin is None and request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            refusal = "a page of another site may not use this server's API: serve the page from this server"
        if refusal is not None:
            raise ApiError(403, refusal, code="origin_not_allowed")

    def check_token(self, request: web.Request) -> None:
        if self.tokens is None:
            return
        token = bearer_token(request.headers.get("Authorization")) or request.query.get("token")
        if self.tokens.accepts(token):
            return
        how = (
            "send 'Authorization: Bearer YOUR_TOKEN' (the openai package's api_key) or add ?token=YOUR_TOKEN"
        )
        what = "the token given is not one this server accepts" if token else "this server needs a token"
        raise ApiError(401, f"{what}: {how}", code="invalid_api_key")
