"""The viseme path of a session: the avatar's own mouth placement, and symbols no viseme table knows."""

from __future__ import annotations

import copy
import logging
from typing import Any

import cv2
import numpy as np
import pytest
from lipstream.models.avatar import load_avatar
from lipstream.server.engine import Engine
from lipstream.server.events import FrameEvent, StatsEvent, VisemeOut
from lipstream.server.options import SessionOptions

from tests.servers import TinySpeechStream, TinyVoice

UNKNOWN = "☃"  # no phoneme table has it, as a new voice's symbol would not be


async def widest_mouth(engine: Engine, avatar_name: str, avatar: Any) -> tuple[float, float]:
    """Where the pixels changed most in the session's most open speaking frame: the centroid of the
    changed pixels, as fractions of the face box (x from its left edge, y from its top)."""
    session = await engine.open_session(SessionOptions(video=True, avatar=avatar_name, jpeg_quality=95))
    await session.send_text("aaaa aaaa aaaa.", flush=True)  # open vowels: the jaw drops
    await session.end_input()
    best: tuple[np.ndarray, int] | None = None
    async for event in session.events():
        if isinstance(event, FrameEvent) and event.speaking:
            image = cv2.imdecode(np.frombuffer(event.jpeg, np.uint8), cv2.IMREAD_COLOR)
            source = avatar.frame(event.frame_index).astype(int)
            changed = np.abs(image.astype(int) - source).max(axis=2) > 40
            if best is None or changed.sum() > best[0].sum():
                best = (changed, event.frame_index)
    assert best is not None and best[0].sum() > 100, "no frame shows an open mouth"
    changed, index = best
    ys, xs = np.nonzero(changed)
    box = avatar.box(index)
    return (xs.mean() - box.x1) / (box.x2 - box.x1), (ys.mean() - box.y1) / (box.y2 - box.y1)


async def test_the_viseme_renderer_puts_the_mouth_where_the_avatar_json_says() -> None:
    builtin = load_avatar()
    moved = copy.copy(builtin)  # the same face, with an avatar.json that places the mouth elsewhere
    moved.mouth = {"center_x": 0.3, "lips_y": 0.55}
    voice = TinyVoice()
    engine = Engine(voices={voice.name: voice}, avatars={"builtin": builtin, "moved": moved})
    builtin_x, builtin_y = await widest_mouth(engine, "builtin", builtin)
    moved_x, moved_y = await widest_mouth(engine, "moved", moved)
    assert builtin.mouth == {}  # the built-in avatar uses the renderer's defaults (centre 0.49)
    assert builtin_x == pytest.approx(0.49, abs=0.05)
    assert moved_x == pytest.approx(0.3, abs=0.05)
    assert moved_y < builtin_y - 0.1  # the lips part higher up, as placed


class NewSymbolVoice(TinyVoice):
    """A voice whose "x" is a symbol the viseme tables do not know (a new voice with new symbols)."""

    def synthesize_stream(self, text: str, **options: Any) -> TinySpeechStream:  # type: ignore[override]
        stream = super().synthesize_stream(text, **options)
        spoken = text.strip(" .,!?;:")
        stream.phonemes = [
            type(span)(UNKNOWN, span.start_sample, span.end_sample) if char == "x" else span
            for char, span in zip(spoken, stream.phonemes, strict=True)
        ]
        return stream


async def test_a_symbol_without_a_viseme_is_logged_once_and_the_session_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    voice = NewSymbolVoice(name="new-symbols")
    engine = Engine(voices={voice.name: voice})
    session = await engine.open_session(SessionOptions(video=True, visemes=True))
    await session.send_text("Max bax. Fox sax.", flush=True)  # two utterances, each with the symbol
    await session.end_input()
    with caplog.at_level(logging.WARNING, logger="lipstream.server"):
        events = [event async for event in session.events()]
    stats = events[-1]
    assert isinstance(stats, StatsEvent) and stats.utterances == 2
    assert stats.frames > 0 and stats.audio_seconds == pytest.approx(len("Max bax") * 2 * 400 / 16000)
    visemes = [e for e in events if isinstance(e, VisemeOut)]
    assert visemes and all(e.phoneme != UNKNOWN for e in visemes)
    # "Max bax": the unknown x's time (and the word space's) extends the "a" before it
    first = [(e.phoneme, e.start_sample, e.end_sample) for e in visemes if e.utterance_id == 1]
    assert first[:3] == [("m", 0, 400), ("a", 400, 1600), ("b", 1600, 2000)]
    reports = [r for r in caplog.records if UNKNOWN in r.getMessage()]
    assert len(reports) == 1 and "new-symbols" in reports[0].getMessage()
