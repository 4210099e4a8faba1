"""The kiosk port against a hostile client: a seeded fuzz of malformed WebSocket messages, the Origin and
Host guards, the security headers, tokens and HTTPS/WSS. Real servers on 127.0.0.1 with the tiny voice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from lipstream.server.engine import Engine
from lipstream.server.options import EngineSettings
from lipstream.server.security import TLSFiles, TokenSet
from lipstream.server.web import WebServer, app
from lipstream.server.web.access import Origin, SiteGuard, parse_host
from lipstream.server.web.protocol import MAX_MESSAGE_CHARS, parse_binary_message

from tests.certs import make_certificates
from tests.servers import tiny_engine

TOKEN = "kiosk-token-7c1f9a"
CONFIG = json.dumps({"type": "config", "video": False, "pacing": "fast"})
Frame = str | bytes | tuple[aiohttp.WSMsgType, bytes]  # a tuple: a raw frame of that opcode


@contextlib.asynccontextmanager
async def serving(engine: Engine | None = None, **options: Any) -> AsyncIterator[WebServer]:
    """A WebServer (the tiny voice by default) on this test's own loop; at the end no session is left open."""
    engine = engine or tiny_engine()
    web = WebServer(engine, "127.0.0.1", 0, **options)
    await web.start()
    try:
        yield web
    finally:
        await web.stop()
        await engine.shutdown(0.0)
        engine.close()
        assert engine.active_sessions == 0


def ws_url(web: WebServer, query: str = "") -> str:
    return web.url.replace("http", "ws", 1) + "ws" + query


async def exchange(
    url: str,
    frames: list[Frame],
    *,
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[list[Any], int | None]:
    """Sends the frames (stopping if the server has gone), then reads until the server's close frame;
    returns the decoded messages and the code in that frame."""
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context else None
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.ws_connect(url, headers=headers, origin=origin, max_msg_size=0) as ws,
    ):
        with contextlib.suppress(ConnectionResetError):
            for frame in frames:
                if isinstance(frame, str):
                    await ws.send_str(frame)
                elif isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_frame(frame[1], frame[0])
        received: list[Any] = []
        while True:
            raw = await ws.receive(timeout=120)
            if raw.type == aiohttp.WSMsgType.TEXT:
                received.append(json.loads(raw.data))
            elif raw.type == aiohttp.WSMsgType.BINARY:
                received.append(parse_binary_message(raw.data))
            elif raw.type == aiohttp.WSMsgType.CLOSE:
                return received, int(raw.data)
            else:
                return received, None


def errors(messages: list[Any]) -> list[dict[str, Any]]:
    return [m for m in messages if isinstance(m, dict) and m.get("type") == "error"]


async def wait_for_no_sessions(web: WebServer) -> None:
    for _ in range(400):
        if web.engine.active_sessions == 0:
            return
        await asyncio.sleep(0.05)
    assert web.engine.active_sessions == 0


# ---- the fuzz -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str
    frames: list[Frame]
    close_code: int = 1008
    """1008 with an error message first; 1009 and 1007 come from the WebSocket layer with none."""


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(n - 1))


def _deep(rng: random.Random) -> Case:
    depth = rng.choice([1_100, 5_000, 30_000])  # under the 1 MiB frame bound
    opener = rng.choice(["[", '{"a":', '{"type": "text", "text": ['])
    body = opener * depth + rng.choice(["", "1" + "]" * depth])
    return Case("deep nesting", [body] if rng.random() < 0.5 else [CONFIG, body])


def _nested_value(rng: random.Random) -> Case:
    depth = rng.randint(2, 400)
    value = "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
    field = rng.choice(['"voice"', '"fps"', '"video"'])
    return Case("nested value", ['{"type": "config", ' + field + ": " + value + "}"])


def _huge_int(rng: random.Random) -> Case:
    digits = _digits(rng, rng.choice([16, 4_301, 5_000, 50_000]))
    sign = rng.choice(["", "-"])
    templates = [
        '{"type": "config", "sample_rate": %s}',
        '{"type": "config", "jpeg_quality": %s}',
        '{"type": "config", "fps": %s}',
        '{"type": "text", "text": "hi", "flush": %s}',
        '{"type": %s}',
        "%s",
        "[%s]",
    ]
    message = rng.choice(templates) % (sign + digits)
    return Case("huge integer", [message] if rng.random() < 0.5 else [CONFIG, message])


def _huge_float(rng: random.Random) -> Case:
    number = rng.choice(
        [
            "1e999",
            "-1e400",
            "1" * 400 + ".5",
            "NaN",
            "Infinity",
            "-Infinity",
            "1.5e308",
            "-4.9e-324",
            "-0." + "0" * 100 + "1",
            "1" * 30 + ".0",
        ]
    )
    field = rng.choice(["fps", "length_scale", "noise_scale", "noise_scale_w", "sample_rate"])
    message = rng.choice([f'{{"type": "config", "{field}": {number}}}', number, f'{{"type": {number}}}'])
    return Case("huge or non-finite number", [message])


_WRONG_VALUES = ['"x"', "1", "2.5", "true", "null", "[]", "{}", '["a"]', '{"b": 1}']


def _wrong_type(rng: random.Random) -> Case:
    if rng.random() < 0.5:
        field = rng.choice(
            [
                "voice",
                "speaker",
                "fps",
                "sample_rate",
                "video",
                "jpeg_quality",
                "visemes",
                "pacing",
                "engine",
                "audio_format",
                "avatar",
            ]
        )
        expected = {
            "voice": '"x"',
            "speaker": '"x"',
            "avatar": '"x"',
            "pacing": '"x"',
            "engine": '"x"',
            "audio_format": '"x"',
            "fps": "2.5",
            "sample_rate": "1",
            "jpeg_quality": "1",
            "video": "true",
            "visemes": "true",
        }[field]
        value = rng.choice(
            [v for v in _WRONG_VALUES if v != expected and not (expected == "2.5" and v == "1")]
        )
        if field == "fps" and value == "null":
            value = '"x"'
        return Case("wrong type", [f'{{"type": "config", "{field}": {value}}}'])
    text = rng.choice([v for v in _WRONG_VALUES if v != '"x"'])
    flush = rng.choice(['"yes"', "1", "null", "[]"])
    message = rng.choice(
        [f'{{"type": "text", "text": {text}}}', f'{{"type": "text", "text": "a", "flush": {flush}}}']
    )
    return Case("wrong type", [CONFIG, message])


def _unknown_type(rng: random.Random) -> Case:
    kind = rng.choice(['"shout"', '"CONFIG"', '""', "1", "null", "[]", "{}", '"' + "t" * 5000 + '"'])
    message = rng.choice([f'{{"type": {kind}}}', '{"text": "hi"}', "{}"])
    return Case("unknown type", [message] if rng.random() < 0.5 else [CONFIG, message])


def _unknown_keys(rng: random.Random) -> Case:
    keys = {"k" * rng.choice([1, 100, 10_000]) + str(i): i for i in range(rng.choice([1, 3, 50]))}
    message = json.dumps({"type": rng.choice(["config", "interrupt", "end"]), **keys})
    return Case("unknown keys", [message] if message.startswith('{"type": "config"') else [CONFIG, message])


def _binary(rng: random.Random) -> Case:
    data = rng.randbytes(rng.choice([0, 1, 100, 5_000]))
    return Case("binary frame", [data] if rng.random() < 0.5 else [CONFIG, data])


def _oversize(rng: random.Random) -> Case:
    text = "a" * rng.randint(MAX_MESSAGE_CHARS, 3 * MAX_MESSAGE_CHARS)
    return Case("oversize", [CONFIG, json.dumps({"type": "text", "text": text})])


def _after_end(rng: random.Random) -> Case:
    late = rng.choice(
        [
            json.dumps({"type": "text", "text": "too late"}),
            '{"type": "interrupt"}',
            '{"type": "end"}',
            CONFIG,
            "not json",
        ]
    )
    spoken = [json.dumps({"type": "text", "text": "Hi."})] if rng.random() < 0.5 else []
    return Case("after end", [CONFIG, *spoken, '{"type": "end"}', late])


def _config_twice(rng: random.Random) -> Case:
    return Case("config twice", [CONFIG, rng.choice([CONFIG, '{"type": "config"}'])])


def _before_config(rng: random.Random) -> Case:
    first = rng.choice(
        [json.dumps({"type": "text", "text": "hi"}), '{"type": "interrupt"}', '{"type": "end"}']
    )
    return Case("before config", [first, CONFIG])


def _not_json(rng: random.Random) -> Case:
    garbage = "".join(rng.choice("{}[]:,\"'abc01 \\\n\t") for _ in range(rng.randint(0, 60)))
    message = rng.choice(
        [garbage, "", " ", "[1, 2]", '"text"', "null", "true", '{"type": "text"', "{'type': 1}"]
    )
    return Case("not JSON or not an object", [message] if rng.random() < 0.5 else [CONFIG, message])


def _surrogate(rng: random.Random) -> Case:
    message = rng.choice(
        [
            '{"type": "text", "text": "a\\ud800b"}',
            '{"type": "config", "voice": "\\udfff"}',
            '{"type": "end", "\\ud83d": 1}',
            '{"type": "\\ud800"}',
        ]
    )
    return Case("unpaired surrogate", [CONFIG, message] if '"text"' in message else [message])


def _out_of_range(rng: random.Random) -> Case:
    field, value = rng.choice(
        [
            ("fps", 0.5),
            ("fps", 1e300),
            ("jpeg_quality", 101),
            ("sample_rate", 10**14),
            ("length_scale", -1),
            ("noise_scale", 3),
        ]
    )
    return Case("out of range", [json.dumps({"type": "config", field: value})])


_CLASSES: list[Callable[[random.Random], Case]] = [
    _deep,
    _nested_value,
    _huge_int,
    _huge_float,
    _wrong_type,
    _unknown_type,
    _unknown_keys,
    _binary,
    _oversize,
    _after_end,
    _config_twice,
    _before_config,
    _not_json,
    _surrogate,
    _out_of_range,
]


def fuzz_cases(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    cases = [_CLASSES[i % len(_CLASSES)](rng) for i in range(count)]
    # The WebSocket layer's own refusals, with no error message of ours before them.
    cases.append(Case("frame over 1 MiB", [CONFIG, "a" * (1 << 20) + "a"], close_code=1009))
    cases.append(Case("text frame not UTF-8", [(aiohttp.WSMsgType.TEXT, b"\xff\xfe{")], close_code=1007))
    return cases


async def test_every_malformed_message_gets_an_error_and_a_policy_close() -> None:
    cases = fuzz_cases(seed=14, count=240)
    assert {case.kind for case in cases} >= {"deep nesting", "huge integer", "after end", "oversize"}
    async with serving() as web:
        gate = asyncio.Semaphore(8)  # under the engine's 16 sessions

        async def run(case: Case) -> tuple[Case, list[Any], int | None]:
            async with gate:
                messages, close_code = await exchange(ws_url(web), case.frames)
                return case, messages, close_code

        results = await asyncio.gather(*(run(case) for case in cases))
        for case, messages, close_code in results:
            label = f"{case.kind}: {str(case.frames[-1])[:80]!r}"
            assert close_code == case.close_code, f"{label} closed {close_code}: {messages[-3:]}"
            if case.close_code == 1008:
                (error,) = errors(messages)
                assert messages[-1] is error, label
                assert error["code"] == "invalid_argument", label
                assert 10 < len(error["message"]) < 1_000, f"{label}: {error['message'][:200]}"
        await wait_for_no_sessions(web)

        # The server is alive and serves a session to its end.
        messages, close_code = await exchange(
            ws_url(web), [CONFIG, json.dumps({"type": "text", "text": "Still here."}), '{"type": "end"}']
        )
        assert close_code == 1000 and messages[0]["type"] == "started" and messages[-1]["type"] == "stats"
        await wait_for_no_sessions(web)


@pytest.mark.parametrize(
    ("frames", "says"),
    [
        (["[" * 100_000], "too deeply"),
        (['{"type": "config", "sample_rate": ' + "9" * 5_000 + "}"], "has 5000 digits"),
        (['{"type": "config", "fps": 1e999}'], "too large for a double"),
        (['{"type": "config", "fps": NaN}'], "NaN is not a number the server takes"),
        ([CONFIG, '{"type": "end"}', '{"type": "text", "text": "more"}'], "nothing may follow 'end'"),
        ([CONFIG, "x" * (MAX_MESSAGE_CHARS + 1)], "send long text in several 'text' messages"),
        ([CONFIG, b"\x00"], "JSON text messages only"),
        (['{"type": "config", "voice": "' + "v" * 10_000 + '", "colour": 1}'], "['colour'] are unknown"),
        (['{"type": "config", "voice": "' + "v" * 10_000 + '"}'], "voice 'vvvv"),
    ],
)
async def test_refusals_say_what_to_do_and_stay_short(frames: list[Frame], says: str) -> None:
    async with serving() as web:
        messages, close_code = await exchange(ws_url(web), frames)
        assert close_code == 1008
        (error,) = errors(messages)
        assert says in error["message"] and len(error["message"]) < 1_000


async def test_no_config_in_time_closes_the_socket() -> None:
    assert EngineSettings().config_timeout_s == 10.0  # the same setting as gRPC's
    async with serving(tiny_engine(EngineSettings(config_timeout_s=0.2))) as web:
        messages, close_code = await exchange(ws_url(web), [])
        assert close_code == 1008 and "no config message within 0.2 s" in errors(messages)[0]["message"]


# ---- Origin and Host ----------------------------------------------------------------------------------


async def _handshake_status(url: str, **options: Any) -> int:
    """101 when the WebSocket opens (it is then closed), else the HTTP status of the refusal."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, **options):
                return 101
        except aiohttp.WSServerHandshakeError as error:
            return error.status


async def test_the_websocket_takes_the_pages_own_origin_only() -> None:
    async with serving() as web:
        own = web.url.rstrip("/")
        messages, close_code = await exchange(ws_url(web), [CONFIG, '{"type": "end"}'], origin=own)
        assert close_code == 1000 and messages[0]["type"] == "started"
        localhost = {"Host": f"localhost:{web.port}"}
        assert (
            await _handshake_status(ws_url(web), origin=f"http://localhost:{web.port}", headers=localhost)
            == 101
        )
        assert await _handshake_status(ws_url(web)) == 101  # no Origin: not a browser
        for foreign in (
            "http://evil.example",
            f"http://127.0.0.1:{web.port + 1}",
            f"https://127.0.0.1:{web.port}",
            "null",
            f"http://localhost:{web.port}",
        ):
            assert await _handshake_status(ws_url(web), origin=foreign) == 403, foreign
        assert web.engine.active_sessions == 0
        foreign = {"Origin": "http://evil.example"}
        async with aiohttp.ClientSession() as http, http.get(web.url + "ws", headers=foreign) as refused:
            assert refused.status == 403
            assert "--web-allowed-origin http://evil.example" in await refused.text()


async def test_allowed_origins_widen_the_origin_and_host_checks() -> None:
    async with serving(allowed_origins=["https://kiosk.example.com", "http://10.0.0.5:3000"]) as web:
        assert await _handshake_status(ws_url(web), origin="https://kiosk.example.com") == 101
        assert await _handshake_status(ws_url(web), origin="https://KIOSK.example.com:443/") == 101
        assert await _handshake_status(ws_url(web), origin="http://10.0.0.5:3000") == 101
        assert await _handshake_status(ws_url(web), origin="http://kiosk.example.com") == 403
        # Behind a proxy the allowed origin's host is a served name.
        async with (
            aiohttp.ClientSession() as http,
            http.get(web.url, headers={"Host": "kiosk.example.com"}) as page,
        ):
            assert page.status == 200


@pytest.mark.parametrize("path", ["", "static/app.js", "ws", "static/nothing"])
async def test_a_rebinding_host_is_refused_on_every_route(path: str) -> None:
    async with serving() as web:
        async with aiohttp.ClientSession() as http:
            for host in (f"evil.example:{web.port}", "attacker.localhost.evil.example", "bad host", "a@b"):
                async with http.get(web.url + path, headers={"Host": host}) as response:
                    assert response.status == 421, host
                    assert "open it by its IP address" in await response.text() or "not a host name" in (
                        await response.text()
                    )
            for host in (
                f"127.0.0.1:{web.port}",
                f"localhost:{web.port}",
                f"[::1]:{web.port}",
                "192.168.1.20",
                "LOCALHOST.",
            ):
                async with http.get(web.url, headers={"Host": host}) as response:
                    assert response.status == 200, host
            async with http.get(web.url + "healthz", headers={"Host": "lb-probe.internal"}) as health:
                assert health.status == 200 and await health.text() == "ok"


def test_the_guard_knows_the_served_names() -> None:
    guard = SiteGuard("kiosk.lan", "http", ["https://display.example.org:8443"])
    assert guard.names == {"localhost", "kiosk.lan", "display.example.org"}
    assert guard.host_refusal("kiosk.lan:8080") is None and guard.host_refusal("10.1.2.3") is None
    assert guard.host_refusal("evil.example") is not None
    assert SiteGuard("0.0.0.0", "http").names == {"localhost"}
    assert guard.origin_refusal("https://display.example.org:8443", "kiosk.lan:8080") is None
    assert guard.origin_refusal("http://kiosk.lan:8080", "kiosk.lan:8080") is None
    assert guard.origin_refusal("http://kiosk.lan", "kiosk.lan:8080") is not None
    assert parse_host("[::1]:8080") == ("::1", 8080) and parse_host("x:99999") is None
    assert str(Origin.parse("HTTPS://Example.com:443")) == "https://example.com"
    with pytest.raises(ValueError, match="--web-allowed-origin 'example.com' is not an origin"):
        SiteGuard("127.0.0.1", "http", ["example.com"])
    for bad in ("ftp://x", "https://x/path", "https://user@x", "https://x?q=1", "https://x:99999"):
        with pytest.raises(ValueError, match="is not an origin"):
            Origin.parse(bad)


# ---- headers ------------------------------------------------------------------------------------------


async def test_security_headers_on_the_page_and_its_files() -> None:
    async with serving() as web, aiohttp.ClientSession() as http:
        for path in ("", "static/app.js", "static/style.css", "static/missing.js"):
            async with http.get(web.url + path) as response:
                headers = response.headers
                assert response.status == (404 if "missing" in path else 200)
                csp = headers["Content-Security-Policy"]
                for directive in (
                    "default-src 'self'",
                    "frame-ancestors 'none'",
                    "object-src 'none'",
                    f"connect-src 'self' ws://127.0.0.1:{web.port}",
                    "img-src 'self' data: blob:",
                    "media-src 'self' data: blob:",
                ):
                    assert directive in csp, (path, csp)
                assert headers["X-Frame-Options"] == "DENY"
                assert headers["X-Content-Type-Options"] == "nosniff"
                assert headers["Referrer-Policy"] == "no-referrer"


async def test_a_grpc_client_on_the_web_port_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    """HTTP/2's preface (what a gRPC client sends first) gets a 400 and an INFO line, not aiohttp's ERROR
    with a traceback."""
    caplog.set_level(logging.INFO)
    async with serving() as web:
        reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(200), 10)
        writer.close()
    assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "Traceback" not in caplog.text
    assert "a gRPC client should use the gRPC port" in caplog.text


# ---- tokens -------------------------------------------------------------------------------------------


@pytest.fixture
def tokens(tmp_path: Path) -> TokenSet:
    path = tmp_path / "tokens"
    path.write_text(f"# the kiosk\n{TOKEN}\nanother-token\n")
    return TokenSet(path)


async def test_the_websocket_needs_a_token(tokens: TokenSet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(tokens=tokens) as web:
        for query, headers, says in (
            ("", None, "this server needs a token"),
            ("?token=wrong", None, "not one this server accepts"),
            ("", {"Authorization": "Bearer wrong"}, "not one this server accepts"),
            ("", {"Authorization": f"Basic {TOKEN}"}, "this server needs a token"),
        ):
            messages, close_code = await exchange(ws_url(web, query), [CONFIG], headers=headers)
            assert close_code == 1008, query
            (error,) = messages
            assert error["type"] == "error" and error["code"] == "unauthenticated"
            assert says in error["message"] and "/?token=YOUR_TOKEN" in error["message"]
        assert web.engine.sessions_opened == 0

        talk = [CONFIG, json.dumps({"type": "text", "text": "Hi."}), '{"type": "end"}']
        for query, headers in ((f"?token={TOKEN}", None), ("", {"Authorization": f"Bearer {TOKEN}"})):
            messages, close_code = await exchange(ws_url(web, query), talk, headers=headers)
            assert close_code == 1000 and messages[0]["type"] == "started" and messages[-1]["type"] == "stats"

        # The page holds no secret and is served without a token; so is the health check.
        async with aiohttp.ClientSession() as http:
            for path in ("", f"?token={TOKEN}", "healthz"):
                async with http.get(web.url + path) as response:
                    assert response.status == 200
    assert TOKEN not in caplog.text
    assert not [record for record in caplog.records if record.name == "aiohttp.access"]


def test_the_page_passes_its_token_on_to_the_websocket() -> None:
    script = (Path(app.STATIC_DIR) / "app.js").read_text()
    # Behaviour: test_web_browser's HTTPS test connects over WSS with the page's ?token= only.
    assert 'for (const key of ["token", "channel"])' in script and "query.set(key, params.get(key))" in script
    assert '(location.protocol === "https:" ? "wss://" : "ws://")' in script


# ---- HTTPS / WSS --------------------------------------------------------------------------------------


async def test_https_and_wss_with_a_certificate_made_here(tmp_path: Path, tokens: TokenSet) -> None:
    certificates = make_certificates(tmp_path)
    server_context = TLSFiles(certificates.server_cert, certificates.server_key).ssl_context()
    client_context = ssl.create_default_context(cafile=str(certificates.ca))
    async with serving(ssl_context=server_context, tokens=tokens) as web:
        assert web.url == f"https://127.0.0.1:{web.port}/"
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context)) as http,
            http.get(web.url) as page,
        ):
            assert page.status == 200 and "<canvas" in await page.text()
            assert f"connect-src 'self' wss://127.0.0.1:{web.port}" in page.headers["Content-Security-Policy"]
        url = web.url.replace("https", "wss", 1) + f"ws?token={TOKEN}"
        messages, close_code = await exchange(
            url,
            [CONFIG, json.dumps({"type": "text", "text": "Hi."}), '{"type": "end"}'],
            origin=web.url.rstrip("/"),
            ssl_context=client_context,
        )
        assert close_code == 1000 and messages[0]["type"] == "started" and messages[-1]["type"] == "stats"
        # A page served over HTTPS is another origin than the same host over HTTP.
        status = await _handshake_status(url, origin=f"http://127.0.0.1:{web.port}", ssl=client_context)
        assert status == 403
