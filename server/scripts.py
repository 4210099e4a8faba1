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


# The scripts whose voices (VITS-fast Mandarin, Japanese, Korean) get the text as written: their cleaners give
# upstream's symbol ids for it, full-width punctuation (，。！) included (tests/test_vits_fast_text*.py).
_CJK_SCRIPTS = frozenset({"han", "kana", "hangul"})
# Unicode's vulgar fractions (the characters whose decomposition is <fraction>).
_FRACTIONS = re.compile("([\u00bc-\u00be\u2150-\u215f\u2189])")


def compatible_text(text: str) -> str:
    """`text` in Unicode's compatibility form (NFKC), as a voice of no CJK script is given it: full-width
    ＡＢＣ１２３ becomes ABC123, 𝒽𝑒𝓁𝓁𝑜 and ℌ hello and H, Ⅻ XII, ① 1, ﬁ fi, where espeak-ng would spell the
    originals' code points or say nothing. Fractions stay as written: espeak-ng says ¼ "a quarter", NFKC's
    1⁄4 "one four"."""
    if text.isascii():
        return text
    parts = _FRACTIONS.split(text)  # a fraction at each odd index
    return "".join(part if i % 2 else unicodedata.normalize("NFKC", part) for i, part in enumerate(parts))


def _compatible_script(char: str) -> str:
    """script_of for a voice given compatible_text: the script of the first letter of `char`'s
    compatibility form (Ⅻ: Latin, ㈱: Han), "" for none."""
    return next((script for script in map(script_of, compatible_text(char)) if script), "")


@dataclass(frozen=True)
class Readable:
    text: str
    """What the voice is given: the clause without the spans it cannot read ("" when nothing readable is
    left), in compatibility form (compatible_text) for a voice of no CJK script."""
    skipped: dict[str, str]
    """Script -> the text of it that was skipped, as written, spans joined by " … " (empty: nothing
    skipped); scripts in the order they first appear."""
    spans: tuple[str, ...] = ()
    """The skipped spans as written, in text order; spans apart by whitespace alone are one span."""


def readable_text(text: str, scripts: frozenset[str]) -> Readable:
    """`text` less the letters of scripts outside `scripts`, with the CJK punctuation, digits and marks
    written inside those spans (a Han sentence's 。 and its 1990 go with it); words in readable scripts, and
    what separates them, are kept as they are (in compatibility form for a voice of no CJK script: a letter
    is judged by that form, so ＡＢＣ and 𝒽𝑒𝓁𝓁𝑜 are Latin). A language mark (`[ZH]`) is never part of a span;
    it is kept only for a voice that reads its language (a VITS-fast voice's cleaner reads it), else
    dropped: a voice that does not know the marks spells them."""
    compatible = not scripts & _CJK_SCRIPTS
    letter_script = _compatible_script if compatible else script_of
    readable = scripts | {""}
    if LANGUAGE_MARK.search(text) is None and all(letter_script(c) in readable for c in text):
        return Readable(compatible_text(text) if compatible else text, {})  # the common case, in one pass
    kept: list[str] = []
    skipped: dict[str, list[str]] = {}
    spans: list[str] = []
    span: list[str] = []  # the unreadable span being skipped, as written
    part: list[str] = []  # its last part in one script, part_script
    part_script = ""
    space = ""  # whitespace after the span: part of it if an unreadable letter follows

    def end_part() -> None:
        if part:
            skipped.setdefault(part_script, []).append("".join(part))
            part.clear()

    def end_span() -> None:
        nonlocal space
        end_part()
        if span:
            spans.append("".join(span))
            span.clear()
            kept.append(" ")
        kept.append(space)
        space = ""

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
        script = letter_script(char)
        if script not in readable:
            if part and script != part_script:
                end_part()
            if part:
                part.append(space)
            span.extend((space, char))
            space = ""
            part.append(char)
            part_script = script
        elif span and char.isspace():
            space += char
        elif span and not space and not script and (char.isdigit() or _is_cjk_mark(char)
                                                    or unicodedata.category(char)[0] in "PM"):
            span.append(char)  # inside the skipped span until a space or a readable letter ends it
            part.append(char)
        else:
            end_span()
            kept.append(char)
    end_span()
    said = "".join(kept)
    cleaned = " ".join((compatible_text(said) if compatible else said).split())
    if not has_words(LANGUAGE_MARK.sub("", cleaned)):
        cleaned = ""  # marks alone are not something to say
    return Readable(cleaned, {script: " … ".join(parts) for script, parts in skipped.items()}, tuple(spans))


def has_words(text: str) -> bool:
    """True when the text holds a letter or digit (something a voice says)."""
    return any(unicodedata.category(c)[0] in "LN" for c in text)


def readers_of(script: str, voices: Mapping[str, Sequence[str]]) -> list[str]:
    """The names of the voices (name -> languages) that read `script`."""
    return [name for name, languages in voices.items() if script in scripts_of_languages(languages)]


# -- what the client is told (the TTS stage's warning events and refusal, the HTTP speech API's header) -----
def _listed(names: Sequence[str], last: str) -> str:
    """ "A", "A and B", "A, B and C" (with `last` "and")."""
    return f"{', '.join(names[:-1])} {last} {names[-1]}" if len(names) > 1 else "".join(names)


def _advice(scripts: Iterable[str], voice: str, voices: Mapping[str, Sequence[str]]) -> str:
    """Which other voices (name -> languages) read each of `scripts`; the scripts no voice reads share one
    line of how to get one, where the first of them is."""
    hints: list[str] = []
    unread: list[str] = []
    for script in scripts:
        readers = [name for name in readers_of(script, voices) if name != voice]
        if readers:
            hints.append(f"voices that read {script_name(script)}: {', '.join(readers)}")
        else:
            if not unread:
                hints.append("")  # its place
            unread.append(script_name(script))
    if unread:
        hints[hints.index("")] = (f"no voice on this server reads {_listed(unread, 'or')}: "
                                  "load one that does (serve --extra-voice)")
    return "; ".join(hints)


def readers_hint(script: str, voice: str, voices: Mapping[str, Sequence[str]]) -> str:
    """Which other voices (name -> languages) read `script`, or how to get one."""
    return _advice([script], voice, voices)


def skipped_message(
    voice: str,
    skipped: Mapping[str, str],
    voices: Mapping[str, Sequence[str]],
    *,
    quote: bool = True,
    spans: Sequence[str] = (),
) -> str:
    """The warning for spans skipped (Readable.skipped): the scripts, the text (`spans`, Readable.spans, else
    each script's in turn; up to 120 characters; none with quote=False) and the voices that read them."""
    scripts = _listed([script_name(s) for s in skipped], "and")
    shown = " … ".join(spans or skipped.values())
    shown = shown if len(shown) <= 120 else shown[:119] + "…"
    what = f"skipped {shown!r}" if quote else "skipped"
    return f"voice {voice!r} cannot read {scripts} text: {what} ({_advice(skipped, voice, voices)})"


def judge_text(
    text: str, voice: str, scripts: frozenset[str], voices: Mapping[str, Sequence[str]]
) -> tuple[str, str]:
    """What `voice` (reading `scripts`) would skip of a whole text and why it would say no word of it, ""
    each when nothing: the TTS stage's clause-by-clause check made before the text is sent (an HTTP header,
    a channel's displays). The warning leaves the skipped text out: the sender has it."""
    readable = readable_text(text, scripts)
    if not readable.skipped:
        return "", ""
    warning = skipped_message(voice, readable.skipped, voices, quote=False)
    if has_words(readable.text):
        return warning, ""
    return warning, unreadable_message(voice, readable.skipped, voices)


def unreadable_message(voice: str, skipped: Mapping[str, str], voices: Mapping[str, Sequence[str]]) -> str:
    """The refusal when nothing readable is left: the scripts, a sample of each and the voices that read
    them."""
    samples = ", ".join(f"{script_name(s)} text such as {text[:40]!r}" for s, text in skipped.items())
    which = "scripts" if len(skipped) > 1 else "script"
    return (f"nothing to say: voice {voice!r} cannot read the text's {which}: {samples} "
            f"({_advice(skipped, voice, voices)})")
