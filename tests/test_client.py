"""Every client call, sync and async, against a real lipstream server on 127.0.0.1 (`grpc_target`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import grpc
import numpy as np
import pytest
from lipstream.client import (
    AsyncClient,
    AudioChunk,
    Client,
    DeadlineExceededError,
    Event,
    InvalidArgumentError,
    SessionStarted,
    SessionStats,
    UnavailableError,
    UtteranceEvent,
    VideoConfig,
    VideoFrame,
    VisemeEvent,
    collect_audio,
)

TEXT = "Hello there. This reply streams in as tokens, the way a language model writes it."
LONG_TEXT = " ".join(
    f"Sentence number {n} is a long one, so that the voice keeps talking a while." for n in range(1, 9)
)


def tokens(text: str) -> Iterator[str]:
    """An LLM-like token stream: words with their spaces, a few characters at a time."""
    for word in text.split(" "):
        yield word[:3]
        if word[3:]:
            yield word[3:]
        yield " "


def is_speech(event: Event) -> bool:
    """Audio of an utterance (REALTIME pacing also sends silence, with utterance_id 0, while idle)."""
    return isinstance(event, AudioChunk) and event.utterance_id != 0


def check_stream(events: list[Event], *, video: bool) -> tuple[SessionStarted, SessionStats]:
    """The invariants of a finished stream: started first, stats last, audio contiguous on the clock."""
    started, stats = events[0], events[-1]
    assert isinstance(started, SessionStarted) and isinstance(stats, SessionStats)
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert chunks, "no audio"
    for chunk in chunks:
        assert chunk.data[:4] == b"RIFF" and chunk.data[8:12] == b"WAVE"
        assert chunk.sample_rate == started.sample_rate and len(chunk.samples) == chunk.num_samples
    audio = collect_audio(events)
    assert audio.duration == pytest.approx(stats.audio_seconds, abs=0.05)
    assert np.abs(audio.samples).max() > 0.01, "the speech is silent"
    frames = [e for e in events if isinstance(e, VideoFrame)]
    if video:
        assert started.fps > 0 and started.frame_width > 0 and started.engine in ("viseme", "wav2lip")
        assert frames and all(f.jpeg[:2] == b"\xff\xd8" for f in frames)
        assert [f.frame_index for f in frames] == list(range(len(frames)))
        assert all(f.pts == pytest.approx(f.frame_index / started.fps) for f in frames)
        assert (frames[0].width, frames[0].height) == (started.frame_width, started.frame_height)
        assert stats.frames == len(frames)
    else:
        assert not frames and started.fps == 0
    return started, stats


@pytest.fixture
def client(grpc_target: str) -> Iterator[Client]:
    with Client(grpc_target, timeout=120) as c:
        yield c


def test_info_voices_avatars(client: Client) -> None:
    info = client.info()
    voices = client.voices(metadata=[("x-request-id", "test-voices")])
    avatars = client.avatars()
    assert info.version and info.device
    assert "viseme" in info.engines and info.max_sessions > 0 and info.max_text_chars > 0
    assert [v.name for v in voices if v.is_default] == [info.default_voice]
    assert all(v.sample_rate > 0 and v.languages for v in voices)
    assert [a.name for a in avatars if a.is_default] == [info.default_avatar]
    assert all(a.width > 0 and a.height > 0 and a.num_frames >= 1 for a in avatars)


def test_synthesize_audio_only(client: Client) -> None:
    stream = client.synthesize("Hello from the synthesize call.")
    events = list(stream)
    started, stats = check_stream(events, video=False)
    assert stream.started == started and stream.stats == stats
    assert started.voice == client.info().default_voice
    assert stats.utterances >= 1 and stats.interrupted == 0


def test_converse_streams_an_iterator_of_tokens_with_video_and_visemes(client: Client) -> None:
    with client.converse(tokens(TEXT), video=True, visemes=True) as conversation:
        events = list(conversation)
    started, stats = check_stream(events, video=True)
    utterances = [e for e in events if isinstance(e, UtteranceEvent)]
    finished = [u for u in utterances if u.kind == "finished"]
    assert [u.kind for u in utterances].count("started") == len(finished) == stats.utterances >= 2
    spoken = " ".join(u.text.strip() for u in finished)
    assert spoken.split() == TEXT.split()   # every token was spoken, in order, nothing twice
    visemes = [e for e in events if isinstance(e, VisemeEvent)]
    assert visemes and {v.viseme for v in visemes} - {"sil"}
    assert all(v.start_sample < v.end_sample for v in visemes)


def test_converse_str_and_options(client: Client) -> None:
    voice = client.voices()[0]
    events = list(client.converse("Slow and steady.", voice=voice.name, length_scale=1.5, sample_rate=16000))
    started, _ = check_stream(events, video=False)
    assert started.voice == voice.name and started.sample_rate == 16000
    assert started.config.length_scale == pytest.approx(1.5)


def test_interrupt_mid_utterance(client: Client) -> None:
    # REALTIME pacing: the server sends speech as it would be played, so the interrupt lands mid-utterance.
    with client.converse(pacing="realtime") as conversation:
        conversation.send(LONG_TEXT)
        events: list[Event] = []
        stream = iter(conversation)
        for event in stream:
            events.append(event)
            if is_speech(event):
                conversation.interrupt()
                break
        first_utterance = events[-1].utterance_id  # type: ignore[union-attr]
        for event in stream:
            events.append(event)
            if isinstance(event, UtteranceEvent) and event.kind == "interrupted":
                break
        conversation.send("Short answer.")
        conversation.end()
        events += list(stream)
    interrupted = [e for e in events if isinstance(e, UtteranceEvent) and e.kind == "interrupted"]
    assert [u.utterance_id for u in interrupted] == [first_utterance]
    stop = interrupted[0].end_sample
    finished = [e for e in events if isinstance(e, UtteranceEvent) and e.kind == "finished"]
    assert first_utterance not in [u.utterance_id for u in finished]
    assert [u.text.strip() for u in finished] == ["Short answer."]   # the rest of LONG_TEXT was dropped
    assert not any("number 8" in e.text for e in events if isinstance(e, UtteranceEvent))
    old_audio = [e for e in events if isinstance(e, AudioChunk) and e.utterance_id == first_utterance]
    assert max(c.end_sample for c in old_audio) <= stop
    stats = events[-1]
    assert isinstance(stats, SessionStats) and stats.interrupted == 1
    assert stats.audio_seconds < 8   # eight long sentences would be far longer


def test_interrupting_a_token_source_drops_its_rest(client: Client) -> None:
    pulled = 0

    def endless() -> Iterator[str]:
        # An LLM that would talk for minutes (bounded so a broken interrupt cannot hang the test).
        nonlocal pulled
        for n in range(3000):
            pulled = n + 1
            time.sleep(0.002)   # tokens arrive over time, faster than speech
            yield f"Token {n} keeps coming. "

    with client.converse(endless(), pacing="realtime") as conversation:
        for event in conversation:
            if is_speech(event):
                conversation.interrupt()
                conversation.end()
                break
        rest = list(conversation)
    assert isinstance(rest[-1], SessionStats) and rest[-1].interrupted >= 1
    assert pulled < 3000   # the interrupt stopped reading the source


def test_close_mid_stream_ends_quietly(client: Client) -> None:
    conversation = client.converse(LONG_TEXT, pacing="realtime")
    for event in conversation:
        if is_speech(event):
            break
    conversation.close()
    assert list(conversation) == []   # cancelled by us: no error, no more events
    assert client.info().active_sessions >= 0


def test_errors_carry_the_servers_status_and_message(client: Client, grpc_target: str) -> None:
    with pytest.raises(InvalidArgumentError) as unknown_voice:
        list(client.converse("Hi.", voice="no-such-voice"))
    assert unknown_voice.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no-such-voice" in unknown_voice.value.details
    with pytest.raises(InvalidArgumentError, match="no-such-avatar"):
        list(client.synthesize("Hi.", video=VideoConfig(avatar="no-such-avatar")))
    with pytest.raises(InvalidArgumentError, match="length_scale"):
        list(client.synthesize("Hi.", length_scale=100.0))
    with pytest.raises(DeadlineExceededError):
        list(client.converse(LONG_TEXT, pacing="realtime", timeout=0.5))
    with Client("127.0.0.1:1") as nowhere, pytest.raises(UnavailableError) as unavailable:
        nowhere.info(timeout=10)
    assert unavailable.value.target == "127.0.0.1:1"


# -- asyncio ----------------------------------------------------------------------------------------------


async def async_tokens(text: str) -> AsyncIterator[str]:
    for token in tokens(text):
        yield token


async def test_async_info_voices_avatars(grpc_target: str) -> None:
    async with AsyncClient(grpc_target, timeout=60) as client:
        info = await client.info()
        assert [v.name for v in await client.voices() if v.is_default] == [info.default_voice]
        assert [a.name for a in await client.avatars() if a.is_default] == [info.default_avatar]


async def test_async_synthesize_and_converse_async_tokens(grpc_target: str) -> None:
    async with AsyncClient(grpc_target, timeout=120) as client:
        check_stream([e async for e in client.synthesize("Hello from asyncio.")], video=False)
        async with client.converse(async_tokens(TEXT), video=True, visemes=True) as conversation:
            events = [e async for e in conversation]
        _, stats = check_stream(events, video=True)
        finished = [e for e in events if isinstance(e, UtteranceEvent) and e.kind == "finished"]
        assert " ".join(u.text.strip() for u in finished).split() == TEXT.split()
        assert conversation.stats == stats


async def test_async_interrupt_mid_utterance(grpc_target: str) -> None:
    async with AsyncClient(grpc_target, timeout=120) as client:
        conversation = client.converse(pacing="realtime")
        await conversation.send(LONG_TEXT)
        events: list[Event] = []
        async for event in conversation:
            events.append(event)
            if is_speech(event) and sum(map(is_speech, events)) == 1:
                await conversation.interrupt()
                await conversation.send("Done.")
                await conversation.end()
        await conversation.close()
    ends = [e for e in events if isinstance(e, UtteranceEvent) and e.kind != "started"]
    kinds = [(e.kind, e.text.strip()) for e in ends]
    assert kinds[0][0] == "interrupted" and kinds[1:] == [("finished", "Done.")]
    assert isinstance(events[-1], SessionStats) and events[-1].interrupted == 1


async def test_async_errors(grpc_target: str) -> None:
    async with AsyncClient(grpc_target) as client:
        with pytest.raises(InvalidArgumentError, match="no-such-voice"):
            [e async for e in client.converse("Hi.", voice="no-such-voice")]
        with pytest.raises(InvalidArgumentError, match="no-such-voice"):
            [e async for e in client.synthesize("Hi.", voice="no-such-voice")]
        with pytest.raises(DeadlineExceededError):
            [e async for e in client.converse(LONG_TEXT, pacing="realtime", timeout=0.5)]
    async with AsyncClient("127.0.0.1:1") as nowhere:
        with pytest.raises(UnavailableError):
            await nowhere.voices(timeout=10)


async def test_async_close_mid_stream_ends_quietly(grpc_target: str) -> None:
    async with AsyncClient(grpc_target, timeout=60) as client:
        conversation = client.converse(LONG_TEXT, pacing="realtime")
        async for event in conversation:
            if is_speech(event):
                break
        await conversation.close()
        assert [e async for e in conversation] == []   # cancelled by us: no error, no more events
