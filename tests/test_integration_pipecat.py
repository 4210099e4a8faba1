"""lipstream.integrations.pipecat in a real Pipecat pipeline, in-process, against a real lipstream server on
loopback: a TTS-like processor streams TTSAudioRawFrames, LipStreamVideoService turns them into the same
audio and lip-synced images, in order; an InterruptionFrame clears within one frame."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("pipecat")

from lipstream.integrations.pipecat import LipStreamVideoService  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from tests.servers import RunningServer, running_server, tiny_engine  # noqa: E402
from tests.test_audio_in import pcm16, speech_like  # noqa: E402

RATE = 16000
FPS = 25.0
CHUNK = 320  # 20 ms, as TTS services stream


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(tiny_engine()) as running:
        yield running


class StreamingTTS(FrameProcessor):
    """A stand-in for any TTS: a TextFrame "<seconds>" becomes that much speech, streamed in 20 ms frames,
    `pause_s` apart (0: as fast as it can)."""

    def __init__(self, pause_s: float = 0.0) -> None:
        super().__init__()
        self.pause_s = pause_s
        self.sent = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, TextFrame):
            await self.push_frame(frame, direction)
            return
        data = pcm16(speech_like(float(frame.text), RATE))
        await self.push_frame(TTSStartedFrame())
        for start in range(0, len(data), 2 * CHUNK):
            await self.push_frame(TTSAudioRawFrame(data[start : start + 2 * CHUNK], RATE, 1))
            self.sent += len(data[start : start + 2 * CHUNK]) // 2
            if self.pause_s:
                await asyncio.sleep(self.pause_s)
        await self.push_frame(TTSStoppedFrame())


class Sink(FrameProcessor):
    """Records what reaches the end of the pipeline; `images` is set after `wanted` images."""

    def __init__(self, wanted: int = 0) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.wanted = wanted
        self.images = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.frames.append(frame)
        if self.wanted and sum(isinstance(f, OutputImageRawFrame) for f in self.frames) >= self.wanted:
            self.images.set()
        await self.push_frame(frame, direction)


async def run(server: RunningServer, tts: StreamingTTS, sink: Sink, script) -> None:  # type: ignore[no-untyped-def]
    video = LipStreamVideoService(target=server.target, fps=FPS)
    pipeline = Pipeline([tts, video, sink])
    worker = PipelineWorker(pipeline, params=PipelineParams(), cancel_on_idle_timeout=False)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), script(worker)), timeout=60)


def _audio_samples(frames: list[Frame]) -> int:
    return sum(f.num_frames for f in frames if isinstance(f, TTSAudioRawFrame))


async def test_frames_and_audio_in_order(server: RunningServer) -> None:
    tts, sink = StreamingTTS(), Sink()

    async def script(worker: PipelineWorker) -> None:
        await worker.queue_frames([TextFrame("1.2"), EndFrame()])

    await run(server, tts, sink, script)
    images = [f for f in sink.frames if isinstance(f, OutputImageRawFrame)]
    audio = [f for f in sink.frames if isinstance(f, TTSAudioRawFrame)]
    assert tts.sent == int(1.2 * RATE) == _audio_samples(sink.frames)
    assert len(images) == math.ceil(1.2 * FPS)
    first = images[0]
    assert first.sync_with_audio and first.format == "RGB"
    assert len(first.image) == first.size[0] * first.size[1] * 3
    assert [i.metadata["lipstream"]["frame_index"] for i in images] == list(range(len(images)))
    assert {a.sample_rate for a in audio} == {RATE}
    # Each image comes after the audio before its time (and not far ahead of it: the server's bounded lead).
    heard = 0
    for frame in sink.frames:
        if isinstance(frame, TTSAudioRawFrame):
            heard += frame.num_frames
        elif isinstance(frame, OutputImageRawFrame):
            at = frame.metadata["lipstream"]["frame_index"] / FPS * RATE
            assert heard >= min(at, tts.sent) - 0.1 * RATE
    received = np.frombuffer(b"".join(a.audio for a in audio), "<i2").astype(int)
    sent = np.frombuffer(pcm16(speech_like(1.2, RATE)), "<i2").astype(int)
    assert np.max(np.abs(received - sent)) <= 1  # the same audio back (PCM16 -> float -> PCM16)


async def test_interruption_clears_within_one_frame(server: RunningServer) -> None:
    tts, sink = StreamingTTS(pause_s=0.02), Sink(wanted=10)

    async def script(worker: PipelineWorker) -> None:
        await worker.queue_frame(TextFrame("3.0"))
        await sink.images.wait()
        await worker.queue_frame(InterruptionFrame())
        await worker.queue_frames([TextFrame("0.4"), EndFrame()])

    await run(server, tts, sink, script)
    cut = next(i for i, f in enumerate(sink.frames) if isinstance(f, InterruptionFrame))
    after = sink.frames[cut + 1 :]
    images = [f for f in after if isinstance(f, OutputImageRawFrame)]
    utterances = [f.metadata["lipstream"]["utterance_id"] for f in images]
    assert utterances.count(1) <= 1
    assert sum(u > 1 for u in utterances) >= math.ceil(0.4 * FPS) - 1
    before = [f for f in sink.frames[:cut] if isinstance(f, OutputImageRawFrame)]
    assert len(before) >= 10 and tts.sent < 3.0 * RATE  # cut mid-utterance; the TTS was interrupted too


async def test_tts_service_speaks_with_lipstreams_voice(server: RunningServer) -> None:
    from lipstream.integrations.pipecat import LipStreamTTSService
    from pipecat.frames.frames import LLMFullResponseEndFrame

    sink = Sink()
    tts = LipStreamTTSService(target=server.target, fps=FPS)
    pipeline = Pipeline([tts, sink])
    worker = PipelineWorker(pipeline, params=PipelineParams(), cancel_on_idle_timeout=False)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    tokens = [TextFrame(t) for t in ("Hello ", "there, ", "how are ", "you")]
    script = worker.queue_frames([*tokens, LLMFullResponseEndFrame(), EndFrame()])
    await asyncio.wait_for(asyncio.gather(runner.run(), script), timeout=60)
    kinds = [type(f) for f in sink.frames if isinstance(f, TTSStartedFrame | TTSStoppedFrame)]
    assert kinds and kinds[0] is TTSStartedFrame and kinds[-1] is TTSStoppedFrame
    assert kinds.count(TTSStartedFrame) == kinds.count(TTSStoppedFrame)
    samples = _audio_samples(sink.frames)
    rate = next(f.sample_rate for f in sink.frames if isinstance(f, TTSAudioRawFrame))
    images = [f for f in sink.frames if isinstance(f, OutputImageRawFrame)]
    assert samples > 0 and abs(len(images) - samples / rate * FPS) <= kinds.count(TTSStartedFrame)
    assert not any(isinstance(f, TextFrame) and f.text in ("Hello ", "you") for f in sink.frames)
