"""Which writing systems a voice reads, and the text of a clause it can read.

A voice given letters of a script its language does not have does not fail: espeak-ng spells them out
("Chinese letter" nine times for a Han sentence on an English voice), a VITS-fast cleaner drops or spells
them. The TTS stage instead skips those spans and tells the client (server/tts_stage.py).

Scripts are named by the first word of a letter's Unicode name ("LATIN", "CYRILLIC", "HIRAGANA", "CJK"...),
so a script this table does not list is still named, and unreadable by every voice.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# The scripts each language (lipstream's codes for VITS-fast voices, espeak-ng voice names for Piper ones,
# matched on the part before "-") is written in. Latin is read by every voice: espeak-ng reads Latin words
# with its English rules, the Mandarin cleaners spell Latin letters as Chinese readers do.
_SCRIPTS_OF_LANGUAGE: dict[str, tuple[str, ...]] = {
    "zh": ("han",), "cmn": ("han",), "yue": ("han",), "hak": ("han",),
    "ja": ("han", "kana"),
    "ko": ("hangul",),
    "ru": ("cyrillic",), "uk": ("cyrillic",), "bg": ("cyrillic",), "sr": ("cyrillic",), "mk": ("cyrillic",),
    "be": ("cyrillic",), "kk": ("cyrillic",), "ky": ("cyrillic",), "tt": ("cyrillic",), "ba": ("cyrillic",),
    "el": ("greek",), "grc": ("greek",),
    "ar": ("arabic",), "fa": ("arabic",), "ur": ("arabic",), "sd": ("arabic",), "ug": ("arabic",),
    "he": ("hebrew",),
    "hi": ("devanagari",), "mr": ("devanagari",), "ne": ("devanagari",), "sa": ("devanagari",),
    "bn": ("bengali",), "as": ("bengali",), "pa": ("gurmukhi",), "gu": ("gujarati",), "or": ("oriya",),
    "ta": ("tamil",), "te": ("telugu",), "kn": ("kannada",), "ml": ("malayalam",), "si": ("sinhala",),
    "th": ("thai",), "lo": ("lao",), "my": ("myanmar",), "km": ("khmer",),
    "ka": ("georgian",), "hy": ("armenian",), "am": ("ethiopic",),
}

# Unicode name prefixes of letters, by script (the rest: the name's first word, lower-cased).
_NAME_PREFIXES = (
    ("CJK ", "han"), ("IDEOGRAPHIC ", "han"), ("HIRAGANA", "kana"), ("KATAKANA", "kana"),
    ("HALFWIDTH KATAKANA", "kana"), ("HANGUL", "hangul"), ("HALFWIDTH HANGUL", "hangul"),
    ("FULLWIDTH LATIN", "latin"), ("BOPOMOFO", "han"),
)
# VITS-fast-fine-tuning's language marks (models/vits/text/cleaners.py) and the script each one marks; "EN"
# matters only to a voice that also reads a CJK script (a mixture voice), the others would spell it.
LANGUAGE_MARK = re.compile(r"\[(ZH|JA|EN|KO)\]")
_MARKED_SCRIPTS = {"ZH": ("han",), "JA": ("han", "kana"), "KO": ("hangul",), "EN": ("han", "kana", "hangul")}
# How the scripts are named to a person.
_SCRIPT_NAMES = {"han": "Han (Chinese characters)", "kana": "Japanese kana", "hangul": "Korean Hangul"}


def script_of(char: str) -> str:
    """The script of a letter ("latin", "han", "kana", "cyrillic", ...); "" for what is not a letter
    (digits, punctuation, spaces: they belong to the text around them)."""
    if not unicodedata.category(char).startswith("L"):
        return ""
    name = unicodedata.name(char, "")
    for prefix, script in _NAME_PREFIXES:
        if name.startswith(prefix):
            return script
    return name.split(" ", 1)[0].lower() if name else "unknown"


def script_name(script: str) -> str:
    return _SCRIPT_NAMES.get(script, script.capitalize())


def scripts_of_languages(languages: Iterable[str]) -> frozenset[str]:
    """The scripts a voice of these languages reads: Latin always, and each language's own."""
    scripts = {"latin"}
    for language in languages:
        code = language.lower().replace("_", "-")
        scripts.update(_SCRIPTS_OF_LANGUAGE.get(code, _SCRIPTS_OF_LANGUAGE.get(code.split("-")[0], ())))
    return frozenset(scripts)


def _is_cjk_mark(char: str) -> bool:
    """CJK and full-width punctuation (、。「」，！): part of the CJK text it is written in."""
    code = ord(char)
    in_blocks = 0x3000 <= code <= 0x303F or 0xFF00 <= code <= 0xFFEF
    return in_blocks and not unicodedata.category(char).startswith("L")


@dataclass(frozen=True)
class Readable:
    text: str
    """The clause without the spans the voice cannot read ("" when nothing readable is left)."""
    skipped: dict[str, str]
    """Script -> the text of it that was skipped, spans joined by " … " (empty: nothing skipped)."""


def readable_text(text: str, scripts: frozenset[str]) -> Readable:
    """`text` less the letters of scripts outside `scripts`, with the CJK punctuation, digits and marks
    written inside those spans (a Han sentence's 。 and its 1990 go with it); words in readable scripts, and
    what separates them, are kept as they are. A language mark (`[ZH]`) is never part of a span; it is kept
    only for a voice that reads its language (a VITS-fast voice's cleaner reads it), else dropped: a voice
    that does not know the marks spells them."""
    if LANGUAGE_MARK.search(text) is None and all(script_of(c) in scripts or not script_of(c) for c in text):
        return Readable(text, {})  # the common case, in one pass
    kept: list[str] = []
    skipped: dict[str, list[str]] = {}
    span: list[str] = []  # the unreadable span being skipped
    span_script = ""

    def end_span() -> None:
        nonlocal span
        if span:
            skipped.setdefault(span_script, []).append("".join(span).strip())
            span = []
            kept.append(" ")

    i = 0
    while i < len(text):
        mark = LANGUAGE_MARK.match(text, i)
        if mark:
            end_span()
            if scripts.intersection(_MARKED_SCRIPTS[mark.group(1)]):
                kept.append(mark.group())
            i = mark.end()
            continue
        char = text[i]
        i += 1
        script = script_of(char)
        if script and script not in scripts:
            if span and script != span_script:
                skipped.setdefault(span_script, []).append("".join(span).strip())
                span = []
            span.append(char)
            span_script = script
        elif span and not script and not char.isspace() and (char.isdigit() or _is_cjk_mark(char)
                                                               or unicodedata.category(char)[0] in "PM"):
            span.append(char)  # inside the skipped span until a space or a readable letter ends it
        else:
            end_span()
            kept.append(char)
    if span:
        skipped.setdefault(span_script, []).append("".join(span).strip())
    cleaned = " ".join("".join(kept).split())
    if not has_words(LANGUAGE_MARK.sub("", cleaned)):
        cleaned = ""  # marks alone are not something to say
    return Readable(cleaned, {script: " … ".join(parts) for script, parts in skipped.items()})


def has_words(text: str) -> bool:
    """True when the text holds a letter or digit (something a voice says)."""
    return any(unicodedata.category(c)[0] in "LN" for c in text)


def readers_of(script: str, voices: Mapping[str, Sequence[str]]) -> list[str]:
    """The names of the voices (name -> languages) that read `script`."""
    return [name for name, languages in voices.items() if script in scripts_of_languages(languages)]


# -- what the client is told (the TTS stage's warning events and refusal, the HTTP speech API's header) -----
def readers_hint(script: str, voice: str, voices: Mapping[str, Sequence[str]]) -> str:
    """Which other voices (name -> languages) read `script`, or how to get one."""
    readers = [name for name in readers_of(script, voices) if name != voice]
    if readers:
        return f"voices that read {script_name(script)}: {', '.join(readers)}"
    return f"no voice on this server reads {script_name(script)}: load one that does (serve --extra-voice)"


def skipped_message(
    voice: str, skipped: Mapping[str, str], voices: Mapping[str, Sequence[str]], *, quote: bool = True
) -> str:
    """The warning for spans skipped (Readable.skipped): the scripts, the text (up to 120 characters; none
    with quote=False) and the voices that read them."""
    scripts = ", ".join(script_name(s) for s in skipped)
    shown = " … ".join(skipped.values())
    shown = shown if len(shown) <= 120 else shown[:119] + "…"
    what = f"skipped {shown!r}" if quote else "skipped"
    return (f"voice {voice!r} cannot read {scripts} text: {what} ("
            + "; ".join(readers_hint(s, voice, voices) for s in skipped) + ")")


def unreadable_message(voice: str, skipped: Mapping[str, str], voices: Mapping[str, Sequence[str]]) -> str:
    """The refusal when nothing readable is left: the scripts, a sample of each and the voices that read
    them."""
    parts = [f"{script_name(script)} text such as {text[:40]!r} ({readers_hint(script, voice, voices)})"
             for script, text in skipped.items()]
    return f"nothing to say: voice {voice!r} cannot read the text's script: " + ", ".join(parts)
