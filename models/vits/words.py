"""Word timings: a clause's phoneme timings grouped into the words of its text.

A frontend's symbols do not keep word boundaries reliably (espeak writes "of the" as one word ``ʌvðə`` and
"25" as two, the Mandarin cleaners join jieba's words), so the text is split into words here, each word is
run through the voice's own frontend alone, and the concatenation of those symbols is aligned with the
clause's symbols (``difflib``): each spoken symbol belongs to the word whose symbols it matched, and a
word's span is that of its symbols. Words are the text's words for alphabetic scripts (with their
apostrophes and hyphens) and one character each for Han, kana and Hangul, so a CJK subtitle highlights
character by character; the text's characters between words (punctuation, spaces) belong to no word.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lipstream.models.synthesis import PhonemeSpanLike

_CJK = r"\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+(?:['’\-](?:(?![{_CJK}])[^\W_])+)*")
_LANGUAGE_MARK = re.compile(r"\[(?:ZH|JA|EN|KO)\]")
"""VITS-fast-fine-tuning's language marks: not words."""


@dataclass(frozen=True)
class WordSpan:
    """One word of a clause: ``text[char_start:char_end]``, spoken over [start_sample, end_sample)."""

    word: str
    char_start: int
    char_end: int
    start_sample: int
    """On the clock of the phoneme spans given (the clause's, or the session's when they were moved)."""
    end_sample: int


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, char_start, char_end) of each word of ``text``, in order (see the module doc)."""
    masked = _LANGUAGE_MARK.sub(lambda m: " " * len(m.group()), text)
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(masked)]


def _sounding(symbol: str) -> bool:
    """Symbols that say something: not spaces, punctuation, pads, BOS / EOS or tone arrows."""
    return any(not c.isspace() and unicodedata.category(c)[0] not in "PZCS" for c in symbol)


def word_spans(
    text: str, phonemes: Sequence[PhonemeSpanLike], symbols_of: Callable[[str], Sequence[str]]
) -> list[WordSpan]:
    """The words of ``text`` timed by ``phonemes`` (the clause's spans, in order), ``symbols_of(word)`` being
    the frontend's symbols for a word said alone. Every word gets a span, in order and not overlapping;
    a word the alignment gave no symbol (rare: a number read differently in context) gets the zero-length
    span where it would start."""
    words = split_words(text)
    if not words:
        return []
    spoken = [i for i, p in enumerate(phonemes) if _sounding(str(p.phoneme))]
    said = [str(phonemes[i].phoneme) for i in spoken]
    expected: list[str] = []
    owners: list[int] = []
    for k, (word, _, _) in enumerate(words):
        for symbol in symbols_of(word):
            if _sounding(symbol):
                expected.append(symbol)
                owners.append(k)
    owner_of = _align(said, expected, owners, len(words))
    starts: list[int | None] = [None] * len(words)
    ends: list[int | None] = [None] * len(words)
    for position, k in zip(spoken, owner_of, strict=True):
        span = phonemes[position]
        if starts[k] is None:
            starts[k] = int(span.start_sample)
        ends[k] = int(span.end_sample)
    out: list[WordSpan] = []
    after = int(phonemes[0].start_sample) if len(phonemes) else 0
    for k, (word, char_start, char_end) in enumerate(words):
        start, end = starts[k], ends[k]
        if start is None or end is None:
            following = next((s for s in starts[k + 1 :] if s is not None), after)
            start = end = max(after, following)
        out.append(WordSpan(word, char_start, char_end, start, end))
        after = end
    return out


def _align(said: list[str], expected: list[str], owners: list[int], n_words: int) -> list[int]:
    """The word (index) of each said symbol: from the symbol of ``expected`` it matched, proportionally
    inside a replaced stretch, the word before for an extra symbol; never decreasing."""
    if not expected:  # no word has symbols of its own: spread the words over the symbols evenly
        return [min(n_words - 1, i * n_words // max(1, len(said))) for i in range(len(said))]
    out = [0] * len(said)
    matcher = difflib.SequenceMatcher(None, said, expected, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for i in range(i1, i2):
            if tag in ("equal", "replace"):
                j = j1 + (i - i1) * (j2 - j1) // (i2 - i1) if tag == "replace" else j1 + (i - i1)
                out[i] = owners[j]
            else:  # delete: a symbol said in context but not by the word alone
                out[i] = owners[j1 - 1] if j1 > 0 else owners[0]
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1])
    return out
