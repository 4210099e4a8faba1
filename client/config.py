"""Request options (keyword names equal the proto SessionConfig fields) and server descriptions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict, TypeVar, Unpack

from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1.enums import AudioFormat, FrameMode, LipSyncEngine, Pacing, names, parse, to_proto

__all__ = [
    "AvatarInfo", "ServerInfo", "SessionKeywords", "VideoConfig", "VoiceInfo", "channel_options",
    "session_config",
]

E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class VideoConfig:
    """Video options (the proto VideoConfig fields); passing one to converse/synthesize turns video on."""

    avatar: str = ""           # "" = the server's default avatar
    fps: float = 0.0           # 0 = the server's default (25)
    jpeg_quality: int = 0      # 0 = the server's default (80); 1..100
    engine: str | int = "auto"  # "auto" | "wav2lip" | "viseme" (or the proto enum value)
    # "" = the server's default, "full_frame": every frame whole; "face_patch": patches and repeats, for a
    # fraction of the bytes (composite them with lipstream.client.FrameCompositor; the MP4 writer does)
    frame_mode: str | int = ""
    # A photo (JPEG or PNG bytes, at most 4 MiB) to speak with instead of `avatar`; the server finds its face
    # (INVALID_ARGUMENT when there is none) and keeps it by content, so sending it again costs no detection.
    avatar_image: bytes = field(default=b"", repr=False)


class SessionKeywords(TypedDict, total=False):
    """The session options of converse() and synthesize(): the proto SessionConfig fields, each optional."""

    voice: str                  # "" = the server's default voice
    speaker: str                # "" = the voice's default speaker
    length_scale: float | None  # None = the voice's own; > 1 slower, < 1 faster
    noise_scale: float | None
    noise_scale_w: float | None
    audio_format: str | int     # "wav_pcm16" (default) | "wav_float32" | "pcm16" | "ogg_opus" (or enum value)
    sample_rate: int            # 0 = the voice's own rate
    video: bool | VideoConfig   # True, or a VideoConfig(...), turns video on
    visemes: bool
    words: bool                 # WordEvents: each word's [start_sample, end_sample)
    blendshapes: bool           # BlendshapeFrames: ARKit weights at the session's fps, video on or off
    pacing: str | int           # "as_fast_as_possible" / "fast" (default) | "realtime"
    channel: str                # converse() only: join this display channel (say_on_channel reaches it)


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


def _member(kind: type[E], value: str | int, what: str) -> E:
    """The enum member a keyword names: its name or value in any case, or the proto enum value."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"{what} must be one of {names(kind)}, got {value!r}")
    try:
        return parse(kind, value)
    except ValueError:
        if isinstance(value, int):
            raise ValueError(f"{what} {value} is not a valid enum value; use one of {names(kind)}") from None
        raise ValueError(f"unknown {what} {value!r}; use one of {names(kind)}") from None


def session_config(**options: Unpack[SessionKeywords]) -> pb.SessionConfig:
    """The SessionConfig proto for these options. Range checks are the server's (INVALID_ARGUMENT)."""
    known = SessionKeywords.__optional_keys__
    if unknown := sorted(options.keys() - known):
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}: session options are {sorted(known)}")
    config = pb.SessionConfig(
        voice=options.get("voice", ""),
        speaker=options.get("speaker", ""),
        audio_format=to_proto(_member(AudioFormat, options.get("audio_format", "wav_pcm16"), "audio_format")),
        sample_rate=int(options.get("sample_rate", 0)),
        visemes=bool(options.get("visemes", False)),
        words=bool(options.get("words", False)),
        blendshapes=bool(options.get("blendshapes", False)),
        pacing=to_proto(_member(Pacing, options.get("pacing", "as_fast_as_possible"), "pacing")),
        channel=options.get("channel", ""),
    )
    # Unset optional fields mean "the voice's own value": only set what the caller gave.
    if (length_scale := options.get("length_scale")) is not None:
        config.length_scale = float(length_scale)
    if (noise_scale := options.get("noise_scale")) is not None:
        config.noise_scale = float(noise_scale)
    if (noise_scale_w := options.get("noise_scale_w")) is not None:
        config.noise_scale_w = float(noise_scale_w)
    video = options.get("video", False)
    if isinstance(video, VideoConfig):
        config.video.CopyFrom(
            pb.VideoConfig(
                enabled=True, avatar=video.avatar, fps=float(video.fps), jpeg_quality=int(video.jpeg_quality),
                avatar_image=bytes(video.avatar_image),
                engine=to_proto(_member(LipSyncEngine, video.engine, "engine")),
                frame_mode=(
                    to_proto(_member(FrameMode, video.frame_mode, "frame_mode"))
                    if video.frame_mode != "" else pb.VideoConfig.FRAME_MODE_UNSPECIFIED
                ),
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
class ChannelSaid:
    """What say_on_channel did."""

    displays: int               # the sessions on the channel that took the text
    warning: str = ""           # what some displays' voices skip (a script they cannot read), "" for none


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
        engines = tuple(str(parse(LipSyncEngine, e)) for e in s.engines)
        return cls(
            s.version, s.device, engines, s.default_voice, s.default_avatar, s.max_sessions,
            s.active_sessions, s.max_text_chars, s.torch_version, s.replica,
        )
