"""What a request asks of a voice, and the voice's own values. Torch-free, so that the server can name
them without loading the models."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SynthesisDefaults", "SynthesisOptions"]


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
