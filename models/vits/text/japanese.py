"""Japanese as VITS-fast-fine-tuning's cleaners write it: OpenJTalk's phonemes with accent marks, and the
IPA spellings built on them.

The romaji form is OpenJTalk's phoneme per mora joined without spaces, `ch`/`sh`/`cl` written `ʧ`/`ʃ`/`Q`,
a space between accent phrases, `↓` after the accent nucleus and `↑` where the pitch rises; punctuation
and other marks between the Japanese runs are transliterated to ASCII. OpenJTalk is pyopenjtalk-plus, whose
wheel carries its dictionary: nothing is downloaded at run time.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from ..errors import VoiceError

__all__ = [
    "japanese_to_ipa",
    "japanese_to_ipa2",
    "japanese_to_ipa3",
    "japanese_to_romaji_with_accent",
]

# What OpenJTalk reads: Latin letters and digits, 々, kana, CJK ideographs, full-width digits 1-9 and
# letters, half-width katakana. Everything else is a mark, kept as ASCII between the runs.
_READ = r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
_MARK = re.compile(f"[^{_READ}]")

# One OpenJTalk full-context label: the phoneme, and the A field (accent nucleus offset, mora position in
# the accent phrase counted forward and backward).
_PHONEME = re.compile(r"-([^+]*)\+")
_ACCENT = re.compile(r"/A:(-?\d+)\+(\d+)\+(\d+)/")
_SILENT = ("sil", "pau")

# Romaji -> IPA, applied in this order (later rules see the earlier ones' output).
_Rules = tuple[tuple[re.Pattern[str], str], ...]


def _rules(pairs: tuple[tuple[str, str], ...]) -> _Rules:
    return tuple((re.compile(pattern), replacement) for pattern, replacement in pairs)


_IPA_RULES = _rules(
    (
        ("ts", "ʦ"),
        ("u", "ɯ"),
        ("j", "ʥ"),
        ("y", "j"),
        ("ni", "n^i"),
        ("nj", "n^"),
        ("hi", "çi"),
        ("hj", "ç"),
        ("f", "ɸ"),
        ("I", "i*"),
        ("U", "ɯ*"),
        ("r", "ɾ"),
    )
)
_IPA2_RULES = _rules(
    (
        ("u", "ɯ"),
        ("ʧ", "tʃ"),
        ("j", "dʑ"),
        ("y", "j"),
        ("ni", "n^i"),
        ("nj", "n^"),
        ("hi", "çi"),
        ("hj", "ç"),
        ("f", "ɸ"),
        ("I", "i*"),
        ("U", "ɯ*"),
        ("r", "ɾ"),
    )
)
# The geminate Q and the moraic nasal N take the place of articulation of the consonant after them
# (accent marks may stand between).
_SOKUON = _rules(
    (
        (r"Q([↑↓]*[kg])", r"k#\1"),
        (r"Q([↑↓]*[tdjʧ])", r"t#\1"),
        (r"Q([↑↓]*[sʃ])", r"s\1"),
        (r"Q([↑↓]*[pb])", r"p#\1"),
    )
)
_HATSUON = _rules(
    (
        (r"N([↑↓]*[pbm])", r"m\1"),
        (r"N([↑↓]*[ʧʥj])", r"n^\1"),
        (r"N([↑↓]*[tdn])", r"n\1"),
        (r"N([↑↓]*[kg])", r"ŋ\1"),
    )
)
_LONG_VOWEL = re.compile(r"([aiueo])\1+")
_LONG_VOWEL_IPA3 = re.compile(r"([aiɯeo])\1+")
_ASPIRATED = re.compile(r"((?:^|\s)(?:ts|tɕ|[kpt]))")

# pyopenjtalk's OpenJTalk instance is process-wide state: one caller at a time.
_OPENJTALK_LOCK = threading.Lock()


def _full_context_labels(text: str) -> list[str]:
    try:
        import pyopenjtalk
    except ImportError as exc:
        raise VoiceError(
            "Japanese text needs OpenJTalk: pip install 'pyopenjtalk-plus==0.4.1.post10' "
            "(or lipstream[server])"
        ) from exc
    try:
        with _OPENJTALK_LOCK:
            labels: Any = pyopenjtalk.extract_fullcontext(text)
    except Exception as exc:  # OpenJTalk's C side reports bad input in several exception types
        raise VoiceError(f"OpenJTalk cannot read the Japanese text {text[:40]!r}: {exc}") from exc
    return [str(label) for label in labels]


def _label_phoneme(label: str) -> str:
    match = _PHONEME.search(label)
    if match is None:
        raise VoiceError(f"OpenJTalk gave an unreadable label {label!r}; reinstall pyopenjtalk-plus")
    return match.group(1)


def _label_accent(label: str) -> tuple[int, int, int]:
    match = _ACCENT.search(label)
    if match is None:
        raise VoiceError(
            f"OpenJTalk gave a label without accent fields {label!r}: reinstall pyopenjtalk-plus"
        )
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def _run_to_romaji(run: str) -> str:
    """One run of readable characters -> phonemes with accent-phrase spaces and pitch marks."""
    labels = _full_context_labels(run)
    out: list[str] = []
    for label, following in zip(labels, labels[1:], strict=False):
        phoneme = _label_phoneme(label)
        if phoneme in _SILENT:
            continue
        out.append(phoneme.replace("ch", "ʧ").replace("sh", "ʃ").replace("cl", "Q"))
        nucleus, position, remaining = _label_accent(label)
        next_position = -1 if _label_phoneme(following) in _SILENT else _label_accent(following)[1]
        if remaining == 1 and next_position == 1:
            out.append(" ")  # the next mora starts a new accent phrase
        elif nucleus == 0 and next_position == position + 1:
            out.append("↓")
        elif position == 1 and next_position == 2:
            out.append("↑")
    return "".join(out)


def japanese_to_romaji_with_accent(text: str) -> str:
    """OpenJTalk phonemes with accent marks, marks between runs in ASCII (no spaces)."""
    from unidecode import unidecode

    text = text.replace("％", "パーセント")
    runs = _MARK.split(text)
    marks = _MARK.findall(text)
    out = ""
    for i, run in enumerate(runs):
        if run:
            if out:
                out += " "
            out += _run_to_romaji(run)
        if i < len(marks):
            out += unidecode(marks[i]).replace(" ", "")
    return out


def _apply(text: str, rules: _Rules) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


def _lengthen(pattern: re.Pattern[str], text: str) -> str:
    """'aaa' -> 'aːː': a run of one vowel is the vowel and a length mark per repeat."""
    return pattern.sub(lambda m: m.group(0)[0] + "ː" * (len(m.group(0)) - 1), text)


def japanese_to_ipa(text: str) -> str:
    """IPA with ʦ / ʥ, long vowels as ː, devoiced vowels as `*` (cjks / cjke cleaners)."""
    text = japanese_to_romaji_with_accent(text).replace("...", "…")
    text = _lengthen(_LONG_VOWEL, text)
    return _apply(_apply(_apply(text, _SOKUON), _HATSUON), _IPA_RULES)


def japanese_to_ipa2(text: str) -> str:
    """IPA with tʃ / dʑ, long vowels kept doubled (cjke_cleaners2)."""
    text = japanese_to_romaji_with_accent(text).replace("...", "…")
    return _apply(_apply(_apply(text, _SOKUON), _HATSUON), _IPA2_RULES)


def japanese_to_ipa3(text: str) -> str:
    """japanese_to_ipa2 with diacritics (ȵ, ɕ, devoicing ring, unreleased stops), ː and aspiration."""
    text = japanese_to_ipa2(text)
    text = text.replace("n^", "ȵ").replace("ʃ", "ɕ").replace("*", "\u0325").replace("#", "\u031a")
    text = _lengthen(_LONG_VOWEL_IPA3, text)
    return _ASPIRATED.sub(r"\1ʰ", text)
