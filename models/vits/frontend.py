"""Text frontends: text -> tokens (a phoneme label and the symbol ids it becomes).

- espeak-ng IPA through piper-tts's bundled espeak bridge (no system espeak needed),
- Piper's phoneme-id map (BOS, then every phoneme followed by PAD, then EOS),
- the official VITS cleaners' character-to-symbol mapping with blank interspersing,
- Mandarin through pypinyin (pinyin with tone digits, bopomofo or IPA, whichever the voice's symbols hold).
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import VoiceError

_LOGGER = logging.getLogger(__name__)

# The espeak bridge is a process-wide singleton holding the current voice: one caller at a time.
_ESPEAK_LOCK = threading.Lock()
_espeak_ready = False


@dataclass(frozen=True)
class Token:
    """One unit of the symbol sequence: `label` is None for padding (blank, PAD, BOS, EOS)."""

    label: str | None
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Clause:
    """Tokens of one model call, and the characters the voice could not say."""

    tokens: list[Token]
    skipped: frozenset[str]

    @property
    def ids(self) -> list[int]:
        return [i for token in self.tokens for i in token.ids]


def espeak_clauses(text: str, voice: str) -> list[tuple[str, str, bool]]:
    """espeak-ng IPA per clause: (phonemes, terminator punctuation, ends a sentence)."""
    global _espeak_ready
    try:
        from piper import espeakbridge
        from piper.phonemize_espeak import ESPEAK_DATA_DIR
    except ImportError as exc:  # pragma: no cover - piper-tts is a server dependency
        raise VoiceError(
            "espeak phonemes need piper-tts's bundled espeak-ng: pip install 'piper-tts==1.8.0'"
        ) from exc
    with _ESPEAK_LOCK:
        if not _espeak_ready:
            espeakbridge.initialize(str(ESPEAK_DATA_DIR))
            _espeak_ready = True
        try:
            espeakbridge.set_voice(voice)
        except Exception as exc:
            raise VoiceError(f"espeak-ng has no voice {voice!r}; the voice's config names it") from exc
        return list(espeakbridge.get_phonemes(text))


def espeak_sentences(text: str, voice: str) -> list[list[str]]:
    """Piper's phonemization: NFD-decomposed IPA characters grouped by sentence."""
    sentences: list[list[str]] = []
    current: list[str] = []
    for phonemes, terminator, end_of_sentence in espeak_clauses(text, voice):
        phonemes = re.sub(r"\([^)]+\)", "", phonemes)  # drop (lang) switch flags
        phonemes += terminator
        if terminator in (",", ":", ";"):
            phonemes += " "
        current.extend(unicodedata.normalize("NFD", phonemes))
        if end_of_sentence:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return [s for s in sentences if s]


class PiperFrontend:
    """Text -> one Clause per sentence with Piper's BOS / PAD / EOS interspersing."""

    def __init__(self, phoneme_id_map: Mapping[str, Sequence[int]], espeak_voice: str) -> None:
        self.id_map = {k: tuple(int(i) for i in v) for k, v in phoneme_id_map.items()}
        self.espeak_voice = espeak_voice
        for special in ("^", "_", "$"):
            if special not in self.id_map:
                raise VoiceError(f"the Piper phoneme_id_map lacks {special!r} (BOS '^', PAD '_', EOS '$')")

    def phoneme_ids(self, phonemes: Iterable[str]) -> Clause:
        pad = Token(None, self.id_map["_"])
        tokens = [Token(None, self.id_map["^"]), pad]
        skipped: set[str] = set()
        for phoneme in phonemes:
            ids = self.id_map.get(phoneme)
            if ids is None:
                skipped.add(phoneme)
                continue
            tokens.extend([Token(phoneme, ids), pad])
        tokens.append(Token(None, self.id_map["$"]))
        return Clause(tokens, frozenset(skipped))

    def __call__(self, text: str) -> list[Clause]:
        return [self.phoneme_ids(sentence) for sentence in espeak_sentences(text, self.espeak_voice)]


# --- official VITS cleaners -------------------------------------------------------------------------

_ABBREVIATIONS = [
    (re.compile(rf"\b{abbr}\.", re.IGNORECASE), full)
    for abbr, full in [
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
    ]
]
_STRESS = re.compile("[ˈˌ]")


def _collapse_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _to_ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _english_ipa(text: str, with_stress: bool = True) -> str:
    """Lower-cased, abbreviations expanded, espeak en-us IPA with punctuation kept (english_cleaners2)."""
    text = text.lower()
    for pattern, full in _ABBREVIATIONS:
        text = pattern.sub(full, text)
    parts: list[str] = []
    for phonemes, terminator, _end in espeak_clauses(text, "en-us"):
        phonemes = re.sub(r"\([^)]+\)", "", phonemes)
        if not with_stress:
            phonemes = _STRESS.sub("", phonemes)
        parts.append(phonemes + terminator)
    return _collapse_whitespace(" ".join(parts))


def english_cleaners2(text: str) -> str:
    return _english_ipa(_to_ascii(text), with_stress=True)


def english_cleaners(text: str) -> str:
    return _english_ipa(_to_ascii(text), with_stress=False)


def basic_cleaners(text: str) -> str:
    return _collapse_whitespace(text.lower())


def transliteration_cleaners(text: str) -> str:
    return _collapse_whitespace(_to_ascii(text).lower())


# --- Mandarin ---------------------------------------------------------------------------------------

_INITIALS = (
    "zh",
    "ch",
    "sh",
    "b",
    "p",
    "m",
    "f",
    "d",
    "t",
    "n",
    "l",
    "g",
    "k",
    "h",
    "j",
    "q",
    "x",
    "r",
    "z",
    "c",
    "s",
)
_Y_W = {
    "yi": "i",
    "ya": "ia",
    "yo": "io",
    "ye": "ie",
    "yao": "iao",
    "you": "iu",
    "yan": "ian",
    "yin": "in",
    "yang": "iang",
    "ying": "ing",
    "yong": "iong",
    "yu": "v",
    "yue": "ve",
    "yuan": "van",
    "yun": "vn",
    "wu": "u",
    "wa": "ua",
    "wo": "uo",
    "wai": "uai",
    "wei": "ui",
    "wan": "uan",
    "wen": "un",
    "wang": "uang",
    "weng": "ueng",
}
_IPA_INITIALS = {
    "b": "p⁼",
    "p": "pʰ",
    "m": "m",
    "f": "f",
    "d": "t⁼",
    "t": "tʰ",
    "n": "n",
    "l": "l",
    "g": "k⁼",
    "k": "kʰ",
    "h": "x",
    "j": "tʃ⁼",
    "q": "tʃʰ",
    "x": "ʃ",
    "zh": "ts`⁼",
    "ch": "ts`ʰ",
    "sh": "s`",
    "r": "ɹ`",
    "z": "ts⁼",
    "c": "tsʰ",
    "s": "s",
}
_IPA_FINALS = {
    "a": "a",
    "o": "o",
    "e": "ə",
    "i": "i",
    "u": "u",
    "v": "y",
    "ai": "aɪ",
    "ei": "eɪ",
    "ao": "ɑʊ",
    "ou": "oʊ",
    "an": "an",
    "en": "ən",
    "ang": "ɑŋ",
    "eng": "əŋ",
    "ong": "ʊŋ",
    "er": "əɹ",
    "ia": "ja",
    "io": "jo",
    "ie": "jɛ",
    "iao": "jɑʊ",
    "iu": "joʊ",
    "ian": "jɛn",
    "in": "in",
    "iang": "jɑŋ",
    "ing": "iŋ",
    "iong": "jʊŋ",
    "ua": "wa",
    "uo": "wo",
    "uai": "waɪ",
    "ui": "weɪ",
    "uan": "wan",
    "un": "wən",
    "uang": "wɑŋ",
    "ueng": "wəŋ",
    "ve": "ɥɛ",
    "van": "ɥɛn",
    "vn": "yn",
}
_IPA_TONES = {"1": "→", "2": "↑", "3": "↓↑", "4": "↓", "5": ""}
_FULLWIDTH = {",": "，", ".": "。", "!": "！", "?": "？", ";": "；", ":": "："}


def _split_syllable(syllable: str) -> tuple[str, str, str]:
    """'zhong1' -> ('zh', 'ong', '1'); 'yue4' -> ('', 've', '4'); j/q/x + u is ü."""
    tone = syllable[-1] if syllable[-1].isdigit() else "5"
    body = syllable.rstrip("012345").replace("ü", "v")
    if body in _Y_W:
        return "", _Y_W[body], tone
    if body[:1] in ("y", "w"):
        body = _Y_W.get(body, body[1:])
        return "", body, tone
    for initial in _INITIALS:
        if body.startswith(initial) and len(body) > len(initial):
            final = body[len(initial) :]
            if initial in ("j", "q", "x") and final.startswith("u"):
                final = "v" + final[1:]
            return initial, final, tone
    return "", body, tone


def mandarin_syllables(text: str) -> list[str | tuple[str, str, str]]:
    """Han characters -> (initial, final, tone) per syllable; other characters pass through as strings."""
    try:
        from pypinyin import Style, pinyin
    except ImportError as exc:
        raise VoiceError("Mandarin text needs pypinyin: pip install pypinyin") from exc
    out: list[str | tuple[str, str, str]] = []
    for item in pinyin(
        text, style=Style.TONE3, neutral_tone_with_five=True, errors=lambda s: [[c] for c in s]
    ):
        word = item[0]
        if re.fullmatch(r"[a-zü]+[1-5]", word):
            out.append(_split_syllable(word))
        else:
            out.extend(word)
    return out


class SymbolFrontend:
    """Official VITS / VITS-fast-fine-tuning: cleaners, then one symbol id per character, blanks between."""

    def __init__(self, symbols: Sequence[str], cleaners: Sequence[str], add_blank: bool) -> None:
        self.symbols = list(symbols)
        self.symbol_to_id = {s: i for i, s in enumerate(self.symbols)}
        self.cleaners = list(cleaners)
        self.add_blank = add_blank
        known = {
            "english_cleaners2",
            "english_cleaners",
            "basic_cleaners",
            "transliteration_cleaners",
            "chinese_cleaners",
            "cjke_cleaners2",
            "cjke_cleaners",
            "zh_ja_mixture_cleaners",
            "japanese_cleaners",
            "japanese_cleaners2",
        }
        unknown = [c for c in self.cleaners if c not in known]
        if unknown:
            raise VoiceError(f"unsupported text cleaners {unknown}; supported: {sorted(known)}")
        self.mandarin_style = (
            "bopomofo"
            if "ㄅ" in self.symbol_to_id
            else "ipa"
            if "→" in self.symbol_to_id or "↓" in self.symbol_to_id
            else "pinyin"
        )

    @property
    def languages(self) -> list[str]:
        langs: list[str] = []
        for cleaner in self.cleaners:
            if cleaner.startswith("english") or cleaner in ("basic_cleaners", "transliteration_cleaners"):
                langs.append("en")
            elif cleaner == "chinese_cleaners":
                langs.append("zh")
            elif cleaner.startswith("japanese"):
                langs.append("ja")
            elif cleaner == "zh_ja_mixture_cleaners":
                langs.extend(["zh", "ja"])
            elif cleaner.startswith("cjke"):
                langs.extend(["zh", "ja", "en"])
        return list(dict.fromkeys(langs))

    # text -> labelled pieces of symbol strings ----------------------------------------------------

    def _mandarin(self, text: str) -> list[tuple[str, str]]:
        pieces: list[tuple[str, str]] = []
        if self.mandarin_style == "bopomofo":
            from pypinyin import Style, pinyin

            for item in pinyin(text, style=Style.BOPOMOFO, errors=lambda s: [[c] for c in s]):
                pieces.append((item[0], _FULLWIDTH.get(item[0], item[0])))
            return pieces
        for item in mandarin_syllables(text):
            if isinstance(item, str):
                char = _FULLWIDTH.get(item, item) if self.mandarin_style != "ipa" else item
                pieces.append((char, char))
                continue
            initial, final, tone = item
            if self.mandarin_style == "ipa":
                if final == "i" and initial in ("z", "c", "s"):
                    final_ipa = "ɹ"
                elif final == "i" and initial in ("zh", "ch", "sh", "r"):
                    final_ipa = "ɹ`"
                else:
                    final_ipa = _IPA_FINALS.get(final, final)
                if initial:
                    pieces.append((initial, _IPA_INITIALS[initial]))
                pieces.append((final, final_ipa + _IPA_TONES[tone]))
                pieces.append((" ", " "))
            else:
                if initial:
                    pieces.append((initial, initial))
                pieces.append((final, final + tone))
                pieces.append((" ", " "))
        while pieces and pieces[-1][0] == " ":
            pieces.pop()
        return pieces

    def _english(self, text: str) -> list[tuple[str, str]]:
        with_stress = "english_cleaners" not in self.cleaners
        ipa = _english_ipa(_to_ascii(text), with_stress=with_stress)
        if "ɡ" not in self.symbol_to_id:  # cjke symbol sets spell these with plain letters
            ipa = ipa.replace("ɡ", "g").replace("ɚ", "əɹ").replace("ɝ", "əɹ").replace("ᵻ", "ɪ")
            ipa = ipa.replace("ɐ", "ə").replace("ʌ", "ə").replace("ɜ", "ə").replace("ː", "")
        return [(c, c) for c in ipa]

    def _segment(self, text: str, language: str) -> list[tuple[str, str]]:
        if language == "zh":
            return self._mandarin(text)
        if language == "en":
            if self.cleaners in (["basic_cleaners"], ["transliteration_cleaners"]):
                cleaned = CLEANERS[self.cleaners[0]](text)
                return [(c, c) for c in cleaned]
            return self._english(text)
        raise VoiceError(
            f"{language!r} text needs a Japanese frontend (pyopenjtalk), which lipstream does not include; "
            "install pyopenjtalk and use the voice's own inference code, or write Mandarin or English text"
        )

    def split_languages(self, text: str) -> list[tuple[str, str]]:
        """[ZH]..[ZH] / [JA]..[JA] / [EN]..[EN] marks when present, else Han runs are zh and the rest en."""
        marked = re.findall(r"\[(ZH|JA|EN|KO)\](.*?)\[\1\]", text, flags=re.S)
        if marked:
            return [(lang.lower(), body) for lang, body in marked]
        langs = self.languages
        runs: list[tuple[str, str]] = []
        for match in re.finditer(
            r"([\u3400-\u9fff\uf900-\ufaff，。！？；：、]+)|([^\u3400-\u9fff\uf900-\ufaff]+)", text
        ):
            lang = "zh" if match.group(1) else "en"
            if lang not in langs:
                lang = langs[0]
            runs.append((lang, match.group(0)))
        return runs

    def __call__(self, text: str) -> list[Clause]:
        pieces: list[tuple[str, str]] = []
        for lang, body in self.split_languages(text):
            if body.strip():
                if pieces and pieces[-1][0] != " ":
                    pieces.append((" ", " "))
                pieces.extend(self._segment(body, lang))
        blank = Token(None, (0,))
        tokens: list[Token] = [blank] if self.add_blank else []
        skipped: set[str] = set()
        for label, symbols in pieces:
            ids = []
            for char in symbols:
                symbol_id = self.symbol_to_id.get(char)
                if symbol_id is None:
                    skipped.add(char)
                else:
                    ids.append(symbol_id)
            if not ids:
                continue
            if self.add_blank:
                # Each symbol gets its blank; the token's ids keep its characters together.
                interleaved: list[int] = []
                for symbol_id in ids:
                    interleaved.extend([symbol_id, 0])
                tokens.append(Token(label, tuple(interleaved)))
            else:
                tokens.append(Token(label, tuple(ids)))
        if len(tokens) <= 1:
            return []
        return [Clause(tokens, frozenset(skipped))]


CLEANERS: dict[str, Callable[[str], str]] = {
    "english_cleaners2": english_cleaners2,
    "english_cleaners": english_cleaners,
    "basic_cleaners": basic_cleaners,
    "transliteration_cleaners": transliteration_cleaners,
}
