"""Audio-in sessions over real gRPC: the client's PCM16 in, its audio back resampled and lip-synced frames on
the one clock, utterances at end_of_utterance, INTERRUPT, and the INVALID_ARGUMENT cases."""

from __future__ import annotations

import math
import wave
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import soxr
from lipstream.client import AudioChunk, Client, InvalidArgumentError, UtteranceEvent, VideoFrame
from lipstream.client.aio import AsyncClient
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

from tests.servers import RunningServer, running_server, tiny_engine

IN_RATE = 16000
OUT_RATE = 24000
FPS = 25.0


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(tiny_engine()) as running:
        yield running


def speech_like(seconds: float, rate: int = IN_RATE) -> np.ndarray:
    """A voiced sound (120 Hz harmonics) whose loudness rises and falls like syllables, 4 a second."""
    t = np.arange(int(seconds * rate)) / rate
    voiced = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 12))
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)
    return (0.25 * envelope * voiced / 3).astype(np.float32)


def pcm16(samples: np.ndarray) -> bytes:
    return np.rint(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def pieces(samples: np.ndarray, seconds: float = 0.1) -> list[np.ndarray]:
    step = int(seconds * IN_RATE)
    return [samples[i : i + step] for i in range(0, len(samples), step)]


def test_audio_comes_back_resampled_with_a_frame_per_fps(server: RunningServer) -> None:
    speech = speech_like(1.5)
    with Client(server.target) as client, client.converse_audio(
        pieces(speech), input_sample_rate=IN_RATE, audio_format="pcm16", sample_rate=OUT_RATE, video=True
    ) as conversation:
        events = list(conversation)
    started = events[0]
    assert started.sample_rate == OUT_RATE and started.fps == FPS and started.engine == "viseme"
    assert started.config.input_audio.sample_rate == IN_RATE
    audio = [e for e in events if isinstance(e, AudioChunk)]
    frames = [e for e in events if isinstance(e, VideoFrame)]
    utterances = [e for e in events if isinstance(e, UtteranceEvent)]
    # One utterance: the input ended inside it.
    assert [(u.kind, u.utterance_id) for u in utterances] == [("started", 1), ("finished", 1)]
    assert utterances[1].end_sample == round(len(speech) * OUT_RATE / IN_RATE)
    # The audio on one gapless clock, equal to the input resampled (PCM16 both ways).
    assert [a.start_sample for a in audio] == [0] + list(np.cumsum([a.num_samples for a in audio])[:-1])
    received = np.concatenate([np.frombuffer(a.data, "<i2") for a in audio]).astype(np.float32) / 32768
    expected = soxr.resample(np.frombuffer(pcm16(speech), "<i2") / 32768, IN_RATE, OUT_RATE)
    assert abs(len(received) - len(expected)) <= 2
    n = min(len(received), len(expected))
    assert np.max(np.abs(received[:n] - expected[:n])) < 2e-3
    # A frame for every 1/fps of the audio, in order, each sent after the audio it shows.
    assert [f.frame_index for f in frames] == list(range(math.ceil(1.5 * FPS)))
    assert sum(f.speaking for f in frames) >= len(frames) - 1
    media = [e for e in events if isinstance(e, AudioChunk | VideoFrame)]
    times = [e.start_time if isinstance(e, AudioChunk) else e.pts for e in media]
    assert times == sorted(times)
    # The mouth moves with the syllables: the frames differ (the audio-driven mouth, no phonemes).
    assert len({f.jpeg for f in frames}) > len(frames) // 2
    stats = conversation.stats
    assert stats is not None and stats.frames == len(frames) and stats.utterances == 1
    assert 0 < stats.time_to_first_frame_s < 5  # lip-sync latency: first audio in to first frame out


def test_utterances_at_end_of_utterance_and_interrupt(server: RunningServer) -> None:
    with Client(server.target) as client, client.converse_audio(
        input_sample_rate=IN_RATE, audio_format="pcm16", video=True, pacing="realtime"
    ) as conversation:
        conversation.send_audio(speech_like(0.4), end_of_utterance=True)
        conversation.send_audio(speech_like(4.0))  # a long second utterance, cut short below
        events = []
        interrupted_at = None
        for event in conversation:
            events.append(event)
            if isinstance(event, VideoFrame) and event.utterance_id == 2 and interrupted_at is None:
                interrupted_at = event.frame_index
                conversation.interrupt()
                conversation.send_audio(speech_like(0.2), end_of_utterance=True)
                conversation.end()
    kinds = [(e.kind, e.utterance_id) for e in events if isinstance(e, UtteranceEvent)]
    assert kinds == [("started", 1), ("finished", 1), ("started", 2), ("interrupted", 2), ("started", 3),
                     ("finished", 3)]
    cut = next(e for e in events if isinstance(e, UtteranceEvent) and e.kind == "interrupted")
    assert cut.end_sample < 1.0 * IN_RATE + 0.4 * IN_RATE  # far less than the 4 s sent
    third = [e for e in events if isinstance(e, UtteranceEvent) and e.utterance_id == 3][0]
    assert third.start_sample >= cut.end_sample  # the clock goes on after what was heard
    audio = [e for e in events if isinstance(e, AudioChunk)]
    assert sum(a.num_samples for a in audio if a.utterance_id == 2) <= cut.end_sample - 0.4 * IN_RATE + 1
    # Within one frame of the interrupt being handled, no frame of utterance 2 is sent any more.
    later = [e for e in events if isinstance(e, VideoFrame) and e.utterance_id == 2]
    assert later[-1].frame_index <= interrupted_at + int(0.5 * FPS) + 1  # what was in flight (REALTIME lead)


def _error(stub: lipstream_pb2_grpc.LipStreamStub, *requests: pb.ConverseRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stub.Converse(iter(requests), timeout=30):
            pass
    return caught.value


@pytest.mark.parametrize(
    ("requests", "words"),
    [
        ([pb.ConverseRequest(config=pb.SessionConfig(input_audio=pb.InputAudio(sample_rate=IN_RATE))),
          pb.ConverseRequest(text=pb.TextInput(text="hello"))], "send AudioInput, not text"),
        ([pb.ConverseRequest(config=pb.SessionConfig()),
          pb.ConverseRequest(audio=pb.AudioInput(pcm16=b"\0\0"))], "set SessionConfig.input_audio"),
        ([pb.ConverseRequest(config=pb.SessionConfig(input_audio=pb.InputAudio(sample_rate=IN_RATE))),
          pb.ConverseRequest(audio=pb.AudioInput(pcm16=b"\0\0\0"))], "3 bytes"),
        ([pb.ConverseRequest(config=pb.SessionConfig(input_audio=pb.InputAudio(sample_rate=4000)))],
         "8000..48000"),
        ([pb.ConverseRequest(config=pb.SessionConfig(input_audio=pb.InputAudio()))], "8000..48000"),
    ],
    ids=["text-in-audio-session", "audio-in-text-session", "odd-bytes", "rate-too-low", "rate-unset"],
)
def test_invalid_argument(server: RunningServer, requests: list[pb.ConverseRequest], words: str) -> None:
    with grpc.insecure_channel(server.target) as channel:
        error = _error(lipstream_pb2_grpc.LipStreamStub(channel), *requests)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in error.details()


def test_client_checks_audio_before_sending(server: RunningServer) -> None:
    with Client(server.target) as client:
        with client.converse_audio(input_sample_rate=IN_RATE) as conversation:
            with pytest.raises(ValueError, match="whole samples"):
                conversation.send_audio(b"\0\0\0")
            with pytest.raises(ValueError, match="mono"):
                conversation.send_audio(np.zeros((10, 2), np.int16))
            conversation.end()
            list(conversation)
        with pytest.raises(InvalidArgumentError):
            list(client.converse_audio(b"\0\0", input_sample_rate=100))


async def test_async_client_converse_audio(server: RunningServer) -> None:
    async def source():  # type: ignore[no-untyped-def]
        for piece in pieces(speech_like(0.5)):
            yield piece

    async with AsyncClient(server.target) as client:
        conversation = client.converse_audio(source(), input_sample_rate=IN_RATE, audio_format="pcm16")
        events = [event async for event in conversation]
    audio = [e for e in events if isinstance(e, AudioChunk)]
    assert sum(a.num_samples for a in audio) == int(0.5 * IN_RATE)
    assert [e.kind for e in events if isinstance(e, UtteranceEvent)] == ["started", "finished"]


def test_cli_say_audio_lip_syncs_a_wav_into_an_mp4(server: RunningServer, tmp_path: Path) -> None:
    from lipstream.client.cli import main as cli_main

    from tests.test_client_cli import probe_mp4

    speech = tmp_path / "speech.wav"
    with wave.open(str(speech), "wb") as wav:
        wav.setnchannels(2)  # mixed down to mono
        wav.setsampwidth(2)
        wav.setframerate(IN_RATE)
        wav.writeframes(np.repeat(np.frombuffer(pcm16(speech_like(1.0)), "<i2"), 2).tobytes())
    out = tmp_path / "out.mp4"
    assert cli_main(["--target", server.target, "say", "--audio", str(speech), "-o", str(out), "-q"]) == 0
    media = probe_mp4(out)
    assert media["frames"] == 25 and abs(media["audio"] - 1.0) < 2048 / IN_RATE
    assert cli_main(["--target", server.target, "say", "hello", "--audio", str(speech), "-o", str(out)]) == 2


def test_wav2lip_lip_syncs_the_clients_audio(tmp_path: Path) -> None:
    from lipstream.client import VideoConfig
    from lipstream.server.engine import Engine
    from lipstream.server.options import EngineSettings

    from tests.servers import TinyVoice
    from tests.wav2lip_fill import write_official_checkpoint

    checkpoint = write_official_checkpoint(tmp_path / "wav2lip.pth")
    voice = TinyVoice()
    engine = Engine(EngineSettings(wav2lip_checkpoint=str(checkpoint)), voices={voice.name: voice})
    with running_server(engine) as running, Client(running.target) as client:
        conversation = client.converse_audio(
            pieces(speech_like(1.0)), input_sample_rate=IN_RATE, video=VideoConfig(engine="wav2lip")
        )
        events = list(conversation)
    assert events[0].engine == "wav2lip"
    frames = [e for e in events if isinstance(e, VideoFrame)]
    assert [f.frame_index for f in frames] == list(range(25)) and all(f.speaking for f in frames[1:-1])
    assert conversation.stats is not None and conversation.stats.time_to_first_frame_s > 0
