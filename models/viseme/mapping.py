"""Phonemes to the 15 visemes game engines use, and viseme timings on the session's media clock.

Symbols come from the voices: espeak IPA for Piper and official VITS voices (one symbol per id, so
stress and length marks, pads and punctuation arrive as symbols of their own), and pinyin initials and
finals for Mandarin. Every symbol is classified deliberately, in four groups:

- sounding symbols map to the viseme of the mouth shape they are made with;
- pauses (sentence and clause punctuation, Piper's BOS ``^`` and EOS ``$``) map to ``sil``;
- modifiers that make no mouth shape of their own (the pad ``_`` between phonemes, the word space,
  length marks, diacritics, tone digits and arrows, quotes, hyphens) are ``CARRY_OVER``: their time
  extends the viseme before them, because in connected speech the mouth holds the last shape;
- stress marks ``ˈ ˌ`` are ``CARRY_FORWARD``: IPA writes them before the syllable they stress, and the
  time a voice gives them is the onset of that syllable's vowel, so it goes to the viseme after them.

Anything else raises ``UnknownPhonemeError``: a new voice with new symbols must be added here, never
silently mapped to something.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from lipstream.models.synthesis import PhonemeSpanLike

VISEMES: tuple[str, ...] = (
    "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou",
)
"""Viseme names; the index is the proto ``VisemeEvent.Viseme`` id."""

SIL, PP, FF, TH, DD, KK, CH, SS, NN, RR, AA, E, IH, OH, OU = range(15)

CARRY_OVER = -1
"""Returned by ``phoneme_to_viseme`` for a modifier: its time belongs to the viseme before it."""
CARRY_FORWARD = -2
"""Returned for a stress mark: its time belongs to the viseme after it."""

Alphabet = Literal["ipa", "pinyin"]


class UnknownPhonemeError(KeyError):
    """A symbol no table knows. Carries the symbol; says how to fix it."""

    def __init__(self, phoneme: str, alphabet: str | None) -> None:
        self.phoneme = phoneme
        self.alphabet = alphabet
        codes = " ".join(f"U+{ord(c):04X}" for c in phoneme)
        super().__init__(
            f"unknown phoneme {phoneme!r} ({codes}) for alphabet {alphabet or 'ipa/pinyin'}: no viseme is "
            f"defined for it; add it to lipstream.models.viseme.mapping"
        )

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


def _table(groups: dict[int, str]) -> dict[str, int]:
    table: dict[str, int] = {}
    for viseme, symbols in groups.items():
        for symbol in symbols.split():
            if symbol in table:
                raise AssertionError(f"symbol {symbol!r} listed twice")  # a table bug, caught at import
            table[symbol] = viseme
    return table


# Espeak IPA, one symbol per entry (the union of Piper's espeak map, the official VITS symbol list and
# VITS-fast-fine-tuning's symbols, whose affricate ligatures ʦ ʣ ʥ ʨ are one symbol each).
_IPA: dict[str, int] = _table({
    PP: "p b m ɓ ʙ ʘ",
    FF: "f v ɱ ʋ ⱱ ɸ β",
    TH: "θ ð",
    DD: "t d ɾ ʈ ɖ ɗ ɽ ǀ ǃ ǂ ǁ",
    KK: "k g ɡ c ɟ q ɢ x ɣ χ ʁ ħ ʕ h ɦ ʔ ɠ ʛ ʄ ŋ ɴ ʜ ʢ ʡ ɰ",
    CH: "ʃ ʒ ɕ ʑ ç ʝ ɧ ʂ ʐ ʤ ʧ ʥ ʨ",
    SS: "s z ʦ ʣ",
    NN: "n l ɫ ɬ ɮ ɭ ɳ ɲ ʎ ʟ ɺ N",
    RR: "r ɹ ɻ ʀ ɚ ɝ",
    AA: "a ɑ ɐ æ ʌ ɶ",
    E: "e ɛ ə ɜ ɘ ɤ ε",
    IH: "i ɪ ɨ ᵻ j ɯ",
    OH: "o ɔ ɒ ɵ œ ø ɞ",
    OU: "u ʊ ʉ w ʍ y ʏ ɥ",
    SIL: ". , ; : ! ? ¡ ¿ — … ^ $ 。 ， ； ： ！ ？ 、",
})
# Modifiers (CARRY_OVER). "Q" is the Japanese geminate (sokuon) of the cjke cleaners: a held closure;
# ˉ ˊ ˇ ˋ ˙ are the bopomofo tone marks.
_IPA_CARRY = set(
    "_ ː ˑ ˞ ʰ ʱ ʲ ʷ ˠ ˤ ʼ ʴ ⁼ ↓ ↑ → ↗ ↘ # - ~ ' \" « » “ ” 《 》 （ ） ( ) * = ` Q "
    "0 1 2 3 4 5 6 7 8 9 ˉ ˊ ˇ ˋ ˙".split()
) | {" ", "\u0303", "\u0327", "\u032a", "\u032f", "\u0329", "\u0361", "\u035c"}
_IPA_STRESS = {"ˈ", "ˌ"}

# Pinyin initials and finals (tone digit 0-5 stripped; "v" is the keyboard spelling of "ü"; "ii"/"iii"
# are the apical vowels after z c s / zh ch sh r, as some frontends write them; "m n ng" are finals too,
# as in the syllables "m", "n", "ng").
_PINYIN_INITIALS: dict[str, int] = _table({
    PP: "b p m", FF: "f", DD: "d t", NN: "n l", KK: "g k h", CH: "j q x zh ch sh", SS: "z c s", RR: "r",
    IH: "y", OU: "w",
})
_PINYIN_FINALS: dict[str, int] = _table({
    PP: "m", NN: "n", KK: "ng", RR: "er",
    AA: "a ai ao an ang ia iao iang ua uai uan uang",
    E: "e ei en eng ê ie ian uei ui un uen ueng üe ue ve üan van",
    IH: "i ii iii in ing",
    OH: "o ou uo io iu iou",
    OU: "u ong iong ü v ün vn",
})


# Bopomofo (zhuyin), for voices whose symbols are bopomofo: a syllable's viseme is its main vowel's.
_BOPOMOFO_INITIALS: dict[str, int] = _table({
    PP: "ㄅ ㄆ ㄇ", FF: "ㄈ", DD: "ㄉ ㄊ", NN: "ㄋ ㄌ", KK: "ㄍ ㄎ ㄏ", CH: "ㄐ ㄑ ㄒ ㄓ ㄔ ㄕ", RR: "ㄖ",
    SS: "ㄗ ㄘ ㄙ",
})
_BOPOMOFO_MEDIALS: dict[str, int] = _table({IH: "ㄧ", OU: "ㄨ ㄩ"})
_BOPOMOFO_FINALS: dict[str, int] = _table({
    AA: "ㄚ ㄞ ㄠ ㄢ ㄤ", OH: "ㄛ ㄡ", E: "ㄜ ㄝ ㄟ ㄣ ㄥ", RR: "ㄦ",
})
_BOPOMOFO_TONES = set("ˉˊˇˋ˙")


def _bopomofo(symbol: str) -> int | None:
    """Viseme of a bopomofo symbol or syllable: its final, else its medial, else its initial."""
    letters = [c for c in symbol if c not in _BOPOMOFO_TONES]
    known = _BOPOMOFO_INITIALS | _BOPOMOFO_MEDIALS | _BOPOMOFO_FINALS
    if any(c not in known for c in letters):
        return None
    finals = [c for c in letters if c in _BOPOMOFO_FINALS]
    if finals:
        rhyme = "".join(letters[-2:])
        if rhyme in ("ㄧㄢ", "ㄩㄢ"):
            return E  # ian / üan are said [jɛn] / [ɥɛn]
        if rhyme in ("ㄨㄥ", "ㄩㄥ"):
            return OU  # ong / iong are said [ʊŋ] / [jʊŋ]
        return _BOPOMOFO_FINALS[finals[-1]]
    medials = [c for c in letters if c in _BOPOMOFO_MEDIALS]
    return _BOPOMOFO_MEDIALS[medials[-1]] if medials else _BOPOMOFO_INITIALS[letters[-1]]


def _strip_tone(symbol: str) -> str:
    return symbol[:-1] if len(symbol) > 1 and symbol[-1] in "012345" else symbol


def _pinyin(symbol: str) -> int | None:
    """Viseme of a pinyin initial, final or whole syllable (its final decides: it holds the vowel)."""
    bare = _strip_tone(symbol.lower())
    if bare in _PINYIN_INITIALS:
        return _PINYIN_INITIALS[bare]
    if bare in _PINYIN_FINALS:
        return _PINYIN_FINALS[bare]
    for initial in sorted(_PINYIN_INITIALS, key=len, reverse=True):  # "zh" before "z"
        final = bare[len(initial):]
        if initial in ("j", "q", "x", "y") and final.startswith("u"):
            final = "ü" + final[1:]  # pinyin writes ü as u after j q x y: "yuan" is y + üan
        if bare.startswith(initial) and final in _PINYIN_FINALS:
            return _PINYIN_FINALS[final]
    return None


def _ipa(symbol: str) -> int | None:
    if symbol in _IPA:
        return _IPA[symbol]
    if symbol and all("\u3100" <= c <= "\u312f" or c in _BOPOMOFO_TONES for c in symbol) and any(
            "\u3100" <= c <= "\u312f" for c in symbol):
        return _bopomofo(symbol)
    if symbol in _IPA_CARRY:
        return CARRY_OVER
    if symbol in _IPA_STRESS:
        return CARRY_FORWARD
    if len(symbol) == 1 and unicodedata.normalize("NFKC", symbol) != symbol:
        # Full-width letters (Ｂ Ｐ in a chinese_cleaners symbol list) read as their ASCII letters.
        return _ipa(unicodedata.normalize("NFKC", symbol))
    if len(symbol) == 1 and symbol.isascii() and symbol.isupper():
        return _IPA.get(symbol.lower())  # the official symbol list has capitals; english_cleaners lower-case
    if len(symbol) > 1:
        # A multi-character IPA unit (an affricate "tʃ", a diphthong "aɪ", "ɑː"): its first sounding symbol
        # is the shape the mouth makes first; every character must still be known.
        visemes = [_ipa(c) for c in unicodedata.normalize("NFC", symbol)]
        if any(v is None for v in visemes):
            return None
        sounding = [v for v in visemes if v is not None and v >= 0]
        return sounding[0] if sounding else CARRY_OVER
    return None


def phoneme_to_viseme(phoneme: str, alphabet: Alphabet | None = None) -> int:
    """The viseme id (index into ``VISEMES``) of one phoneme symbol, or ``CARRY_OVER`` /
    ``CARRY_FORWARD`` for a modifier (see the module doc).

    ``alphabet`` "ipa" or "pinyin" decides the few letters the two read differently (pinyin ``j q x``
    are CH, ``c`` is SS, ``y`` a glide; in IPA they are a glide, stops, a fricative, a rounded vowel).
    None reads a multi-letter pinyin unit ("zh", "ang", "hao3") as pinyin, anything else as IPA, then
    as pinyin. Raises ``UnknownPhonemeError`` for a symbol neither knows.
    """
    if not isinstance(phoneme, str) or phoneme == "":
        raise UnknownPhonemeError(str(phoneme), alphabet)
    if alphabet == "pinyin":
        found = _pinyin(phoneme)
        if found is None:  # punctuation, modifiers, and the IPA of English words in a mixed utterance
            found = _ipa(phoneme)
    elif alphabet == "ipa":
        found = _ipa(phoneme)
    elif alphabet is None:
        found = _pinyin(phoneme) if len(phoneme) > 1 and phoneme.isascii() else None
        if found is None:
            found = _ipa(phoneme)
        if found is None:
            found = _pinyin(phoneme)
    else:
        raise ValueError(f"alphabet must be 'ipa', 'pinyin' or None, got {alphabet!r}")
    if found is None:
        raise UnknownPhonemeError(phoneme, alphabet)
    return found


def guess_alphabet(phonemes: Iterable[str]) -> Alphabet:
    """"pinyin" when some symbol is a multi-letter pinyin unit ("zh", "ang", "hao3"), else "ipa".

    Espeak IPA is one symbol per id, and its letters beyond ASCII never spell a pinyin unit.
    """
    is_pinyin = any(len(s) > 1 and s.isascii() and _pinyin(s) is not None for s in phonemes)
    return "pinyin" if is_pinyin else "ipa"


@dataclass(frozen=True)
class VisemeSpan:
    """One viseme on the session clock: samples [start_sample, end_sample) at the voice's rate."""

    viseme: int
    phoneme: str
    """The sounding symbol that chose the viseme (the punctuation or BOS/EOS for ``sil``)."""
    start_sample: int
    end_sample: int

    @property
    def name(self) -> str:
        return VISEMES[self.viseme]


def visemes_from_phonemes(phonemes: Sequence[PhonemeSpanLike], offset: int = 0,
                          alphabet: Alphabet | None = None) -> list[VisemeSpan]:
    """Viseme spans for one utterance's phoneme spans, moved onto the session clock by ``offset``.

    Modifiers extend the span before them, stress marks the span after them (see the module doc); a
    modifier with nothing before it, or a stress mark with nothing after it, falls back to the other
    side, or to ``sil`` when the utterance has no sounding symbol at all. Consecutive ``sil`` spans merge,
    spans of zero length are dropped, a gap between phoneme spans becomes ``sil``. The result is ordered,
    contiguous and covers exactly what the phoneme spans cover. ``alphabet`` None guesses it from the
    symbols (``guess_alphabet``). Raises ``UnknownPhonemeError`` for an unknown symbol and ``ValueError``
    for spans that go backwards or overlap.
    """
    if alphabet is None:
        alphabet = guess_alphabet(p.phoneme for p in phonemes)
    out: list[VisemeSpan] = []
    previous_end: int | None = None
    pending: tuple[str, int] | None = None  # (symbol, start) of time waiting for the next viseme
    for span in phonemes:
        start, end = int(span.start_sample) + offset, int(span.end_sample) + offset
        if end < start or (previous_end is not None and start < previous_end):
            raise ValueError(f"phoneme span {span.phoneme!r} [{span.start_sample}, {span.end_sample}) goes "
                             f"backwards or overlaps the one before; spans must be ordered and contiguous")
        viseme = phoneme_to_viseme(span.phoneme, alphabet)
        if previous_end is not None and start > previous_end:
            if pending is not None:  # the stressed syllable never came before the gap
                _extend_or_open(out, pending[0], pending[1], previous_end)
                pending = None
            _append(out, VisemeSpan(SIL, "", previous_end, start))
        previous_end = end
        if viseme == CARRY_FORWARD:
            if pending is None:
                pending = (span.phoneme, start)
        elif viseme == CARRY_OVER:
            if pending is not None:  # a modifier right after a stress mark: both wait for the vowel
                continue
            _extend_or_open(out, span.phoneme, start, end)
        else:
            if pending is not None:
                start, pending = pending[1], None
            if end > start:
                _append(out, VisemeSpan(viseme, span.phoneme, start, end))
    if pending is not None and previous_end is not None:
        _extend_or_open(out, pending[0], pending[1], previous_end)
    return out


def _extend_or_open(out: list[VisemeSpan], symbol: str, start: int, end: int) -> None:
    """Give [start, end) to the last span, or open a sil span when there is none yet."""
    if out:
        last = out[-1]
        out[-1] = VisemeSpan(last.viseme, last.phoneme, last.start_sample, end)
    elif end > start:
        out.append(VisemeSpan(SIL, symbol, start, end))


def _append(out: list[VisemeSpan], span: VisemeSpan) -> None:
    if out and span.viseme == SIL and out[-1].viseme == SIL:
        last = out[-1]
        out[-1] = VisemeSpan(SIL, last.phoneme or span.phoneme, last.start_sample, span.end_sample)
    else:
        out.append(span)
