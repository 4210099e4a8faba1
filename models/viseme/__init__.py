"""Visemes: phoneme timings to mouth shapes, viseme events for game engines, and a 2D mouth renderer."""

from .blendshapes import BLENDSHAPE_NAMES, BlendshapeTrack
from .mapping import (
    CARRY_FORWARD,
    CARRY_OVER,
    VISEMES,
    UnknownPhonemeError,
    VisemeSpan,
    guess_alphabet,
    phoneme_to_viseme,
    visemes_from_phonemes,
)
from .renderer import AvatarMouth, MouthGeometry, MouthRenderer
from .track import VISEME_SHAPES, MouthShape, MouthTrack, loudness

__all__ = [
    "BLENDSHAPE_NAMES",
    "CARRY_FORWARD",
    "CARRY_OVER",
    "VISEMES",
    "VISEME_SHAPES",
    "AvatarMouth",
    "BlendshapeTrack",
    "MouthGeometry",
    "MouthRenderer",
    "MouthShape",
    "MouthTrack",
    "UnknownPhonemeError",
    "VisemeSpan",
    "guess_alphabet",
    "loudness",
    "phoneme_to_viseme",
    "visemes_from_phonemes",
]
