"""End-to-end over a real lipstream server on 127.0.0.1: the default voice and avatar, viseme renderer."""

from __future__ import annotations

import io
import threading
import time
import wave
from collections.abc import Iterator

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

from tests.servers import (
    RunningServer,
    check_media_continues_across_the_interrupt,
    converse_with_an_interrupt,
    session_threads,
)

DETERMINISTIC = {"noise_scale": 0.0, "noise_scale_w": 0.0}


@pytest.fixture(scope="module")
def channel(grpc_target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_target) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> lipstream_pb2_grpc.LipStreamStub:
    return lipstream_pb2_grpc.LipStreamStub(channel)


def requests(config: pb.SessionConfig, chunks: list[str], end: bool = True) -> Iterator[pb.ConverseRequest]:
    yield pb.ConverseRequest(config=config)
    for chunk in chunks:
        yield pb.ConverseRequest(text=pb.TextInput(text=chunk))
    if end:
        yield pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT))


def small_chunks(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def pcm_of(chunks: list[pb.AudioChunk]) -> np.ndarray:
    """The samples of WAV_PCM16 chunks, each parsed as a complete WAV file."""
    parts = []
    for chunk in chunks:
        with wave.open(io.BytesIO(chunk.data)) as wav:
            assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, chunk.sample_rate)
            assert wav.getnframes() == chunk.num_samples
            parts.append(np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"))
    return np.concatenate(parts) if parts else np.zeros(0, dtype="<i2")


def media_time(response: pb.ConverseResponse, sample_rate: int) -> float | None:
    kind = response.WhichOneof("response")
    if kind == "audio":
        return response.audio.start_sample / sample_rate
    if kind == "frame":
        return response.frame.pts
    if kind == "viseme":
        return response.viseme.start_sample / sample_rate
    if kind == "utterance":
        event = response.utterance
        sample = event.end_sample if event.kind == pb.UtteranceEvent.FINISHED else event.start_sample
        return sample / sample_rate
    return None


def of_kind(responses: list[pb.ConverseResponse], kind: str) -> list:  # type: ignore[type-arg]
    return [getattr(r, kind) for r in responses if r.WhichOneof("response") == kind]


def test_converse_streams_contiguous_wav_and_matching_frames_in_media_time_order(
    stub: lipstream_pb2_grpc.LipStreamStub,
) -> None:
    config = pb.SessionConfig(video=pb.VideoConfig(enabled=True, fps=25), visemes=True, **DETERMINISTIC)
    text = "Hello there, this is a test. It works well!"
    responses = list(stub.Converse(requests(config, small_chunks(text))))

    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds[0] == "started" and kinds[-1] == "stats"
    started = responses[0].started
    assert started.engine == pb.VISEME and started.fps == 25
    rate = started.sample_rate
    assert rate == 22050

    audio = of_kind(responses, "audio")
    position = 0
    for chunk in audio:
        assert chunk.start_sample == position, "audio chunks must follow each other with no gap or overlap"
        assert chunk.sample_rate == rate
        position += chunk.num_samples
    samples = pcm_of(audio)
    assert len(samples) == position
    assert np.abs(samples).max() > 1000  # speech, not silence

    utterances = [u for u in of_kind(responses, "utterance") if u.kind == pb.UtteranceEvent.FINISHED]
    assert len(utterances) >= 2
    assert " ".join(u.text for u in utterances) == text
    assert utterances[0].start_sample == 0 and utterances[-1].end_sample == position
    for before, after in zip(utterances, utterances[1:], strict=False):
        assert before.end_sample == after.start_sample  # utterances follow each other on the clock

    frames = of_kind(responses, "frame")
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    expected = position / rate * started.fps
    assert abs(len(frames) - expected) <= len(utterances)
    for frame in frames[:: max(1, len(frames) // 10)]:
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (frame.height, frame.width, 3) == (started.frame_height, started.frame_width, 3)
        assert frame.pts == pytest.approx(frame.frame_index / 25)
    assert any(f.speaking for f in frames)

    visemes = of_kind(responses, "viseme")
    assert visemes and all(0 <= v.start_sample < v.end_sample <= position for v in visemes)

    times = [t for r in responses if (t := media_time(r, rate)) is not None]
    assert times == sorted(times), "events must come in media-time order"

    stats = responses[-1].stats
    assert stats.audio_seconds == pytest.approx(position / rate)
    assert stats.frames == len(frames)
    assert stats.utterances == len(utterances)


def test_synthesize_gives_the_same_audio_as_converse_at_noise_zero(
    stub: lipstream_pb2_grpc.LipStreamStub,
) -> None:
    config = pb.SessionConfig(**DETERMINISTIC)
    text = "The same words, twice."
    conversed = pcm_of(of_kind(list(stub.Converse(requests(config, [text]))), "audio"))
    synthesized = pcm_of(
        of_kind(list(stub.Synthesize(pb.SynthesizeRequest(config=config, text=text))), "audio")
    )
    assert len(conversed) == len(synthesized) > 0
    assert np.abs(conversed.astype(np.int32) - synthesized.astype(np.int32)).max() <= 2


def test_other_audio_formats_and_a_resampled_rate(stub: lipstream_pb2_grpc.LipStreamStub) -> None:
    text = "Formats."
    base = pcm_of(
        of_kind(
            list(stub.Synthesize(pb.SynthesizeRequest(config=pb.SessionConfig(**DETERMINISTIC), text=text))),
            "audio",
        )
    )

    raw = of_kind(
        list(
            stub.Synthesize(
                pb.SynthesizeRequest(
                    config=pb.SessionConfig(audio_format=pb.PCM16, **DETERMINISTIC), text=text
                )
            )
        ),
        "audio",
    )
    raw_samples = np.concatenate([np.frombuffer(c.data, "<i2") for c in raw])
    assert np.abs(raw_samples.astype(np.int32) - base).max() <= 2

    floats = of_kind(
        list(
            stub.Synthesize(
                pb.SynthesizeRequest(
                    config=pb.SessionConfig(audio_format=pb.WAV_FLOAT32, **DETERMINISTIC), text=text
                )
            )
        ),
        "audio",
    )
    for chunk in floats:
        assert chunk.data[:4] == b"RIFF" and chunk.data[8:12] == b"WAVE"
        assert int.from_bytes(chunk.data[20:22], "little") == 3  # WAVE_FORMAT_IEEE_FLOAT
        assert int.from_bytes(chunk.data[40:44], "little") == 4 * chunk.num_samples
    float_samples = np.concatenate([np.frombuffer(c.data[44:], "<f4") for c in floats])
    assert np.abs(float_samples * 32767 - base).max() <= 3

    resampled = of_kind(
        list(
            stub.Synthesize(
                pb.SynthesizeRequest(config=pb.SessionConfig(sample_rate=16000, **DETERMINISTIC), text=text)
            )
        ),
        "audio",
    )
    assert all(c.sample_rate == 16000 for c in resampled)
    total = sum(c.num_samples for c in resampled)
    assert abs(total - len(base) * 16000 / 22050) <= 2
    assert len(pcm_of(resampled)) == total


def test_interrupt_stops_the_utterance_and_the_next_one_follows_the_received_media(
    stub: lipstream_pb2_grpc.LipStreamStub,
) -> None:
    # Fast pacing, and the client holds off reading before it interrupts: the stages have run ahead of what
    # was sent (up to flow control's second), which must not become a gap before the next utterance.
    config = pb.SessionConfig(video=pb.VideoConfig(enabled=True), **DETERMINISTIC)
    responses = converse_with_an_interrupt(
        stub,
        config,
        "This is a rather long sentence that keeps going on and on without any pause at all "
        "so that there is plenty of speech left to interrupt when the first audio arrives.",
        "After.",
    )
    stopped = check_media_continues_across_the_interrupt(responses)
    interrupted_at = next(
        i for i, r in enumerate(responses) if r.HasField("utterance") and r.utterance == stopped
    )
    after = responses[interrupted_at + 1 :]
    assert all(
        getattr(r, r.WhichOneof("response")).utterance_id != stopped.utterance_id
        for r in after
        if r.WhichOneof("response") in ("audio", "frame", "viseme", "utterance")
    )
    sent = [a for a in of_kind(responses[:interrupted_at], "audio") if a.utterance_id == stopped.utterance_id]
    assert stopped.end_sample == sent[-1].start_sample + sent[-1].num_samples
    rate = responses[0].started.sample_rate
    assert (stopped.end_sample - stopped.start_sample) / rate < 6.0  # far less than the whole sentence
    finished = [u for u in of_kind(after, "utterance") if u.kind == pb.UtteranceEvent.FINISHED]
    assert [u.text for u in finished] == ["After."]
    assert finished[0].start_sample == stopped.end_sample
    assert of_kind(after, "audio") and of_kind(after, "frame")
    spoken_after = [a for a in of_kind(after, "audio") if a.utterance_id == finished[0].utterance_id]
    assert sum(a.num_samples for a in spoken_after) == finished[0].end_sample - finished[0].start_sample
    # still in media-time order across the interrupt (INTERRUPTED itself goes out at once, at its end)
    before = [t for r in responses[:interrupted_at] if (t := media_time(r, rate)) is not None]
    later = [t for r in after if (t := media_time(r, rate)) is not None]
    assert before == sorted(before) and later == sorted(later) and before[-1] <= later[0]
    assert responses[-1].stats.interrupted == 1


def test_disconnect_stops_the_session_and_frees_it(
    stub: lipstream_pb2_grpc.LipStreamStub, lipstream_server: RunningServer
) -> None:
    config = pb.SessionConfig(video=pb.VideoConfig(enabled=True))
    keep_open = threading.Event()

    def talk() -> Iterator[pb.ConverseRequest]:
        yield from requests(config, ["Talk for a while, please, and keep going for some time."], end=False)
        keep_open.wait(60)  # the input stays open: only the cancel ends the session

    call = stub.Converse(talk())
    for response in call:
        if response.WhichOneof("response") == "audio":
            break
    assert lipstream_server.engine.active_sessions == 1
    call.cancel()
    keep_open.set()
    for _ in range(200):  # bounded: the session must go within a second; allow slack for a loaded machine
        if lipstream_server.engine.active_sessions == 0 and not session_threads():
            break
        time.sleep(0.05)
    assert lipstream_server.engine.active_sessions == 0
    assert session_threads() == []


def test_two_concurrent_sessions_do_not_mix_their_audio(stub: lipstream_pb2_grpc.LipStreamStub) -> None:
    texts = ["First speaker here.", "Second one, different words."]
    alone = [
        pcm_of(
            of_kind(
                list(
                    stub.Synthesize(pb.SynthesizeRequest(config=pb.SessionConfig(**DETERMINISTIC), text=text))
                ),
                "audio",
            )
        )
        for text in texts
    ]
    together: list[np.ndarray | None] = [None, None]

    def converse(index: int) -> None:
        config = pb.SessionConfig(video=pb.VideoConfig(enabled=True), **DETERMINISTIC)
        together[index] = pcm_of(
            of_kind(list(stub.Converse(requests(config, small_chunks(texts[index])))), "audio")
        )

    threads = [threading.Thread(target=converse, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    for mine, reference in zip(together, alone, strict=True):
        assert mine is not None and len(mine) == len(reference)
        assert np.abs(mine.astype(np.int32) - reference).max() <= 2


def test_list_voices_avatars_and_server_info(stub: lipstream_pb2_grpc.LipStreamStub) -> None:
    voices = stub.ListVoices(pb.ListVoicesRequest()).voices
    assert [(v.name, v.is_default, v.sample_rate) for v in voices][0] == ("en_US-joe-medium", True, 22050)
    avatars = stub.ListAvatars(pb.ListAvatarsRequest()).avatars
    default = [a for a in avatars if a.is_default]
    assert [a.name for a in default] == ["astronaut"] and default[0].width > 0
    info = stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.default_voice == "en_US-joe-medium" and info.device.startswith(("cpu", "cuda"))
    assert list(info.engines) == [pb.VISEME] and info.max_sessions >= 1 and info.torch_version


def test_health_and_reflection_answer(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "lipstream.v1.LipStream"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(
        reflection.ServerReflectionInfo(
            iter(
                [
                    reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="lipstream.v1.LipStream"),
                ]
            )
        )
    )
    names = {service.name for service in replies[0].list_services_response.service}
    assert {"lipstream.v1.LipStream", "grpc.health.v1.Health"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto


def test_closing_the_request_stream_ends_the_input(stub: lipstream_pb2_grpc.LipStreamStub) -> None:
    responses = list(stub.Converse(requests(pb.SessionConfig(), ["Closed without an end"], end=False)))
    finished = [u for u in of_kind(responses, "utterance") if u.kind == pb.UtteranceEvent.FINISHED]
    assert [u.text for u in finished] == ["Closed without an end"]
    assert responses[-1].WhichOneof("response") == "stats"
