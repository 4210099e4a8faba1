"""Bad input, limits, shutdown and REALTIME pacing over real lipstream servers on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from lipstream.server.engine import Engine
from lipstream.server.options import EngineSettings
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


@pytest.fixture(scope="module")
def stub(grpc_target: str) -> Iterator[lipstream_pb2_grpc.LipStreamStub]:
    with grpc.insecure_channel(grpc_target) as channel:
        yield lipstream_pb2_grpc.LipStreamStub(channel)


def converse_error(
    stub: lipstream_pb2_grpc.LipStreamStub, messages: list[pb.ConverseRequest]
) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Converse(iter(messages)))
    return caught.value


def config_message(**fields: object) -> pb.ConverseRequest:
    return pb.ConverseRequest(config=pb.SessionConfig(**fields))


END = pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT))


def test_first_message_must_be_a_config(stub: lipstream_pb2_grpc.LipStreamStub) -> None:
    error = converse_error(stub, [pb.ConverseRequest(text=pb.TextInput(text="hello"))])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message" in error.details() and "SessionConfig" in error.details()
    error = converse_error(stub, [])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_second_config_is_refused(stub: lipstream_pb2_grpc.LipStreamStub) -> None:
    error = converse_error(stub, [config_message(), config_message(), END])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "second SessionConfig" in error.details()


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"voice": "nobody"}, ["voice 'nobody' is unknown", "en_US-joe-medium"]),
        ({"speaker": "alice"}, ["single speaker", "'alice'"]),
        ({"video": pb.VideoConfig(enabled=True, avatar="mona")}, ["avatar 'mona' is unknown", "astronaut"]),
        ({"video": pb.VideoConfig(enabled=True, engine=pb.WAV2LIP)}, ["--wav2lip-checkpoint"]),
        ({"length_scale": 0.0}, ["length_scale 0.0 is out of range"]),
        ({"noise_scale": 3.0}, ["noise_scale 3.0 is out of range"]),
        ({"noise_scale_w": -1.0}, ["noise_scale_w -1.0 is out of range"]),
        ({"sample_rate": 100}, ["sample_rate 100 is out of range"]),
        ({"video": pb.VideoConfig(enabled=True, fps=500)}, ["fps 500.0 is out of range"]),
        ({"video": pb.VideoConfig(enabled=True, jpeg_quality=101)}, ["jpeg_quality 101 is out of range"]),
        ({"audio_format": 9}, ["audio_format 9"]),
    ],
)
def test_bad_configs_name_the_value_and_the_fix(
    stub: lipstream_pb2_grpc.LipStreamStub, fields: dict[str, object], words: list[str]
) -> None:
    error = converse_error(stub, [config_message(**fields), END])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in error.details()
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Synthesize(pb.SynthesizeRequest(config=pb.SessionConfig(**fields), text="Hi.")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_text_over_the_bound_is_refused(stub: lipstream_pb2_grpc.LipStreamStub, grpc_target: str) -> None:
    info = stub.GetServerInfo(pb.GetServerInfoRequest())
    too_long = "a" * (info.max_text_chars + 1)
    error = converse_error(
        stub, [config_message(), pb.ConverseRequest(text=pb.TextInput(text=too_long)), END]
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{len(too_long)} characters" in error.details() and str(info.max_text_chars) in error.details()
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Synthesize(pb.SynthesizeRequest(text=too_long)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_session_limit_gives_resource_exhausted_and_frees_up() -> None:
    with running_server(tiny_engine(EngineSettings(max_sessions=1))) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = lipstream_pb2_grpc.LipStreamStub(channel)
            keep_open = threading.Event()

            def hold() -> Iterator[pb.ConverseRequest]:
                yield config_message()
                keep_open.wait(60)

            holding = stub.Converse(hold())
            assert next(holding).WhichOneof("response") == "started"
            error = converse_error(stub, [config_message(), END])
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-sessions 1" in error.details()
            holding.cancel()
            keep_open.set()
            for _ in range(200):  # bounded wait for the cancelled session to go
                if server.engine.active_sessions == 0:
                    break
                threading.Event().wait(0.05)
            responses = list(stub.Converse(iter([config_message(), END])))
            assert responses[-1].WhichOneof("response") == "stats"


def test_shutdown_ends_running_sessions_with_unavailable_and_leaves_nothing_running() -> None:
    server = RunningServer(tiny_engine())
    errors: list[grpc.RpcError] = []
    first_event = threading.Event()
    with grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)

        keep_open = threading.Event()

        def talk() -> Iterator[pb.ConverseRequest]:
            yield config_message()
            yield pb.ConverseRequest(text=pb.TextInput(text="Hi."))
            keep_open.wait(60)  # the input stays open: the session runs until the shutdown

        def hold_open() -> None:
            try:
                for _ in stub.Converse(talk()):
                    first_event.set()
            except grpc.RpcError as exc:
                errors.append(exc)

        thread = threading.Thread(target=hold_open)
        thread.start()
        assert first_event.wait(30)
        server.stop(grace_s=0.2)  # asserts no session and no session thread is left
        keep_open.set()
        thread.join(30)
    assert [e.code() for e in errors] == [grpc.StatusCode.UNAVAILABLE]
    assert "shut down" in errors[0].details()
    assert session_threads() == []


def test_realtime_pacing_sends_idle_frames_while_silent() -> None:
    with running_server(tiny_engine()) as server, grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        config = pb.SessionConfig(video=pb.VideoConfig(enabled=True, fps=25), pacing=pb.REALTIME)
        go_on = threading.Event()

        def talk() -> Iterator[pb.ConverseRequest]:
            yield pb.ConverseRequest(config=config)
            go_on.wait(30)
            yield pb.ConverseRequest(text=pb.TextInput(text="Now I speak.", flush=True))
            yield END

        frames: list[pb.VideoFrame] = []
        audio: list[pb.AudioChunk] = []
        for response in stub.Converse(talk()):
            kind = response.WhichOneof("response")
            if kind == "frame":
                frames.append(response.frame)
                if len(frames) == 5:
                    go_on.set()
            elif kind == "audio":
                audio.append(response.audio)
        assert [f.speaking for f in frames[:5]] == [False] * 5
        assert all(f.utterance_id == 0 for f in frames[:5])
        assert any(f.speaking for f in frames)
        assert [f.frame_index for f in frames] == list(range(len(frames)))
        position = 0
        for chunk in audio:  # silence fills the clock: still contiguous
            assert chunk.start_sample == position
            position += chunk.num_samples


class BrokenVoice(TinyVoice):
    """Fails on the word "boom", as a voice's text frontend might on text it cannot read."""

    def synthesize_stream(self, text: str, **options: object) -> TinySpeechStream:  # type: ignore[override]
        if "boom" in text:
            raise RuntimeError(f"cannot phonemize {text!r}")
        return super().synthesize_stream(text, **options)  # type: ignore[arg-type]


def test_a_failing_worker_ends_its_session_with_internal_and_others_go_on() -> None:
    voice = BrokenVoice()
    with (
        running_server(Engine(voices={voice.name: voice})) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        text = pb.ConverseRequest(text=pb.TextInput(text="Fine first. Then boom.", flush=True))
        error = converse_error(stub, [config_message(video=pb.VideoConfig(enabled=True)), text, END])
        assert error.code() == grpc.StatusCode.INTERNAL
        assert "speech synthesis failed" in error.details() and "boom" in error.details()
        responses = list(stub.Synthesize(pb.SynthesizeRequest(text="Still fine.")))
        assert responses[-1].WhichOneof("response") == "stats"
