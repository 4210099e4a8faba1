"""Settings of the engine and of one session, validated, plus the exceptions the servicer maps to statuses."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal, TypeVar

from lipstream.server.encoders import unavailable_reason
from lipstream.v1.enums import AudioFormat, FrameMode, LipSyncEngine, Pacing, names

__all__ = [
    "AudioFormat",
    "DeadlineExceeded",
    "EngineSettings",
    "InvalidArgument",
    "LipSyncEngine",
    "Pacing",
    "ResourceExhausted",
    "SessionOptions",
    "Unavailable",
]

E = TypeVar("E", bound=StrEnum)


class InvalidArgument(ValueError):
    """The client sent something the server cannot use; the message names the value and the fix."""


class ResourceExhausted(RuntimeError):
    """A limit of the server is reached (open sessions); retry later or raise the limit."""


class Unavailable(RuntimeError):
    """The server is shutting down and takes no new work."""


class DeadlineExceeded(RuntimeError):
    """A time limit of the server passed (no config, no input); the message names the limit and its flag."""


ECHO_CHARS = 64
"""How much of a client's string a status message repeats: the status must fit gRPC's trailer (8 KB)."""


def shown(value: str, limit: int = ECHO_CHARS) -> str:
    """A client's string quoted for a message, cut to its first `limit` characters."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"… ({len(value)} characters)"


def listed(names: list[str] | tuple[str, ...], limit: int = 12) -> str:
    """Names for a "use one of ..." hint, the first `limit` of them when there are more."""
    if len(names) <= limit:
        return str(list(names))
    return f"{list(names[:limit])} and {len(names) - limit} more (ListVoices / ListAvatars lists them all)"


@dataclass(frozen=True)
class SessionOptions:
    """Domain form of the proto SessionConfig; "" and None mean the server's or the voice's own value."""

    voice: str = ""
    speaker: str = ""
    length_scale: float | None = None
    """Speech speed: > 1 slower, < 1 faster; (0.1, 10]."""
    noise_scale: float | None = None
    """[0, 2]; 0 makes the voice deterministic."""
    noise_scale_w: float | None = None
    """[0, 2]; 0 makes the durations deterministic."""
    audio_format: AudioFormat = AudioFormat.WAV_PCM16
    sample_rate: int = 0
    """Of the audio sent: 0 = the voice's own rate, otherwise 8000..48000 (resampled)."""
    video: bool = False
    avatar: str = ""
    fps: float = 25.0
    jpeg_quality: int = 80
    frame_mode: FrameMode = FrameMode.FULL_FRAME
    """FULL_FRAME: every frame whole; FACE_PATCH: the regions that changed and repeats (the proto's)."""
    engine: LipSyncEngine | Literal[""] = LipSyncEngine.AUTO
    """Resolved by the engine: the one used, or "" when video is off."""
    visemes: bool = False
    words: bool = False
    """Send WordOut events (each word's samples)."""
    blendshapes: bool = False
    """Send BlendshapeOut frames (ARKit weights) at `fps`, video on or off."""
    pacing: Pacing = Pacing.AS_FAST_AS_POSSIBLE
    input_sample_rate: int = 0
    """0: text in (the voice speaks). Otherwise an audio-in session: the client's PCM16 at this rate,
    8000..48000; `sample_rate` 0 then means this rate."""

    def validated(self) -> SessionOptions:
        """These options with the enum fields as their StrEnums (a plain str is taken by value) when every
        value is in range, else raises InvalidArgument naming the value."""
        _check_range("length_scale", self.length_scale, 0.1, 10.0, low_open=True)
        _check_range("noise_scale", self.noise_scale, 0.0, 2.0)
        _check_range("noise_scale_w", self.noise_scale_w, 0.0, 2.0)
        audio_format = _member(AudioFormat, self.audio_format, "audio_format")
        if (reason := unavailable_reason(audio_format)) is not None:
            raise InvalidArgument(reason)
        if self.sample_rate != 0 and not 8000 <= self.sample_rate <= 48000:
            raise InvalidArgument(
                f"sample_rate {self.sample_rate} is out of range: use 0 (the voice's own) or 8000..48000"
            )
        if self.input_sample_rate != 0 and not 8000 <= self.input_sample_rate <= 48000:
            raise InvalidArgument(
                f"input_audio.sample_rate {self.input_sample_rate} is out of range: use 8000..48000 (the "
                "rate of the PCM16 the client sends)"
            )
        if not math.isfinite(self.fps) or not 1.0 <= self.fps <= 60.0:
            raise InvalidArgument(f"fps {self.fps} is out of range: use 1..60 (0 means 25)")
        if not 1 <= self.jpeg_quality <= 100:
            raise InvalidArgument(
                f"jpeg_quality {self.jpeg_quality} is out of range: use 1..100 (0 means 80)"
            )
        engine = _member(LipSyncEngine, self.engine, "lip-sync engine")
        pacing = _member(Pacing, self.pacing, "pacing")
        frame_mode = _member(FrameMode, self.frame_mode, "frame_mode")
        return replace(self, audio_format=audio_format, engine=engine, pacing=pacing, frame_mode=frame_mode)


def _member(kind: type[E], value: str, what: str) -> E:
    """The member whose value is `value` (the word the page and the servicer use)."""
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgument(f"{what} {value!r} is unknown: use one of {tuple(names(kind))}") from None


def _check_range(name: str, value: float | None, low: float, high: float, *, low_open: bool = False) -> None:
    if value is None:
        return
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or value > high:
        bracket = "(" if low_open else "["
        raise InvalidArgument(
            f"{name} {value} is out of range: use {bracket}{low}, {high}] or leave it unset"
        )


VOICE_PRECISIONS = ("fp32", "bf16")
"""The voices' decoder: fp32 (exact), or bf16 on a CPU that multiplies bf16 natively (fewer core-ms)."""


@dataclass(frozen=True)
class EngineSettings:
    """Process-wide settings of `lipstream serve`; every limit has a safe default."""

    voice: str = ""
    """Default voice: a name load_voice knows or a path; "" = lipstream.models.vits.DEFAULT_VOICE."""
    extra_voices: tuple[str, ...] = ()
    extra_avatars: tuple[str, ...] = ()
    """More avatars (image or video paths) to load beside the default one; clients pick them by name."""
    avatar: str = ""
    """Default avatar: a built-in name or an image/video path; "" = lipstream.models.avatar.DEFAULT_AVATAR."""
    wav2lip_checkpoint: str = ""
    device: str = ""
    """"" = CUDA when present, else CPU."""
    voice_precision: str = "fp32"
    """The voices' decoder: one of VOICE_PRECISIONS (lipstream.models.vits.bf16)."""
    max_sessions: int = 16
    max_text_chars: int = 10_000
    """Bound on one text input and on the text pending in a session."""
    ring_seconds: float = 8.0
    """Capacity of a session's audio ring; the TTS stage blocks when readers are this far behind."""
    first_clause_words: int = 4
    """A reply's first clause is cut early (fast first audio), at a natural break: punctuation within
    first_clause_max_words words, else before a phrase opener once it has this many words (segmenter.py)."""
    first_clause_max_words: int = 10
    first_clause_wait_s: float = 0.3
    """A first clause with first_clause_words words waits this long for more text, then is cut at its last
    word (an LLM that stalls mid-sentence still gets its first audio); 0 = wait for the break."""
    max_clause_chars: int = 160
    idle_life: bool = True
    """Video frames blink and breathe (lipstream.models.avatar.life), idle or speaking; False: the avatar's
    frames as they are (the mouth alone moves)."""
    audio_chunk_ms: int = 100
    """Longest audio chunk sent; shorter ones go out as soon as the TTS produces them."""
    max_batch_frames: int = 32
    """Most Wav2Lip frames (across sessions) in one model call."""
    shutdown_grace_s: float = 5.0
    config_timeout_s: float = 10.0
    """A Converse stream that sends no SessionConfig within this is closed (DEADLINE_EXCEEDED)."""
    idle_timeout_s: float = 300.0
    """A session with no client input and nothing spoken for this long ends with its stats; 0 = never.
    REALTIME's idle frames are not activity."""
    replica_id: str = ""
    """ServerInfo.replica, so a client behind a proxy can tell the replicas apart; "" = hostname:port."""

    def validated(self) -> EngineSettings:
        if self.max_sessions < 1:
            raise InvalidArgument(f"max_sessions {self.max_sessions} must be at least 1")
        if self.voice_precision not in VOICE_PRECISIONS:
            raise InvalidArgument(
                f"voice_precision {self.voice_precision!r} is not one of {', '.join(VOICE_PRECISIONS)}"
            )
        if self.max_text_chars < 1:
            raise InvalidArgument(f"max_text_chars {self.max_text_chars} must be at least 1")
        if self.ring_seconds < 1.0:
            raise InvalidArgument(f"ring_seconds {self.ring_seconds} must be at least 1")
        if self.audio_chunk_ms < 10:
            raise InvalidArgument(f"audio_chunk_ms {self.audio_chunk_ms} must be at least 10")
        if not (math.isfinite(self.config_timeout_s) and self.config_timeout_s > 0):
            raise InvalidArgument(f"config_timeout_s {self.config_timeout_s} must be above 0")
        if not (math.isfinite(self.idle_timeout_s) and self.idle_timeout_s >= 0):
            raise InvalidArgument(f"idle_timeout_s {self.idle_timeout_s} must be 0 (never) or more")
        return self
