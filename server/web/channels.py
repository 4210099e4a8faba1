"""Named display channels: a kiosk page opened as ``/?channel=lobby`` joins the channel ``lobby``; another
process makes every page on it speak or stop with an HTTP ``POST`` on the web port:

- ``POST /v1/channels/{name}/say`` with ``{"text": "...", "interrupt": false}``: the text is spoken as the
  page's own text box would speak it (``interrupt``: what the pages are saying stops first);
- ``POST /v1/channels/{name}/stop``: what the pages are saying stops (their sessions go on).

The answer is ``{"displays": N}``, the pages that got it; 404 when no page is on the channel. With tokens on,
both need ``Authorization: Bearer <token>`` (401 otherwise); a browser page of another site is refused as on
the WebSocket (403). A name is 1 to 64 letters, digits, ``-`` or ``_``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from lipstream.server.options import InvalidArgument
from lipstream.server.security import TokenSet, bearer_token
from lipstream.server.web.access import SiteGuard

if TYPE_CHECKING:
    from lipstream.server.session import Session

log = logging.getLogger(__name__)

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_BODY_BYTES = 64 << 10


def check_channel(name: str) -> str:
    """The name when it is a valid channel name; raises InvalidArgument naming the rule."""
    if not CHANNEL_NAME.fullmatch(name):
        raise InvalidArgument(
            f"channel {name[:80]!r} is not a channel name: use 1 to 64 letters, digits, '-' or '_'"
        )
    return name


class Channels:
    """The kiosk sessions on each named channel, and the HTTP routes that drive them."""

    def __init__(self, tokens: TokenSet | None, guard: SiteGuard) -> None:
        self._tokens = tokens
        self._guard = guard
        self._sessions: dict[str, set[Session]] = {}

    @contextlib.contextmanager
    def joined(self, name: str, session: Session) -> Iterator[None]:
        """The session is on channel `name` while the block runs ("" : on none)."""
        if not name:
            yield
            return
        self._sessions.setdefault(name, set()).add(session)
        try:
            yield
        finally:
            members = self._sessions.get(name, set())
            members.discard(session)
            if not members:
                self._sessions.pop(name, None)

    def displays(self, name: str) -> int:
        return len(self._sessions.get(name, ()))

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/channels/{name}/say", self._say)
        router.add_post("/v1/channels/{name}/stop", self._stop)

    async def _say(self, request: web.Request) -> web.Response:
        sessions, refusal = self._sessions_of(request)
        if refusal is not None:
            return refusal
        try:
            body = json.loads(await request.content.read(MAX_BODY_BYTES + 1) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        text = body.get("text") if isinstance(body, dict) else None
        interrupt = body.get("interrupt", False) if isinstance(body, dict) else False
        if not isinstance(text, str) or not text.strip() or not isinstance(interrupt, bool):
            return _error(400, 'send a JSON body like {"text": "Welcome!", "interrupt": false}')
        spoken = 0
        for session in sessions:
            try:
                if interrupt:
                    await session.interrupt()
                await session.send_text(text, flush=True)
                spoken += 1
            except InvalidArgument as error:  # that page's session cannot take it (over its text bound)
                log.info("channel %s: a display refused the text: %s", request.match_info["name"], error)
        if not spoken:
            return _error(409, "no display on the channel could take the text now: send it again later")
        return web.json_response({"displays": spoken})

    async def _stop(self, request: web.Request) -> web.Response:
        sessions, refusal = self._sessions_of(request)
        if refusal is not None:
            return refusal
        for session in sessions:
            await session.interrupt()
        return web.json_response({"displays": len(sessions)})

    def _sessions_of(self, request: web.Request) -> tuple[list[Session], web.Response | None]:
        headers = request.headers
        origin_refusal = self._guard.origin_refusal(headers.get("Origin"), headers.get("Host"))
        if origin_refusal is not None:
            return [], _error(403, origin_refusal)
        token = bearer_token(headers.get("Authorization"))
        if self._tokens is not None and not self._tokens.accepts(token):
            return [], _error(401, "this server needs a token: send 'Authorization: Bearer YOUR_TOKEN'")
        name = request.match_info["name"]
        try:
            check_channel(name)
        except InvalidArgument as error:
            return [], _error(400, str(error))
        sessions = list(self._sessions.get(name, ()))
        if not sessions:
            return [], _error(404, f"no display is on channel {name!r}: open the page as /?channel={name}")
        return sessions, None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)
