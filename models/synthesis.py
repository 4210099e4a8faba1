"""What a request asks of a voice, the voice's own values, and what its phoneme timings provide. Torch-free,
so that the server can name them without loading the models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["PhonemeSpanLike", "SynthesisDefaults", "SynthesisOptions"]


class PhonemeSpanLike(Protocol):
    """What a phoneme timing provides (``lipstream.models.vits.PhonemeSpan``, a test's fake): the word timer
    and the viseme mapping read these."""

    @property
    def phoneme(self) -> str: ...
    @property
    def start_sample(self) -> int: ...
    @property
    def end_sample(self) -> int: ...


@dataclass(frozen=True)
class SynthesisDefaults:
    """The voice's own scales, used where a request passes None (and a request's scales, resolved)."""

    length_scale: float = 1.0
    """Speech speed: > 1 slower, < 1 faster."""
    noise_scale: float = 0.667
    """The voice's variation; 0 makes it deterministic."""
    noise_scale_w: float = 0.8
    """The durations' variation; 0 makes them deterministic."""


@dataclass(frozen=True)
class SynthesisOptions:
    """One request's choices; None means the voice's own value."""

    speaker: str | None = None
    """A name of `Voice.speakers`; None or "" = the first."""
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_scale_w: float | None = None
