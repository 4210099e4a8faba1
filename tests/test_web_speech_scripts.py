"""The HTTP speech API tells of text in a script the voice cannot read, as gRPC's warning events do (issue
19, point 2): the X-Lipstream-Warning header names the skipped script and the voices that read it, and a
text with nothing readable left is a 400 in OpenAI's shape. Real servers on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import numpy as np
import openai
import pytest
from lipstream.server.engine import Engine
from lipstream.server.options import EngineSettings

from tests.servers import RunningServer, TinyVoice, running_server
from tests.test_web_speech import client, parse_stream_wav

HAN = "你好，欢迎来到博物馆。"
WARNING = "X-Lipstream-Warning"


@pytest.fixture(scope="module")
def two_voices() -> Iterator[RunningServer]:
    """The tiny voice (English, 400 samples a character) and a tiny 'mandarin' one that reads Han."""
    mandarin = TinyVoice("mandarin")
    mandarin.languages = ["zh"]
    engine = Engine(EngineSettings(max_sessions=2), voices={"tiny": TinyVoice("tiny"), "mandarin": mandarin})
    with running_server(engine, web=True) as server:
        yield server


def post(url: str, fields: dict[str, object]) -> tuple[int, dict[str, str], bytes]:
    """POST /v1/audio/speech: (status, headers, body)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(
            "POST", "/v1/audio/speech", json.dumps(fields), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_han_alone_is_a_400_naming_the_script_and_its_readers(two_voices: RunningServer) -> None:
    status, headers, body = post(
        two_voices.web_url, {"model": "tiny", "input": HAN, "response_format": "wav"}
    )
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "unreadable_script",
        "input",
        "invalid_request_error",
    )
    assert "voice 'tiny' cannot read" in error["message"] and "Han (Chinese characters)" in error["message"]
    assert "voices that read Han (Chinese characters): mandarin" in error["message"]


def test_mixed_text_speaks_the_english_and_warns_in_a_header(two_voices: RunningServer) -> None:
    status, headers, body = post(
        two_voices.web_url, {"model": "tiny", "input": f"Hello. {HAN}", "response_format": "wav"}
    )
    assert status == 200, body[:200]
    warning = headers[WARNING]
    assert warning.isascii() and "voice 'tiny' cannot read Han (Chinese characters) text" in warning
    assert "voices that read Han (Chinese characters): mandarin" in warning
    rate, samples = parse_stream_wav(body)
    assert rate == 16000 and len(samples) == 5 * 400  # "Hello" only: the Han was skipped, not spelled out


def test_plain_english_and_a_reading_voice_have_no_warning(two_voices: RunningServer) -> None:
    for fields in ({"model": "tiny", "input": "Hello there."}, {"model": "mandarin", "input": HAN}):
        status, headers, body = post(two_voices.web_url, {**fields, "response_format": "wav"})
        assert status == 200 and WARNING not in headers, (fields, headers)
        assert len(parse_stream_wav(body)[1]) > 0


def test_the_openai_package_on_the_default_english_voice(web_url: str) -> None:
    """The default voice (en_US-joe-medium): the package raises BadRequestError naming the script; mixed text
    streams audio with the header."""
    api = client(web_url)
    with pytest.raises(openai.BadRequestError) as refused:
        api.audio.speech.create(model="tts-1", voice="alloy", input=HAN, response_format="wav")
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "unreadable_script"
    assert "en_US-joe-medium" in body["message"] and "Han (Chinese characters)" in body["message"]
    with api.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=f"Welcome. {HAN}", response_format="wav"
    ) as response:
        assert "cannot read Han (Chinese characters)" in response.headers[WARNING]
        rate, samples = parse_stream_wav(b"".join(response.iter_bytes()))
    assert rate == 22050 and np.abs(samples).max() > 0
