"""What the server needs of the model objects (lipstream.models): the voice, the avatar, the Wav2Lip engine.

The server is typed against these Protocols, not the torch classes, so tests can hand it small fakes and the
models stay free to change inside.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
from lipstream.models.synthesis import PhonemeSpanLike, SynthesisOptions

PhonemeLike = PhonemeSpanLike
"""One phoneme of an utterance, on the utterance's clock (voice-rate samples from its first sample)."""


class SpeechStreamLike(Protocol):
    """One clause being synthesized: its phoneme timings first, then its samples chunk by chunk."""

    @property
    def phonemes(self) -> Sequence[PhonemeLike]: ...
    @property
    def num_samples(self) -> int: ...
    @property
    def sample_rate(self) -> int: ...

    def __iter__(self) -> Iterator[np.ndarray]: ...
    def close(self) -> None: ...


class VoiceLike(Protocol):
    """A loaded voice (lipstream.models.vits.Voice), shared by the sessions that speak with it."""

    @property
    def name(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def speakers(self) -> Sequence[str]: ...
    @property
    def languages(self) -> Sequence[str]: ...

    def synthesize_stream(self, text: str, options: SynthesisOptions | None = None) -> SpeechStreamLike: ...


class BoxLike(Protocol):
    """Where the face is in an avatar frame (lipstream.models.avatar.FaceBox)."""

    x1: int
    y1: int
    x2: int
    y2: int


class IdleLifeLike(Protocol):
    """Blinks and breathing drawn on an avatar's frames (lipstream.models.avatar.life.IdleLife)."""

    def key(self, frame_index: int) -> tuple[int, int]: ...
    def apply(self, picture: np.ndarray, key: tuple[int, int]) -> np.ndarray: ...


class AvatarLike(Protocol):
    """A loaded avatar (lipstream.models.avatar.Avatar): its frames and where the face is in each."""

    @property
    def name(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def num_frames(self) -> int: ...

    def source_index(self, i: int) -> int: ...
    def frame(self, i: int) -> np.ndarray: ...
    def box(self, i: int) -> Any: ...
    def face_crop(self, i: int) -> np.ndarray: ...
    @property
    def mouth(self) -> dict[str, float]: ...


class Wav2LipModel(Protocol):
    """A loaded Wav2Lip (lipstream.models.wav2lip.Wav2LipEngine), shared by every session of the process."""

    @property
    def device(self) -> Any: ...
    @property
    def runtime(self) -> str: ...

    def infer(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray: ...


class MouthLike(Protocol):
    """The viseme renderer of one avatar (lipstream.models.viseme.AvatarMouth), shared by its sessions."""

    @property
    def avatar(self) -> Any: ...

    def render(self, i: int, shape: Any) -> np.ndarray: ...
