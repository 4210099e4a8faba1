"""ARKit mouth and jaw blendshape weights from the same co-articulated viseme track as the 2D mouth.

The mapping is a pose per viseme (a row of ARKit weights), blended over time by ``MouthTrack.blend`` with
the very co-articulation weights the 2D renderer uses, then scaled by the loudness of the frame's audio:

- ``jawOpen`` *is* the 2D mouth's ``jaw_open`` (the viseme's jaw target, co-articulated, times loudness),
  so a game character's jaw and the kiosk's mouth open together and follow the audio envelope;
- the lip gestures (smile, stretch, funnel, pucker, lower-down, upper-up, roll, shrug, tongue) are scaled
  by ``min(1, 2 * loudness)`` like the 2D mouth's width and rounding: visible in quiet speech, none in
  silence;
- the closures (``mouthClose``, ``mouthPress``) are not scaled: a /p b m/ is silent by nature, its lips
  still meet. ``mouthClose`` is ARKit's "lips together whatever the jaw does", so with the neighbouring
  vowel's jaw still partly open during co-articulation the lips stay shut.

Why a pose table rather than an audio model: the server already times the 15 visemes it sends as
``VisemeEvent``s, so the blendshapes, the visemes and the 2D mouth come from one track on one clock and
agree by construction; a table needs no weights (Audio2Face-style networks cannot be shipped) and a user
can retune one row without touching the rest. The poses follow the articulation of each viseme class
(the lips' shape and the tongue's visibility), in ARKit's 0..1 range, with both sides of a pair equal.
"""

from __future__ import annotations

import numpy as np

from .mapping import AA, CH, DD, FF, IH, KK, NN, OH, OU, PP, RR, SIL, SS, TH, VISEMES, E
from .track import MouthShape, MouthTrack

SIDED = ("mouthSmile", "mouthFrown", "mouthDimple", "mouthStretch", "mouthPress", "mouthLowerDown",
         "mouthUpperUp")

BLENDSHAPE_NAMES: tuple[str, ...] = (
    "jawOpen", "jawForward", "jawLeft", "jawRight",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    *(f"{base}{side}" for base in SIDED for side in ("Left", "Right")),
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "tongueOut",
)
"""ARKit's jaw, mouth and tongue blendshapes (the 28 of the 52 that speech moves), in the order of
``BlendshapeFrame.weights``; the names are Apple's ``ARFaceAnchor.BlendShapeLocation`` raw values."""

CLOSURES = frozenset({"mouthClose", "mouthPressLeft", "mouthPressRight"})
"""Weights that are not scaled by loudness (see the module doc)."""

# The pose of each viseme. A sided name ("mouthSmile") sets both sides; jawOpen is not listed: it is the
# 2D track's jaw opening (VISEME_SHAPES), so both renderings open the jaw alike.
POSES: dict[int, dict[str, float]] = {
    SIL: {},
    PP: {"mouthClose": 0.75, "mouthPress": 0.45, "mouthRollLower": 0.15, "mouthRollUpper": 0.10},
    FF: {"mouthRollLower": 0.55, "mouthUpperUp": 0.25, "mouthPress": 0.10, "jawForward": 0.05},
    TH: {"tongueOut": 0.40, "mouthLowerDown": 0.15, "mouthStretch": 0.10},
    DD: {"mouthLowerDown": 0.20, "mouthStretch": 0.15, "mouthUpperUp": 0.05},
    KK: {"mouthStretch": 0.20, "mouthLowerDown": 0.15},
    CH: {"mouthFunnel": 0.55, "mouthPucker": 0.20, "mouthUpperUp": 0.30, "mouthLowerDown": 0.30,
         "mouthShrugUpper": 0.20, "jawForward": 0.10},
    SS: {"mouthStretch": 0.45, "mouthSmile": 0.25, "mouthUpperUp": 0.15, "mouthLowerDown": 0.15},
    NN: {"mouthLowerDown": 0.15, "mouthStretch": 0.15},
    RR: {"mouthFunnel": 0.35, "mouthPucker": 0.35, "mouthShrugUpper": 0.15},
    AA: {"mouthLowerDown": 0.45, "mouthUpperUp": 0.20, "mouthStretch": 0.10},
    E: {"mouthStretch": 0.45, "mouthSmile": 0.30, "mouthLowerDown": 0.35, "mouthUpperUp": 0.20},
    IH: {"mouthSmile": 0.50, "mouthStretch": 0.40, "mouthUpperUp": 0.15},
    OH: {"mouthFunnel": 0.65, "mouthPucker": 0.20, "mouthLowerDown": 0.20},
    OU: {"mouthPucker": 0.85, "mouthFunnel": 0.40, "mouthShrugLower": 0.15},
}
assert set(POSES) == set(range(len(VISEMES)))

_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}
_JAW = _INDEX["jawOpen"]


def _pose_table() -> np.ndarray:
    """POSES as a (len(VISEMES), len(BLENDSHAPE_NAMES)) array; names are checked at import."""
    table = np.zeros((len(VISEMES), len(BLENDSHAPE_NAMES)), dtype=np.float64)
    for viseme, pose in POSES.items():
        for name, weight in pose.items():
            sides = [f"{name}Left", f"{name}Right"] if name in SIDED else [name]
            for full in sides:
                if full not in _INDEX or full == "jawOpen":
                    raise AssertionError(f"pose of {VISEMES[viseme]} names {full!r}, not a settable weight")
                table[viseme, _INDEX[full]] = weight
    return table


POSE_TABLE = _pose_table()
_CLOSURE_MASK = np.array([name in CLOSURES for name in BLENDSHAPE_NAMES])


class BlendshapeTrack:
    """The ARKit weights of one utterance at any sample, from its ``MouthTrack``.

    ``weights_at(sample, loudness)`` takes the same arguments as ``MouthTrack.shape_at`` (the loudness of
    the frame's own audio), so a frame's blendshapes and its 2D mouth are the same moment.
    """

    def __init__(self, track: MouthTrack) -> None:
        self.track = track

    def weights_at(self, sample: int, loudness: float) -> np.ndarray:
        """float32 weights in 0..1, one per ``BLENDSHAPE_NAMES``."""
        level = min(1.0, max(0.0, float(loudness)))
        gesture = min(1.0, 2.0 * level)
        weights = self.track.blend(sample, POSE_TABLE)
        weights = np.where(_CLOSURE_MASK, weights, weights * gesture)
        weights[_JAW] = self.track.shape_at(sample, level).jaw_open
        out: np.ndarray = np.clip(weights, 0.0, 1.0).astype(np.float32)
        return out


def weights_from_shape(shape: MouthShape) -> np.ndarray:
    """ARKit weights for a 2D mouth pose alone, for speech without phoneme timings (the audio-driven mouth,
    ``lipstream.models.viseme.audio``): ``jawOpen`` is its jaw opening, spread lips stretch and smile,
    rounded lips pucker and funnel, the lower lip follows the jaw. No closure: nothing times a /p b m/."""
    weights = silent_weights()
    spread = min(1.0, max(0.0, (shape.lip_width - MouthShape.CLOSED.lip_width) / 0.3))
    for name, value in (
        ("jawOpen", shape.jaw_open),
        ("mouthStretchLeft", 0.45 * spread), ("mouthStretchRight", 0.45 * spread),
        ("mouthSmileLeft", 0.3 * spread), ("mouthSmileRight", 0.3 * spread),
        ("mouthPucker", 0.85 * shape.rounding), ("mouthFunnel", 0.5 * shape.rounding),
        ("mouthLowerDownLeft", 0.4 * shape.jaw_open), ("mouthLowerDownRight", 0.4 * shape.jaw_open),
    ):
        weights[_INDEX[name]] = min(1.0, max(0.0, value))
    return weights


def silent_weights() -> np.ndarray:
    """The weights outside speech: every shape at rest."""
    return np.zeros(len(BLENDSHAPE_NAMES), dtype=np.float32)
