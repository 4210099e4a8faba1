"""Typed events a session streams out, in media-time order (the servicer turns them into protos)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from lipstream.server.options import SessionOptions


@dataclass(frozen=True)
class SessionStartedEvent:
    session_id: str
    options: SessionOptions
    """Resolved: defaults filled in."""
    sample_rate: int
    fps: float
    """0 when video is off."""
    frame_width: int
    frame_height: int
    engine: str
    """"wav2lip" or "viseme" (the one actually used); "" when video is off."""
    blendshape_names: tuple[str, ...] = ()
    """Of BlendshapeOut.weights, in order; () unless the session sends blendshapes."""


@dataclass(frozen=True)
class AudioEvent:
    data: bytes
    """In the session's audio format: a complete WAV file, or raw PCM16."""
    samples: np.ndarray = field(repr=False)
    """The same audio, float32 mono at sample_rate (for in-process users such as the web bridge)."""
    start_sample: int
    num_samples: int
    sample_rate: int
    utterance_id: int


@dataclass(frozen=True)
class FrameEvent:
    jpeg: bytes = field(repr=False)
    frame_index: int
    pts: float
    width: int
    height: int
    utterance_id: int
    """0 for frames outside any utterance (idle)."""
    speaking: bool
    patch_x: int = 0
    patch_y: int = 0
    """FACE_PATCH: where `jpeg`, a patch, is drawn over the picture so far (0, 0: a whole frame)."""
    repeat_of: int | None = None
    """FACE_PATCH: no jpeg, nothing changed since this frame (the last that carried a JPEG)."""


@dataclass(frozen=True)
class VisemeOut:
    viseme_id: int
    phoneme: str
    start_sample: int
    end_sample: int
    utterance_id: int


@dataclass(frozen=True)
class UtteranceOut:
    kind: Literal["started", "finished", "interrupted"]
    utterance_id: int
    text: str
    start_sample: int
    end_sample: int
    """For "interrupted": where it stopped on the clock."""
    spoken_text: str = ""
    """For "interrupted": the text up to the last word whose audio was sent (ends by end_sample)."""
    spoken: Callable[[int], str] | None = field(default=None, repr=False, compare=False)
    """On "started": the text heard when the audio sent ends at a given output sample (for the interrupt)."""


@dataclass(frozen=True)
class WordOut:
    word: str
    start_sample: int
    end_sample: int
    utterance_id: int


@dataclass(frozen=True)
class BlendshapeOut:
    frame_index: int
    pts: float
    weights: np.ndarray = field(repr=False)
    """float32, one per SessionStartedEvent.blendshape_names."""
    utterance_id: int
    """0 outside speech; an interrupted utterance's frames are dropped with it."""


@dataclass(frozen=True)
class WarningOut:
    """Something not done as asked, the session going on (code "unreadable_script": text skipped)."""

    code: str
    message: str
    utterance_id: int
    """The utterance the rest of the text became; 0 when none."""


@dataclass(frozen=True)
class StatsEvent:
    time_to_first_audio_s: float
    time_to_first_frame_s: float
    audio_seconds: float
    frames: int
    wall_seconds: float
    tts_real_time_factor: float
    lipsync_real_time_factor: float
    utterances: int
    interrupted: int


SessionEvent = (
    SessionStartedEvent | AudioEvent | FrameEvent | VisemeOut | UtteranceOut | StatsEvent | WordOut
    | BlendshapeOut | WarningOut
)
