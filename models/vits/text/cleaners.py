"""Text cleaners by the names VITS configs give in `data.text_cleaners`: text in, the string of symbols
the voice was trained on out (the frontend then looks each character up in the voice's symbol list).

- The official VITS cleaners (`english_cleaners2`, `english_cleaners`, `basic_cleaners`,
  `transliteration_cleaners`), in `official.py`: phonemizer's espeak backend reproduced on piper-tts's
  bundled espeak-ng.
- VITS-fast-fine-tuning's (`chinese_cleaners` for its C base model, `zh_ja_mixture_cleaners` for CJ,
  `cjke_cleaners2` for CJE, and the related `cjke_cleaners`, `cje_cleaners`, `japanese_cleaners`,
  `japanese_cleaners2`), reproducing its `text/cleaners.py` at 8d341c7 exactly: each language's part of
  the text is marked `[ZH]…[ZH]`, `[JA]…[JA]`, `[EN]…[EN]`; each marked part becomes its language's
  symbols and a space, in the order ZH, JA, KO, EN over the whole text; what no mark covers is kept as
  typed; the end is trimmed and given a `.` unless it ends in punctuation. `chinese_cleaners` reads the
  whole text as Mandarin after dropping `[ZH]` marks.

For the cleaners that need marks, `balance_language_marks` completes the marks of a clause the server cut
out of marked text, and `add_language_marks` marks plain text (no marks at all) by script.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from ..errors import VoiceError
from .official import basic_cleaners, english_cleaners, english_cleaners2, transliteration_cleaners

__all__ = [
    "CLEANERS",
    "MARKED_LANGUAGES",
    "add_language_marks",
    "balance_language_marks",
    "clean_text",
    "cleaner_languages",
    "prepare",
]

Cleaner = Callable[[str], str]


# --- VITS-fast-fine-tuning -------------------------------------------------------------------------------


def _mandarin(name: str) -> Cleaner:
    from . import mandarin

    convert: Cleaner = getattr(mandarin, name)
    return convert


def _japanese(name: str) -> Cleaner:
    from . import japanese

    convert: Cleaner = getattr(japanese, name)
    return convert


def _english(name: str) -> Cleaner:
    from . import english

    convert: Cleaner = getattr(english, name)
    return convert


def _korean(text: str) -> str:
    raise VoiceError(
        "[KO] text needs a Korean frontend, which lipstream does not include; write the Korean part in "
        "another language the voice speaks"
    )


def _replacing(convert: Cleaner, *pairs: tuple[str, str]) -> Cleaner:
    def converted(text: str) -> str:
        text = convert(text)
        for old, new in pairs:
            text = text.replace(old, new)
        return text

    return converted


_END_PUNCTUATION = re.compile(r"([^\.,!\?\-…~])$")


def _convert_parts(part: re.Pattern[str], convert: Cleaner, text: str) -> str:
    return part.sub(lambda m: convert(m.group(1)) + " ", text)


def _mixture(*languages: tuple[str, Callable[[], Cleaner]]) -> Cleaner:
    """A cleaner over marked text: each language's parts converted in turn, then the end trimmed."""

    def clean(text: str) -> str:
        for mark, converter in languages:
            part = re.compile(rf"\[{mark}\](.*?)\[{mark}\]")
            if part.search(text):
                text = _convert_parts(part, converter(), text)
        return _END_PUNCTUATION.sub("\\1.", text.rstrip())  # rstrip: upstream's \s+$, in linear time

    return clean


def chinese_cleaners(text: str) -> str:
    """Bopomofo with tone marks, words separated by spaces, a final `。` after a last tone mark."""
    to_bopomofo = _mandarin("chinese_to_bopomofo")
    number_to_chinese, latin_to_bopomofo = _mandarin("number_to_chinese"), _mandarin("latin_to_bopomofo")
    text = latin_to_bopomofo(to_bopomofo(number_to_chinese(text.replace("[ZH]", ""))))
    return re.sub("([ˉˊˇˋ˙])$", "\\1。", text)


def japanese_cleaners(text: str) -> str:
    text = _japanese("japanese_to_romaji_with_accent")(text)
    return re.sub("([A-Za-z])$", "\\1.", text)


def japanese_cleaners2(text: str) -> str:
    return japanese_cleaners(text).replace("ts", "ʦ").replace("...", "…")


zh_ja_mixture_cleaners = _mixture(
    ("ZH", lambda: _mandarin("chinese_to_romaji")),
    (
        "JA",
        lambda: _replacing(
            _japanese("japanese_to_romaji_with_accent"), ("ts", "ʦ"), ("u", "ɯ"), ("...", "…")
        ),
    ),
)
_LAZY_ZH = (("ʧ", "tʃ"), ("ʦ", "ts"), ("ɥan", "ɥæn"))
_CJE_PARTS = (
    ("ZH", lambda: _replacing(_mandarin("chinese_to_lazy_ipa"), *_LAZY_ZH)),
    ("JA", lambda: _replacing(_japanese("japanese_to_ipa"), *_LAZY_ZH, ("ʥ", "dz"))),
    ("KO", lambda: _korean),
    (
        "EN",
        lambda: _replacing(
            _english("english_to_ipa2"), ("ɑ", "a"), ("ɔ", "o"), ("ɛ", "e"), ("ɪ", "i"), ("ʊ", "u")
        ),
    ),
)
cjke_cleaners = _mixture(*_CJE_PARTS)
# cje_cleaners is cjke_cleaners without Korean (CjangCjengh/vits, MoeGoe; VITS-fast-fine-tuning lacks it).
cje_cleaners = _mixture(*(part for part in _CJE_PARTS if part[0] != "KO"))
cjke_cleaners2 = _mixture(
    ("ZH", lambda: _mandarin("chinese_to_ipa")),
    ("JA", lambda: _japanese("japanese_to_ipa2")),
    ("KO", lambda: _korean),
    ("EN", lambda: _english("english_to_ipa2")),
)

CLEANERS: dict[str, Cleaner] = {
    "english_cleaners2": english_cleaners2,
    "english_cleaners": english_cleaners,
    "basic_cleaners": basic_cleaners,
    "transliteration_cleaners": transliteration_cleaners,
    "chinese_cleaners": chinese_cleaners,
    "japanese_cleaners": japanese_cleaners,
    "japanese_cleaners2": japanese_cleaners2,
    "zh_ja_mixture_cleaners": zh_ja_mixture_cleaners,
    "cjke_cleaners": cjke_cleaners,
    "cjke_cleaners2": cjke_cleaners2,
    "cje_cleaners": cje_cleaners,
}

# The languages each cleaner reads, as lipstream names them; the mixture cleaners read only marked text.
_LANGUAGES: dict[str, tuple[str, ...]] = {
    "english_cleaners2": ("en",),
    "english_cleaners": ("en",),
    "basic_cleaners": ("en",),
    "transliteration_cleaners": ("en",),
    "chinese_cleaners": ("zh",),
    "japanese_cleaners": ("ja",),
    "japanese_cleaners2": ("ja",),
}
MARKED_LANGUAGES: dict[str, tuple[str, ...]] = {
    "zh_ja_mixture_cleaners": ("zh", "ja"),
    "cjke_cleaners": ("zh", "ja", "en"),  # and [KO], which lipstream cannot read
    "cjke_cleaners2": ("zh", "ja", "en"),
    "cje_cleaners": ("zh", "ja", "en"),
}


def cleaner_languages(cleaners: list[str]) -> list[str]:
    """The languages a chain of cleaners reads, in order, without repeats."""
    langs: list[str] = []
    for name in cleaners:
        langs.extend(MARKED_LANGUAGES.get(name, _LANGUAGES.get(name, ())))
    return list(dict.fromkeys(langs))


# --- marking plain text ----------------------------------------------------------------------------------

def _script(char: str) -> str:
    """'han', 'kana', 'latin' (a letter outside the CJK blocks), or '' for what joins its neighbours."""
    code = ord(char)
    if 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x3FFFF or char == "々":
        return "han"
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9D:
        return "kana"
    if 0x3000 <= code <= 0x303F or 0xFF00 <= code <= 0xFFEF:
        return "cjk"  # CJK and full-width punctuation: part of the CJK text around it
    if unicodedata.category(char).startswith("L"):
        return "latin"
    return ""


_MARK = re.compile(r"\[(ZH|JA|EN|KO)\]")


def balance_language_marks(text: str) -> str:
    """A clause cut out of marked text, given back the marks its cut left on the other side.

    The server cuts a stream into clauses at punctuation, also inside `[ZH]…[ZH]`: "[ZH]你好，" and
    "世界。[ZH][EN]Hi[EN]". Where a language has an odd number of marks, the clause's first mark closes a
    part begun before the clause when text precedes it (the mark is put in front), or is dropped when
    nothing follows it before the next mark; a part still open at the end is closed there. Text whose marks
    pair up is returned as it is.
    """
    marks = list(_MARK.finditer(text))
    if not marks:
        return text
    first = marks[0]
    if sum(m.group(1) == first.group(1) for m in marks) % 2:
        following = marks[1].start() if len(marks) > 1 else None
        if text[: first.start()].strip():
            text = first.group(0) + text
        elif following is not None and not text[first.end() : following].strip():
            text = text[: first.start()] + text[first.end() :]
    counts: dict[str, int] = {}
    for m in _MARK.finditer(text):
        counts[m.group(0)] = counts.get(m.group(0), 0) + 1
    return text + "".join(mark for mark, n in counts.items() if n % 2)


_CJK_SENTENCE = re.compile("[^。！？!?]+[。！？!?]*|[。！？!?]+")


def _language_of(part: str, languages: list[str] | tuple[str, ...]) -> str:
    if "ja" in languages and any(_script(c) == "kana" for c in part):
        return "ja"
    return "zh" if "zh" in languages else languages[0]


def add_language_marks(text: str, languages: list[str] | tuple[str, ...]) -> str:
    """Plain text marked for a mixture cleaner: `[ZH]`/`[JA]` around CJK text (a sentence with kana is
    Japanese when the voice reads Japanese), `[EN]` around Latin runs when the voice reads English
    (otherwise Latin letters stay in the Chinese text, where they are spelled letter by letter).

    Digits, spaces and ASCII punctuation belong to the run before them (the first run, at the start).
    Text that already has a mark is returned as it is: the writer chose.
    """
    if _MARK.search(text) or not languages:
        return text
    text = re.sub(r"[\r\n]+", " ", text)  # a mark's part ends at a line break
    runs: list[tuple[str, str]] = []  # (kind, text): "cjk", "latin", or "" while only neutral characters came
    for char in text:
        kind = {"han": "cjk", "kana": "cjk"}.get(_script(char), _script(char))
        if kind == "latin" and "en" not in languages:
            kind = "cjk"
        if runs and (not kind or runs[-1][0] in ("", kind)):
            runs[-1] = (runs[-1][0] or kind, runs[-1][1] + char)
        else:
            runs.append((kind, char))
    parts: list[tuple[str, str]] = []  # (language, text), neighbours of one language joined
    for kind, run in runs:
        sentences = [run] if kind == "latin" else _CJK_SENTENCE.findall(run)
        for sentence in sentences:
            lang = "en" if kind == "latin" else _language_of(sentence, languages)
            if parts and parts[-1][0] == lang:
                parts[-1] = (lang, parts[-1][1] + sentence)
            else:
                parts.append((lang, sentence))
    return "".join(f"[{lang.upper()}]{part}[{lang.upper()}]" for lang, part in parts)


_OFFICIAL = ("english_cleaners2", "english_cleaners", "basic_cleaners", "transliteration_cleaners")
_SAMPLES: dict[str, tuple[Callable[[], Cleaner], str]] = {
    "zh": (lambda: _mandarin("chinese_to_bopomofo"), "你好"),
    "ja": (lambda: _japanese("japanese_to_romaji_with_accent"), "あ"),
    "en": (lambda: _english("english_to_ipa"), "a 1"),  # a number: inflect loads too
}


def prepare(cleaners: list[str]) -> None:
    """Load what the cleaners' languages need now (jieba's dictionary takes a second or two), so that a
    voice's first sentence is not the one that waits. A missing package is reported when text needs it."""
    fast = [name for name in cleaners if name not in _OFFICIAL]  # espeak starts quickly
    for language in cleaner_languages(fast):
        converter, sample = _SAMPLES[language]
        try:
            converter()(sample)
        except VoiceError:
            pass


def clean_text(text: str, cleaners: list[str]) -> str:
    """The cleaners applied in turn; plain text is marked by script first when the first cleaner needs it.

    A Mandarin-only voice (`chinese_cleaners`) reads every mark's text as Mandarin: upstream drops only
    `[ZH]` and would spell the letters of `[EN]`, `[JA]`, `[KO]`; lipstream drops those too.
    """
    if cleaners and cleaners[0] in MARKED_LANGUAGES:
        text = add_language_marks(balance_language_marks(text), MARKED_LANGUAGES[cleaners[0]])
    elif cleaners and cleaners[0] == "chinese_cleaners":
        text = _MARK.sub("", text)
    for name in cleaners:
        cleaner = CLEANERS.get(name)
        if cleaner is None:
            raise VoiceError(f"unsupported text cleaner {name!r}; supported: {sorted(CLEANERS)}")
        text = cleaner(text)
    return text
