"""The first clause of a streamed reply is cut at a natural break within a bound (issue 19, point 5), and at
its last word when the text stalls (the segmenter's own cuts: tests/test_segmenter.py); such a clause loses
its trailing quiet, which would be a pause mid-sentence."""

from __future__ import annotations

import asyncio

import numpy as np
from lipstream.server.engine import Engine
from lipstream.server.events import UtteranceOut, VisemeOut, WordOut
from lipstream.server.options import EngineSettings, SessionOptions
from lipstream.server.tts_stage import TRIM_KEEP_S, _trim_quiet

from tests.servers import tiny_engine


async def _first_utterance(settings: EngineSettings, pieces: list[str]) -> str:
    engine = tiny_engine(settings)
    session = await engine.open_session(SessionOptions())
    try:
        for piece in pieces:
            await session.send_text(piece)
        events = session.events()
        async with asyncio.timeout(30):  # a hang guard, not a bound on the behaviour
            async for event in events:
                if isinstance(event, UtteranceOut) and event.kind == "started":
                    return event.text
        raise AssertionError("no utterance started")
    finally:
        await session.close()


async def test_a_stalled_first_clause_is_spoken_after_the_wait() -> None:
    text = await _first_utterance(EngineSettings(first_clause_wait_s=0.05), ["The painting you", " see here"])
    assert text == "The painting you see"  # "here" may go on ("here's"): it waits for its space


async def test_a_natural_break_within_the_bound() -> None:
    settings = EngineSettings(first_clause_wait_s=0.0)  # no timer: the text alone decides
    sentence = "The painting you see here was made by Vermeer."
    # Known at once: the full stop is within ten words. Streamed as tokens: cut before the phrase "by ...".
    assert await _first_utterance(settings, [sentence + " "]) == sentence
    tokens = [word + " " for word in sentence.split()]
    assert await _first_utterance(settings, tokens) == "The painting you see here was made"


def test_trim_keeps_speech_and_a_little_quiet() -> None:
    rate = 22050
    speech = np.sin(np.arange(rate // 5) * 0.3).astype(np.float32)  # 200 ms loud
    tail = np.concatenate([speech, np.zeros(rate // 5, np.float32)])  # then 200 ms of quiet
    kept = _trim_quiet(tail, rate, loudest=float(np.sqrt(np.mean(speech**2))))
    assert len(speech) <= len(kept) <= len(speech) + int((TRIM_KEEP_S + 0.01) * rate)


async def test_a_clause_cut_mid_sentence_ends_without_its_trailing_quiet() -> None:
    """The default voice: the clause's audio is shorter than the same words spoken alone, and its word and
    viseme events end within it (the next utterance starts where it ends)."""
    engine = Engine(EngineSettings(first_clause_wait_s=0.0))
    session = await engine.open_session(SessionOptions(noise_scale=0.0, noise_scale_w=0.0, visemes=True,
                                                       words=True))
    try:
        for word in "The painting you see here was made by Vermeer in Delft.".split():
            await session.send_text(word + " ")
        await session.end_input()  # streamed: a first clause cut before "by", then the rest
        events = [event async for event in session.events()]
    finally:
        await session.close()
    finished = [e for e in events if isinstance(e, UtteranceOut) and e.kind == "finished"]
    first = finished[0]
    assert first.text == "The painting you see here was made"
    voice = engine._voices[engine.default_voice]
    alone = voice.synthesize(first.text, noise_scale=0.0, noise_scale_w=0.0)
    assert first.end_sample - first.start_sample <= len(alone.audio) - int(0.05 * alone.sample_rate)
    timed = [e for e in events if isinstance(e, WordOut | VisemeOut) and e.utterance_id == first.utterance_id]
    assert timed and max(e.end_sample for e in timed) <= first.end_sample
