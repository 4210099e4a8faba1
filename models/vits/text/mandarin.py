"""Mandarin as VITS-fast-fine-tuning's voices were trained on it (its `text/mandarin.py` at 8d341c7).

The pipeline: Arabic numbers read by cn2an, words cut by jieba, each word's characters to bopomofo by
pypinyin (tone 1 written as ˉ, words separated by one space), Latin letters spelled the way a Mandarin
speaker names them, then bopomofo to the voice's alphabet: romaji-like (`zh_ja_mixture_cleaners`), IPA
(`cjke_cleaners2`), lazy IPA (`cjke_cleaners`) or IPA with tone letters. The tables and the order they
apply in are upstream's facts: a voice only says what it was trained on, so they are reproduced exactly,
quirks included (a neutral tone writes nothing, "ie" keeps its "i" in IPA, ASCII punctuation passes).

jieba, cn2an and pypinyin are imported on first use; jieba loads its dictionary once, under a lock, with
its log quiet. All three ship their data: nothing is downloaded.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from ..errors import VoiceError

__all__ = [
    "bopomofo_to_ipa",
    "bopomofo_to_ipa2",
    "bopomofo_to_romaji",
    "chinese_to_bopomofo",
    "chinese_to_ipa",
    "chinese_to_ipa2",
    "chinese_to_lazy_ipa",
    "chinese_to_romaji",
    "latin_to_bopomofo",
    "number_to_chinese",
]

_INSTALL = "pip install 'jieba==0.42.1' 'cn2an==0.5.24' 'pypinyin==0.55.0'"

# How a Mandarin speaker names each Latin letter, in bopomofo with tones.
_LETTER_NAMES: dict[str, str] = {
    "a": "ㄟˉ", "b": "ㄅㄧˋ", "c": "ㄙㄧˉ", "d": "ㄉㄧˋ", "e": "ㄧˋ", "f": "ㄝˊㄈㄨˋ", "g": "ㄐㄧˋ",
    "h": "ㄝˇㄑㄩˋ", "i": "ㄞˋ", "j": "ㄐㄟˋ", "k": "ㄎㄟˋ", "l": "ㄝˊㄛˋ", "m": "ㄝˊㄇㄨˋ", "n": "ㄣˉ",
    "o": "ㄡˉ", "p": "ㄆㄧˉ", "q": "ㄎㄧㄡˉ", "r": "ㄚˋ", "s": "ㄝˊㄙˋ", "t": "ㄊㄧˋ", "u": "ㄧㄡˉ",
    "v": "ㄨㄧˉ", "w": "ㄉㄚˋㄅㄨˋㄌㄧㄡˋ", "x": "ㄝˉㄎㄨˋㄙˋ", "y": "ㄨㄞˋ", "z": "ㄗㄟˋ",
}
# Upstream matches the letters case-insensitively with `re`, whose Unicode case folding also takes these.
_LETTER_FOLDS = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}
_LETTER = re.compile("[a-z]", re.IGNORECASE)

# Bopomofo -> (romaji, IPA, IPA2), applied row by row in this order over the whole text (a row's two-letter
# rhymes come before their letters). None: the alphabet has no rule for that rhyme and spells it by letter.
_BOPOMOFO_ROWS: tuple[tuple[str, str | None, str, str], ...] = (
    ("ㄅㄛ", "p⁼wo", "p⁼wo", "pwo"),
    ("ㄆㄛ", "pʰwo", "pʰwo", "pʰwo"),
    ("ㄇㄛ", "mwo", "mwo", "mwo"),
    ("ㄈㄛ", "fwo", "fwo", "fwo"),
    ("ㄅ", "p⁼", "p⁼", "p"),
    ("ㄆ", "pʰ", "pʰ", "pʰ"),
    ("ㄇ", "m", "m", "m"),
    ("ㄈ", "f", "f", "f"),
    ("ㄉ", "t⁼", "t⁼", "t"),
    ("ㄊ", "tʰ", "tʰ", "tʰ"),
    ("ㄋ", "n", "n", "n"),
    ("ㄌ", "l", "l", "l"),
    ("ㄍ", "k⁼", "k⁼", "k"),
    ("ㄎ", "kʰ", "kʰ", "kʰ"),
    ("ㄏ", "h", "x", "h"),
    ("ㄐ", "ʧ⁼", "tʃ⁼", "tɕ"),
    ("ㄑ", "ʧʰ", "tʃʰ", "tɕʰ"),
    ("ㄒ", "ʃ", "ʃ", "ɕ"),
    ("ㄓ", "ʦ`⁼", "ts`⁼", "tʂ"),
    ("ㄔ", "ʦ`ʰ", "ts`ʰ", "tʂʰ"),
    ("ㄕ", "s`", "s`", "ʂ"),
    ("ㄖ", "ɹ`", "ɹ`", "ɻ"),
    ("ㄗ", "ʦ⁼", "ts⁼", "ts"),
    ("ㄘ", "ʦʰ", "tsʰ", "tsʰ"),
    ("ㄙ", "s", "s", "s"),
    ("ㄚ", "a", "a", "a"),
    ("ㄛ", "o", "o", "o"),
    ("ㄜ", "ə", "ə", "ɤ"),
    ("ㄝ", "e", "ɛ", "ɛ"),
    ("ㄞ", "ai", "aɪ", "aɪ"),
    ("ㄟ", "ei", "eɪ", "eɪ"),
    ("ㄠ", "au", "ɑʊ", "ɑʊ"),
    ("ㄡ", "ou", "oʊ", "oʊ"),
    ("ㄧㄢ", "yeNN", "jɛn", "jɛn"),
    ("ㄩㄢ", None, "ɥæn", "yæn"),
    ("ㄢ", "aNN", "an", "an"),
    ("ㄧㄣ", "iNN", "in", "in"),
    ("ㄩㄣ", None, "ɥn", "yn"),
    ("ㄣ", "əNN", "ən", "ən"),
    ("ㄤ", "aNg", "ɑŋ", "ɑŋ"),
    ("ㄧㄥ", "iNg", "iŋ", "iŋ"),
    ("ㄨㄥ", "uNg", "ʊŋ", "ʊŋ"),
    ("ㄩㄥ", "yuNg", "jʊŋ", "jʊŋ"),
    ("ㄥ", "əNg", "əŋ", "ɤŋ"),
    ("ㄦ", "əɻ", "əɻ", "əɻ"),
    ("ㄧ", "i", "i", "i"),
    ("ㄨ", "u", "u", "u"),
    ("ㄩ", "ɥ", "ɥ", "y"),
)
# Tone marks: tone 1 ˉ, 2 ˊ, 3 ˇ, 4 ˋ, neutral ˙ (which no alphabet writes).
_TONES: dict[str, tuple[str, str]] = {  # mark -> (arrows of romaji and IPA, tone letters of IPA2)
    "ˉ": ("→", "˥"), "ˊ": ("↑", "˧˥"), "ˇ": ("↓↑", "˨˩˦"), "ˋ": ("↓", "˥˩"), "˙": ("", ""),
}
_PUNCTUATION = {"，": ",", "。": ".", "！": "!", "？": "?", "—": "-"}


def _table(column: int) -> tuple[tuple[str, str], ...]:
    rows: list[tuple[str, str]] = []
    for row in _BOPOMOFO_ROWS:
        target = row[column]
        if target is not None:
            rows.append((row[0], target))
    tone_column = 1 if column == 3 else 0
    rows += [(mark, tones[tone_column]) for mark, tones in _TONES.items()]
    rows += list(_PUNCTUATION.items())
    return tuple(rows)


_TO_ROMAJI = _table(1)
_TO_IPA = _table(2)
_TO_IPA2 = _table(3)

# Romaji -> lazy IPA (case-insensitive, in order).
_ROMAJI_TO_LAZY_IPA = tuple(
    (re.compile(pattern, re.IGNORECASE), replacement)
    for pattern, replacement in (
        ("ʃy", "ʃ"), ("ʧʰy", "ʧʰ"), ("ʧ⁼y", "ʧ⁼"), ("NN", "n"), ("Ng", "ŋ"), ("y", "j"), ("h", "x"),
    )
)

# After the tables: a glide before a vowel, and the apical vowel after a sibilant that ends a syllable
# (before a tone, a space or the end).
_I_GLIDE = re.compile("i([aoe])")
_U_GLIDE = re.compile("u([aoəe])")
_ROMAJI_RETROFLEX_APICAL = re.compile("([ʦsɹ]`[⁼ʰ]?)([→↓↑ ]+|$)")
_ROMAJI_DENTAL_APICAL = re.compile("([ʦs][⁼ʰ]?)([→↓↑ ]+|$)")
_IPA_RETROFLEX_APICAL = re.compile("([sɹ]`[⁼ʰ]?)([→↓↑ ]+|$)")
_IPA_DENTAL_APICAL = re.compile("(s[⁼ʰ]?)([→↓↑ ]+|$)")
_IPA2_RETROFLEX_APICAL = re.compile("([ʂɹ]ʰ?)([˩˨˧˦˥ ]+|$)")
_IPA2_DENTAL_APICAL = re.compile("(sʰ?)([˩˨˧˦˥ ]+|$)")

_NUMBER = re.compile(r"\d+(?:\.?\d+)?")
_HAN = re.compile("[\u4e00-\u9fff]")
_ENDS_IN_BOPOMOFO = re.compile("([\u3105-\u3129])$")
_CLAUSE_MARKS = str.maketrans({"、": "，", "；": "，", "：": "，"})

_LOCK = threading.Lock()
_modules: dict[str, Any] | None = None


def _load() -> dict[str, Any]:
    """jieba (dictionary loaded, log quiet), cn2an and pypinyin, imported once for all threads."""
    global _modules
    modules = _modules
    if modules is None:
        with _LOCK:
            modules = _modules
            if modules is None:
                try:
                    import cn2an  # type: ignore[import-untyped]
                    import jieba  # type: ignore[import-untyped]
                    from pypinyin import Style, lazy_pinyin
                except ImportError as exc:
                    raise VoiceError(f"Mandarin text needs jieba, cn2an and pypinyin: {_INSTALL}") from exc
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                modules = _modules = {  # published whole, once ready: readers never take the lock again
                    "cut": jieba.lcut,
                    "an2cn": cn2an.an2cn,
                    "bopomofo": lambda word: lazy_pinyin(word, Style.BOPOMOFO),
                }
    return modules


def number_to_chinese(text: str) -> str:
    """Arabic numbers read in Chinese ("25" -> "二十五", "3.14" -> "三点一四"), each found in turn.

    Like upstream, each number's first occurrence left in the text is the one replaced. A number cn2an
    refuses (more than 16 integer digits) is read digit by digit instead of failing.
    """
    an2cn: Callable[..., str] = _load()["an2cn"]
    for number in _NUMBER.findall(text):
        try:
            reading = an2cn(number)
        except ValueError:
            reading = an2cn(number, "direct")
        text = text.replace(number, reading, 1)
    return text


def chinese_to_bopomofo(text: str) -> str:
    """Words cut by jieba; each word with Han characters becomes its syllables' bopomofo, a space before
    it (unless it starts the text); every other word (punctuation, Latin, spaces) is kept as it is."""
    modules = _load()
    out = ""
    for word in modules["cut"](text.translate(_CLAUSE_MARKS), cut_all=False):
        if not _HAN.search(word):
            out += word
            continue
        syllables = [_ENDS_IN_BOPOMOFO.sub("\\1ˉ", s) for s in modules["bopomofo"](word)]
        out += (" " if out else "") + "".join(syllables)
    return out


def _spell_letter(match: re.Match[str]) -> str:
    letter = match.group(0)
    return _LETTER_NAMES[_LETTER_FOLDS.get(letter, letter.lower())]


def latin_to_bopomofo(text: str) -> str:
    """Each Latin letter (either case) replaced by its Mandarin name in bopomofo."""
    return _LETTER.sub(_spell_letter, text)


def _replace_all(text: str, table: tuple[tuple[str, str], ...]) -> str:
    for old, new in table:
        text = text.replace(old, new)
    return text


def bopomofo_to_romaji(text: str) -> str:
    return _replace_all(text, _TO_ROMAJI)


def bopomofo_to_ipa(text: str) -> str:
    return _replace_all(text, _TO_IPA)


def bopomofo_to_ipa2(text: str) -> str:
    return _replace_all(text, _TO_IPA2)


def _to_bopomofo_spelled(text: str) -> str:
    return latin_to_bopomofo(chinese_to_bopomofo(number_to_chinese(text)))


def _glides(text: str, i_glide: str) -> str:
    text = _I_GLIDE.sub(i_glide + "\\1", text)
    return _U_GLIDE.sub("w\\1", text)


def chinese_to_romaji(text: str) -> str:
    """The romaji-like alphabet of `zh_ja_mixture_cleaners` voices."""
    text = _glides(bopomofo_to_romaji(_to_bopomofo_spelled(text)), "y")
    text = _ROMAJI_RETROFLEX_APICAL.sub("\\1ɹ`\\2", text).replace("ɻ", "ɹ`")
    return _ROMAJI_DENTAL_APICAL.sub("\\1ɹ\\2", text)


def chinese_to_lazy_ipa(text: str) -> str:
    """The romaji alphabet moved toward IPA (`cjke_cleaners`, `cjks_cleaners`)."""
    text = chinese_to_romaji(text)
    for pattern, replacement in _ROMAJI_TO_LAZY_IPA:
        text = pattern.sub(replacement, text)
    return text


def chinese_to_ipa(text: str) -> str:
    """IPA with tone arrows (`cjke_cleaners2`, the CJE base model)."""
    text = _glides(bopomofo_to_ipa(_to_bopomofo_spelled(text)), "j")
    text = _IPA_RETROFLEX_APICAL.sub("\\1ɹ`\\2", text).replace("ɻ", "ɹ`")
    return _IPA_DENTAL_APICAL.sub("\\1ɹ\\2", text)


def chinese_to_ipa2(text: str) -> str:
    """IPA with Chao tone letters and the apical vowels ʅ ɿ (upstream's dialect cleaners)."""
    text = _glides(bopomofo_to_ipa2(_to_bopomofo_spelled(text)), "j")
    text = _IPA2_RETROFLEX_APICAL.sub("\\1ʅ\\2", text)
    return _IPA2_DENTAL_APICAL.sub("\\1ɿ\\2", text)
