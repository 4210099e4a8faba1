"""Request options (keyword names equal the proto SessionConfig fields) and server descriptions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lipstream.v1 import lipstream_pb2 as pb

__all__ = ["AvatarInfo", "ServerInfo", "VideoConfig", "VoiceInfo", "channel_options", "session_config"]

AUDIO_FORMATS = {"wav_pcm16": pb.WAV_PCM16, "wav_float32": pb.WAV_FLOAT32, "pcm16": pb.PCM16}
ENGINES = {"auto": pb.AUTO, "wav2lip": pb.WAV2LIP, "viseme": pb.VISEME}
PACINGS = {
    "as_fast_as_possible": pb.AS_FAST_AS_POSSIBLE, "fast": pb.AS_FAST_AS_POSSIBLE, "realtime": pb.REALTIME
}


@dataclass(frozen=True)
class VideoConfig:
    """Video options (the proto VideoConfig fields); passing one to converse/synthesize turns video on."""

    avatar: str = ""           # "" = the server's default avatar
    fps: float = 0.0           # 0 = the server's default (25)
    jpeg_quality: int = 0      # 0 = the server's default (80); 1..100
    engine: str | int = "auto"  # "auto" | "wav2lip" | "viseme" (or the proto enum value)


SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LipStream"].full_name

# Several replicas: spread new calls over them, and only over those whose grpc.health.v1 status for the
# service is SERVING (a replica that is shutting down says NOT_SERVING first and gets no new sessions). A
# call that reached a replica just before the client saw its NOT_SERVING is refused with UNAVAILABLE
# before any answer; gRPC retries such a call on another replica (never once an answer has arrived).
ROUND_ROBIN_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": SERVICE_NAME},
        "methodConfig": [
            {
                "name": [{"service": SERVICE_NAME}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def channel_options(target: str, options: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """The channel options for `target`: a target listing several replicas ("ipv4:host:port,host:port")
    gets health-checked round-robin unless `options` bring their own "grpc.service_config"."""
    chosen = list(options)
    several = target.startswith(("ipv4:", "ipv6:")) and "," in target
    if several and not any(name == "grpc.service_config" for name, _ in chosen):
        chosen.append(("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG))
    return chosen


def _enum(value: str | int, names: dict[str, int], what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"{what} must be one of {sorted(names)}, got {value!r}")
    if isinstance(value, int):
        if value not in names.values():
            raise ValueError(f"{what} {value} is not a valid enum value; use one of {sorted(names)}")
        return value
    key = value.strip().lower()
    if key not in names:
        raise ValueError(f"unknown {what} {value!r}; use one of {sorted(names)}")
    return names[key]


def session_config(
    *,
    voice: str = "",
    speaker: str = "",
    length_scale: float | None = None,
    noise_scale: float | None = None,
    noise_scale_w: float | None = None,
    audio_format: str | int = "wav_pcm16",
    sample_rate: int = 0,
    video: bool | VideoConfig = False,
    visemes: bool = False,
    pacing: str | int = "as_fast_as_possible",
) -> pb.SessionConfig:
    """The SessionConfig proto for these options. Range checks are the server's (INVALID_ARGUMENT)."""
    config = pb.SessionConfig(
        voice=voice,
        speaker=speaker,
        audio_format=_enum(audio_format, AUDIO_FORMATS, "audio_format"),
        sample_rate=int(sample_rate),
        visemes=bool(visemes),
        pacing=_enum(pacing, PACINGS, "pacing"),
    )
    # Unset optional fields mean "the voice's own value": only set what the caller gave.
    if length_scale is not None:
        config.length_scale = float(length_scale)
    if noise_scale is not None:
        config.noise_scale = float(noise_scale)
    if noise_scale_w is not None:
        config.noise_scale_w = float(noise_scale_w)
    if isinstance(video, VideoConfig):
        config.video.CopyFrom(
            pb.VideoConfig(
                enabled=True, avatar=video.avatar, fps=float(video.fps), jpeg_quality=int(video.jpeg_quality),
                engine=_enum(video.engine, ENGINES, "engine"),
            )
        )
    elif video is True:
        config.video.enabled = True
    elif video is not False:
        raise TypeError(f"video must be True, False or a VideoConfig(...), got {video!r}")
    return config


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    sample_rate: int
    speakers: tuple[str, ...]   # () for a single-speaker voice
    languages: tuple[str, ...]
    format: str                 # "piper" | "vits" | "vits-fast-fine-tuning"
    is_default: bool

    @classmethod
    def from_proto(cls, v: pb.Voice) -> VoiceInfo:
        return cls(v.name, v.sample_rate, tuple(v.speakers), tuple(v.languages), v.format, v.is_default)


@dataclass(frozen=True)
class AvatarInfo:
    name: str
    width: int
    height: int
    num_frames: int             # 1 for a still image
    is_default: bool

    @classmethod
    def from_proto(cls, a: pb.Avatar) -> AvatarInfo:
        return cls(a.name, a.width, a.height, a.num_frames, a.is_default)


@dataclass(frozen=True)
class ServerInfo:
    version: str
    device: str
    engines: tuple[str, ...]    # e.g. ("viseme",) or ("wav2lip", "viseme")
    default_voice: str
    default_avatar: str
    max_sessions: int
    active_sessions: int
    max_text_chars: int
    torch_version: str
    replica: str = ""           # which replica answered (behind a proxy): "hostname:port" or --replica-id

    @classmethod
    def from_proto(cls, s: pb.ServerInfo) -> ServerInfo:
        engines = tuple(pb.LipSyncEngine.Name(e).lower() for e in s.engines)
        return cls(
            s.version, s.device, engines, s.default_voice, s.default_avatar, s.max_sessions,
            s.active_sessions, s.max_text_chars, s.torch_version, s.replica,
        )
