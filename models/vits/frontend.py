"""Text frontends: text -> tokens (a phoneme label and the symbol ids it becomes).

- espeak-ng IPA through piper-tts's bundled espeak bridge (no system espeak needed),
- Piper's phoneme-id map (BOS, then every phoneme followed by PAD, then EOS),
- the cleaners of official VITS and VITS-fast-fine-tuning (`text/cleaners.py`), then their
  character-to-symbol mapping with blank interspersing.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import VoiceError
from .text.cleaners import CLEANERS, clean_text, cleaner_languages, prepare

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


class SymbolFrontend:
    """Official VITS / VITS-fast-fine-tuning: the config's cleaners over the whole text, then one symbol id
    per character of the cleaned string (characters the symbols lack are skipped, as upstream skips them),
    blank 0 around every id when `add_blank`. Each token is one symbol character, labelled with it."""

    def __init__(self, symbols: Sequence[str], cleaners: Sequence[str], add_blank: bool) -> None:
        self.symbols = list(symbols)
        self.symbol_to_id = {s: i for i, s in enumerate(self.symbols)}
        self.cleaners = list(cleaners)
        self.add_blank = add_blank
        unknown = [c for c in self.cleaners if c not in CLEANERS]
        if unknown:
            raise VoiceError(f"unsupported text cleaners {unknown}; supported: {sorted(CLEANERS)}")
        prepare(self.cleaners)

    @property
    def languages(self) -> list[str]:
        return cleaner_languages(self.cleaners)

    def clean(self, text: str) -> str:
        """The symbol string of `text`; plain text is marked by script for the mixture cleaners."""
        return clean_text(text, self.cleaners)

    def __call__(self, text: str) -> list[Clause]:
        blank = Token(None, (0,))
        tokens: list[Token] = [blank] if self.add_blank else []
        skipped: set[str] = set()
        for char in self.clean(text):
            symbol_id = self.symbol_to_id.get(char)
            if symbol_id is None:
                skipped.add(char)
            else:
                tokens.append(Token(char, (symbol_id, 0) if self.add_blank else (symbol_id,)))
        if not any(token.label is not None for token in tokens):
            return []
        return [Clause(tokens, frozenset(skipped))]
