"""/metrics counts what the kiosk WebSocket sends, as it counts gRPC's (issue 19: it counted gRPC only)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from lipstream.server.web.protocol import parse_binary_message

from tests.servers import running_server_async, tiny_engine
from tests.test_metrics import scrape


async def test_a_websocket_session_moves_audio_frames_and_bytes() -> None:
    async with running_server_async(tiny_engine(), web=True) as server:
        before = await asyncio.to_thread(scrape, server.web_url)
        audio_bytes = frames = 0
        config = {"type": "config", "video": True, "fps": 25, "pacing": "fast"}
        url = server.web_url.replace("http", "ws") + "ws"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            for message in (config, {"type": "text", "text": "Hello from the kiosk."}, {"type": "end"}):
                await ws.send_str(json.dumps(message))
            async for raw in ws:  # bounded: the server closes after the stats
                if raw.type == aiohttp.WSMsgType.BINARY:
                    header, payload = parse_binary_message(raw.data)
                    audio_bytes += len(payload) if header["type"] == "audio" else 0
                    frames += header["type"] == "frame"
        assert audio_bytes > 0 and frames > 0
        after = await asyncio.to_thread(scrape, server.web_url)

    def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert moved("lipstream_audio_seconds_total") > 0
    assert moved("lipstream_frames_total") == frames
    assert moved("lipstream_sent_bytes_total", (("kind", "audio"),)) == audio_bytes
    assert moved("lipstream_sent_bytes_total", (("kind", "video"),)) > 0


async def test_the_speech_api_counts_its_audio_and_the_bytes_it_wrote() -> None:
    body = {"model": "tts-1", "input": "Hello from the API.", "voice": "alloy", "response_format": "pcm"}
    async with running_server_async(tiny_engine(), web=True) as server:
        before = await asyncio.to_thread(scrape, server.web_url)
        async with aiohttp.ClientSession() as http:
            async with http.post(server.web_url + "v1/audio/speech", json=body) as response:
                assert response.status == 200, await response.text()
                pcm = await response.read()
        after = await asyncio.to_thread(scrape, server.web_url)

    def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert len(pcm) > 0
    assert moved("lipstream_sent_bytes_total", (("kind", "audio"),)) == len(pcm)
    assert abs(moved("lipstream_audio_seconds_total") - len(pcm) / 2 / 24_000) < 0.01  # OpenAI's pcm: 24 kHz
