"""Official VITS's English cleaners as they run: phonemizer's espeak backend, reproduced on piper-tts's
bundled espeak-ng.

`english_cleaners2` is ASCII (Unidecode), lower case, abbreviations expanded, then phonemizer with
`preserve_punctuation=True, with_stress=True, strip=True`; `english_cleaners` the same without
punctuation and stress. What phonemizer adds to espeak is reproduced here:

- Punctuation is cut out of the text before espeak sees it and put back afterwards. The text is cut at
  each run of marks in turn, at the *first* place the run's characters occur, so a mark that also occurs
  earlier cuts there (a decimal point before a final full stop: "about 3.14." is read "three", "fourteen");
  once a run that ends the line is restored, later runs go to the end. (phonemizer 3.x; 2.2.1, which the
  official repository pins, also cut at decimal points and did not know brackets.)
- Each piece goes to espeak alone; its clauses are joined with spaces, the pieces with a line break that
  the final whitespace collapse turns into a space; language-switch flags such as "(fr)" are kept.

piper-tts's espeak-ng (1.52.0.1) writes `ʲ` for the glide it puts between an /i/ and a following vowel
("we eat"); espeak-ng 1.52.0 and earlier, which phonemizer drives, write nothing there: dropped (a
palatalized consonant's `ʲ`, as in "jalapeño", stays).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import VoiceError
from .english import ABBREVIATIONS

__all__ = [
    "basic_cleaners",
    "english_cleaners",
    "english_cleaners2",
    "phonemize_espeak",
    "transliteration_cleaners",
]

# phonemizer's default marks; `.` and `,` count only when not between digits on their side.
_MARKS = ';:!?¡¿—…"«»“”(){}[]'
_DECIMAL_MARKS = ".,"
_MARK_RUN = re.compile(
    rf"(\s*(?:[{re.escape(_MARKS)}]|(?<![0-9])[{_DECIMAL_MARKS}]|[{_DECIMAL_MARKS}](?![0-9]))+\s*)+"
)
_STRESS = re.compile("[ˈˌ]")
_GLIDE = re.compile("(?<=[iɪ])ʲ|(?<=iː)ʲ")


@dataclass(frozen=True)
class _Mark:
    line: int
    text: str
    where: str  # "begin", "inner", "end", or "alone" (the whole line)


def _cut(lines: list[str]) -> tuple[list[str], list[_Mark]]:
    """Lines -> the pieces between mark runs (empty ones dropped), and the runs with where they were."""
    pieces: list[str] = []
    marks: list[_Mark] = []
    for number, line in enumerate(lines):
        runs = [m.group() for m in _MARK_RUN.finditer(line)]
        if not runs:
            pieces.append(line)
            continue
        if len(runs) == 1 and runs[0] == line:
            marks.append(_Mark(number, line, "alone"))
            continue
        for i, run in enumerate(runs):
            if i == 0 and line.startswith(run):
                where = "begin"
            elif i == len(runs) - 1 and line.endswith(run):
                where = "end"
            else:
                where = "inner"
            marks.append(_Mark(number, run, where))
        rest = line
        for run in runs:
            before, _, rest = rest.partition(run)
            pieces.append(before)
        pieces.append(rest)
    return [p for p in pieces if p], marks


def _put_back(pieces: list[str], marks: list[_Mark]) -> list[str]:
    """The phonemized pieces with the marks restored, as output lines."""
    out: list[str] = []
    pieces, marks = list(pieces), list(marks)
    position = 0
    while pieces or marks:
        if not marks:
            out.extend(pieces)
            break
        if not pieces:
            out.append("".join(m.text for m in marks))
            break
        mark = marks[0]
        if mark.line != position:
            out.append(pieces.pop(0))
            position += 1
            continue
        marks.pop(0)
        pieces[0] = pieces[0].removesuffix(" ")
        if mark.where == "begin":
            pieces[0] = mark.text + pieces[0]
        elif mark.where == "end":
            out.append(pieces.pop(0) + mark.text)
            position += 1
        elif mark.where == "alone":
            out.append(mark.text)
            position += 1
        elif len(pieces) == 1:
            pieces[0] += mark.text
        else:
            first = pieces.pop(0)
            pieces[0] = first + mark.text + pieces[0]
    return out


def _espeak_piece(text: str, with_stress: bool) -> str:
    from ..frontend import espeak_clauses

    try:
        clauses = espeak_clauses(text, "en-us")
    except VoiceError:
        raise
    except ValueError as exc:  # the espeak bridge refuses a NUL character
        raise VoiceError(f"espeak-ng cannot read the text {text[:40]!r}: {exc}") from exc
    line = " ".join(phonemes for phonemes, _terminator, _end in clauses)
    line = _GLIDE.sub("", line).strip().replace("\n", " ").replace("  ", " ")
    if not line:
        return ""
    words = [word.strip() for word in line.split(" ")]
    if not with_stress:
        words = [_STRESS.sub("", word) for word in words]
    return " ".join(words)


def phonemize_espeak(text: str, preserve_punctuation: bool, with_stress: bool) -> str:
    """phonemizer's `phonemize(text, language='en-us', backend='espeak', strip=True, ...)`."""
    lines = [line for line in text.strip("\n").split("\n") if line.strip()]
    if not lines:
        return ""
    if not preserve_punctuation:
        pieces = [_MARK_RUN.sub(" ", line).strip() for line in lines]
        return "\n".join(_espeak_piece(piece, with_stress) for piece in pieces)
    pieces, marks = _cut(lines)
    return "\n".join(_put_back([_espeak_piece(piece, with_stress) for piece in pieces], marks))


def _prepared(text: str) -> str:
    from unidecode import unidecode

    text = unidecode(text).lower()
    for pattern, full in ABBREVIATIONS:
        text = pattern.sub(full, text)
    return text


def english_cleaners2(text: str) -> str:
    """Official VITS `english_cleaners2`: espeak IPA with stress marks and punctuation."""
    phonemes = phonemize_espeak(_prepared(text), preserve_punctuation=True, with_stress=True)
    return re.sub(r"\s+", " ", phonemes)


def english_cleaners(text: str) -> str:
    """Official VITS `english_cleaners`: espeak IPA without stress or punctuation."""
    phonemes = phonemize_espeak(_prepared(text), preserve_punctuation=False, with_stress=False)
    return re.sub(r"\s+", " ", phonemes)


def basic_cleaners(text: str) -> str:
    """Official VITS `basic_cleaners`: lower case, whitespace runs as one space (ends kept)."""
    return re.sub(r"\s+", " ", text.lower())


def transliteration_cleaners(text: str) -> str:
    """Official VITS `transliteration_cleaners`: ASCII (Unidecode), lower case, whitespace collapsed."""
    from unidecode import unidecode

    return re.sub(r"\s+", " ", unidecode(text).lower())
