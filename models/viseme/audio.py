"""A mouth from audio alone, for speech that comes without phoneme timings (a client's own TTS).

Per frame, from the frame's own samples: the loudness opens the jaw (as in ``MouthTrack``); the spectral
shape picks the lips. Three band energies of a Hann-windowed spectrum decide:

- **voicing** ``(low + mid) / (low + mid + high)``: fricatives (s, sh, f, th) put their energy above
  3 kHz, so a frame that is mostly hiss keeps the teeth nearly together and spreads the lips a little;
- **openness** from the first formant's region: open vowels (a, o) carry more energy at 600..1100 Hz than
  at 200..600 Hz, close vowels (i, u) and nasals less; it scales the jaw between 45 % and 100 % of FULL_OPEN;
- **rounding / spread** from the centroid of the voiced band (200..3500 Hz): rounded vowels (u, o, w)
  keep it low, under ~900 Hz; spread vowels (i, e) push it above ~1.2 kHz.

The spectrum is pre-emphasised first. Measured against the phoneme-driven ``MouthTrack`` on the same
speech, the jaw follows it closely; the lip shape only loosely (a single frame's spectrum is a weak cue
for rounding without formant tracking).

Silence (loudness 0) is the closed mouth exactly, so pauses show the avatar as it is. No state: a frame's
shape depends on its window only, so the first frame costs nothing more than the others.
"""

from __future__ import annotations

import numpy as np

from .track import MouthShape, loudness

OPEN_MIN = 0.45
"""Jaw opening of a loud frame whose spectrum says 'close vowel', as a fraction of its loudness."""
FRICATIVE_JAW = 0.15
"""Jaw opening of a loud frame that is all hiss (s, sh), as a fraction of its loudness."""
FULL_OPEN = 0.7
"""Jaw opening of a loud open vowel; chosen so that the mean opening on the default voice's speech is the
phoneme-driven mouth's."""
_EPS = 1e-12


def _band(power: np.ndarray, freqs: np.ndarray, lo: float, hi: float) -> float:
    return float(power[(freqs >= lo) & (freqs < hi)].sum())


def audio_mouth_shape(samples: np.ndarray, sample_rate: int) -> MouthShape:
    """The mouth for one frame's float samples in [-1, 1] at ``sample_rate`` (any rate from 8 kHz)."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    x = np.asarray(samples, dtype=np.float32)
    level = loudness(x)
    if level <= 0.0 or x.size < 16:
        return MouthShape.CLOSED
    # Pre-emphasis flattens the voice's spectral tilt, so the formant regions, not the pitch's first
    # harmonics, decide the bands.
    emphasized = np.append(x[:1], x[1:] - 0.95 * x[:-1])
    spectrum = np.fft.rfft(emphasized * np.hanning(x.size).astype(np.float32))
    power = spectrum.real.astype(np.float64) ** 2 + spectrum.imag.astype(np.float64) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / sample_rate)
    f1_low = _band(power, freqs, 200.0, 600.0)
    f1_high = _band(power, freqs, 600.0, 1100.0)
    f2 = _band(power, freqs, 1100.0, 2600.0)
    hiss = _band(power, freqs, 3500.0, 8000.0)
    low = f1_low + f1_high
    voicing = (low + f2) / (low + f2 + hiss + _EPS)
    openness = float(np.clip(f1_high / (low + _EPS) / 0.5, 0.0, 1.0))
    # Where the voiced energy sits: under ~700 Hz for u / o / w, above ~1.5 kHz for i / e.
    voiced = (freqs >= 200.0) & (freqs < 3500.0)
    centroid = float((power[voiced] * freqs[voiced]).sum() / (power[voiced].sum() + _EPS))
    rounding = float(np.clip((900.0 - centroid) / 400.0, 0.0, 1.0)) * voicing
    spread = float(np.clip((centroid - 1200.0) / 1000.0, 0.0, 1.0)) * voicing + 0.5 * (1.0 - voicing)
    jaw_scale = FRICATIVE_JAW + (OPEN_MIN + (1.0 - OPEN_MIN) * openness - FRICATIVE_JAW) * voicing
    gesture = min(1.0, 2.0 * level)  # lip gestures stay visible in quiet speech, as in MouthTrack
    neutral = MouthShape.CLOSED.lip_width
    return MouthShape(
        jaw_open=float(np.clip(FULL_OPEN * level * jaw_scale, 0.0, 1.0)),
        lip_width=float(np.clip(neutral + gesture * (0.3 * spread - 0.22 * rounding), 0.0, 1.0)),
        rounding=float(np.clip(gesture * rounding, 0.0, 1.0)),
    )
