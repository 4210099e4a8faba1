"""Every way a session ends (cancel, deadline, rejected input, a failing stage, shutdown) stops and joins all
its workers, even while the TTS still has clauses queued. Each scenario runs a few times: the failure it
guards against depended on where the TTS worker happened to be when the session ended."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from lipstream.server.engine import Engine
from lipstream.server.options import EngineSettings
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

from tests.servers import RunningServer, TinySpeechStream, TinyVoice, running_server, session_threads

ROUNDS = 3
MANY_CLAUSES = "Go on now. " * 40  # 40 short clauses: seconds of synthesis queued behind the first


class SlowVoice(TinyVoice):
    """A tiny voice that takes `delay_s` to prepare each clause (as a real model computes its durations),
    and records when each clause was asked for."""

    def __init__(self, delay_s: float = 0.15, **options: Any) -> None:
        super().__init__(**options)
        self.delay_s = delay_s
        self.calls: list[float] = []

    def synthesize_stream(self, text: str, **options: Any) -> TinySpeechStream:  # type: ignore[override]
        self.calls.append(time.monotonic())
        time.sleep(self.delay_s)
        return super().synthesize_stream(text, **options)


class FailingAvatar:
    """The real default avatar whose frames fail from frame `fail_at` on (a lip-sync stage failure)."""

    def __init__(self, avatar: Any, fail_at: int) -> None:
        self._avatar = avatar
        self._fail_at = fail_at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._avatar, name)

    def source_index(self, i: int) -> int:
        if i >= self._fail_at:
            raise RuntimeError(f"frame {i} cannot be read")
        return self._avatar.source_index(i)

    def frame(self, i: int) -> Any:
        self.source_index(i)
        return self._avatar.frame(i)


def wait_until_no_session(server: RunningServer) -> float:
    """Waits (bounded) until the engine has forgotten every session; returns when that was seen."""
    for _ in range(400):
        if server.engine.active_sessions == 0:
            return time.monotonic()
        time.sleep(0.025)
    raise AssertionError(f"{server.engine.active_sessions} sessions still open")


def assert_workers_gone(server: RunningServer, voice: SlowVoice, ended_at: float) -> None:
    """A session is forgotten only after its stop: then none of its workers may be running, and the TTS
    started no clause after the session ended at `ended_at` (at most the one it was preparing then, and
    one or two while the server notices the end); the queue held dozens more."""
    forgotten = wait_until_no_session(server)
    assert session_threads() == []
    late = [t for t in voice.calls if t > ended_at]
    assert len(late) <= 3, f"the TTS prepared {len(late)} clauses after its session ended"
    assert [t for t in voice.calls if t > forgotten] == []


def config(pacing: int = pb.AS_FAST_AS_POSSIBLE, video: bool = False) -> pb.ConverseRequest:
    return pb.ConverseRequest(config=pb.SessionConfig(pacing=pacing, video=pb.VideoConfig(enabled=video)))


def text(chunk: str) -> pb.ConverseRequest:
    return pb.ConverseRequest(text=pb.TextInput(text=chunk, flush=True))


def held_open(messages: list[pb.ConverseRequest], release: threading.Event) -> Iterator[pb.ConverseRequest]:
    yield from messages
    release.wait(30)  # the input stays open: only the end being tested ends the session


def read_all(call: Any, first: threading.Event, errors: list[grpc.RpcError]) -> None:
    """Reads a call to its end (in a thread); `first` is set at the first response."""
    try:
        for _ in call:
            first.set()
    except grpc.RpcError as exc:
        errors.append(exc)


@pytest.fixture
def slow_server() -> Iterator[tuple[RunningServer, SlowVoice]]:
    voice = SlowVoice()
    with running_server(Engine(EngineSettings(max_text_chars=600), voices={voice.name: voice})) as server:
        yield server, voice


def test_a_client_cancelling_mid_utterance_in_realtime_stops_every_worker(
    slow_server: tuple[RunningServer, SlowVoice],
) -> None:
    server, voice = slow_server
    with grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        for _ in range(ROUNDS):
            release = threading.Event()
            call = stub.Converse(held_open([config(pb.REALTIME, video=True), text(MANY_CLAUSES)], release))
            for response in call:
                if response.WhichOneof("response") == "audio" and response.audio.utterance_id:
                    break  # mid-utterance, with most clauses still queued
            ended_at = time.monotonic()
            call.cancel()
            release.set()
            assert_workers_gone(server, voice, ended_at)


def test_a_deadline_passing_stops_every_worker(slow_server: tuple[RunningServer, SlowVoice]) -> None:
    server, voice = slow_server
    with grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        for _ in range(ROUNDS):
            release = threading.Event()
            ended_at = time.monotonic() + 1.0
            call = stub.Converse(held_open([config(pb.REALTIME), text(MANY_CLAUSES)], release), timeout=1.0)
            with pytest.raises(grpc.RpcError) as caught:
                list(call)
            release.set()
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert_workers_gone(server, voice, ended_at)


def test_text_rejected_mid_stream_stops_every_worker(slow_server: tuple[RunningServer, SlowVoice]) -> None:
    server, voice = slow_server
    with grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        for _ in range(ROUNDS):
            release = threading.Event()
            over = [text(MANY_CLAUSES), text(MANY_CLAUSES)]  # 880 characters waiting, over the 600 bound
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Converse(held_open([config(video=True), *over], release)))
            release.set()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "over the bound of 600" in caught.value.details()
            assert_workers_gone(server, voice, ended_at=time.monotonic())


def test_a_failing_stage_stops_the_other_workers() -> None:
    from lipstream.models.avatar import load_avatar

    voice = SlowVoice()
    avatar = FailingAvatar(load_avatar(), fail_at=5)
    engine = Engine(voices={voice.name: voice}, avatars={"failing": avatar})
    with running_server(engine) as server, grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        for _ in range(ROUNDS):
            release = threading.Event()
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Converse(held_open([config(video=True), text(MANY_CLAUSES)], release)))
            release.set()
            assert caught.value.code() == grpc.StatusCode.INTERNAL
            assert "lip sync failed" in caught.value.details()
            assert_workers_gone(server, voice, ended_at=time.monotonic())


def test_shutdown_with_clauses_queued_stops_every_worker() -> None:
    for _ in range(ROUNDS):
        voice = SlowVoice()
        server = RunningServer(Engine(voices={voice.name: voice}, avatars={}))
        release = threading.Event()
        errors: list[grpc.RpcError] = []
        with grpc.insecure_channel(server.target) as channel:
            stub = lipstream_pb2_grpc.LipStreamStub(channel)
            call = stub.Converse(held_open([config(pb.REALTIME), text(MANY_CLAUSES)], release))
            first = threading.Event()
            reader = threading.Thread(target=read_all, args=(call, first, errors))
            reader.start()
            assert first.wait(30)
            ended_at = time.monotonic()
            server.stop(grace_s=0.1)  # asserts that no session and no session worker is left
            release.set()
            reader.join(30)
        assert [e.code() for e in errors] == [grpc.StatusCode.UNAVAILABLE]
        assert session_threads() == []
        late = [t for t in voice.calls if t > ended_at]
        assert len(late) <= 4, f"the TTS prepared {len(late)} clauses after the shutdown began"
