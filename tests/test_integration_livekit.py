"""lipstream.integrations.livekit: LipStreamVideoGenerator in-process with LiveKit's own frame types, against
a real lipstream server on loopback (no LiveKit server needed): push a sentence, get video frames at the fps
and audio frames of the same duration; clear_buffer stops the audio within one frame and the playback
position is where it stopped."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("livekit.agents")

from lipstream.integrations.livekit import LipStreamVideoGenerator  # noqa: E402
from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AudioSegmentEnd  # noqa: E402

from tests.servers import RunningServer, running_server, tiny_engine  # noqa: E402
from tests.test_audio_in import pcm16, speech_like  # noqa: E402

RATE = 16000
FPS = 25.0
FRAME = 320  # 20 ms, as LiveKit's audio frames


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(tiny_engine()) as running:
        yield running


async def push_sentence(generator: LipStreamVideoGenerator, seconds: float) -> None:
    data = np.frombuffer(pcm16(speech_like(seconds, RATE)), np.int16)
    for start in range(0, len(data), FRAME):
        piece = data[start : start + FRAME]
        await generator.push_audio(rtc.AudioFrame(piece.tobytes(), RATE, 1, len(piece)))
    await generator.push_audio(AudioSegmentEnd())


async def test_video_at_the_fps_and_audio_of_matching_duration(server: RunningServer) -> None:
    generator = LipStreamVideoGenerator(target=server.target, fps=FPS, pacing="as_fast_as_possible")
    try:
        await push_sentence(generator, 1.0)
        video: list[rtc.VideoFrame] = []
        audio: list[rtc.AudioFrame] = []
        async with asyncio.timeout(30):
            async for frame in generator:
                if isinstance(frame, AudioSegmentEnd):
                    break
                (video if isinstance(frame, rtc.VideoFrame) else audio).append(frame)
    finally:
        await generator.aclose()
    seconds = sum(a.duration for a in audio)
    assert seconds == pytest.approx(1.0, abs=1e-3)
    assert {a.sample_rate for a in audio} == {RATE} and {a.num_channels for a in audio} == {1}
    assert len(video) == math.ceil(round(seconds * FPS, 6))
    assert video[0].type == rtc.VideoBufferType.RGBA
    assert len(video[0].data) == video[0].width * video[0].height * 4
    assert generator.playback_position == pytest.approx(seconds)


async def test_clear_buffer_stops_within_one_frame(server: RunningServer) -> None:
    generator = LipStreamVideoGenerator(target=server.target, fps=FPS)  # realtime: idle frames too
    yielded = 0.0  # seconds of audio, as LiveKit's AvatarRunner counts its playback position
    try:
        await push_sentence(generator, 3.0)
        frames = 0
        stopped_at = None
        async with asyncio.timeout(30):
            async for frame in generator:
                if isinstance(frame, rtc.AudioFrame):
                    yielded += frame.duration
                elif isinstance(frame, rtc.VideoFrame):
                    frames += 1
                    if frames == 10:
                        await generator.clear_buffer()
                        stopped_at = yielded
                        assert generator.playback_position == pytest.approx(stopped_at)
                        await push_sentence(generator, 0.4)
                elif stopped_at is not None:
                    break  # AudioSegmentEnd of the second sentence
    finally:
        await generator.aclose()
    assert stopped_at is not None and 0 < stopped_at < 2.0
    # After the clear only the second sentence's audio came: the first stopped within a frame.
    assert yielded - stopped_at == pytest.approx(0.4, abs=1 / FPS)
    assert generator.playback_position == pytest.approx(0.4, abs=1e-3)


async def test_a_new_session_opens_after_the_servers_idle_timeout() -> None:
    from lipstream.server.engine import Engine
    from lipstream.server.options import EngineSettings

    from tests.servers import TinyVoice, running_server_async

    voice = TinyVoice()
    engine = Engine(EngineSettings(idle_timeout_s=0.3), voices={voice.name: voice})
    async with running_server_async(engine) as server:
        generator = LipStreamVideoGenerator(target=server.target, fps=FPS, pacing="as_fast_as_possible")
        ends = 0
        try:
            await push_sentence(generator, 0.2)
            async with asyncio.timeout(30):
                async for frame in generator:
                    if isinstance(frame, AudioSegmentEnd):
                        ends += 1
                        if ends == 2:
                            break
                        await asyncio.sleep(0.6)  # the server ends the idle session meanwhile
                        await push_sentence(generator, 0.2)
        finally:
            await generator.aclose()
    assert ends == 2
    assert engine.sessions_opened == 2
