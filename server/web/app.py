"""The kiosk page and its WebSocket bridge onto the engine's sessions (protocol: web/protocol.py).

Routes: ``GET /`` the page, ``GET /static/...`` its scripts and styles (no build step, nothing fetched from
the internet), ``GET /ws`` the WebSocket (one session per connection), ``GET /healthz`` "ok" (503 while the
server drains).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web
from lipstream.server.events import StatsEvent
from lipstream.server.options import InvalidArgument, ResourceExhausted, Unavailable
from lipstream.server.web.protocol import (
    ConfigMessage,
    EndMessage,
    InterruptMessage,
    TextMessage,
    encode_error,
    encode_event,
    parse_client_message,
)

if TYPE_CHECKING:
    from lipstream.server.engine import Engine, Session

__all__ = ["STATIC_DIR", "WebServer"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_CONFIG_TIMEOUT_S = 30.0
"""A connection that sends no config in this time is closed (it holds no session meanwhile)."""
_MAX_MESSAGE_BYTES = 1 << 20
"""Bound on one message from the page; the engine bounds the text itself (max_text_chars)."""
_CLOSE_POLICY = WSCloseCode.POLICY_VIOLATION
_CLOSE_TRY_AGAIN = WSCloseCode.TRY_AGAIN_LATER
_CLOSE_GOING_AWAY = WSCloseCode.GOING_AWAY


class WebServer:
    """Serves the kiosk page and its WebSocket on host:port (port 0 picks a free one: see `port`)."""

    def __init__(self, engine: Engine, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.engine = engine
        self.host = host
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
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("WebServer.start() was already called")
        app = web.Application(client_max_size=_MAX_MESSAGE_BYTES)
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/healthz", self._health)
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
        # The runner's own shutdown waits for handlers; ours closes the sockets first (see stop()).
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
        await web.SockSite(self._runner, self._socket).start()
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

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _health(self, request: web.Request) -> web.Response:
        if not self.engine.accepting:  # draining: a proxy's health check sends new pages to another replica
            return web.Response(status=503, text="shutting down")
        return web.Response(text="ok")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        # No permessage-deflate: JPEG and WAV barely compress, and the CPU is better spent on frames.
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=_MAX_MESSAGE_BYTES, compress=False)
        await ws.prepare(request)
        if self._stopping:
            await ws.close(code=_CLOSE_TRY_AGAIN, message=b"server shutting down")
            return ws
        self._connections.add(ws)
        try:
            await self._serve_connection(ws)
        finally:
            self._connections.discard(ws)
        return ws

    async def _serve_connection(self, ws: web.WebSocketResponse) -> None:
        try:
            config = await asyncio.wait_for(ws.receive(), _CONFIG_TIMEOUT_S)
        except TimeoutError:
            await _close_with_error(ws, "invalid_argument", "no config message within 30 s", _CLOSE_POLICY)
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
            await self._bridge(ws, session)
        finally:
            await session.close()

    async def _bridge(self, ws: web.WebSocketResponse, session: Session) -> None:
        """Runs the page->session reader and the session->page writer until both end."""
        sender = asyncio.create_task(_send_events(ws, session), name="web-send-events")
        try:
            if not await _receive_requests(ws, session):
                # The page left, or the socket is closing: end the session so that its events end too. The
                # sender is never cancelled here, as that could cut its close handshake short.
                await session.close()
            await sender  # after "end": the events run on to their stats
        finally:
            if not sender.done():  # we are cancelled ourselves
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender


async def _receive_requests(ws: web.WebSocketResponse, session: Session) -> bool:
    """Forwards text, interrupt and end from the page; True when the page sent "end", False when the socket
    closed (either side) or the page broke the protocol."""
    async for raw in ws:
        if raw.type == WSMsgType.ERROR:
            log.info("kiosk WebSocket error: %s", ws.exception())
            return False
        if raw.type != WSMsgType.TEXT:
            await _close_with_error(
                ws, "invalid_argument", "the page sends JSON text messages only", _CLOSE_POLICY
            )
            return False
        try:
            message = parse_client_message(raw.data)
            if isinstance(message, TextMessage):
                await session.send_text(message.text, flush=message.flush)
            elif isinstance(message, InterruptMessage):
                await session.interrupt()
            elif isinstance(message, EndMessage):
                await session.end_input()
                return True
            else:
                raise InvalidArgument("the session is already configured: send config once, first")
        except InvalidArgument as error:
            await _close_with_error(ws, "invalid_argument", str(error), _CLOSE_POLICY)
            return False
    return False


async def _send_events(ws: web.WebSocketResponse, session: Session) -> None:
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
    except ConnectionResetError as error:
        # The page went away while we were sending: the session is closed by the caller.
        log.info("kiosk WebSocket closed while sending: %s", error)
        return
    except InvalidArgument as error:
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
    with contextlib.suppress(ConnectionResetError):
        await ws.send_str(encode_error(code, message))
    await ws.close(code=close_code, message=code.encode())


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
