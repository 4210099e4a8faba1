"""Mouth shapes: a target per viseme, blended over time with co-articulation, scaled by loudness."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .mapping import AA, CH, DD, FF, IH, KK, NN, OH, OU, PP, RR, SIL, SS, TH, VISEMES, E, VisemeSpan


@dataclass(frozen=True)
class MouthShape:
    """A mouth pose, every field in 0..1."""

    jaw_open: float
    """0 lips together, 1 the widest opening the renderer draws."""
    lip_width: float
    """0.5 the avatar's own width; above spreads the lips (E, ih), below narrows them."""
    rounding: float
    """0 none, 1 fully rounded and pushed forward (ou)."""

    CLOSED: ClassVar[MouthShape]


MouthShape.CLOSED = MouthShape(0.0, 0.5, 0.0)

# Target pose per viseme (jaw_open, lip_width, rounding). PP and sil are the closed mouth itself.
VISEME_SHAPES: dict[int, MouthShape] = {
    SIL: MouthShape.CLOSED,
    PP: MouthShape.CLOSED,
    FF: MouthShape(0.10, 0.55, 0.00),  # lower lip tucked under the upper teeth
    TH: MouthShape(0.22, 0.55, 0.00),
    DD: MouthShape(0.30, 0.55, 0.00),
    KK: MouthShape(0.38, 0.55, 0.00),
    CH: MouthShape(0.25, 0.42, 0.55),
    SS: MouthShape(0.14, 0.65, 0.00),  # teeth nearly together, lips spread
    NN: MouthShape(0.26, 0.55, 0.00),
    RR: MouthShape(0.28, 0.42, 0.45),
    AA: MouthShape(0.95, 0.58, 0.00),
    E: MouthShape(0.58, 0.72, 0.00),
    IH: MouthShape(0.36, 0.80, 0.00),
    OH: MouthShape(0.68, 0.38, 0.70),
    OU: MouthShape(0.36, 0.28, 0.95),
}
assert len(VISEME_SHAPES) == len(VISEMES)

CLOSING_VISEMES = frozenset({SIL, PP})
"""Visemes during which the lips are shut, whatever surrounds them."""

COARTICULATION_S = 0.035
"""Time constant of the exponential attack and release of a viseme's influence outside its own span."""

DOMINANCE: dict[int, tuple[float, float]] = {SIL: (2.0, 0.030), PP: (6.0, 0.018), FF: (2.0, 0.025)}
"""(strength, time constant in s) of the visemes that pull their neighbours harder than the rest
(1.0, ``COARTICULATION_S``): the bilabial closure and the labiodental contact must be reached, so they
pull hard, but only briefly, so the vowel next to them still reaches its own shape."""

NEIGHBOURS = 3
"""Spans on each side that take part in the blend (beyond that the weights are below e^-3)."""

SILENCE_DB = -50.0
"""RMS level (dBFS) mapped to loudness 0: breath and the voice's noise floor."""
FULL_DB = -18.0
"""RMS level mapped to loudness 1: a vowel of normal speech from these voices."""
LOUDNESS_WINDOW_S = 0.04
"""Audio read for one frame's loudness: this long, centred on the frame's time (one frame at 25 fps)."""


def loudness(samples: np.ndarray) -> float:
    """0..1 from the RMS of float samples in [-1, 1], linear in dB between ``SILENCE_DB`` and ``FULL_DB``."""
    x = np.asarray(samples, dtype=np.float32)
    if x.size == 0:
        return 0.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if rms <= 0.0:
        return 0.0
    db = 20.0 * math.log10(rms)
    return min(1.0, max(0.0, (db - SILENCE_DB) / (FULL_DB - SILENCE_DB)))


class MouthTrack:
    """The mouth shape of one utterance at any sample: its visemes co-articulated, scaled by loudness.

    Each viseme's influence is 1 inside its own span and decays as ``exp(-distance / COARTICULATION_S)``
    outside it (an attack before and a release after), scaled as ``DOMINANCE`` says; the pose is the weighted
    mean of the neighbouring targets. Inside a sil or PP span the mouth is exactly ``MouthShape.CLOSED``;
    their high dominance makes the neighbours close in towards them, so the lips meet without a jump.
    The jaw opening is then scaled by the loudness of the audio at that time, width and rounding by
    ``min(1, 2 * loudness)`` (lip gestures stay visible in quiet speech).
    """

    def __init__(self, visemes: Sequence[VisemeSpan], sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.visemes = list(visemes)
        self.sample_rate = sample_rate
        n = len(self.visemes)
        self._starts = np.array([v.start_sample for v in self.visemes], dtype=np.int64)
        self._ends = np.array([v.end_sample for v in self.visemes], dtype=np.int64)
        self._ids = [v.viseme for v in self.visemes]
        self._id_array = np.array(self._ids, dtype=np.int64).reshape(n)
        default = (1.0, COARTICULATION_S)
        self._dominance = np.array([DOMINANCE.get(i, default)[0] for i in self._ids], dtype=np.float64)
        self._tau = np.array([DOMINANCE.get(i, default)[1] * sample_rate for i in self._ids])  # in samples

    @property
    def start_sample(self) -> int:
        return int(self._starts[0]) if len(self._starts) else 0

    @property
    def end_sample(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def viseme_at(self, sample: int) -> int:
        """The viseme whose span holds ``sample`` (sil outside the utterance)."""
        k = self._index(sample)
        return SIL if k is None else self._ids[k]

    def shape_at(self, sample: int, loudness: float) -> MouthShape:
        """The mouth at ``sample`` (session clock) given the loudness (0..1) of the audio there."""
        k = self._index(sample)
        if k is None or self._ids[k] in CLOSING_VISEMES:
            return MouthShape.CLOSED
        jaw, width, rounding = self.blend(sample, _SHAPE_TABLE)
        level = min(1.0, max(0.0, float(loudness)))
        gesture = min(1.0, 2.0 * level)
        neutral = MouthShape.CLOSED.lip_width
        return MouthShape(
            jaw_open=float(jaw * level),
            lip_width=float(neutral + (width - neutral) * gesture),
            rounding=float(rounding * gesture),
        )

    def blend(self, sample: int, table: np.ndarray) -> np.ndarray:
        """The co-articulated mean at ``sample`` of per-viseme target rows: ``table[viseme]`` (shape
        ``(len(VISEMES), k)``), weighted as ``shape_at`` weights the mouth poses. Inside a sil or PP span, or
        outside the utterance, that viseme's own row (sil outside), unblended. Not scaled by loudness.
        """
        k = self._index(sample)
        if k is None:
            return np.asarray(table[SIL], dtype=np.float64)
        if self._ids[k] in CLOSING_VISEMES:
            return np.asarray(table[self._ids[k]], dtype=np.float64)
        lo, hi = max(0, k - NEIGHBOURS), min(len(self._ids), k + NEIGHBOURS + 1)
        # Distance (samples) from `sample` to each neighbouring span; 0 inside it.
        distance = np.maximum(np.maximum(self._starts[lo:hi] - sample, sample - (self._ends[lo:hi] - 1)), 0)
        weights = self._dominance[lo:hi] * np.exp(-distance / self._tau[lo:hi])
        return np.asarray(weights @ table[self._id_array[lo:hi]] / weights.sum(), dtype=np.float64)

    def _index(self, sample: int) -> int | None:
        k = int(np.searchsorted(self._starts, sample, side="right")) - 1
        if k < 0 or sample >= self._ends[k]:
            return None
        return k


def _as_tuple(shape: MouthShape) -> tuple[float, float, float]:
    return shape.jaw_open, shape.lip_width, shape.rounding


_SHAPE_TABLE = np.array([_as_tuple(VISEME_SHAPES[i]) for i in range(len(VISEMES))], dtype=np.float64)
"""``VISEME_SHAPES`` as rows (jaw_open, lip_width, rounding) by viseme id, for ``MouthTrack.blend``."""
