"""The exact protos and call options the client sends, checked with a small in-test fake servicer
(riva-style). The behaviour against the real server is in test_client.py."""

from __future__ import annotations

import itertools
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from lipstream.client import (
    AsyncClient,
    AudioChunk,
    AudioClip,
    Client,
    InvalidArgumentError,
    LipStreamError,
    ResourceExhaustedError,
    SessionStarted,
    SessionStats,
    UtteranceEvent,
    VideoConfig,
    wav_bytes,
)
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

SAMPLE_RATE = 16000


class FakeServicer(lipstream_pb2_grpc.LipStreamServicer):
    """Records every request and its metadata; answers each text with one short WAV chunk."""

    def __init__(self) -> None:
        self.requests: list[pb.ConverseRequest | pb.SynthesizeRequest] = []
        self.metadata: list[tuple[str, str]] = []
        self.time_remaining: float | None = None
        self.abort_with: tuple[grpc.StatusCode, str] | None = None
        self.lock = threading.Lock()

    def _record_call(self, context: grpc.ServicerContext) -> None:
        self.metadata = [(m.key, m.value) for m in context.invocation_metadata()]
        self.time_remaining = context.time_remaining()
        if self.abort_with is not None:
            context.abort(*self.abort_with)

    @staticmethod
    def _audio(start: int, n: int) -> pb.ConverseResponse:
        clip = AudioClip(np.full(n, 0.25, dtype=np.float32), SAMPLE_RATE)
        return pb.ConverseResponse(
            audio=pb.AudioChunk(
                data=wav_bytes(clip), start_sample=start, num_samples=n, sample_rate=SAMPLE_RATE
            )
        )

    def Converse(self, request_iterator, context):  # noqa: N802 (grpc's name)
        # Like the real server, judge the call by its config: aborting before the client's first write has
        # landed makes grpc.aio report INTERNAL instead of the status (grpc/grpc#36066).
        first = next(request_iterator, None)
        self._record_call(context)
        clock = 0
        for request in itertools.chain([first] if first is not None else [], request_iterator):
            with self.lock:
                self.requests.append(request)
            kind = request.WhichOneof("request")
            if kind == "config":
                yield pb.ConverseResponse(
                    started=pb.SessionStarted(session_id="s1", config=request.config, sample_rate=SAMPLE_RATE)
                )
            elif kind == "text":
                yield self._audio(clock, 160)
                clock += 160
            elif request.control.action == pb.Control.INTERRUPT:
                yield pb.ConverseResponse(
                    utterance=pb.UtteranceEvent(kind=pb.UtteranceEvent.INTERRUPTED, end_sample=clock)
                )
            elif request.control.action == pb.Control.END_OF_INPUT:
                yield pb.ConverseResponse(stats=pb.SessionStats(audio_seconds=clock / SAMPLE_RATE))
                return

    def Synthesize(self, request, context):  # noqa: N802
        self._record_call(context)
        self.requests.append(request)
        yield pb.ConverseResponse(started=pb.SessionStarted(config=request.config, sample_rate=SAMPLE_RATE))
        yield self._audio(0, 320)
        yield pb.ConverseResponse(stats=pb.SessionStats(audio_seconds=320 / SAMPLE_RATE))

    def ListVoices(self, request, context):  # noqa: N802
        self._record_call(context)
        return pb.ListVoicesResponse(voices=[pb.Voice(name="v1", sample_rate=SAMPLE_RATE, is_default=True)])


@pytest.fixture
def fake() -> Iterator[tuple[FakeServicer, str]]:
    servicer = FakeServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    lipstream_pb2_grpc.add_LipStreamServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


def text(t: str, flush: bool = False) -> pb.ConverseRequest:
    return pb.ConverseRequest(text=pb.TextInput(text=t, flush=flush))


def control(action: int) -> pb.ConverseRequest:
    return pb.ConverseRequest(control=pb.Control(action=action))


EXPECTED_CONFIG = pb.SessionConfig(
    voice="joe",
    speaker="p1",
    length_scale=1.25,
    noise_scale=0.5,
    audio_format=pb.WAV_FLOAT32,
    sample_rate=24000,
    video=pb.VideoConfig(enabled=True, avatar="astronaut", fps=30.0, jpeg_quality=90, engine=pb.VISEME),
    visemes=True,
    pacing=pb.REALTIME,
)
CONFIG_KWARGS = dict(
    voice="joe", speaker="p1", length_scale=1.25, noise_scale=0.5, audio_format="wav_float32",
    sample_rate=24000, video=VideoConfig(avatar="astronaut", fps=30, jpeg_quality=90, engine="viseme"),
    visemes=True, pacing="realtime",
)


def test_converse_sends_config_then_each_token_then_end_of_input(fake: tuple[FakeServicer, str]) -> None:
    servicer, target = fake
    tokens = ["Hel", "lo", "", " world."]   # the empty token is not sent
    with Client(target) as client, client.converse(iter(tokens), **CONFIG_KWARGS) as conversation:
        events = list(conversation)
    assert servicer.requests == [
        pb.ConverseRequest(config=EXPECTED_CONFIG),
        text("Hel"), text("lo"), text(" world."),
        control(pb.Control.END_OF_INPUT),
    ]
    assert not servicer.requests[0].config.HasField("noise_scale_w")  # unset means "the voice's own value"
    assert isinstance(events[0], SessionStarted) and events[0].audio_format == "wav_float32"
    assert conversation.started is events[0] and conversation.stats is events[-1]
    assert [type(e) for e in events[1:]] == [AudioChunk] * 3 + [SessionStats]


def test_converse_str_defaults_send_an_empty_config(fake: tuple[FakeServicer, str]) -> None:
    servicer, target = fake
    with Client(target) as client:
        list(client.converse("Hello."))
    assert servicer.requests == [
        pb.ConverseRequest(config=pb.SessionConfig(audio_format=pb.WAV_PCM16, pacing=pb.AS_FAST_AS_POSSIBLE)),
        text("Hello."),
        control(pb.Control.END_OF_INPUT),
    ]


def test_send_interrupt_and_end_go_out_in_order(fake: tuple[FakeServicer, str]) -> None:
    servicer, target = fake
    with Client(target) as client, client.converse() as conversation:
        events = iter(conversation)
        assert isinstance(next(events), SessionStarted)
        conversation.send("First sentence")
        assert isinstance(next(events), AudioChunk)
        conversation.interrupt()
        interrupted = next(events)
        assert isinstance(interrupted, UtteranceEvent) and interrupted.kind == "interrupted"
        conversation.send("Second", flush=True)
        conversation.end()
        conversation.end()  # idempotent
        rest = list(events)
        with pytest.raises(RuntimeError, match="after end"):
            conversation.send("too late")
    assert servicer.requests[1:] == [
        text("First sentence"), control(pb.Control.INTERRUPT), text("Second", flush=True),
        control(pb.Control.END_OF_INPUT),
    ]
    assert [type(e) for e in rest] == [AudioChunk, SessionStats]


def test_interrupt_stops_reading_the_text_source(fake: tuple[FakeServicer, str]) -> None:
    servicer, target = fake
    pulled: list[str] = []
    gate = threading.Event()

    def tokens() -> Iterator[str]:
        for token in ["one ", "two ", "three ", "four "]:
            pulled.append(token)
            yield token
            if token == "one ":
                gate.wait(10)   # hold the source until the interrupt has been sent

    with Client(target) as client, client.converse(tokens()) as conversation:
        events = iter(conversation)
        next(events)  # SessionStarted
        next(events)  # the audio of "one "
        conversation.interrupt()
        gate.set()
        assert isinstance(next(events), UtteranceEvent)
        conversation.end()
        list(events)
    assert servicer.requests[1:] == [
        text("one "), control(pb.Control.INTERRUPT), control(pb.Control.END_OF_INPUT)
    ]
    assert pulled == ["one ", "two "]   # "two " was read from the source but dropped, not sent


def test_a_failing_text_source_raises_its_own_error(fake: tuple[FakeServicer, str]) -> None:
    _, target = fake

    def tokens() -> Iterator[str]:
        yield "Hello "
        raise ConnectionResetError("the LLM went away")

    with Client(target) as client, pytest.raises(ConnectionResetError, match="LLM went away"):
        list(client.converse(tokens()))


def test_bad_text_chunks_and_options_are_refused_before_sending(fake: tuple[FakeServicer, str]) -> None:
    _, target = fake
    with Client(target) as client:
        with pytest.raises(TypeError, match="bytes"):
            client.synthesize(b"hello")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown audio_format 'mp3'.*wav_pcm16"):
            client.converse("x", audio_format="mp3")
        with pytest.raises(ValueError, match="unknown engine 'nerf'"):
            client.converse("x", video=VideoConfig(engine="nerf"))
        with pytest.raises(TypeError, match="not bytes"):
            client.converse(b"hello")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="text chunks must be str, got int"):
            list(client.converse(iter(["ok", 42])))  # type: ignore[list-item]


def test_synthesize_request_metadata_and_deadline(fake: tuple[FakeServicer, str]) -> None:
    servicer, target = fake
    with Client(target, metadata=[("authorization", "Bearer t0k")], timeout=30.0) as client:
        events = list(client.synthesize("Hi.", **CONFIG_KWARGS, metadata=[("x-request-id", "r-7")]))
        assert servicer.requests == [pb.SynthesizeRequest(config=EXPECTED_CONFIG, text="Hi.")]
        assert ("authorization", "Bearer t0k") in servicer.metadata
        assert ("x-request-id", "r-7") in servicer.metadata
        # grpc rounds the deadline on the wire: compare with margins, not exactly
        assert servicer.time_remaining is not None and 10.0 < servicer.time_remaining <= 31.0
        assert events[1].samples.dtype == np.float32 and np.allclose(events[1].samples, 0.25, atol=1e-4)

        client.voices(timeout=5.0)
        assert servicer.time_remaining is not None and servicer.time_remaining <= 6.0  # the per-call one


def test_server_status_becomes_a_typed_exception(fake: tuple[FakeServicer, str]) -> None:
    servicer, target = fake
    message = "unknown voice 'nope': installed voices are ['v1']"
    servicer.abort_with = (grpc.StatusCode.INVALID_ARGUMENT, message)
    with Client(target) as client:
        with pytest.raises(InvalidArgumentError) as caught:
            client.voices()
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details == message
        assert isinstance(caught.value, ValueError)
        with pytest.raises(InvalidArgumentError, match="unknown voice 'nope'"):
            list(client.converse("hello"))
        servicer.abort_with = (grpc.StatusCode.RESOURCE_EXHAUSTED, "4 sessions are open (max_sessions 4)")
        with pytest.raises(ResourceExhaustedError) as busy:
            list(client.synthesize("hello"))
        assert busy.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_sessions" in busy.value.details
        servicer.abort_with = (grpc.StatusCode.PERMISSION_DENIED, "bad token")
        with pytest.raises(LipStreamError) as denied:
            client.voices()
        assert type(denied.value) is LipStreamError and denied.value.code == grpc.StatusCode.PERMISSION_DENIED


async def test_async_converse_sends_the_same_protos(fake: tuple[FakeServicer, str]) -> None:
    servicer, target = fake

    async def tokens() -> AsyncIterator[str]:
        for t in ["Hel", "lo", " world."]:
            yield t

    async with AsyncClient(target, metadata=[("authorization", "Bearer a")]) as client:
        async with client.converse(tokens(), **CONFIG_KWARGS, timeout=20.0) as conversation:
            events = [e async for e in conversation]
    assert servicer.requests == [
        pb.ConverseRequest(config=EXPECTED_CONFIG), text("Hel"), text("lo"), text(" world."),
        control(pb.Control.END_OF_INPUT),
    ]
    assert ("authorization", "Bearer a") in servicer.metadata
    assert servicer.time_remaining is not None and servicer.time_remaining <= 21.0
    assert [type(e) for e in events] == [SessionStarted] + [AudioChunk] * 3 + [SessionStats]


async def test_async_send_interrupt_end(fake: tuple[FakeServicer, str]) -> None:
    servicer, target = fake
    async with AsyncClient(target) as client:
        conversation = client.converse()
        events = aiter(conversation)
        assert isinstance(await anext(events), SessionStarted)
        await conversation.send("First")
        assert isinstance(await anext(events), AudioChunk)
        await conversation.interrupt()
        assert isinstance(await anext(events), UtteranceEvent)
        await conversation.end()
        rest = [e async for e in events]
        await conversation.close()
    assert servicer.requests[1:] == [
        text("First"), control(pb.Control.INTERRUPT), control(pb.Control.END_OF_INPUT)
    ]
    assert [type(e) for e in rest] == [SessionStats]


async def test_async_errors_and_synthesize(fake: tuple[FakeServicer, str]) -> None:
    servicer, target = fake
    async with AsyncClient(target) as client:
        events = [e async for e in client.synthesize("Hi.", **CONFIG_KWARGS)]
        assert servicer.requests == [pb.SynthesizeRequest(config=EXPECTED_CONFIG, text="Hi.")]
        assert [type(e) for e in events] == [SessionStarted, AudioChunk, SessionStats]
        servicer.abort_with = (grpc.StatusCode.INVALID_ARGUMENT, "speaker 'x' is not one of []")
        with pytest.raises(InvalidArgumentError, match="speaker 'x'"):
            await client.voices()
        with pytest.raises(InvalidArgumentError, match="speaker 'x'"):
            [e async for e in client.converse("Hi.")]


def _self_signed_cert(directory: Path) -> tuple[bytes, bytes]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return key.read_bytes(), cert.read_bytes()


async def test_tls_credentials_reach_a_tls_server(tmp_path: Path) -> None:
    key, cert = _self_signed_cert(tmp_path)
    servicer = FakeServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    lipstream_pb2_grpc.add_LipStreamServicer_to_server(servicer, server)
    port = server.add_secure_port("localhost:0", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert)
        with Client(f"localhost:{port}", credentials=credentials) as client:
            assert [v.name for v in client.voices(timeout=10)] == ["v1"]
        async with AsyncClient(f"localhost:{port}", credentials=credentials) as aclient:
            assert [v.name for v in await aclient.voices(timeout=10)] == ["v1"]
        with Client(f"localhost:{port}") as plain, pytest.raises(LipStreamError):
            plain.voices(timeout=5)   # a plain-text client cannot talk to the TLS port
    finally:
        server.stop(grace=None)
