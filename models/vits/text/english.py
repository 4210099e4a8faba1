"""English as VITS-fast-fine-tuning's cleaners write it: ASCII, lower case, abbreviations and numbers spelled
out (keithito's tacotron rules, numbers through inflect), then eng_to_ipa's CMU-dictionary IPA.

eng_to_ipa ships its dictionary (a SQLite file inside the package): it runs offline. A word it does not
know comes back as the word itself with a `*` after it, as upstream leaves it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

from ..errors import VoiceError

__all__ = [
    "ABBREVIATIONS",
    "english_to_ipa",
    "english_to_ipa2",
    "english_to_lazy_ipa",
    "english_to_lazy_ipa2",
    "normalize_numbers",
]

ABBREVIATIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"\b{short}\.", re.IGNORECASE), full)
    for short, full in (
        ("mrs", "misess"),
        ("mr", "mister"),
        ("dr", "doctor"),
        ("st", "saint"),
        ("co", "company"),
        ("jr", "junior"),
        ("maj", "major"),
        ("gen", "general"),
        ("drs", "doctors"),
        ("rev", "reverend"),
        ("lt", "lieutenant"),
        ("hon", "honorable"),
        ("sgt", "sergeant"),
        ("capt", "captain"),
        ("esq", "esquire"),
        ("ltd", "limited"),
        ("col", "colonel"),
        ("ft", "fort"),
    )
)

# Each replacement table is applied in order; later rules see earlier rules' output.
_LAZY_IPA = (
    ("r", "ɹ"),
    ("æ", "e"),
    ("ɑ", "a"),
    ("ɔ", "o"),
    ("ð", "z"),
    ("θ", "s"),
    ("ɛ", "e"),
    ("ɪ", "i"),
    ("ʊ", "u"),
    ("ʒ", "ʥ"),
    ("ʤ", "ʥ"),
    ("ˈ", "↓"),
)
_LAZY_IPA2 = (
    ("r", "ɹ"),
    ("ð", "z"),
    ("θ", "s"),
    ("ʒ", "ʑ"),
    ("ʤ", "dʑ"),
    ("ˈ", "↓"),
)
_IPA2 = (
    ("r", "ɹ"),
    ("ʤ", "dʒ"),
    ("ʧ", "tʃ"),
)

_COMMA_NUMBER = re.compile(r"([0-9][0-9,]+[0-9])")
_DECIMAL_NUMBER = re.compile(r"([0-9]+\.[0-9]+)")
_POUNDS = re.compile(r"£([0-9,]*[0-9]+)")
_DOLLARS = re.compile(r"\$([0-9.,]*[0-9]+)")
_ORDINAL = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER = re.compile(r"[0-9]+")
# An l before a consonant or at a word's end (only non-vowels up to the space) is dark.
_DARK_L = re.compile(r"l([^aeiouæɑɔəɛɪʊ ]*(?: |$))")


@cache
def _inflect() -> Any:
    try:
        import inflect
    except ImportError as exc:
        raise VoiceError(
            "English numbers need inflect: pip install 'inflect>=7.0' (or lipstream[server])"
        ) from exc
    return inflect.engine()


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _dollars(match: re.Match[str]) -> str:
    amount = match.group(1)
    parts = amount.split(".")
    if len(parts) > 2:
        return amount + " dollars"  # not an amount: read the digits as they are
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    if dollars and cents:
        return f"{_plural(dollars, 'dollar')}, {_plural(cents, 'cent')}"
    if dollars:
        return _plural(dollars, "dollar")
    if cents:
        return _plural(cents, "cent")
    return "zero dollars"


def _number(match: re.Match[str]) -> str:
    """Years between 1000 and 3000 read in pairs ("nineteen ninety"), other numbers in full without "and"."""
    engine = _inflect()
    number = int(match.group(0))
    if not 1000 < number < 3000:
        return str(engine.number_to_words(number, andword=""))
    if number == 2000:
        return "two thousand"
    if 2000 < number < 2010:
        return "two thousand " + str(engine.number_to_words(number % 100))
    if number % 100 == 0:
        return str(engine.number_to_words(number // 100)) + " hundred"
    return str(engine.number_to_words(number, andword="", zero="oh", group=2)).replace(", ", " ")


def normalize_numbers(text: str) -> str:
    """Digits to words: thousands separators dropped, pounds, dollars and cents, decimals, ordinals."""
    text = _COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _POUNDS.sub(r"\1 pounds", text)
    text = _DOLLARS.sub(_dollars, text)
    text = _DECIMAL_NUMBER.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL.sub(lambda m: str(_inflect().number_to_words(m.group(0))), text)
    return _NUMBER.sub(_number, text)


@cache
def _converter() -> Callable[[str], str]:
    try:
        import eng_to_ipa
    except ImportError as exc:
        raise VoiceError(
            "English on VITS-fast-fine-tuning voices needs eng_to_ipa: pip install 'eng_to_ipa==0.0.2' "
            "(or lipstream[server])"
        ) from exc
    convert: Callable[[str], str] = eng_to_ipa.convert
    return convert


def english_to_ipa(text: str) -> str:
    """ASCII, lower case, abbreviations and numbers spelled out, then eng_to_ipa (stress marks kept)."""
    from unidecode import unidecode

    text = unidecode(text).lower()
    for pattern, full in ABBREVIATIONS:
        text = pattern.sub(full, text)
    text = normalize_numbers(text)
    convert = _converter()
    try:
        phonemes = convert(text)  # each call opens its own SQLite connection: no lock needed
    except Exception as exc:  # its tokenizer and SQLite lookups fail in their own types
        raise VoiceError(f"eng_to_ipa cannot read the English text {text[:40]!r}: {exc}") from exc
    return re.sub(r"\s+", " ", phonemes)


def _replace(text: str, table: tuple[tuple[str, str], ...]) -> str:
    for old, new in table:
        text = text.replace(old, new)
    return text


def english_to_lazy_ipa(text: str) -> str:
    """Fewer vowel and consonant qualities, stress as ↓ (cjks_cleaners)."""
    return _replace(english_to_ipa(text), _LAZY_IPA)


def english_to_ipa2(text: str) -> str:
    """Dark l as ɫ, r as ɹ, affricates as two letters (cjke_cleaners2)."""
    text = _DARK_L.sub(lambda m: "ɫ" + m.group(1), english_to_ipa(text))
    return _replace(text, _IPA2).replace("...", "…")


def english_to_lazy_ipa2(text: str) -> str:
    """ð / θ as z / s, ʑ-series affricates, stress as ↓."""
    return _replace(english_to_ipa(text), _LAZY_IPA2)
