"""Every /v1 route of the kiosk port checks and answers alike (issue 19, "the first ten minutes"): the Origin
and token checks, CORS answers for allowed sites, OpenAI's error shape, 404 naming every route and 405 for
a known path's wrong method, one log line per refusal; the channel say's bounds and unreadable text; the
speech API's field checks. Real WebServers on 127.0.0.1 with the tiny voice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from lipstream.server.engine import Engine
from lipstream.server.options import EngineSettings
from lipstream.server.security import TokenSet
from lipstream.server.web import WebServer

from tests.servers import TinyVoice
from tests.test_web_hardening import serving, ws_url

APP = "http://app.example:3000"
TOKEN = "v1-token-3e9a"
HAN = "你好，欢迎。"


def two_voice_engine(max_text_chars: int = 10_000) -> Engine:
    mandarin = TinyVoice("mandarin")
    mandarin.languages = ["zh"]
    return Engine(
        EngineSettings(max_text_chars=max_text_chars),
        voices={"tiny": TinyVoice("tiny"), "mandarin": mandarin},
    )


@contextlib.asynccontextmanager
async def displays(
    web: WebServer, http: aiohttp.ClientSession, voices: list[str], query: str = ""
) -> AsyncIterator[None]:
    """Pages on channel 'lobby', one per voice, their sessions open."""
    async with contextlib.AsyncExitStack() as stack:
        for voice in voices:
            ws = await stack.enter_async_context(http.ws_connect(ws_url(web, "?channel=lobby" + query)))
            config = {"type": "config", "video": False, "pacing": "fast", "voice": voice}
            await ws.send_str(json.dumps(config))
        for _ in range(200):
            if web.channels.displays("lobby") == len(voices):
                break
            await asyncio.sleep(0.02)
        assert web.channels.displays("lobby") == len(voices)
        yield


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **options: Any
) -> tuple[int, dict[str, str], Any]:
    async with http.request(method, url, **options) as response:
        body = await response.read()
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        return response.status, dict(response.headers), json.loads(body) if is_json else body


async def test_every_v1_route_answers_an_allowed_site_with_cors() -> None:
    async with serving(allowed_origins=[APP]) as web, aiohttp.ClientSession() as http:
        async with displays(web, http, ["tiny"]):
            origin = {"Origin": APP}
            for method, path, body in [
                ("POST", "v1/channels/lobby/say", {"text": "Hello."}),
                ("POST", "v1/channels/lobby/stop", None),
                ("GET", "v1/avatars", None),
                ("GET", "v1/models", None),
            ]:
                status, headers, _ = await call(http, method, web.url + path, json=body, headers=origin)
                assert status == 200 and headers.get("Access-Control-Allow-Origin") == APP, path
            preflight = {**origin, "Access-Control-Request-Method": "POST"}
            say = web.url + "v1/channels/lobby/say"
            status, headers, _ = await call(http, "OPTIONS", say, headers=preflight)
            assert status == 204 and headers["Access-Control-Allow-Origin"] == APP
            assert headers["Access-Control-Allow-Methods"] == "POST"  # the path's own methods
            # OPTIONS with no Origin is not cross-origin: what the path serves, not a refusal.
            status, headers, _ = await call(http, "OPTIONS", say)
            assert status == 204 and headers["Allow"] == "POST"
            status, _, body = await call(http, "OPTIONS", web.url + "v1/nothing/here")
            assert status == 404 and body["error"]["code"] == "unknown_url"
            # A refusal is readable by the page too.
            status, headers, body = await call(http, "POST", web.url + "v1/channels/hall/say",
                                               json={"text": "Hi."}, headers=origin)
            assert status == 404 and headers["Access-Control-Allow-Origin"] == APP
            assert body["error"]["code"] == "no_display"
            status, headers, body = await call(http, "POST", web.url + "v1/channels/lobby/say",
                                               json={"text": "Hi."}, headers={"Origin": "https://evil.example"})
            assert status == 403 and "Access-Control-Allow-Origin" not in headers
            assert "WebSocket" not in body["error"]["message"] and "HTTP API" in body["error"]["message"]


async def test_a_channel_text_over_the_bounds_is_413_saying_what_to_do() -> None:
    async with serving(two_voice_engine(max_text_chars=100)) as web, aiohttp.ClientSession() as http:
        async with displays(web, http, ["tiny"]):
            say = web.url + "v1/channels/lobby/say"
            status, _, body = await call(http, "POST", say, json={"text": "a" * 101})
            assert status == 413 and body["error"]["code"] == "string_above_max_length"
            message = body["error"]["message"]
            assert "bound of 100" in message and "several say calls" in message
            status, _, body = await call(http, "POST", say, data=b'{"text": "' + b"a" * 70_000 + b'"}')
            assert status == 413 and "64 KiB" in body["error"]["message"]


async def test_a_channel_say_refuses_what_no_display_can_read() -> None:
    async with serving(two_voice_engine()) as web, aiohttp.ClientSession() as http:
        say = web.url + "v1/channels/lobby/say"
        async with displays(web, http, ["tiny"]):
            status, _, body = await call(http, "POST", say, json={"text": HAN})
            assert status == 400 and body["error"]["code"] == "unreadable_script"
            assert "voice 'tiny' cannot read" in body["error"]["message"]
            assert "voices that read Han (Chinese characters): mandarin" in body["error"]["message"]
            status, headers, body = await call(http, "POST", say, json={"text": f"Hello. {HAN}"})
            assert status == 200 and body == {"displays": 1}
            assert "voice 'tiny' cannot read Han" in headers["X-Lipstream-Warning"]
            status, _, body = await call(http, "POST", say, json={"text": "..."})
            assert status == 400 and body["error"]["code"] == "empty_input"
        async with displays(web, http, ["tiny", "mandarin"]):  # one display reads it: spoken there
            status, headers, body = await call(http, "POST", say, json={"text": HAN})
            assert status == 200 and body == {"displays": 2}
            assert "voice 'tiny' cannot read Han" in headers["X-Lipstream-Warning"]


async def test_unknown_paths_list_every_route_and_wrong_methods_are_405() -> None:
    async with serving() as web, aiohttp.ClientSession() as http:
        status, _, body = await call(http, "GET", web.url + "v1/nothing")
        assert status == 404 and body["error"]["code"] == "unknown_url"
        for route in ("GET /v1/avatars", "POST /v1/channels/{name}/say", "POST /v1/channels/{name}/stop",
                      "POST /v1/audio/speech", "GET /v1/audio/speech", "GET /v1/models"):
            assert route in body["error"]["message"]
        for method, path, allow in [
            ("GET", "v1/channels/lobby/say", "POST"),
            ("GET", "v1/channels/lobby/stop", "POST"),
            ("POST", "v1/avatars", "GET"),
            ("DELETE", "v1/models/tts-1", "GET"),
            ("PUT", "v1/audio/speech", "GET, POST"),
        ]:
            status, headers, body = await call(http, method, web.url + path)
            assert status == 405 and headers["Allow"] == allow, path
            assert body["error"]["code"] == "method_not_allowed" and "use " in body["error"]["message"]


async def test_tokens_are_checked_alike_on_every_route(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"{TOKEN}\n")
    async with serving(tokens=TokenSet(tmp_path / "tokens")) as web, aiohttp.ClientSession() as http:
        async with displays(web, http, ["tiny"], f"&token={TOKEN}"):
            routes = [("POST", "v1/channels/lobby/stop"), ("GET", "v1/avatars"), ("GET", "v1/models")]
            for method, path in routes:
                status, _, body = await call(http, method, web.url + path)
                assert status == 401 and "needs a token" in body["error"]["message"], path
                wrong = {"Authorization": "Bearer nope"}
                status, _, body = await call(http, method, web.url + path, headers=wrong)
                assert status == 401 and "not one this server accepts" in body["error"]["message"], path
                assert body["error"]["code"] == "invalid_api_key"
                status, _, _ = await call(http, method, web.url + path + f"?token={TOKEN}")
                assert status == 200, path


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"input": 5}, "input", "must be a string"),
        ({"input": "..."}, "input", "nothing to say"),
        ({"input": "hi", "speaker": "nobody"}, "speaker", "not a speaker"),
        ({"input": "hi", "noise_scale": -1}, "noise_scale", "out of range"),
        ({"input": "hi", "noise_scale": "0.3"}, "noise_scale", "must be a number"),
        ({"input": "hi", "speed": "2"}, "speed", "must be a number"),
    ],
)
async def test_speech_fields_are_checked_and_named(fields: dict[str, Any], param: str, words: str) -> None:
    async with serving() as web, aiohttp.ClientSession() as http:
        status, _, body = await call(http, "POST", web.url + "v1/audio/speech", json=fields)
        assert status == 400 and body["error"]["param"] == param and words in body["error"]["message"]


async def test_speech_bounds_and_hosts_say_what_to_do() -> None:
    async with serving(two_voice_engine(max_text_chars=100)) as web, aiohttp.ClientSession() as http:
        big = b'{"input": "' + b"a" * 3_000_000 + b'"}'
        status, _, body = await call(http, "POST", web.url + "v1/audio/speech", data=big)
        assert status == 413 and "send at most 100 characters of input" in body["error"]["message"]
        rebound = {"Host": "rebind.example"}
        status, headers, body = await call(http, "GET", web.url + "v1/models", headers=rebound)
        assert status == 421 and headers["Content-Type"].startswith("application/json")
        assert body["error"]["code"] == "host_not_served"


async def test_each_refusal_is_one_info_line_without_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    (tmp_path / "tokens").write_text(f"{TOKEN}\n")
    async with serving(tokens=TokenSet(tmp_path / "tokens")) as web, aiohttp.ClientSession() as http:
        await call(http, "GET", web.url + "v1/models?token=secret-guess")
        await call(http, "POST", web.url + f"v1/audio/speech?token={TOKEN}", json={"input": 5})
        await call(http, "GET", web.url + "v1/models", headers={"Origin": "https://evil.example"})
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 3, lines
    assert lines[0].startswith("HTTP GET /v1/models refused 401: the token given is not one")
    assert lines[1].startswith("HTTP POST /v1/audio/speech refused 400: 'input' must be a string")
    assert lines[2].startswith("HTTP GET /v1/models refused 403: Origin")
    assert "secret-guess" not in caplog.text and TOKEN not in caplog.text


async def _post_in_pieces(web: WebServer, path: str, pieces: list[bytes], chunked: bool) -> tuple[int, str]:
    """A POST whose body arrives in pieces 0.2 s apart, as over a slow network: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {sum(map(len, pieces))}"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\nContent-Type: application/json\r\n"
    writer.write(f"{head}{length}\r\nConnection: close\r\n\r\n".encode())
    for piece in pieces:
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        await writer.drain()
        await asyncio.sleep(0.2)
    if chunked:
        writer.write(b"0\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode(errors="replace")


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_that_arrives_in_pieces_is_read_whole(chunked: bool) -> None:
    speech = json.dumps({"model": "tts-1", "input": "Hello there.", "voice": "alloy"}).encode()
    say = json.dumps({"text": "Hello there."}).encode()
    async with serving(two_voice_engine()) as web, aiohttp.ClientSession() as http:
        status, body = await _post_in_pieces(web, "/v1/audio/speech", [speech[:20], speech[20:]], chunked)
        assert status == 200, body
        async with displays(web, http, ["tiny"]):
            status, body = await _post_in_pieces(web, "/v1/channels/lobby/say", [say[:9], say[9:]], chunked)
            assert (status, json.loads(body)) == (200, {"displays": 1}), body


async def test_a_chunked_body_over_the_bound_is_413() -> None:
    async with serving(two_voice_engine(max_text_chars=50)) as web:
        big = b'{"text": "' + b"x" * (70 << 10) + b'"}'
        status, body = await _post_in_pieces(web, "/v1/channels/lobby/say", [big[:1000], big[1000:]], True)
        assert status == 413 and "64 KiB" in body, body


async def test_numbers_are_shown_as_typed() -> None:
    async with serving(two_voice_engine()) as web, aiohttp.ClientSession() as http:
        for field, value, shown in [("speed", 10, "speed 10 is"), ("sample_rate", 5, "sample_rate 5 is"),
                                    ("speed", 4.5, "speed 4.5 is")]:
            body = {"model": "tts-1", "input": "Hi.", "voice": "alloy", field: value}
            status, _, answer = await call(http, "POST", web.url + "v1/audio/speech", json=body)
            assert status == 400 and answer["error"]["message"].startswith(shown), answer
