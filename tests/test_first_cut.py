"""The first clause of a streamed reply is cut at a natural break within a bound (issue 19, point 5), and at
its last word when the text stalls (the segmenter's own cuts: tests/test_segmenter.py)."""

from __future__ import annotations

import asyncio

from lipstream.server.events import UtteranceOut
from lipstream.server.options import EngineSettings, SessionOptions

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
