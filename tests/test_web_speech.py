"""OpenAI's speech API on the kiosk port (server/web/speech.py), spoken to by the official `openai` package,
by plain HTTP and by an `<audio>` element in headless Chromium; real servers on 127.0.0.1."""

from __future__ import annotations

import http.client
import io
import json
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import av
import grpc
import numpy as np
import openai
import pytest
from lipstream.server.engine import Engine
from lipstream.server.options import EngineSettings, SessionOptions
from lipstream.server.security import TokenSet
from lipstream.server.web.speech import OPENAI_VOICES, available_formats
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

from tests.servers import (
    RunningServer,
    TinySpeechStream,
    TinyVoice,
    running_server,
    session_threads,
    tiny_engine,
)

TEXT = "Hello from lipstream, speaking through the OpenAI speech API."
DETERMINISTIC = {"noise_scale": 0, "noise_scale_w": 0}
TOKEN = "speech-token-51d0"
LIPSTREAM_FIELDS = ("noise_scale", "noise_scale_w", "sample_rate", "speaker")
"""Beyond OpenAI's fields: the openai package sends them with extra_body."""


def client(base_url: str, api_key: str = "no-key-needed") -> openai.OpenAI:
    # No retries: a refusal is what these tests look at (the package retries 429 and 5xx by default).
    return openai.OpenAI(base_url=base_url + "v1", api_key=api_key, max_retries=0)


def parse_stream_wav(data: bytes) -> tuple[int, np.ndarray]:
    """(rate, int16 samples) of a streamed WAV: OpenAI's header, sizes unknown (0xFFFFFFFF), then PCM16."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and data[36:40] == b"data"
    assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF == struct.unpack("<I", data[40:44])[0]
    tag, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", data[20:36])
    assert (tag, channels, byte_rate, align, bits) == (1, 1, 2 * rate, 2, 16)
    with wave.open(io.BytesIO(data)) as reader:  # the standard library reads it too
        assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (rate, 1, 2)
    return rate, np.frombuffer(data[44:], dtype="<i2")


def synthesize_pcm(grpc_target: str, text: str, sample_rate: int = 0) -> np.ndarray:
    """The same text over gRPC's Synthesize, PCM16, deterministic."""
    config = pb.SessionConfig(audio_format=pb.PCM16, sample_rate=sample_rate, **DETERMINISTIC)
    with grpc.insecure_channel(grpc_target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        chunks = [r.audio.data for r in stub.Synthesize(pb.SynthesizeRequest(text=text, config=config))]
    return np.frombuffer(b"".join(c for c in chunks if c), dtype="<i2")


def speak(base_url: str, **fields: object) -> tuple[bytes, str]:
    """POST /v1/audio/speech through the openai package's streaming response: (body, Content-Type)."""
    extra = {name: fields.pop(name) for name in list(fields) if name in LIPSTREAM_FIELDS}
    arguments: dict[str, object] = {"model": "tts-1", "voice": "alloy", **fields}
    with client(base_url).audio.speech.with_streaming_response.create(
        **arguments,  # type: ignore[arg-type]
        extra_body=extra or None,
    ) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        return b"".join(response.iter_bytes()), response.headers["Content-Type"]


# -- the openai package against the default voice ------------------------------------------------------------
def test_wav_equals_synthesize_of_the_same_text(web_url: str, grpc_target: str) -> None:
    data, content_type = speak(web_url, input=TEXT, response_format="wav", **DETERMINISTIC)
    assert content_type == "audio/wav"
    rate, samples = parse_stream_wav(data)
    assert rate == 22050  # the voice's own rate: nothing resampled
    reference = synthesize_pcm(grpc_target, TEXT)
    assert len(samples) == len(reference) > rate  # over a second of speech
    np.testing.assert_array_equal(samples, reference)


def test_pcm_is_24_khz_like_openais(web_url: str, grpc_target: str) -> None:
    data, content_type = speak(web_url, input=TEXT, response_format="pcm", **DETERMINISTIC)
    assert content_type == "audio/pcm"
    samples = np.frombuffer(data, dtype="<i2").astype(np.float64)
    # The resampler's output depends a little on where the session's chunks fall (its timing): close, not
    # equal, to Synthesize's at the same rate.
    reference = synthesize_pcm(grpc_target, TEXT, sample_rate=24000).astype(np.float64)
    assert abs(len(samples) - len(reference)) <= 2
    n = min(len(samples), len(reference))
    difference = np.sqrt(np.mean((samples[:n] - reference[:n]) ** 2))
    assert difference < 0.02 * np.sqrt(np.mean(reference**2))
    _, at_voice_rate = parse_stream_wav(speak(web_url, input=TEXT, response_format="wav", **DETERMINISTIC)[0])
    assert abs(len(samples) - len(at_voice_rate) * 24000 / 22050) <= 2


def test_models_and_voices_are_listed(web_url: str, lipstream_server: RunningServer) -> None:
    api = client(web_url)
    voice = lipstream_server.engine.default_voice
    ids = [model.id for model in api.models.list()]
    assert ids[:2] == ["lipstream", "tts-1"] and voice in ids
    assert api.models.retrieve("tts-1").owned_by == "lipstream"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("whisper-1")
    listing = api.get("/audio/voices", cast_to=object)
    assert isinstance(listing, dict)
    (entry,) = listing["data"]
    assert entry["id"] == voice and entry["default"] is True and entry["sample_rate"] == 22050
    assert entry["languages"] and listing["openai_voices"] == list(OPENAI_VOICES)
    assert listing["formats"][:2] == ["wav", "pcm"]


# -- the tiny voice: exact lengths, formats, errors ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_server() -> Iterator[RunningServer]:
    """The tiny voice (16 kHz, 400 samples a character, 4000 for the voice 'slow'), two speakers."""
    engine = Engine(
        EngineSettings(max_sessions=2, max_text_chars=6000),
        voices={
            "tiny": tiny_voice("tiny", 400, ["anna", "bert"]),
            "slow": tiny_voice("slow", 4000, []),
        },
    )
    with running_server(engine, web=True) as server:
        yield server


def tiny_voice(name: str, samples_per_char: int, speakers: list[str]) -> TinyVoice:
    return TinyVoice(name, samples_per_char=samples_per_char, speakers=speakers)


def test_speed_model_voice_and_speaker(tiny_server: RunningServer) -> None:
    url = tiny_server.web_url
    for fields, samples in [
        ({}, 5 * 400),
        ({"speed": 2.0}, 5 * 200),
        ({"speed": 0.5}, 5 * 800),
        ({"model": "slow"}, 5 * 4000),
        ({"voice": "slow"}, 5 * 4000),
        ({"model": "tiny", "voice": "bert"}, 5 * 400),
        ({"voice": "shimmer", "speed": 4.0}, 5 * 100),
    ]:
        rate, pcm = parse_stream_wav(speak(url, input="Hello", response_format="wav", **fields)[0])
        assert rate == 16000 and len(pcm) == samples, fields
    pcm = np.frombuffer(speak(url, input="Hello", response_format="pcm", sample_rate=16000)[0], "<i2")
    assert len(pcm) == 5 * 400


@pytest.mark.parametrize("sample_rate", [16000, 30000])  # 30 kHz: no MP3 or AAC rate; the codec resamples
@pytest.mark.parametrize("response_format", [f for f in available_formats() if f not in ("wav", "pcm")])
def test_encoded_formats_decode_to_the_speech(
    tiny_server: RunningServer, response_format: str, sample_rate: int
) -> None:
    text = "Hello there and a good day to all"  # 33 characters: 0.825 s of the tiny voice
    data, content_type = speak(
        tiny_server.web_url, input=text, response_format=response_format, sample_rate=sample_rate
    )
    expected = {
        "mp3": "audio/mpeg",
        "opus": "audio/ogg; codecs=opus",
        "aac": "audio/aac",
        "flac": "audio/flac",
    }
    assert content_type == expected[response_format]
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    seconds = sum(frame.samples for frame in frames) / frames[0].sample_rate
    assert abs(seconds - len(text) * 400 / 16000) < 0.15  # a codec's delay and last frame's padding


def test_the_default_format_is_openais_mp3(tiny_server: RunningServer) -> None:
    if "mp3" not in available_formats():
        pytest.skip("PyAV has no MP3 encoder here")
    data, content_type = speak(tiny_server.web_url, input="Hello")
    assert content_type == "audio/mpeg" and data[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")


@pytest.mark.parametrize(
    ("fields", "error", "param"),
    [
        ({"input": ""}, openai.BadRequestError, "input"),
        ({"input": "hi", "speed": 4.5}, openai.BadRequestError, "speed"),
        ({"input": "hi", "speed": 0.1}, openai.BadRequestError, "speed"),
        ({"input": "hi", "response_format": "aiff"}, openai.BadRequestError, "response_format"),
        ({"input": "hi", "stream_format": "sse"}, openai.BadRequestError, "stream_format"),
        ({"input": "hi", "sample_rate": 100}, openai.BadRequestError, "sample_rate"),
        ({"input": "hi", "model": "tiny", "voice": "slow"}, openai.BadRequestError, "voice"),
        ({"input": "hi", "voice": "nobody"}, openai.NotFoundError, "voice"),
        ({"input": "hi", "model": "gpt-5"}, openai.NotFoundError, "model"),
        ({"input": "hi", "voice": "anna", "model": "slow"}, openai.NotFoundError, "voice"),
    ],
)
def test_bad_requests_get_openais_errors(
    tiny_server: RunningServer, fields: dict[str, object], error: type[openai.APIStatusError], param: str
) -> None:
    with pytest.raises(error) as caught:
        speak(tiny_server.web_url, **fields)
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == param and body["type"] == "invalid_request_error"
    assert len(body["message"]) > 20  # says what to do


def test_a_text_over_the_bound_is_413(tiny_server: RunningServer) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        speak(tiny_server.web_url, input="a" * 6001)
    assert caught.value.status_code == 413
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "string_above_max_length"
    status, body = post_raw(tiny_server.web_url, b'{"input": "' + b"\\u00e9" * 80_000 + b'"}')
    assert status == 413 and "bound" in body["error"]["message"]


def test_the_session_limit_is_429_and_draining_is_503() -> None:
    engine = tiny_engine(EngineSettings(max_sessions=1))
    with running_server(engine, web=True) as server:
        held = server.call(engine.open_session(SessionOptions()))
        with pytest.raises(openai.RateLimitError) as caught:
            speak(server.web_url, input="hi")
        assert caught.value.response.headers["Retry-After"] == "1"
        server.call(held.close())
        server.call(engine.shutdown(0.0))
        with pytest.raises(openai.InternalServerError) as unavailable:
            speak(server.web_url, input="hi")
        assert unavailable.value.status_code == 503


def test_a_client_that_leaves_stops_its_session(tiny_server: RunningServer) -> None:
    # 2,000 characters of the 'slow' voice: 8 M samples, far more than the socket buffers hold.
    host, port = address(tiny_server.web_url)
    connection = http.client.HTTPConnection(host, port, timeout=60)
    body = json.dumps({"input": "la " * 666, "model": "slow", "response_format": "pcm", "sample_rate": 16000})
    connection.request("POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and len(response.read(16000)) == 16000
    assert tiny_server.engine.active_sessions == 1  # streamed: the voice is still speaking
    connection.close()
    for _ in range(200):  # the next write fails, and the session closes
        if tiny_server.engine.active_sessions == 0 and not session_threads():
            break
        time.sleep(0.05)
    assert tiny_server.engine.active_sessions == 0 and not session_threads()


class FailingStream(TinySpeechStream):
    """Its first chunk, then a model error once `fail` is set (a failure in the middle of a reply)."""

    def __init__(self, stream: TinySpeechStream, fail: threading.Event) -> None:
        super().__init__(stream._audio, stream.phonemes, stream.sample_rate, chunk=1000)
        self.fail = fail

    def __iter__(self) -> Iterator[np.ndarray]:
        for index, chunk in enumerate(super().__iter__()):
            if index == 1:
                self.fail.wait(60)
                raise RuntimeError("the model broke")
            yield chunk


class FailingVoice(TinyVoice):
    def __init__(self) -> None:
        super().__init__("failing")
        self.fail = threading.Event()

    def synthesize_stream(self, text: str, **options: Any) -> TinySpeechStream:
        return FailingStream(super().synthesize_stream(text, **options), self.fail)


def test_a_failure_after_the_first_audio_cuts_the_connection() -> None:
    voice = FailingVoice()
    with running_server(Engine(voices={voice.name: voice}), web=True) as server:
        host, port = address(server.web_url)
        connection = http.client.HTTPConnection(host, port, timeout=60)
        body = json.dumps({"input": "a long enough sentence", "response_format": "pcm"})
        connection.request("POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200 and response.read(100)
        voice.fail.set()
        with pytest.raises(http.client.IncompleteRead):
            response.read()  # no last chunk: the client cannot take it for a whole file


def test_get_returns_the_same_wav(tiny_server: RunningServer) -> None:
    url = tiny_server.web_url
    host, port = address(url)
    connection = http.client.HTTPConnection(host, port, timeout=60)
    connection.request("GET", "/v1/audio/speech?input=" + quote("Hello, you!") + "&voice=bert&speed=2")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "audio/wav"
    assert "default-src 'self'" in response.getheader("Content-Security-Policy", "")  # the port's headers
    rate, pcm = parse_stream_wav(response.read())
    posted = parse_stream_wav(
        speak(url, input="Hello, you!", voice="bert", speed=2, response_format="wav")[0]
    )
    assert rate == posted[0] and np.array_equal(pcm, posted[1])


def test_other_sites_are_refused(tiny_server: RunningServer) -> None:
    url = tiny_server.web_url
    status, body = post_raw(url, b'{"input": "hi"}', {"Origin": "http://evil.example"})
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    status, _ = post_raw(url, b'{"input": "hi", "response_format": "wav"}', {"Origin": url.rstrip("/")})
    assert status == 200
    host, port = address(url)
    connection = http.client.HTTPConnection(host, port, timeout=60)
    connection.request("GET", "/v1/audio/speech?input=hi", headers={"Sec-Fetch-Site": "cross-site"})
    assert connection.getresponse().status == 403
    status, _ = post_raw(url, b'{"input": "hi"}', {"Host": "rebind.example"})
    assert status == 421  # the port's DNS rebinding guard


def test_pages_of_allowed_origins_get_cors_answers() -> None:
    kiosk = "http://kiosk.example:3000"
    with running_server(tiny_engine(), web=True, allowed_origins=[kiosk]) as server:
        host, port = address(server.web_url)

        def ask(method: str, path: str, origin: str, body: bytes | None = None) -> http.client.HTTPResponse:
            connection = http.client.HTTPConnection(host, port, timeout=60)
            headers = {"Origin": origin, "Content-Type": "application/json"}
            if method == "OPTIONS":
                headers.update(
                    {
                        "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "authorization",
                    }
                )
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            response.read()
            return response

        preflight = ask("OPTIONS", "/v1/audio/speech", kiosk)
        assert preflight.status == 204 and preflight.getheader("Access-Control-Allow-Origin") == kiosk
        assert "Authorization" in preflight.getheader("Access-Control-Allow-Headers", "")
        spoken = ask("POST", "/v1/audio/speech", kiosk, b'{"input": "hi", "response_format": "pcm"}')
        assert spoken.status == 200 and spoken.getheader("Access-Control-Allow-Origin") == kiosk
        assert spoken.getheader("Access-Control-Expose-Headers") == "X-Sample-Rate, X-Lipstream-Warning"
        listed = ask("GET", "/v1/models", kiosk)
        assert listed.status == 200 and listed.getheader("Access-Control-Allow-Origin") == kiosk
        refused = ask("POST", "/v1/audio/speech", kiosk, b'{"input": ""}')
        assert refused.status == 400 and refused.getheader("Access-Control-Allow-Origin") == kiosk  # readable
        for method in ("OPTIONS", "POST"):
            other = ask(method, "/v1/audio/speech", "http://evil.example", b'{"input": "hi"}')
            assert other.status == 403 and other.getheader("Access-Control-Allow-Origin") is None


def test_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN}\n")
    with running_server(tiny_engine(), web=True, tokens=TokenSet(path)) as server:
        url = server.web_url
        status, body = post_raw(url, b'{"input": "hi"}')
        assert status == 401 and "needs a token" in str(body)
        with pytest.raises(openai.AuthenticationError) as caught:
            with client(url, api_key="wrong").audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input="hi"
            ) as response:
                response.read()
        assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client(url, api_key="wrong").models.list()
        assert [m.id for m in client(url, api_key=TOKEN).models.list()][0] == "lipstream"
        with client(url, api_key=TOKEN).audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="hi", response_format="wav"
        ) as response:
            assert len(parse_stream_wav(response.read())[1]) == 2 * 400
        host, port = address(url)
        connection = http.client.HTTPConnection(host, port, timeout=60)
        connection.request("GET", f"/v1/audio/speech?input=hi&token={TOKEN}")
        assert connection.getresponse().status == 200


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def post_raw(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    host, port = address(url)
    connection = http.client.HTTPConnection(host, port, timeout=60)
    connection.request(
        "POST", "/v1/audio/speech", body, {"Content-Type": "application/json", **(headers or {})}
    )
    response = connection.getresponse()
    data = response.read()
    return response.status, json.loads(data) if response.getheader("Content-Type", "").startswith(
        "application/json"
    ) else {}


def test_the_readme_snippets_run_as_written(web_url: str, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- openai-speech -->")
    section = readme[start : readme.index("\n## ", start)]
    (python,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    (shell,) = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    here = web_url.rstrip("/")
    script = tmp_path / "speak.py"
    script.write_text(python.replace("http://127.0.0.1:8080", here))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    rate, samples = parse_stream_wav((tmp_path / "hello.wav").read_bytes())
    assert len(samples) > rate / 2
    if shutil.which("curl") is None:
        return
    shell = shell.replace("http://127.0.0.1:8080", here)
    result = subprocess.run(["bash", "-ec", shell], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"owned_by": "lipstream"' in result.stdout and '"openai_voices"' in result.stdout
    with av.open(str(tmp_path / "hello.mp3")) as container:
        assert sum(frame.samples for frame in container.decode(audio=0)) > rate / 2


# -- headless Chromium -------------------------------------------------------------------------------------
def test_an_audio_element_plays_the_get_url_to_its_end(web_url: str) -> None:
    from playwright.sync_api import sync_playwright

    from tests.test_web_browser import CHROMIUM, CHROMIUM_ARGS

    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)"
    text = "Hello! This audio comes from a plain GET."
    src = "/v1/audio/speech?input=" + quote(text) + "&noise_scale=0&noise_scale_w=0"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            blocked: list[str] = []
            page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
            page.goto(web_url)
            played = page.evaluate(
                """async (src) => {
                    const audio = new Audio(src);
                    document.body.appendChild(audio);
                    const ended = new Promise((resolve, reject) => {
                        audio.addEventListener('ended', () => resolve());
                        audio.addEventListener('error', () => reject(new Error('audio error ' +
                            (audio.error && audio.error.message))));
                    });
                    await audio.play();
                    await ended;
                    return {duration: audio.duration, currentTime: audio.currentTime, ended: audio.ended};
                }""",
                src,
            )
        finally:
            browser.close()
    assert not blocked
    rate, samples = parse_stream_wav(speak(web_url, input=text, response_format="wav", **DETERMINISTIC)[0])
    assert played["ended"] is True
    assert abs(played["duration"] - len(samples) / rate) < 0.01  # played to its end, every sample
    assert played["currentTime"] == played["duration"]


@pytest.mark.parametrize(("response_format", "header"), [("pcm", "16000"), ("wav", None), ("opus", None)])
def test_x_sample_rate_is_for_pcm_alone(
    tiny_server: RunningServer, response_format: str, header: str | None
) -> None:
    """pcm says its rate nowhere else; a container says its own, and a codec may run at another rate (Opus at
    24 or 48 kHz for 16 kHz speech): a header there could only disagree."""
    if response_format not in available_formats():
        pytest.skip(f"PyAV has no {response_format} encoder here")
    body = {"model": "tts-1", "input": "Hello", "voice": "alloy", "response_format": response_format,
            "sample_rate": 16000}
    host = urlsplit(tiny_server.web_url).netloc
    connection = http.client.HTTPConnection(host, timeout=30)
    connection.request("POST", "/v1/audio/speech", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 200 and response.getheader("X-Sample-Rate") == header
