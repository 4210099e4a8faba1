"""Named display channels (issue 19, point 4): a page on /?channel=lobby speaks what another process POSTs to
/v1/channels/lobby/say, and stops on /v1/channels/lobby/stop; with tokens on, both need a bearer token."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from lipstream.server.security import TokenSet

from tests.test_web_hardening import serving, ws_url

CONFIG = {"type": "config", "video": False, "pacing": "fast"}


async def _utterances(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    """The next `count` finished utterances the page receives."""
    finished: list[dict[str, Any]] = []
    while len(finished) < count:
        raw = await ws.receive(timeout=60)
        assert raw.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), raw
        if raw.type == aiohttp.WSMsgType.TEXT:
            message = json.loads(raw.data)
            if message["type"] == "utterance" and message["kind"] == "finished":
                finished.append(message)
    return finished


async def test_a_post_makes_the_channels_pages_speak_and_stop() -> None:
    async with serving() as web, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(web, "?channel=lobby")) as lobby, \
                http.ws_connect(ws_url(web, "?channel=shop")) as shop:
            await lobby.send_str(json.dumps(CONFIG))
            await shop.send_str(json.dumps(CONFIG))
            for _ in range(100):  # the pages' sessions open as their configs arrive
                if web.channels.displays("lobby") and web.channels.displays("shop"):
                    break
                await asyncio.sleep(0.02)
            say = web.url + "v1/channels/lobby/say"
            async with http.post(say, json={"text": "Welcome to the lobby."}) as response:
                assert response.status == 200 and await response.json() == {"displays": 1}
            assert [u["text"] for u in await _utterances(lobby, 1)] == ["Welcome to the lobby."]
            async with http.post(web.url + "v1/channels/lobby/stop") as response:
                assert response.status == 200 and await response.json() == {"displays": 1}
            async with http.post(say, json={"text": "Again.", "interrupt": True}) as response:
                assert response.status == 200
            assert [u["text"] for u in await _utterances(lobby, 1)] == ["Again."]
            async with http.post(web.url + "v1/channels/hall/say", json={"text": "Hi."}) as response:
                assert response.status == 404
                assert "/?channel=hall" in (await response.json())["error"]["message"]
            async with http.post(say, json={"words": "Hi."}) as response:
                assert response.status == 400
            async with http.post(web.url + "v1/channels/bad%20name/stop") as response:
                assert response.status == 400
        for _ in range(250):  # a page that left is off its channel once the server has seen it go
            if not web.channels.displays("lobby"):
                break
            await asyncio.sleep(0.02)
        assert not web.channels.displays("lobby")


async def test_with_tokens_a_post_needs_one(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("kiosk-token-7\n")
    async with serving(tokens=TokenSet(tmp_path / "tokens")) as web, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(web, "?channel=lobby&token=kiosk-token-7")) as lobby:
            await lobby.send_str(json.dumps(CONFIG))
            for _ in range(100):
                if web.channels.displays("lobby"):
                    break
                await asyncio.sleep(0.02)
            say = web.url + "v1/channels/lobby/say"
            async with http.post(say, json={"text": "Hello."}) as response:
                assert response.status == 401
            headers = {"Authorization": "Bearer kiosk-token-7"}
            async with http.post(say, json={"text": "Hello."}, headers=headers) as response:
                assert response.status == 200
            assert [u["text"] for u in await _utterances(lobby, 1)] == ["Hello."]

