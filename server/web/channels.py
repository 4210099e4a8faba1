"""The HTTP routes of the named display channels (the registry and what say/stop do: server/channels.py).

A kiosk page opened as ``/?channel=lobby`` joins the channel ``lobby``; another process makes every session
on it speak or stop with an HTTP ``POST`` on the web port (or the gRPC SayOnChannel / StopChannel):

- ``POST /v1/channels/{name}/say`` with ``{"text": "...", "interrupt": false}``: the text is spoken as the
  page's own text box would speak it (``interrupt``: what the pages are saying stops first);
- ``POST /v1/channels/{name}/stop``: what the pages are saying stops (their sessions go on).

The answer is ``{"displays": N}``, the sessions that got it. Errors are OpenAI's JSON, as on every /v1 route
(web/v1.py: the same Origin, token and CORS handling): 404 when no display is on the channel, 409 when none
could take the text now, 413 over the text bound (--max-text-chars) or a 64 KiB body, 400 for text none of
the channel's voices can read (code ``unreadable_script``; text some of them read is spoken, and the
``X-Lipstream-Warning`` header says what the others skip) or with nothing to say (``empty_input``). A name
is 1 to 64 letters, digits, ``-`` or ``_`` (400 otherwise).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web
from lipstream.server.channels import ChannelRefused, ChannelRegistry, NoDisplay, NothingToSay, check_channel
from lipstream.server.options import InvalidArgument
from lipstream.server.tts_stage import UnreadableText
from lipstream.server.web.speech import header_text
from lipstream.server.web.v1 import ApiError, V1Routes, read_body

if TYPE_CHECKING:
    from lipstream.server.engine import Engine

__all__ = ["ChannelRoutes", "check_channel"]

MAX_BODY_BYTES = 64 << 10
_EXAMPLE = '{"text": "Welcome!", "interrupt": false}'


class ChannelRoutes:
    """``POST /v1/channels/{name}/say|stop`` onto the process's channel registry, behind the port's /v1
    checks (`v1`)."""

    def __init__(self, engine: Engine, channels: ChannelRegistry, v1: V1Routes) -> None:
        self._engine = engine
        self._channels = channels
        self._v1 = v1

    def add_routes(self, router: web.UrlDispatcher) -> None:
        self._v1.add(router, "POST", "/v1/channels/{name}/say", self._say)
        self._v1.add(router, "POST", "/v1/channels/{name}/stop", self._stop)

    async def _say(self, request: web.Request) -> web.StreamResponse:
        text, interrupt = await self._read(request)
        name = _name(request)
        try:
            said = await self._channels.say(name, text, interrupt)
        except NothingToSay as error:
            raise ApiError(400, str(error), param="text", code="empty_input") from None
        except InvalidArgument as error:
            raise ApiError(400, str(error)) from None
        except UnreadableText as error:
            raise ApiError(400, str(error), param="text", code="unreadable_script") from None
        except NoDisplay as error:
            raise ApiError(404, str(error), code="no_display") from None
        except ChannelRefused as error:
            raise ApiError(409, str(error), code="displays_busy") from None
        headers = {"X-Lipstream-Warning": header_text(said.warning)} if said.warning else None
        return web.json_response({"displays": said.displays}, headers=headers)

    async def _read(self, request: web.Request) -> tuple[str, bool]:
        """(text, interrupt) of the body; ApiError 413 or 400 saying what to send."""
        max_chars = self._engine.settings.max_text_chars
        raw = await read_body(request, MAX_BODY_BYTES)
        if raw is None:
            raise ApiError(
                413,
                f"the body is over the bound of 64 KiB: send a shorter text (at most {max_chars} "
                "characters), or the text in several say calls",
            )
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, f"send a JSON body like {_EXAMPLE}")
        text, interrupt = body.get("text"), body.get("interrupt", False)
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, f"'text' is missing, empty or not a string: send {_EXAMPLE}", param="text")
        if not isinstance(interrupt, bool):
            raise ApiError(400, f"'interrupt' must be true or false: send {_EXAMPLE}", param="interrupt")
        if len(text) > max_chars:
            raise ApiError(
                413,
                f"'text' has {len(text)} characters, over this server's bound of {max_chars} "
                "(--max-text-chars): send a shorter text, or the text in several say calls",
                param="text",
                code="string_above_max_length",
            )
        return text, interrupt

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        try:
            return web.json_response({"displays": await self._channels.stop(_name(request))})
        except InvalidArgument as error:
            raise ApiError(400, str(error)) from None
        except NoDisplay as error:
            raise ApiError(404, str(error), code="no_display") from None


def _name(request: web.Request) -> str:
    return request.match_info["name"]
