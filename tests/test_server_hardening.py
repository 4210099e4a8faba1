"""What a hostile or broken client sends gets its own status and frees its session at once: control
characters, corrupt protobufs, huge names, text the voice cannot read, streams that never configure, idle
sessions and clients that stop reading (issue 14). Real servers on 127.0.0.1 with a tiny voice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from lipstream.models.vits.errors import VoiceError
from lipstream.server.options import EngineSettings
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

from tests.servers import RunningServer, TinySpeechStream, TinyVoice, running_server, tiny_engine

END = pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT))
CONFIG = pb.ConverseRequest(config=pb.SessionConfig())


class StrictVoice(TinyVoice):
    """Fails as espeak and the VITS frontends do: on a NUL character (a server fault if it gets there) and
    on Japanese-marked text (VoiceError: a VITS-fast voice that reads Japanese but lacks its frontend)."""

    def __init__(self, samples_per_char: int) -> None:
        super().__init__(samples_per_char=samples_per_char)
        self.languages = ["en-us", "ja"]

    def synthesize_stream(self, text: str, **options: Any) -> TinySpeechStream:
        if "\x00" in text:
            raise ValueError("embedded null character")
        if "[JA]" in text:
            raise VoiceError("'ja' text needs a Japanese frontend (pyopenjtalk): install it")
        return super().synthesize_stream(text, **options)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    voice = StrictVoice(samples_per_char=40)
    from lipstream.server.engine import Engine

    settings = EngineSettings(config_timeout_s=0.5, idle_timeout_s=1.0)
    with running_server(Engine(settings, voices={voice.name: voice})) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> lipstream_pb2_grpc.LipStreamStub:
    return lipstream_pb2_grpc.LipStreamStub(channel)


def wait_for_no_sessions(server: RunningServer) -> None:
    for _ in range(400):  # a bounded wait: the session ends at once, its workers stop within a second
        if server.engine.active_sessions == 0:
            return
        time.sleep(0.025)
    raise AssertionError(f"{server.engine.active_sessions} sessions still open")


def raw_converse(channel: grpc.Channel, messages: list[bytes]) -> grpc.RpcError:
    """Converse with bytes as they are on the wire, corrupt ones included."""
    call = channel.stream_stream(
        "/lipstream.v1.LipStream/Converse",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    with pytest.raises(grpc.RpcError) as caught:
        list(call(iter(messages), timeout=30))
    return caught.value


def text(chunk: str, flush: bool = False) -> pb.ConverseRequest:
    return pb.ConverseRequest(text=pb.TextInput(text=chunk, flush=flush))


def test_control_characters_are_read_as_spaces(
    server: RunningServer, stub: lipstream_pb2_grpc.LipStreamStub
) -> None:
    responses = list(stub.Converse(iter([CONFIG, text("a\x00b\x1b[31m c\x85d\tok.\n", flush=True), END])))
    spoken = [r.utterance.text for r in responses if r.WhichOneof("response") == "utterance"]
    assert spoken and "\x00" not in "".join(spoken) and "\x1b" not in "".join(spoken)
    assert "a b [31m c d\tok." in spoken
    assert responses[-1].WhichOneof("response") == "stats"
    wait_for_no_sessions(server)


@pytest.mark.parametrize("where", ["first", "after the config", "after text"])
def test_a_corrupt_message_ends_the_session_with_invalid_argument(
    server: RunningServer, channel: grpc.Channel, where: str
) -> None:
    garbage = b"\xff\xff\xff\xff"
    before = {
        "first": [],
        "after the config": [CONFIG.SerializeToString()],
        "after text": [CONFIG.SerializeToString(), text("Hello there, ").SerializeToString()],
    }[where]
    began = time.monotonic()
    error = raw_converse(channel, [*before, garbage, END.SerializeToString()])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid lipstream.v1.ConverseRequest" in error.details()
    assert time.monotonic() - began < 25  # not the call's 30 s deadline: the reader's failure ends it
    wait_for_no_sessions(server)


def test_invalid_utf8_in_text_is_a_corrupt_message(server: RunningServer, channel: grpc.Channel) -> None:
    bad_text = b"\x12\x03\x0a\x01\xff"  # ConverseRequest.text (2) { text (1): b"\xff" }
    error = raw_converse(channel, [CONFIG.SerializeToString(), bad_text])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    wait_for_no_sessions(server)


@pytest.mark.parametrize("method", ["Synthesize", "ListVoices", "ListAvatars", "GetServerInfo"])
def test_a_corrupt_unary_request_is_invalid_argument(channel: grpc.Channel, method: str) -> None:
    kind = channel.unary_stream if method == "Synthesize" else channel.unary_unary
    call = kind(
        f"/lipstream.v1.LipStream/{method}",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    with pytest.raises(grpc.RpcError) as caught:
        result = call(b"\x0a\x05abc", timeout=30)  # a field that claims more bytes than there are
        if method == "Synthesize":
            list(result)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid lipstream.v1." in caught.value.details()


@pytest.mark.parametrize("field", ["voice", "speaker", "avatar"])
def test_huge_names_are_cut_in_the_message(stub: lipstream_pb2_grpc.LipStreamStub, field: str) -> None:
    name = "x" * 20_000
    config = pb.SessionConfig(video=pb.VideoConfig(enabled=True, avatar=name)) if field == "avatar" else None
    config = config or pb.SessionConfig(**{field: name})
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Converse(iter([pb.ConverseRequest(config=config), END])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"({len(name)} characters)" in caught.value.details()
    assert len(caught.value.details()) < 400


def test_text_the_voice_cannot_read_is_failed_precondition(
    server: RunningServer, stub: lipstream_pb2_grpc.LipStreamStub
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Synthesize(pb.SynthesizeRequest(text="[JA]こんにちは[JA]")))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot speak this text" in caught.value.details() and "pyopenjtalk" in caught.value.details()
    wait_for_no_sessions(server)


def test_a_stream_that_sends_no_config_is_closed(
    server: RunningServer, stub: lipstream_pb2_grpc.LipStreamStub
) -> None:
    hold = threading.Event()

    def nothing() -> Iterator[pb.ConverseRequest]:
        hold.wait(30)
        yield from ()

    try:
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Converse(nothing(), timeout=30))
    finally:
        hold.set()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no SessionConfig came within 0.5 s" in caught.value.details()


def test_an_idle_session_ends_with_its_stats(
    server: RunningServer, stub: lipstream_pb2_grpc.LipStreamStub
) -> None:
    hold = threading.Event()

    def config_then_nothing() -> Iterator[pb.ConverseRequest]:
        yield pb.ConverseRequest(config=pb.SessionConfig(pacing=pb.REALTIME))
        yield text("Hi there. ")
        hold.wait(30)

    responses: list[pb.ConverseResponse] = []
    try:
        with pytest.raises(grpc.RpcError) as caught:
            for response in stub.Converse(config_then_nothing(), timeout=30):
                responses.append(response)
    finally:
        hold.set()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "--idle-timeout" in caught.value.details()
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds[-1] == "stats" and "utterance" in kinds
    assert responses[-1].stats.utterances == 1
    wait_for_no_sessions(server)


def test_speech_longer_than_the_idle_timeout_is_not_cut(stub: lipstream_pb2_grpc.LipStreamStub) -> None:
    # 2 s of REALTIME speech (40 samples a character at 16 kHz) after one text input, idle timeout 1 s.
    words = "la " * 266
    request = pb.SynthesizeRequest(text=words, config=pb.SessionConfig(pacing=pb.REALTIME))
    responses = list(stub.Synthesize(request, timeout=60))
    assert responses[-1].WhichOneof("response") == "stats"
    assert responses[-1].stats.audio_seconds > 1.5


def test_a_client_that_stops_reading_loses_its_session() -> None:
    settings = EngineSettings(idle_timeout_s=0.5, ring_seconds=1.0)
    with running_server(tiny_engine(settings, samples_per_char=4000)) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = lipstream_pb2_grpc.LipStreamStub(channel)
            hold = threading.Event()

            def talk() -> Iterator[pb.ConverseRequest]:
                yield pb.ConverseRequest(config=pb.SessionConfig(audio_format=pb.WAV_FLOAT32))
                yield text("la " * 2000, flush=True)  # minutes of audio; the client reads none of it
                hold.wait(30)

            call = stub.Converse(talk(), timeout=30)
            try:
                for _ in range(200):
                    if server.engine.active_sessions:
                        break
                    time.sleep(0.025)
                assert server.engine.active_sessions == 1
                wait_for_no_sessions(server)
            finally:
                hold.set()
                call.cancel()


def test_the_loaded_models_are_kept_out_of_full_collections() -> None:
    import gc

    from lipstream.server.engine import freeze_loaded_objects

    try:
        freeze_loaded_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_long_text_is_cut_in_pieces_and_an_interrupt_between_them_drops_the_rest() -> None:
    import asyncio

    from lipstream.server.options import SessionOptions
    from lipstream.server.session import PUSH_CHARS

    async def scenario() -> tuple[int, str]:
        engine = tiny_engine()
        session = await engine.open_session(SessionOptions())
        try:
            sending = asyncio.create_task(session.send_text("word " * (PUSH_CHARS * 4 // 5)))
            await asyncio.sleep(0)  # the first piece is in; the loop is free before the next
            assert not sending.done()
            await session.interrupt()
            await sending
            return session._tts.pending_chars(), session._segmenter.pending
        finally:
            await session.close()

    pending_chars, pending_text = asyncio.run(scenario())
    assert pending_chars == 0 and pending_text == ""
