"""The audio-driven mouth (no phoneme timings): closed in silence, open on vowels, teeth together on hiss,
and close to the phoneme-driven mouth on the default voice's speech."""

from __future__ import annotations

import numpy as np
import pytest
from lipstream.models.viseme import MouthShape, MouthTrack, guess_alphabet, loudness
from lipstream.models.viseme.audio import audio_mouth_shape
from lipstream.models.viseme.mapping import visemes_from_phonemes

RATE = 16000


def _tone(freqs: list[float], amplitude: float = 0.2, n: int = 640) -> np.ndarray:
    t = np.arange(n) / RATE
    return (amplitude * sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)).astype(np.float32)


def test_silence_is_the_closed_mouth() -> None:
    assert audio_mouth_shape(np.zeros(640, np.float32), RATE) == MouthShape.CLOSED
    assert audio_mouth_shape(np.zeros(0, np.float32), RATE) == MouthShape.CLOSED
    with pytest.raises(ValueError, match="sample_rate"):
        audio_mouth_shape(np.zeros(640, np.float32), 0)


def test_open_vowel_hiss_and_rounded_vowel() -> None:
    rng = np.random.default_rng(0)
    open_vowel = audio_mouth_shape(_tone([120, 240, 750, 850, 1250]), RATE)  # 'aa': F1 high
    close_vowel = audio_mouth_shape(_tone([120, 240, 300, 2300]), RATE)  # 'ih': F1 low
    rounded = audio_mouth_shape(_tone([120, 240, 320, 600]), RATE)  # 'ou': F1, F2 low
    hiss = np.convolve(rng.standard_normal(700), [1.0, -1.0])[:640].astype(np.float32) * 0.1  # 's'
    fricative = audio_mouth_shape(hiss, RATE)
    assert open_vowel.jaw_open > close_vowel.jaw_open > fricative.jaw_open > 0.0
    assert rounded.rounding > 0.5 > close_vowel.rounding
    assert close_vowel.lip_width > MouthShape.CLOSED.lip_width > rounded.lip_width


def test_jaw_follows_the_phoneme_driven_mouth_on_real_speech() -> None:
    from lipstream.models.vits import load_voice

    speech = load_voice("en_US-joe-medium").synthesize(
        "Would you like to see how a talking head moves its lips, round and open, to each sound?"
    )
    symbols = [str(p.phoneme) for p in speech.phonemes]
    track = MouthTrack(visemes_from_phonemes(speech.phonemes, alphabet=guess_alphabet(symbols)),
                       speech.sample_rate)
    fps, rate = 25, speech.sample_rate
    phoneme_jaw, audio_jaw = [], []
    for i in range(len(speech.audio) * fps // rate):
        start, stop = round(i * rate / fps), round((i + 1) * rate / fps)
        window = speech.audio[start:stop]
        phoneme_jaw.append(track.shape_at(start, loudness(window)).jaw_open)
        audio_jaw.append(audio_mouth_shape(window, rate).jaw_open)
    assert np.corrcoef(phoneme_jaw, audio_jaw)[0, 1] > 0.75
