"""Word timings: a clause's phoneme spans grouped into its text's words (lipstream.models.vits.words).

English with the real default voice (espeak joins and splits words: "of the" is one espeak word, "25" two);
Mandarin with a tiny VITS-fast-fine-tuning voice (chinese_cleaners: bopomofo per character).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from lipstream.models.vits import WordSpan, load_voice, split_words, word_spans

from tests.test_vits_support import TINY_MODEL, fill_, save_upstream_checkpoint, tiny_model

VITS_FAST = Path(__file__).parent / "data" / "conformance" / "vits_fast"


@dataclass(frozen=True)
class Span:
    phoneme: str
    start_sample: int
    end_sample: int


@pytest.fixture(scope="module")
def voice():  # type: ignore[no-untyped-def]
    from lipstream.models.vits import DEFAULT_VOICE

    return load_voice(DEFAULT_VOICE)


def _check_order_and_cover(words: list[WordSpan], text: str, phonemes) -> None:  # type: ignore[no-untyped-def]
    assert [w.word for w in words] == [w for w, _, _ in split_words(text)]
    for a, b in zip(words, words[1:], strict=False):
        assert a.start_sample <= a.end_sample <= b.start_sample <= b.end_sample
    assert all(text[w.char_start:w.char_end] == w.word for w in words)
    assert words[0].start_sample == phonemes[0].start_sample
    # The last word ends where its last symbol does: only the final punctuation / EOS may follow.
    tail = [p for p in phonemes if p.start_sample >= words[-1].end_sample]
    assert all(not any(c.isalnum() for c in p.phoneme) for p in tail)


def test_split_words_keeps_apostrophes_hyphens_and_cuts_cjk_per_character() -> None:
    assert [w for w, _, _ in split_words("Don't re-enter, Bob!")] == ["Don't", "re-enter", "Bob"]
    assert [w for w, _, _ in split_words("[ZH]你好，world 3.5[ZH]")] == ["你", "好", "world", "3", "5"]
    assert split_words("...!") == []


@pytest.mark.parametrize("text", [
    "The quick brown fox jumps over the lazy dog.",
    "Of the people, by the people.",
    "I am 25 years old, and it's late.",
    "Don't go to the U.S.A. in 2026!",
])
def test_english_words_in_order_over_the_clause(voice, text: str) -> None:  # type: ignore[no-untyped-def]
    speech = voice.synthesize(text, noise_scale=0.0, noise_scale_w=0.0)
    words = voice.words(text, speech.phonemes)
    _check_order_and_cover(words, text, speech.phonemes)
    assert all(w.end_sample > w.start_sample for w in words)  # every word is heard
    assert words[-1].end_sample <= len(speech.audio)


def test_english_word_boundaries_fall_on_the_words_phonemes(voice) -> None:  # type: ignore[no-untyped-def]
    text = "Of the people."
    speech = voice.synthesize(text, noise_scale=0.0, noise_scale_w=0.0)
    words = {w.word: w for w in voice.words(text, speech.phonemes)}
    inside = {w: "".join(p.phoneme for p in speech.phonemes
                         if s.start_sample <= p.start_sample < s.end_sample)
              for w, s in words.items()}
    assert "v" in inside["Of"] and "ð" in inside["the"] and "p" in inside["people"], inside


def test_alignment_is_monotonic_and_gives_missing_words_a_point() -> None:
    phonemes = [Span("^", 0, 10), Span("a", 10, 20), Span(" ", 20, 25), Span("b", 25, 40), Span(".", 40, 50)]
    symbols = {"x": ["a"], "y": [], "z": ["b"]}
    words = word_spans("x y z.", phonemes, lambda w: symbols[w])
    assert [(w.word, w.start_sample, w.end_sample) for w in words] == [
        ("x", 10, 20), ("y", 25, 25), ("z", 25, 40)]


def test_mandarin_words_are_characters(tmp_path: Path) -> None:
    config = json.loads((VITS_FAST / "c_chinese.json").read_text(encoding="utf-8"))
    config["model"] = dict(TINY_MODEL, gin_channels=8)
    config["data"]["n_speakers"], config["speakers"] = 1, {"a": 0}
    (tmp_path / "finetune_speaker.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    save_upstream_checkpoint(tmp_path / "G_latest.pth", fill_(tiny_model(config, len(config["symbols"]))))
    voice = load_voice(tmp_path / "G_latest.pth", device="cpu")
    text = "你好，欢迎来到北京。"
    with torch.inference_mode():
        speech = voice.synthesize(text, noise_scale=0.0, noise_scale_w=0.0)
    words = voice.words(text, speech.phonemes)
    assert [w.word for w in words] == list("你好欢迎来到北京")
    _check_order_and_cover(words, text, speech.phonemes)
    assert all(w.end_sample > w.start_sample for w in words)
