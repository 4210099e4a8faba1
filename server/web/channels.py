"""The HTTP routes of the named display channels (the registry and what say/stop do: server/channels.py).

A kiosk page opened as ``/?channel=lobby`` joins the channel ``lobby``; another process makes every session
on it speak or stop with an HTTP ``POST`` on the web port (or the gRPC SayOnChannel / StopChannel):

- ``POST /v1/channels/{name}/say`` with ``{"text": "...", "interrupt": false}``: the text is spoken as the
  page's own text box would speak it (``interrupt``: what the pages are saying stops first);
- ``POST /v1/channels/{name}/stop``: what the pages are saying stops (their sessions go on).

The answer is ``{"displays": N}``, the sessions that got it; 404 when none is on the channel, 409 when none
could take the text now. With tokens on, both need ``Authorization: Bearer <token>`` (401 otherwise); a
browser page of another site is refused as on the WebSocket (403). A name is 1 to 64 letters, digits, ``-``
or ``_`` (400 otherwise).
"""

from __future__ import annotations

import json

from aiohttp import web
from lipstream.server.channels import ChannelRefused, ChannelRegistry, NoDisplay, check_channel
from lipstream.server.options import InvalidArgument
from lipstream.server.security import TokenSet, bearer_token
from lipstream.server.web.access import SiteGuard

__all__ = ["ChannelRoutes", "check_channel"]

MAX_BODY_BYTES = 64 << 10


class ChannelRoutes:
    """``POST /v1/channels/{name}/say|stop`` onto the process's channel registry."""

    def __init__(self, channels: ChannelRegistry, tokens: TokenSet | None, guard: SiteGuard) -> None:
        self._channels = channels
        self._tokens = tokens
        self._guard = guard

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/channels/{name}/say", self._say)
        router.add_post("/v1/channels/{name}/stop", self._stop)

    async def _say(self, request: web.Request) -> web.Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        try:
            body = json.loads(await request.content.read(MAX_BODY_BYTES + 1) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        text = body.get("text") if isinstance(body, dict) else None
        interrupt = body.get("interrupt", False) if isinstance(body, dict) else False
        if not isinstance(text, str) or not text.strip() or not isinstance(interrupt, bool):
            return _error(400, 'send a JSON body like {"text": "Welcome!", "interrupt": false}')
        try:
            return web.json_response({"displays": await self._channels.say(_name(request), text, interrupt)})
        except InvalidArgument as error:
            return _error(400, str(error))
        except NoDisplay as error:
            return _error(404, str(error))
        except ChannelRefused as error:
            return _error(409, str(error))

    async def _stop(self, request: web.Request) -> web.Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        try:
            return web.json_response({"displays": await self._channels.stop(_name(request))})
        except InvalidArgument as error:
            return _error(400, str(error))
        except NoDisplay as error:
            return _error(404, str(error))

    def _refusal(self, request: web.Request) -> web.Response | None:
        """403 for another site's page, 401 without an accepted token (before anything about the channel)."""
        headers = request.headers
        origin_refusal = self._guard.origin_refusal(headers.get("Origin"), headers.get("Host"))
        if origin_refusal is not None:
            return _error(403, origin_refusal)
        token = bearer_token(headers.get("Authorization"))
        if self._tokens is not None and not self._tokens.accepts(token):
            return _error(401, "this server needs a token: send 'Authorization: Bearer YOUR_TOKEN'")
        return None


def _name(request: web.Request) -> str:
    return request.match_info["name"]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)
