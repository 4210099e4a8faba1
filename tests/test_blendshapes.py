"""ARKit blendshapes from the viseme track: the names, the pose table, and the weights against real speech.

The sentences are spoken by the real default voice (``en_US-joe-medium``) with its duration predictor's
phoneme timings, as the server does.
"""

from __future__ import annotations

import numpy as np
import pytest
from lipstream.models.viseme import (
    BLENDSHAPE_NAMES,
    VISEMES,
    BlendshapeTrack,
    MouthTrack,
    loudness,
    visemes_from_phonemes,
)
from lipstream.models.viseme.blendshapes import POSE_TABLE, silent_weights

FPS = 25.0
VOWELS = {"aa", "E", "oh"}


@pytest.fixture(scope="module")
def voice():  # type: ignore[no-untyped-def]
    from lipstream.models.vits import DEFAULT_VOICE, load_voice

    return load_voice(DEFAULT_VOICE)


@pytest.fixture(scope="module")
def sentences(voice):  # type: ignore[no-untyped-def]
    texts = ("The quick brown fox jumps over the lazy dog.", "Maybe Bob can bring a bumpy map to the pub.")
    return [voice.synthesize(t, noise_scale=0.0, noise_scale_w=0.0) for t in texts]


def _frames(speech):  # type: ignore[no-untyped-def]
    """Per frame at FPS, as the server makes them: the middle sample of the frame's interval, the loudness
    of the interval's audio (and its RMS)."""
    sr = speech.sample_rate
    track = MouthTrack(visemes_from_phonemes(speech.phonemes), sr)
    out = []
    for i in range(int(len(speech.audio) * FPS / sr)):
        start, stop = round(i * sr / FPS), round((i + 1) * sr / FPS)
        window = speech.audio[start:stop]
        rms = float(np.sqrt(np.mean(np.square(window, dtype=np.float64))))
        out.append(((start + stop) // 2, loudness(window), rms))
    return track, out


def test_names_are_the_arkit_mouth_and_jaw_set() -> None:
    assert len(BLENDSHAPE_NAMES) == len(set(BLENDSHAPE_NAMES)) == 28
    for name in ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight",
                 "mouthStretchLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthUpperUpRight",
                 "mouthRollLower", "mouthShrugUpper", "tongueOut"):
        assert name in BLENDSHAPE_NAMES
    assert POSE_TABLE.shape == (len(VISEMES), len(BLENDSHAPE_NAMES))
    assert np.all(POSE_TABLE[VISEMES.index("sil")] == 0) and POSE_TABLE.min() >= 0 and POSE_TABLE.max() <= 1
    left = [n for n in BLENDSHAPE_NAMES if n.endswith("Left")]
    for name in left:  # speech is symmetric: the poses are too
        i, j = BLENDSHAPE_NAMES.index(name), BLENDSHAPE_NAMES.index(name[:-4] + "Right")
        assert np.array_equal(POSE_TABLE[:, i], POSE_TABLE[:, j])


def test_jaw_open_is_the_2d_mouths_jaw_and_silence_is_rest(sentences) -> None:  # type: ignore[no-untyped-def]
    track, frames = _frames(sentences[0])
    shapes = BlendshapeTrack(track)
    jaw = BLENDSHAPE_NAMES.index("jawOpen")
    for start, level, _ in frames:
        weights = shapes.weights_at(start, level)
        assert weights.dtype == np.float32 and weights.shape == (len(BLENDSHAPE_NAMES),)
        assert np.all((weights >= 0) & (weights <= 1))
        assert weights[jaw] == pytest.approx(track.shape_at(start, level).jaw_open, abs=1e-6)
    assert np.array_equal(shapes.weights_at(track.end_sample + 10, 0.0), silent_weights())


def test_jaw_open_follows_the_audio_envelope(sentences) -> None:  # type: ignore[no-untyped-def]
    jaw = BLENDSHAPE_NAMES.index("jawOpen")
    for speech in sentences:
        track, frames = _frames(speech)
        shapes = BlendshapeTrack(track)
        opening = np.array([shapes.weights_at(s, level)[jaw] for s, level, _ in frames])
        envelope = np.array([rms for _, _, rms in frames])
        r = np.corrcoef(opening, envelope)[0, 1]
        # The jaw is a viseme target times a dB-mapped loudness (not linear in RMS), as for the 2D mouth's
        # opening (tests/test_viseme.py, same bound); shifting the envelope by 0.2-0.6 s must break it.
        assert r >= 0.6, f"jawOpen vs audio envelope: r = {r:.3f}"
        for shift in (5, 10, 15):
            shifted = np.corrcoef(opening[shift:], envelope[:-shift])[0, 1]
            assert abs(shifted) < 0.5, f"shift {shift} frames: r = {shifted:.3f}"


def test_mouth_close_is_high_on_pp_and_low_on_open_vowels(sentences) -> None:  # type: ignore[no-untyped-def]
    close = BLENDSHAPE_NAMES.index("mouthClose")
    pucker = BLENDSHAPE_NAMES.index("mouthPucker")
    on_pp: list[float] = []
    on_vowels: list[float] = []
    for speech in sentences:
        track, frames = _frames(speech)
        shapes = BlendshapeTrack(track)
        for start, level, _ in frames:
            name = VISEMES[track.viseme_at(start)]
            weights = shapes.weights_at(start, level)
            if name == "PP":
                on_pp.append(float(weights[close]))
            elif name in VOWELS:
                on_vowels.append(float(weights[close]))
            if name == "ou":
                assert weights[pucker] > 0.2
    assert len(on_pp) >= 4 and len(on_vowels) >= 10
    assert min(on_pp) >= 0.7, on_pp
    # A vowel beside a /p b m/ closes in towards it (PP's strong, brief dominance, as in the 2D mouth), so
    # some vowel frames carry part of the closure; most carry none.
    assert np.median(on_vowels) < 0.1 and np.mean(on_pp) > 3 * np.mean(on_vowels)


def test_weights_from_a_2d_pose_for_speech_without_timings() -> None:
    from lipstream.models.viseme import MouthShape
    from lipstream.models.viseme.blendshapes import weights_from_shape

    assert np.array_equal(weights_from_shape(MouthShape.CLOSED), silent_weights())
    rounded = weights_from_shape(MouthShape(0.4, 0.3, 0.9))
    spread = weights_from_shape(MouthShape(0.4, 0.8, 0.0))
    names = BLENDSHAPE_NAMES.index
    assert rounded[names("jawOpen")] == pytest.approx(0.4) and rounded[names("mouthPucker")] > 0.7
    assert spread[names("mouthStretchLeft")] > 0.4 and spread[names("mouthPucker")] == 0
    assert rounded[names("mouthClose")] == spread[names("mouthClose")] == 0  # nothing times a closure
