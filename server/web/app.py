"""The kiosk page and its WebSocket bridge onto the engine's sessions (protocol: web/protocol.py).

Routes: ``GET /`` the page, ``GET /static/...`` its scripts and styles (no build step, nothing fetched from
the internet), ``GET /ws`` the WebSocket (one session per connection), ``GET /healthz`` "ok" (503 while the
server drains), ``GET /metrics`` the Prometheus metrics (a bearer token when the server has tokens),
``GET /v1/avatars`` the avatars the page's picker offers (voices: ``GET /v1/audio/voices``), ``/v1/...``
OpenAI's speech API (web/speech.py).

Exposure: every route but /healthz answers only the host names it serves (421 otherwise: web/access.py);
the WebSocket handshake needs the page's own Origin or an allowed one (403 otherwise), then the token when
the server has tokens (an ``error`` and close 1008 otherwise). Every response carries a Content-Security-
Policy that lets the page load only its own files and connect only to its own WebSocket. With an SSL
context the port serves HTTPS and WSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from lipstream.server.channels import ChannelRegistry
from lipstream.server.events import StatsEvent
from lipstream.server.metrics import CONTENT_TYPE_LATEST, Metrics
from lipstream.server.options import InvalidArgument, ResourceExhausted, Unavailable
from lipstream.server.security import TokenSet, bearer_token
from lipstream.server.session import TextRefused
from lipstream.server.tts_stage import UnreadableText
from lipstream.server.web.access import SiteGuard
from lipstream.server.web.channels import ChannelRoutes, check_channel
from lipstream.server.web.protocol import (
    ConfigMessage,
    EndMessage,
    InterruptMessage,
    TextMessage,
    encode_error,
    encode_event,
    encode_warning,
    parse_client_message,
)
from lipstream.server.web.speech import SpeechApi
from lipstream.server.web.v1 import ApiError, V1Routes, log_refusal

if TYPE_CHECKING:
    from lipstream.server.engine import Engine, Session

__all__ = ["STATIC_DIR", "WebServer"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_MAX_FRAME_BYTES = 1 << 20
"""The WebSocket layer's own bound on a message (over it: close 1009 with no error message). Messages up to
protocol.MAX_MESSAGE_CHARS are parsed; those between the two get an error message and 1008."""
_MAX_REQUEST_BYTES = 64 * 1024
"""Bound on a request body that aiohttp reads (POST /v1/audio/speech reads its own: web/speech.py)."""
_PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's address may hold ?token=
}
_MAX_ERROR_CHARS = 600


class _NotHttpFilter(logging.Filter):
    """aiohttp logs a request it cannot parse at ERROR with a traceback; most often it is a gRPC client
    (HTTP/2) given the web port, or a scanner: one INFO line that says so instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or exc.code != 400:
            return True
        log.info(
            "a request on the web port was not HTTP/1.1 (%s): a gRPC client should use the gRPC port",
            str(exc.message)[:80],
        )
        return False


_CLOSE_POLICY = WSCloseCode.POLICY_VIOLATION
_CLOSE_TRY_AGAIN = WSCloseCode.TRY_AGAIN_LATER
_CLOSE_GOING_AWAY = WSCloseCode.GOING_AWAY
_CLOSE_INTERNAL = WSCloseCode.INTERNAL_ERROR


class WebServer:
    """Serves the kiosk page and its WebSocket on host:port (port 0 picks a free one: see `port`).

    `tokens`: when given, the WebSocket needs one of them (`Authorization: Bearer <token>` or `?token=`).
    `ssl_context`: serve HTTPS and WSS. `allowed_origins`: other sites (scheme://host[:port]) whose pages
    may use the WebSocket; their hosts are served names too (for a proxy in front).
    """

    def __init__(
        self,
        engine: Engine,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        tokens: TokenSet | None = None,
        ssl_context: ssl.SSLContext | None = None,
        allowed_origins: Sequence[str] = (),
        channels: ChannelRegistry | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.tokens = tokens
        self.ssl_context = ssl_context
        self.scheme = "https" if ssl_context is not None else "http"
        self.guard = SiteGuard(host, self.scheme, allowed_origins)
        # ?channel=NAME pages, driven by POST /v1/channels/NAME or gRPC (the service shares one registry)
        self.channels = channels if channels is not None else ChannelRegistry()
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._socket: socket.socket | None = None
        self._connections: set[web.WebSocketResponse] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked for); valid after start()."""
        if self._socket is None:
            raise RuntimeError("WebServer.port is known only after start(): await web_server.start() first")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        """The page's address; for a wildcard host (all interfaces), the loopback one a browser opens."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}/"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("WebServer.start() was already called")
        app = web.Application(client_max_size=_MAX_REQUEST_BYTES, middlewares=[self._check_host])
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
        v1 = V1Routes(tokens=self.tokens, guard=self.guard)  # every /v1 route's checks: web/v1.py
        v1.add(app.router, "GET", "/v1/avatars", self._avatars)
        SpeechApi(self.engine, v1).add_routes(app.router)  # /v1/audio, /v1/models: speech.py
        ChannelRoutes(self.engine, self.channels, v1).add_routes(app.router)  # /v1/channels
        v1.add_catch_all(app.router)  # last: the 404 / 405 of every other /v1 request
        app.on_response_prepare.append(self._add_security_headers)
        if not any(isinstance(f, _NotHttpFilter) for f in logging.getLogger("aiohttp.server").filters):
            logging.getLogger("aiohttp.server").addFilter(_NotHttpFilter())
        # The runner's own shutdown waits for handlers; ours closes the sockets first (see stop()). No access
        # log: aiohttp's line holds the request line, and so the page's ?token=.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        try:
            self._socket = socket.create_server(
                (self.host, self._requested_port), family=_family(self.host), reuse_port=False
            )
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(
                error.errno,
                f"cannot listen for the kiosk page on {self.host}:{self._requested_port} ({error.strerror}): "
                "choose another --web-port, or 0 to turn the page off",
            ) from None
        await web.SockSite(self._runner, self._socket, ssl_context=self.ssl_context).start()
        log.info("kiosk page on %s", self.url)

    async def stop(self) -> None:
        """Stop listening, close every open WebSocket (which closes its session), then free the runner."""
        if self._runner is None:
            return
        self._stopping = True
        for connection in list(self._connections):
            await connection.close(code=_CLOSE_GOING_AWAY, message=b"server shutting down")
        await self._runner.cleanup()
        self._runner = None
        self._socket = None
        log.info("kiosk page stopped")

    @web.middleware
    async def _check_host(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # /healthz says only "ok", and load balancers probe it by names the server cannot know.
        if request.path != "/healthz":
            refusal = self.guard.host_refusal(request.headers.get("Host"))
            if refusal is not None:
                if request.path.startswith("/v1/"):  # OpenAI's error shape, as the API's other refusals
                    error = ApiError(421, refusal, code="host_not_served")
                    log_refusal(request, 421, refusal)
                    return error.response()
                log.info("kiosk request refused: %s", refusal)
                return web.Response(status=421, text=refusal + "\n")
        return await handler(request)

    async def _add_security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(_PAGE_HEADERS)
        if request.path.startswith("/static/"):  # a kiosk reloaded after an upgrade gets the new app.js
            response.headers.setdefault("Cache-Control", "no-cache")
        # 'self' covers ws(s) of the page's own origin in CSP 3; the explicit source is for older browsers.
        own_socket = ""
        if self.guard.host_refusal(request.headers.get("Host")) is None:
            own_socket = f" {'wss' if self.ssl_context else 'ws'}://{request.headers['Host']}"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; "
            f"connect-src 'self'{own_socket}; img-src 'self' data: blob:; media-src 'self' data: blob:; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _health(self, request: web.Request) -> web.Response:
        if not self.engine.accepting:  # draining: a proxy's health check sends new pages to another replica
            return web.Response(status=503, text="shutting down")
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        # The load figures are not secret, but with tokens on, nothing but the page and health is open.
        token = bearer_token(request.headers.get("Authorization"))
        if self.tokens is not None and not self.tokens.accepts(token):
            message = (
                "this server needs a token for /metrics: send 'Authorization: Bearer YOUR_TOKEN' "
                "(Prometheus: the scrape job's authorization.credentials_file)"
            )
            log_refusal(request, 401, message)  # a scraper without its token shows in the log, not as a gap
            return web.Response(status=401, text=message + "\n")
        body = self.engine.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        # Refused before the upgrade: a page from another site gets no socket at all.
        refusal = self.guard.origin_refusal(request.headers.get("Origin"), request.headers.get("Host"))
        if refusal is not None:
            log.info("kiosk WebSocket refused: %s", refusal)
            return web.Response(status=403, text=refusal + "\n")
        # No permessage-deflate: JPEG and WAV barely compress, and the CPU is better spent on frames.
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=_MAX_FRAME_BYTES, compress=False)
        if not ws.can_prepare(request).ok:  # a browser's address bar, curl: not a WebSocket handshake
            return web.Response(
                status=426,
                headers={"Upgrade": "websocket"},
                text="this is the kiosk page's WebSocket (the page opens it): open / in a browser\n",
            )
        await ws.prepare(request)
        if self._stopping:
            await ws.close(code=_CLOSE_TRY_AGAIN, message=b"server shutting down")
            return ws
        # After the upgrade, so that the page can read why (a browser hides a refused handshake's body).
        refusal = self._token_refusal(request)
        if refusal is not None:
            await _close_with_error(ws, "unauthenticated", refusal, _CLOSE_POLICY)
            return ws
        self._connections.add(ws)
        try:
            await self._serve_connection(ws, request.query.get("channel", ""))
        except Exception as error:
            # A fault of ours, not of the page's: logged with its traceback, and the page is told.
            log.exception("kiosk connection failed")
            await _close_with_error(ws, "internal", f"{type(error).__name__}: {error}"[:200], _CLOSE_INTERNAL)
        finally:
            self._connections.discard(ws)
        return ws

    async def _avatars(self, request: web.Request) -> web.StreamResponse:
        """The avatars as gRPC ListAvatars gives them, for the page's picker."""
        avatars = await asyncio.to_thread(self.engine.avatars)  # a builtin one is loaded on first listing
        data = [
            {"name": a.name, "width": a.width, "height": a.height, "num_frames": a.num_frames,
             "default": a.is_default}
            for a in avatars
        ]
        return web.json_response({"object": "list", "data": data})

    def _token_refusal(self, request: web.Request) -> str | None:
        if self.tokens is None:
            return None
        token = bearer_token(request.headers.get("Authorization")) or request.query.get("token")
        if self.tokens.accepts(token):
            return None
        how = (
            "open the page as /?token=YOUR_TOKEN (it passes the token on to its WebSocket), or send the "
            "header 'Authorization: Bearer YOUR_TOKEN', or connect to ws://.../ws?token=YOUR_TOKEN"
        )
        if token:
            return f"the token given is not one this server accepts: {how}"
        return f"this server needs a token: {how}"

    async def _serve_connection(self, ws: web.WebSocketResponse, channel: str = "") -> None:
        """`channel`: the page's ?channel=, on which other processes can make it speak (channels.py)."""
        # A connection that sends no config in time is closed (it holds no session meanwhile), as on gRPC.
        timeout_s = self.engine.settings.config_timeout_s
        try:
            config = await asyncio.wait_for(ws.receive(), timeout_s)
        except TimeoutError:
            reason = f"no config message within {timeout_s:g} s: send {{\"type\": \"config\", ...}} first"
            await _close_with_error(ws, "invalid_argument", reason, _CLOSE_POLICY)
            return
        if config.type != WSMsgType.TEXT:
            if config.type not in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                await _close_with_error(
                    ws, "invalid_argument", "the first message must be a JSON config message", _CLOSE_POLICY
                )
            return
        try:
            message = parse_client_message(config.data)
            if not isinstance(message, ConfigMessage):
                raise InvalidArgument(
                    f"the first message must be {{\"type\": \"config\", ...}}, not {type(message).__name__}"
                )
            if channel:
                check_channel(channel)
            session = await self.engine.open_session(message.options)
        except InvalidArgument as error:
            await _close_with_error(ws, "invalid_argument", str(error), _CLOSE_POLICY)
            return
        except ResourceExhausted as error:
            await _close_with_error(ws, "resource_exhausted", str(error), _CLOSE_TRY_AGAIN)
            return
        except Unavailable as error:
            await _close_with_error(ws, "unavailable", str(error), _CLOSE_TRY_AGAIN)
            return
        try:
            with self.channels.joined(channel, session):
                await self._bridge(ws, session)
        finally:
            await session.close()

    async def _bridge(self, ws: web.WebSocketResponse, session: Session) -> None:
        """Runs the page->session reader and the session->page writer until both end."""
        sender = asyncio.create_task(_send_events(ws, session, self.engine.metrics), name="web-send-events")
        try:
            await _receive_requests(ws, session)
            # The socket is closing (the page left, broke the protocol, or the sender closed it after the
            # stats): end the session so that its events end too. The sender is never cancelled here, as
            # that could cut its close handshake short.
            await session.close()
            await sender
        finally:
            if not sender.done():  # we are cancelled ourselves
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender


async def _receive_requests(ws: web.WebSocketResponse, session: Session) -> None:
    """Forwards text, interrupt and end from the page until the socket closes (either side). After "end" it
    goes on reading, so that a message after it is refused rather than dropped unseen; a message that breaks
    the protocol closes the socket with an error."""
    ended = False
    async for raw in ws:
        if raw.type == WSMsgType.ERROR:  # the WebSocket layer has closed the socket (1009, 1007, ...)
            log.info("kiosk WebSocket error: %s", ws.exception())
            return
        if raw.type != WSMsgType.TEXT:
            await _close_with_error(
                ws, "invalid_argument", "the page sends JSON text messages only, not binary", _CLOSE_POLICY
            )
            return
        try:
            message = parse_client_message(raw.data)
            if ended:
                raise InvalidArgument(
                    f"a {type(message).__name__} after 'end': nothing may follow 'end'; open a new WebSocket "
                    "for a new session"
                )
            if isinstance(message, TextMessage):
                try:
                    await session.send_text(message.text, flush=message.flush)
                except TextRefused as error:  # that text alone: what the page sent before is still spoken
                    log.info("kiosk session %s: a text refused: %s", session.session_id, error)
                    await ws.send_str(encode_warning("text_refused", str(error)))
            elif isinstance(message, InterruptMessage):
                await session.interrupt()
            elif isinstance(message, EndMessage):
                await session.end_input()
                ended = True
            else:
                raise InvalidArgument("the session is already configured: send config once, first")
        except InvalidArgument as error:
            await _close_with_error(ws, "invalid_argument", str(error), _CLOSE_POLICY)
            return


async def _send_events(ws: web.WebSocketResponse, session: Session, metrics: Metrics) -> None:
    """Writes the session's events to the page; each one written counts in /metrics as gRPC's do."""
    finished = False
    try:
        async for event in session.events():
            if ws.closed:
                return
            finished = isinstance(event, StatsEvent)
            message = encode_event(event)
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
            metrics.count_sent(event)
    except ConnectionResetError as error:
        # The page went away while we were sending: the session is closed by the caller. Routine (a tab
        # closed mid-sentence), so INFO in plain words; aiohttp's own text is for DEBUG.
        log.info("kiosk page went away while frames were being sent; its session stops")
        log.debug("kiosk WebSocket send failed: %s", error)
        return
    except (InvalidArgument, UnreadableText) as error:
        await _close_with_error(ws, "invalid_argument", str(error), _CLOSE_POLICY)
        return
    except Exception as error:
        log.exception("kiosk session failed")
        reason = f"{type(error).__name__}: {error}"
        await _close_with_error(ws, "internal", reason, WSCloseCode.INTERNAL_ERROR)
        return
    if finished:
        await ws.close()  # the stats were the last event: a normal close (1000)
    else:  # the server closed the session (shutdown): the page should come back later
        reason = "the server closed the session (shutting down): reconnect"
        await _close_with_error(ws, "unavailable", reason, _CLOSE_GOING_AWAY)


async def _close_with_error(ws: web.WebSocketResponse, code: str, message: str, close_code: int) -> None:
    if ws.closed:
        return
    if code != "internal":  # a fault of ours is logged with its traceback where it is caught
        log.info("kiosk WebSocket closed with %s: %s", code, message[:300])
    if len(message) > _MAX_ERROR_CHARS:  # a value echoed whole (a 10 KB voice name) must not come back whole
        message = message[: _MAX_ERROR_CHARS - 3] + "..."
    with contextlib.suppress(ConnectionResetError):
        await ws.send_str(encode_error(code, message))
    await ws.close(code=close_code, message=code.encode())


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
