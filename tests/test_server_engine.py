"""The Engine/Session API (what the servicer and the web bridge use), with the tiny test voice."""

from __future__ import annotations

import asyncio

import pytest
from lipstream.server.events import AudioEvent, FrameEvent, SessionStartedEvent, StatsEvent, UtteranceOut
from lipstream.server.options import EngineSettings, InvalidArgument, SessionOptions, Unavailable

from tests.servers import session_threads, tiny_engine


async def test_a_reply_is_sent_whole_without_end_of_input() -> None:
    engine = tiny_engine()
    session = await engine.open_session(SessionOptions(video=True, fps=25))
    await session.send_text("Hello there", flush=True)
    events = session.events()
    started = await anext(events)
    assert isinstance(started, SessionStartedEvent)
    audio = frames = 0
    finished: UtteranceOut | None = None
    async for event in events:
        if isinstance(event, AudioEvent):
            audio += event.num_samples
        elif isinstance(event, FrameEvent):
            frames += 1
        elif isinstance(event, UtteranceOut) and event.kind == "finished":
            finished = event
        if finished is not None and audio == finished.end_sample and frames * 16000 / 25 >= audio:
            break  # everything of the reply has come, though the input is still open
    assert finished is not None and finished.text == "Hello there"
    assert audio == finished.end_sample == 11 * 400
    await session.close()
    assert engine.active_sessions == 0


@pytest.mark.parametrize("sample_rate", [0, 22050, 44100])
async def test_a_resampled_reply_finishes_without_end_of_input(sample_rate: int) -> None:
    # The resampler holds back its last few ms until it sees what follows; with the input still open
    # nothing follows, and the reply must still end: its last samples, then its FINISHED, on one clock.
    engine = tiny_engine()
    session = await engine.open_session(SessionOptions(sample_rate=sample_rate))
    for text in ("Hello there", "and again"):
        await session.send_text(text, flush=True)
    events = session.events()
    audio, finished = 0, []

    async def until_both_finished() -> None:
        nonlocal audio
        async for event in events:
            if isinstance(event, AudioEvent):
                assert event.start_sample == audio  # no gap, no overlap
                audio += event.num_samples
            elif isinstance(event, UtteranceOut) and event.kind == "finished":
                finished.append(event)
                if len(finished) == 2:
                    return

    await asyncio.wait_for(until_both_finished(), timeout=30)
    rate = sample_rate or 16000
    assert [u.end_sample for u in finished] == [round(n * 400 * rate / 16000) for n in (11, 20)]
    assert audio == finished[-1].end_sample  # every sample of the reply came before its FINISHED
    await session.close()


async def test_text_after_end_of_input_and_a_second_events_iteration_are_refused() -> None:
    engine = tiny_engine()
    session = await engine.open_session(SessionOptions())
    await session.end_input()
    with pytest.raises(InvalidArgument, match="after END_OF_INPUT"):
        await session.send_text("more")
    kinds = [type(event).__name__ async for event in session.events()]
    assert kinds == ["SessionStartedEvent", "StatsEvent"]
    with pytest.raises(RuntimeError, match="once"):
        await anext(session.events())


async def test_interrupt_with_nothing_spoken_sends_nothing_and_the_session_goes_on() -> None:
    engine = tiny_engine()
    session = await engine.open_session(SessionOptions())
    await session.interrupt()
    await session.send_text("Still here.")
    await session.end_input()
    events = [event async for event in session.events()]
    utterances = [e for e in events if isinstance(e, UtteranceOut)]
    assert [(u.kind, u.text) for u in utterances] == [("started", "Still here."), ("finished", "Still here.")]
    assert isinstance(events[-1], StatsEvent) and events[-1].interrupted == 0


async def test_close_stops_the_workers_and_forgets_the_session() -> None:
    engine = tiny_engine(samples_per_char=4000)  # long audio: the workers are busy when it closes
    session = await engine.open_session(SessionOptions(video=True))
    await session.send_text("a long reply that takes a while to speak. " * 20, flush=True)
    events = session.events()
    async for event in events:
        if isinstance(event, AudioEvent):
            break
    assert session_threads()
    await session.close()
    await session.close()  # idempotent
    assert engine.active_sessions == 0 and session.closed
    assert session_threads() == []
    await events.aclose()


async def test_shutdown_refuses_new_sessions() -> None:
    engine = tiny_engine(EngineSettings(max_sessions=2))
    running = await engine.open_session(SessionOptions())
    await engine.shutdown(grace_s=0.0)
    assert running.closed and running.stopped_by_shutdown
    with pytest.raises(Unavailable, match="shutting down"):
        await engine.open_session(SessionOptions())


async def test_back_pressure_bounds_a_session_whose_client_does_not_read() -> None:
    engine = tiny_engine(EngineSettings(ring_seconds=1.0), samples_per_char=1600)
    session = await engine.open_session(SessionOptions())
    await session.send_text("x" * 400, flush=True)  # 40 s of audio at 16 kHz
    await asyncio.sleep(0)  # nobody reads the events
    ring = session._ring
    positions = []
    for _ in range(40):  # bounded: the writer must stop growing the clock
        await asyncio.sleep(0.05)
        positions.append(ring.write_position)
    # the packetizer is held by flow control (1 s of media ahead of what was sent), the ring holds 1 s more
    assert positions[-1] == positions[-10]
    assert positions[-1] <= (1.0 + 1.0 + 0.2) * 16000
    await session.close()


async def interrupt_a_stalled_client(options: SessionOptions, stall_s: float) -> list[object]:
    """Reads until the first speech audio, reads nothing for `stall_s` (the stages run ahead of what was
    sent, up to flow control's limit), interrupts, says "Go.", ends the input and reads until "Go." is
    finished (the end of input flushes the resampler's tail)."""
    engine = tiny_engine()
    session = await engine.open_session(options)
    await session.send_text("a very long utterance that would take many seconds to say " * 3, flush=True)
    events = session.events()
    got: list[object] = []
    async for event in events:
        got.append(event)
        if isinstance(event, AudioEvent) and event.utterance_id:
            break
    await asyncio.sleep(stall_s)
    await session.interrupt()
    await session.send_text("Go.", flush=True)
    await session.end_input()
    async for event in events:
        got.append(event)
        if isinstance(event, UtteranceOut) and event.kind == "finished":
            break
    await session.close()
    return got


def check_continuity(events: list[object], fps: float) -> tuple[UtteranceOut, UtteranceOut]:
    """The audio is contiguous across the interrupt (nothing skipped, nothing twice), the frame indices go on
    without a gap; returns the INTERRUPTED event and the next STARTED."""
    utterances = [e for e in events if isinstance(e, UtteranceOut)]
    assert [(u.kind, u.text) for u in utterances[-2:]] == [("started", "Go."), ("finished", "Go.")]
    stopped = next(u for u in utterances if u.kind == "interrupted")
    audio = [e for e in events if isinstance(e, AudioEvent)]
    assert [a.start_sample for a in audio[1:]] == [a.start_sample + a.num_samples for a in audio[:-1]]
    frames = [e for e in events if isinstance(e, FrameEvent)]
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    assert all(f.pts == f.frame_index / fps for f in frames)
    return stopped, utterances[-2]


@pytest.mark.parametrize(
    "options",
    [SessionOptions(video=True), SessionOptions(sample_rate=24000)],
    ids=["viseme-video", "resampled-audio"],
)
async def test_fast_interrupt_the_next_utterance_starts_where_the_received_audio_ends(
    options: SessionOptions,
) -> None:
    events = await interrupt_a_stalled_client(options, stall_s=0.3)
    stopped, started = check_continuity(events, options.fps)
    first = next(e for e in events if isinstance(e, AudioEvent) and e.utterance_id == started.utterance_id)
    assert first.start_sample == stopped.end_sample  # no gap: the audio made ahead was made again
    assert abs(started.start_sample - stopped.end_sample) <= (1 if options.sample_rate else 0)
    assert stopped.end_sample > stopped.start_sample  # it stopped mid-utterance


async def test_realtime_interrupt_goes_on_with_the_next_text_soon() -> None:
    options = SessionOptions(video=True, pacing="realtime")
    events = await interrupt_a_stalled_client(options, stall_s=0.0)
    stopped, started = check_continuity(events, options.fps)
    # What the stages made ahead of the wall clock was made again from the received end: silence fills
    # the time until the next utterance can start (the wall clock), never a hole.
    assert 0 <= started.start_sample - stopped.end_sample <= 0.5 * 16000


async def test_realtime_times_to_first_audio_and_frame_count_from_the_first_speech() -> None:
    engine = tiny_engine()
    session = await engine.open_session(SessionOptions(video=True, pacing="realtime"))
    events = session.events()
    idle_audio = idle_frames = 0
    async for event in events:  # silence and idle frames go out before any text
        idle_audio += isinstance(event, AudioEvent) and event.utterance_id == 0
        idle_frames += isinstance(event, FrameEvent) and event.utterance_id == 0
        if idle_audio >= 2 and idle_frames >= 2:
            break
    await session.send_text(".", flush=True)  # punctuation only: no speech, not where the time starts
    await asyncio.sleep(0.2)
    sent = asyncio.get_running_loop().time()
    await session.send_text("Hello there.", flush=True)
    await session.end_input()
    first_audio = first_frame = None
    stats = None
    async for event in events:
        now = asyncio.get_running_loop().time()
        if isinstance(event, AudioEvent) and event.utterance_id and first_audio is None:
            first_audio = now - sent
        elif isinstance(event, FrameEvent) and event.utterance_id and first_frame is None:
            first_frame = now - sent
        elif isinstance(event, StatsEvent):
            stats = event
    assert stats is not None and first_audio is not None and first_frame is not None
    # measured on the server from the speaking clause's arrival to the send: inside what the client saw
    assert 0 < stats.time_to_first_audio_s <= first_audio
    assert 0 < stats.time_to_first_frame_s <= first_frame
