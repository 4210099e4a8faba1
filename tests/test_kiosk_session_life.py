"""A kiosk page's session lives as a kiosk needs (newcomer pass, issue 19): a text refused for its size is a
warning and the session goes on (what was sent before is still spoken); a page on a display channel is not
ended by the idle timeout (it waits for a say by design); every WebSocket refusal is one INFO line; a
session's end line names how it ended and leaves out figures never measured; the page's scripts are
revalidated after an upgrade; /ws opened as a page says what it is. Real WebServers on 127.0.0.1 with the
tiny voice."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest
from lipstream.server.options import EngineSettings

from tests.servers import tiny_engine
from tests.test_web_hardening import serving, wait_for_no_sessions, ws_url

NINE_WORDS = " ".join(["alpha"] * 9)  # 53 characters, no punctuation: it waits in the segmenter


async def _messages(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[dict[str, Any]], int | None]:
    """The JSON messages up to the server's close, and its close code."""
    received = []
    for _ in range(10_000):
        raw = await ws.receive(timeout=60)
        if raw.type == aiohttp.WSMsgType.TEXT:
            received.append(json.loads(raw.data))
        elif raw.type != aiohttp.WSMsgType.BINARY:
            return received, ws.close_code
    raise AssertionError("the session did not end")


async def test_a_text_over_the_waiting_bound_is_refused_alone(caplog: pytest.LogCaptureFixture) -> None:
    engine = tiny_engine(EngineSettings(max_text_chars=60))
    async with serving(engine) as web, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(web)) as ws:
            with caplog.at_level(logging.INFO, logger="lipstream.server.web.app"):
                for message in (
                    {"type": "config", "video": False, "pacing": "fast"},
                    {"type": "text", "text": NINE_WORDS},
                    {"type": "text", "text": " and twenty more chars"},  # 53 + 22 waiting: over 60
                    {"type": "end"},
                ):
                    await ws.send_str(json.dumps(message))
                received, code = await _messages(ws)
    warnings = [m for m in received if m["type"] == "warning"]
    assert [w["code"] for w in warnings] == ["text_refused"], received
    assert "75 characters would be waiting to be spoken, over the bound of 60" in warnings[0]["message"]
    finished = [m["text"] for m in received if m["type"] == "utterance" and m["kind"] == "finished"]
    assert finished == [NINE_WORDS]  # the text sent before is spoken all the same
    assert received[-1]["type"] == "stats" and code == 1000
    assert not [m for m in received if m["type"] == "error"]
    assert any("a text refused: 75 characters" in r.getMessage() for r in caplog.records)


async def test_a_page_on_a_channel_outlives_the_idle_timeout() -> None:
    engine = tiny_engine(EngineSettings(idle_timeout_s=0.5))
    config = json.dumps({"type": "config", "video": False, "pacing": "realtime"})
    async with serving(engine) as web, aiohttp.ClientSession() as http:
        async with (
            http.ws_connect(ws_url(web, "?channel=lobby")) as on_channel,
            http.ws_connect(ws_url(web)) as alone,
        ):
            await on_channel.send_str(config)
            await alone.send_str(config)
            alone_messages, _ = await _messages(alone)  # ended by the idle timeout after 0.5 s
            assert alone_messages[-1]["type"] == "stats"
            await asyncio.sleep(1.0)  # twice the idle timeout more
            assert web.channels.displays("lobby") == 1 and not on_channel.closed
            await on_channel.send_str(json.dumps({"type": "end"}))
            messages, code = await _messages(on_channel)
            assert messages[-1]["type"] == "stats" and code == 1000
        await wait_for_no_sessions(web)


async def test_websocket_refusals_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with serving() as web, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(web)) as ws:
            with caplog.at_level(logging.INFO, logger="lipstream.server.web.app"):
                await ws.send_str(json.dumps({"type": "config", "fps": 500}))
                received, code = await _messages(ws)
    assert received[-1]["type"] == "error" and code == 1008
    lines = [r.getMessage() for r in caplog.records if "kiosk WebSocket closed with" in r.getMessage()]
    assert lines == [f"kiosk WebSocket closed with invalid_argument: {received[-1]['message']}"]


def test_a_session_end_line_names_how_it_ended(caplog: pytest.LogCaptureFixture) -> None:
    from lipstream.client import Client
    from lipstream.client.errors import InvalidArgumentError

    from tests.servers import running_server

    with caplog.at_level(logging.INFO, logger="lipstream.server.session"):
        with running_server(tiny_engine()) as server, Client(server.target) as client:
            with pytest.raises(InvalidArgumentError):
                list(client.synthesize("你好，欢迎。", timeout=30))
            list(client.synthesize("Hello there.", timeout=30))
        ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("session ")]
    refused = [line for line in ends if " refused: " in line]
    finished = [line for line in ends if " finished: " in line]
    assert len(refused) == 1 and len(finished) == 1, ends
    assert "first_audio" not in refused[0] and "tts_rtf" not in refused[0]  # nothing was said: no figure
    assert "first_audio=" in finished[0] and "first_audio=0.000s" not in finished[0]


async def test_static_files_are_revalidated_and_ws_as_a_page_says_what_it_is() -> None:
    async with serving() as web, aiohttp.ClientSession() as http:
        async with http.get(web.url + "static/app.js") as response:
            assert response.status == 200 and response.headers["Cache-Control"] == "no-cache"
        async with http.get(web.url + "ws") as response:
            assert response.status == 426
            assert "open / in a browser" in await response.text()
