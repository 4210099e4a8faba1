"""Which utterance covers which samples of the session clock, and the visemes of an utterance.

The TTS stage adds each utterance as it starts and ends it when its samples are written; the readers of the
ring (the audio and lip-sync stages) ask what covers the samples they read. An interrupt cuts it.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lipstream.server.models_api import PhonemeLike

if TYPE_CHECKING:
    from lipstream.models.viseme import VisemeSpan

log = logging.getLogger(__name__)


@dataclass
class UtteranceSpan:
    """An utterance on the session clock (voice-rate samples); `end` is None while it is being written."""

    utterance_id: int
    text: str
    start: int
    phonemes: Sequence[PhonemeLike]
    end: int | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # per-stage derived data (e.g. the mouth track)
    voice: str = ""  # the voice's name, for what is logged about its symbols
    # The voice's word timer (Voice.words: text and phoneme spans -> WordSpans); None: words spread evenly.
    word_timer: Callable[[str, Sequence[PhonemeLike]], Sequence[Any]] | None = field(default=None, repr=False)

    def words(self) -> list[Any]:
        """The utterance's WordSpans (lipstream.models.vits.words) on the session clock, computed once."""
        found = self.cache.get("words")
        if found is None:
            from lipstream.models.vits.words import word_spans

            timed = (
                self.word_timer(self.text, self.phonemes) if self.word_timer is not None
                else word_spans(self.text, self.phonemes, lambda word: ())
            )
            found = self.cache["words"] = [
                replace(w, start_sample=w.start_sample + self.start, end_sample=w.end_sample + self.start)
                for w in timed
            ]
        return found

    def spoken_text(self, heard_until: int, to_output: Callable[[int], int] | None = None) -> str:
        """The text up to the last word whose samples all lie before `heard_until` (the session clock, or the
        output clock when `to_output` maps the session clock onto it)."""
        convert = to_output or (lambda sample: sample)
        words = [w for w in self.words() if w.start_sample < w.end_sample]  # a silent word is not heard
        heard = [w for w in words if convert(w.end_sample) <= heard_until]
        return self.text[: heard[-1].char_end] if heard else ""

    def visemes(self) -> list[VisemeSpan]:
        """The utterance's VisemeSpans on the session clock (computed once; the stages share them)."""
        found = self.cache.get("visemes")
        if found is None:
            found = self.cache["visemes"] = session_visemes(self.phonemes, self.start, self.voice)
        return found


@dataclass(frozen=True)
class _Symbol:
    phoneme: str
    start_sample: int
    end_sample: int


# The pad symbol, a modifier that makes no mouth shape: its time extends the viseme before it.
_CARRY_OVER_SYMBOL = "_"
_reported_symbols: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def session_visemes(phonemes: Sequence[PhonemeLike], offset: int, voice: str) -> list[VisemeSpan]:
    """`visemes_from_phonemes`, except that a symbol no viseme table knows (a new voice's) does not end the
    session: it is logged once per voice and counts as a modifier (its time extends the viseme before it,
    or is silence when nothing sounds before it)."""
    from lipstream.models.viseme import (
        UnknownPhonemeError,
        guess_alphabet,
        phoneme_to_viseme,
        visemes_from_phonemes,
    )

    symbols = [str(p.phoneme) for p in phonemes]
    alphabet = guess_alphabet(symbols)
    unknown = set()
    for symbol in set(symbols):
        try:
            phoneme_to_viseme(symbol, alphabet)
        except UnknownPhonemeError:
            unknown.add(symbol)
    if not unknown:
        return visemes_from_phonemes(phonemes, offset=offset, alphabet=alphabet)
    with _reported_lock:
        new = sorted(symbol for symbol in unknown if (voice, symbol) not in _reported_symbols)
        _reported_symbols.update((voice, symbol) for symbol in new)
    if new:
        log.warning(
            "voice %s: no viseme for the symbols %s; their time extends the viseme before them "
            "(add them to lipstream.models.viseme.mapping)",
            voice,
            " ".join(repr(symbol) for symbol in new),
        )
    mapped = [
        _Symbol(_CARRY_OVER_SYMBOL, p.start_sample, p.end_sample) if str(p.phoneme) in unknown else p
        for p in phonemes
    ]
    return visemes_from_phonemes(mapped, offset=offset, alphabet=alphabet)


class Timeline:
    """Which utterance covers which samples of the session clock. Thread-safe; spans are in clock order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[UtteranceSpan] = []
        self._starts: list[int] = []

    def add(self, span: UtteranceSpan) -> None:
        with self._lock:
            self._spans.append(span)
            self._starts.append(span.start)

    def finish(self, span: UtteranceSpan, end: int) -> None:
        with self._lock:
            span.end = end if span.end is None else min(span.end, end)  # an interrupt may have cut it already

    def cut(self, at: int) -> None:
        """An interrupt moved the write position back to `at` or later: spans that start at `at` or later are
        gone and none reaches past it, so the next utterance (from the new write position) keeps the spans in
        clock order; the samples between `at` and it are silence."""
        with self._lock:
            keep = bisect.bisect_left(self._starts, at)
            del self._spans[keep:]
            del self._starts[keep:]
            for span in self._spans:
                if span.end is None or span.end > at:
                    span.end = at

    def at(self, sample: int) -> tuple[UtteranceSpan | None, int | None]:
        """The span covering `sample` (None in silence) and where that answer stops holding (None: open)."""
        with self._lock:
            index = bisect.bisect_right(self._starts, sample) - 1
            following = self._starts[index + 1] if index + 1 < len(self._starts) else None
            if index >= 0:
                span = self._spans[index]
                if span.end is None or sample < span.end:
                    return span, span.end
            return None, following

    def prune(self, before: int) -> None:
        """Forgets spans that ended before `before` (every reader is past them)."""
        with self._lock:
            keep = 0
            while keep < len(self._spans):
                end = self._spans[keep].end
                if end is None or end > before:
                    break
                keep += 1
            del self._spans[:keep]
            del self._starts[:keep]
