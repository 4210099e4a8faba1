"""Pieces of the session pipeline: the timeline, the multiplexer's ordering, WAV chunks, the resampler."""

from __future__ import annotations

import asyncio
import io
import wave

import numpy as np
from lipstream.server.audio import StreamResampler
from lipstream.server.clock import Clock, Rewind
from lipstream.server.encoders import encoder_for
from lipstream.server.events import AudioEvent, FrameEvent, UtteranceOut
from lipstream.server.mux import Multiplexer
from lipstream.server.timeline import Timeline, UtteranceSpan


def test_timeline_answers_which_utterance_covers_a_sample() -> None:
    timeline = Timeline()
    first = UtteranceSpan(1, "one", 0, [])
    timeline.add(first)
    assert timeline.at(500) == (first, None)  # still being written: open-ended
    timeline.finish(first, 1000)
    second = UtteranceSpan(2, "two", 1500, [])  # a gap of silence before it (REALTIME)
    timeline.add(second)
    assert timeline.at(999) == (first, 1000)
    assert timeline.at(1000) == (None, 1500)
    assert timeline.at(1500) == (second, None)
    timeline.prune(1200)
    assert timeline.at(500) == (None, 1500)
    assert timeline.at(1600) == (second, None)


def test_an_interrupt_cuts_the_timeline_so_the_next_utterance_is_found() -> None:
    timeline = Timeline()
    spoken = UtteranceSpan(1, "one", 0, [])
    timeline.add(spoken)
    timeline.finish(spoken, 1000)
    dead = UtteranceSpan(2, "two", 1000, [])  # written ahead of the readers, then interrupted
    timeline.add(dead)
    timeline.cut(600)  # the fastest reader was at 600: the ring's write position goes back there
    after = UtteranceSpan(3, "three", 600, [])
    timeline.add(after)
    assert timeline.at(599) == (spoken, 600)
    assert timeline.at(600) == (after, None)
    assert timeline.at(1200) == (after, None)  # not the dead span that used to start at 1000
    timeline.finish(dead, 1500)  # the dead utterance's worker finishing late changes nothing
    timeline.finish(spoken, 1000)  # nor can a late finish stretch a span past the cut
    assert timeline.at(700) == (after, None)
    assert spoken.end == 600


def audio(start: int, count: int, utterance: int = 1) -> AudioEvent:
    samples = np.zeros(count, dtype=np.float32)
    return AudioEvent(b"", samples, start, count, 100, utterance)


def frame(index: int, utterance: int = 1) -> FrameEvent:
    return FrameEvent(b"", index, index / 10, 1, 1, utterance, True)


async def drain(mux: Multiplexer) -> list[object]:
    await asyncio.sleep(0)  # let the thread-side calls land
    out = []
    while True:
        ready = mux._ready()
        if ready is None and not mux._urgent:
            return out
        out.append(await mux.next_event())


async def test_an_event_waits_until_no_source_can_send_an_earlier_one() -> None:
    mux = Multiplexer(asyncio.get_running_loop(), ("control", "audio", "video"), realtime=False)
    mux.push("control", UtteranceOut("started", 1, "hi", 0, 0), 0.0, epoch=0)
    mux.watermark("control", 10.0, epoch=0)
    mux.push("audio", audio(0, 50), 0.0, epoch=0)
    mux.push("audio", audio(50, 50), 0.5, epoch=0)
    mux.watermark("audio", 1.0, epoch=0)
    got = await drain(mux)
    assert [type(e).__name__ for e in got] == ["UtteranceOut", "AudioEvent"]  # video is still at 0
    for index in range(6):
        mux.push("video", frame(index), index / 10, epoch=0)
    mux.watermark("video", 0.6, epoch=0)
    got = await drain(mux)
    times = [e.pts if isinstance(e, FrameEvent) else e.start_sample / 100 for e in got]
    assert times == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5]
    assert isinstance(got[-1], FrameEvent)  # at equal times audio goes before the frame


async def test_interrupt_drops_the_utterance_and_says_where_it_stopped() -> None:
    mux = Multiplexer(asyncio.get_running_loop(), ("control", "audio"), realtime=False)
    mux.push("control", UtteranceOut("started", 1, "long", 0, 0), 0.0, epoch=0)
    mux.push("audio", audio(0, 30), 0.0, epoch=0)
    mux.watermark("audio", 0.3, epoch=0)
    mux.watermark("control", 5.0, epoch=0)
    assert len(await drain(mux)) == 2
    mux.push("audio", audio(30, 30), 0.3, epoch=0)  # queued, not yet sent (the control source holds it back)
    await asyncio.sleep(0)
    assert mux.sent_position() == (30, 0)
    mux.interrupt(Rewind(audio_end=30, next_frame=0, ring_end=30, cut_at=30, dead_below=2, epoch=1))
    mux.push("audio", audio(60, 30, utterance=0), 0.6, epoch=0)  # made before the rewind: stale, dropped
    mux.watermark("audio", 0.9, epoch=0)  # stale too: the audio watermark stays where the client is
    got = await drain(mux)
    assert got == [UtteranceOut("interrupted", 1, "long", 0, 30)]
    mux.push("audio", audio(30, 10, utterance=2), 0.3, epoch=1)  # the next utterance, from the sent end
    await asyncio.sleep(0)
    assert await drain(mux) == []  # the control source's watermark went back to 0.3: it may still say more
    mux.watermark("control", 0.4, epoch=1)
    mux.watermark("audio", 0.4, epoch=1)
    assert [(e.utterance_id, e.start_sample) for e in await drain(mux)] == [(2, 30)]


async def test_interrupt_drops_queued_frames_and_the_next_frame_is_the_first_not_sent() -> None:
    mux = Multiplexer(asyncio.get_running_loop(), ("control", "audio", "video"), realtime=False)
    mux.watermark("control", 5.0, epoch=0)
    mux.push("audio", audio(0, 50, utterance=0), 0.0, epoch=0)
    mux.watermark("audio", 0.5, epoch=0)
    for index in range(8):
        mux.push("video", frame(index, utterance=0), index / 10, epoch=0)
    mux.watermark("video", 0.8, epoch=0)
    await asyncio.sleep(0)
    sent = [await mux.next_event() for _ in range(4)]  # the audio and frames 0..2
    assert [type(e).__name__ for e in sent] == ["AudioEvent", "FrameEvent", "FrameEvent", "FrameEvent"]
    assert mux.sent_position() == (50, 3)
    mux.interrupt(Rewind(audio_end=50, next_frame=3, ring_end=50, cut_at=30, dead_below=1, epoch=1))
    assert await drain(mux) == []  # frames 3..7 were made ahead: dropped, the stage makes them again
    mux.push("video", frame(3, utterance=0), 0.3, epoch=1)
    mux.watermark("video", 0.4, epoch=1)
    assert await drain(mux) == []  # every watermark went back to 0.2, the last time sent
    mux.watermark("control", 5.0, epoch=1)
    mux.watermark("audio", 0.5, epoch=1)
    assert [e.frame_index for e in await drain(mux)] == [3]


def wav_bytes(samples: np.ndarray, sample_rate: int, audio_format: str) -> bytes:
    return encoder_for(audio_format, sample_rate).encode(samples)


def test_wav_chunks_are_complete_files() -> None:
    samples = np.linspace(-1, 1, 101, dtype=np.float32)
    with wave.open(io.BytesIO(wav_bytes(samples, 22050, "wav_pcm16"))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (
            1,
            2,
            22050,
            101,
        )
        pcm = np.frombuffer(wav.readframes(101), "<i2")
    assert pcm[0] == -32767 and pcm[-1] == 32767
    raw = wav_bytes(samples, 22050, "pcm16")
    assert np.array_equal(np.frombuffer(raw, "<i2"), pcm)
    floats = wav_bytes(samples, 22050, "wav_float32")
    assert len(floats) == 44 + 4 * 101 and np.array_equal(np.frombuffer(floats[44:], "<f4"), samples)


def test_the_resampler_keeps_one_clock_over_chunks() -> None:
    resampler = StreamResampler(22050, 16000)
    rng = np.random.default_rng(0)
    total = sum(
        len(resampler.process(rng.standard_normal(n).astype(np.float32))) for n in (1, 500, 2205, 7000)
    )
    total += len(resampler.process(np.zeros(0, dtype=np.float32), last=True))
    assert abs(total - (1 + 500 + 2205 + 7000) * 16000 / 22050) <= 1
    # The clock the resampled chunks are counted on (the session's Clock, not the resampler, converts).
    assert Clock(22050, 16000).to_output(22050) == 16000
    assert Clock(16000, 16000).to_output(123) == 123
