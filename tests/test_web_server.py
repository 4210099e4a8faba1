"""The kiosk WebSocket bridge over a real socket: conftest's session server (default voice and avatar)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from lipstream.server.web import WebServer
from lipstream.server.web.protocol import parse_binary_message

from tests.servers import RunningServer, running_server_async, tiny_engine


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def _converse(url: str, messages: list[dict[str, Any]]) -> tuple[list[Any], int | None]:
    """Sends the messages, then reads until the server closes; returns the decoded messages and close code."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url.replace("http", "ws") + "ws") as ws:
        for message in messages:
            await ws.send_str(json.dumps(message))
        return await _read_to_close(ws)


async def _read_to_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[Any], int | None]:
    """The messages until the server's close frame, and the code in that frame. (The client's own
    `close_code` can read 1006 when the server drops the connection right after the handshake.)"""
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


async def test_a_session_streams_audio_frames_and_events_on_one_clock(web_url: str) -> None:
    config = {"type": "config", "video": True, "fps": 25, "pacing": "fast", "visemes": True}
    messages, close_code = await _converse(
        web_url, [config, {"type": "text", "text": "Hello from the kiosk."}, {"type": "end"}]
    )
    assert close_code == 1000
    started, stats = messages[0], messages[-1]
    assert started["type"] == "started" and started["engine"] == "viseme" and started["fps"] == 25
    assert started["options"]["video"] is True and started["options"]["voice"] == "en_US-joe-medium"
    assert stats["type"] == "stats" and stats["utterances"] == 1 and stats["interrupted"] == 0

    audio = [(h, p) for h, p in (m for m in messages if isinstance(m, tuple)) if h["type"] == "audio"]
    frames = [(h, p) for h, p in (m for m in messages if isinstance(m, tuple)) if h["type"] == "frame"]
    utterances = [m for m in messages if isinstance(m, dict) and m["type"] == "utterance"]
    visemes = [m for m in messages if isinstance(m, dict) and m["type"] == "viseme"]
    assert [u["kind"] for u in utterances] == ["started", "finished"]
    finished = utterances[-1]
    rate = started["sample_rate"]

    # The audio chunks are complete WAV files that tile the utterance's samples with no gap.
    position = finished["start_sample"]
    for header, payload in audio:
        assert payload[:4] == b"RIFF" and payload[8:12] == b"WAVE"
        assert header["start_sample"] == position and header["sample_rate"] == rate
        assert len(payload) == 44 + 2 * header["num_samples"]
        position += header["num_samples"]
    assert position == finished["end_sample"] > finished["start_sample"]

    # Frames are JPEGs, numbered on the same clock, covering the speech.
    indices = [h["frame_index"] for h, _ in frames]
    assert indices == list(range(indices[0], indices[0] + len(indices)))
    for header, payload in frames:
        assert payload[:2] == b"\xff\xd8" and payload[-2:] == b"\xff\xd9"
        assert header["pts"] == pytest.approx(header["frame_index"] / 25)
        assert (header["width"], header["height"]) == (started["frame_width"], started["frame_height"])
    seconds = (finished["end_sample"] - finished["start_sample"]) / rate
    assert len(frames) >= int(seconds * 25)
    assert any(h["speaking"] for h, _ in frames)
    assert visemes
    assert all(finished["start_sample"] <= v["start_sample"] < finished["end_sample"] for v in visemes)


@pytest.mark.parametrize(
    ("first", "says"),
    [
        ({"type": "text", "text": "hi"}, "the first message must be {\"type\": \"config\""),
        ({"type": "config", "voice": "nobody"}, "voice 'nobody' is unknown"),
        ({"type": "config", "jpeg_quality": 0}, "jpeg_quality 0 is out of range"),
        ({"type": "config", "video": "yes"}, "video = 'yes' has the wrong type"),
    ],
)
async def test_a_bad_first_message_gets_an_error_and_a_close(
    lipstream_server: RunningServer, web_url: str, first: dict[str, Any], says: str
) -> None:
    messages, close_code = await _converse(web_url, [first])
    assert close_code == 1008
    assert len(messages) == 1 and messages[0]["type"] == "error" and messages[0]["code"] == "invalid_argument"
    assert says in messages[0]["message"]
    assert lipstream_server.engine.active_sessions == 0


async def test_closing_the_socket_closes_the_session(lipstream_server: RunningServer, web_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(web_url + "ws") as ws:
        await ws.send_str(json.dumps({"type": "config", "video": True, "pacing": "realtime"}))
        await ws.send_str(json.dumps({"type": "text", "text": "A sentence that is cut off.", "flush": True}))
        first = await ws.receive_json(timeout=60)
        assert first["type"] == "started"
        assert lipstream_server.engine.active_sessions == 1
    # The bridge closes the session when the page goes; the engine forgets it.
    for _ in range(200):
        if lipstream_server.engine.active_sessions == 0:
            break
        await asyncio.sleep(0.05)
    assert lipstream_server.engine.active_sessions == 0


async def test_the_page_and_its_files_are_served(web_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(web_url) as page:
            html = await page.text()
            assert page.status == 200 and "<canvas" in html
        for path in ("static/app.js", "static/style.css"):
            async with http.get(web_url + path) as asset:
                assert asset.status == 200
        async with http.get(web_url + "static/../app.py") as escape:
            assert escape.status in (403, 404)
    # Nothing is fetched from the internet: every src/href is local.
    for attribute in ("src=\"http", "href=\"http", "//cdn", "https://"):
        assert attribute not in html


def test_a_taken_port_says_how_to_fix_it(lipstream_server: RunningServer, web_url: str) -> None:
    port = _port(web_url)
    clash = WebServer(lipstream_server.engine, "127.0.0.1", port)
    with pytest.raises(OSError, match=f"cannot listen for the kiosk page on 127.0.0.1:{port}"):
        lipstream_server.call(clash.start())


def test_port_before_start_is_an_error(lipstream_server: RunningServer) -> None:
    with pytest.raises(RuntimeError, match="after start"):
        _ = WebServer(lipstream_server.engine, "127.0.0.1", 0).port




def test_the_readme_snippet_runs_as_written(web_url: str, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("<!-- web -->") : readme.index("\n## ", readme.index("<!-- web -->"))]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert "ws://127.0.0.1:8080/ws" in snippet
    script = tmp_path / "kiosk_socket.py"
    script.write_text(snippet.replace("ws://127.0.0.1:8080/ws", web_url.replace("http", "ws") + "ws"))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith('{"type": "started"')
    assert any("'type': 'audio'" in line for line in lines)
    assert any("'type': 'frame'" in line for line in lines)
    assert lines[-1].startswith('{"type": "stats"')


async def test_a_server_shutdown_tells_the_page_to_come_back() -> None:
    async with running_server_async(engine=tiny_engine(), web=True) as server:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.web_url + "ws") as ws:
            await ws.send_str(json.dumps({"type": "config", "video": True, "pacing": "realtime"}))
            assert (await ws.receive_json(timeout=60))["type"] == "started"
            await asyncio.to_thread(server.call, server.engine.shutdown(0.0))
            messages, close_code = await _read_to_close(ws)
            last = messages[-1]
            assert last["type"] == "error" and last["code"] == "unavailable"
            assert close_code == 1001
        # A new page is turned away until the server is back.
        messages, close_code = await _converse(server.web_url, [{"type": "config"}])
        assert messages[-1]["code"] == "unavailable" and close_code == 1013
