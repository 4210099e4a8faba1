"""The contract's enums as `StrEnum`s, and one converter between them and the proto's numbers, by name.

Each member's *name* is the proto value's name and its *value* the word the server, the client and the
JSON page use (`Pacing.AS_FAST_AS_POSSIBLE == "fast"`), so adding a value to the .proto is adding one
line here. Both the server and the client import this module: it needs only the generated code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar, overload

from google.protobuf.descriptor import EnumDescriptor

from lipstream.v1 import lipstream_pb2 as pb

__all__ = [
    "AudioFormat", "FrameMode", "LipSyncEngine", "Pacing", "UtteranceKind", "from_proto", "names", "parse",
    "to_proto",
]


class AudioFormat(StrEnum):
    """SessionConfig.audio_format."""

    WAV_PCM16 = "wav_pcm16"
    WAV_FLOAT32 = "wav_float32"
    PCM16 = "pcm16"
    OGG_OPUS = "ogg_opus"


class FrameMode(StrEnum):
    """VideoConfig.frame_mode."""

    FULL_FRAME = "full_frame"
    FACE_PATCH = "face_patch"


class LipSyncEngine(StrEnum):
    """VideoConfig.engine, SessionStarted.engine, ServerInfo.engines."""

    AUTO = "auto"
    WAV2LIP = "wav2lip"
    VISEME = "viseme"


class Pacing(StrEnum):
    """SessionConfig.pacing."""

    AS_FAST_AS_POSSIBLE = "fast"
    REALTIME = "realtime"


class UtteranceKind(StrEnum):
    """UtteranceEvent.kind."""

    STARTED = "started"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


E = TypeVar("E", bound=StrEnum)

_DESCRIPTORS: dict[type[StrEnum], EnumDescriptor] = {
    AudioFormat: pb.AudioFormat.DESCRIPTOR,
    FrameMode: pb.VideoConfig.FrameMode.DESCRIPTOR,
    LipSyncEngine: pb.LipSyncEngine.DESCRIPTOR,
    Pacing: pb.Pacing.DESCRIPTOR,
    UtteranceKind: pb.UtteranceEvent.Kind.DESCRIPTOR,
}


@overload
def to_proto(member: AudioFormat) -> pb.AudioFormat: ...
@overload
def to_proto(member: FrameMode) -> pb.VideoConfig.FrameMode: ...
@overload
def to_proto(member: LipSyncEngine) -> pb.LipSyncEngine: ...
@overload
def to_proto(member: Pacing) -> pb.Pacing: ...
@overload
def to_proto(member: UtteranceKind) -> pb.UtteranceEvent.Kind: ...
def to_proto(member: StrEnum) -> Any:
    """The proto number of a member (the value of the same name), typed as the generated code's enum."""
    return _DESCRIPTORS[type(member)].values_by_name[member.name].number


def from_proto(kind: type[E], number: int) -> E | None:
    """The member for a proto number; None for 0 (unspecified: the caller's default). Raises ValueError
    for a number this version does not know."""
    if number == 0:
        return None
    value = _DESCRIPTORS[kind].values_by_number.get(number)
    if value is None or value.name not in kind.__members__:
        raise ValueError(f"{number} is not a known {kind.__name__} value: use one of {_numbers(kind)}")
    return kind[value.name]


def parse(kind: type[E], value: str | int) -> E:
    """The member a person or a proto meant: the member's value or name in any case ("fast",
    "as_fast_as_possible", "REALTIME") or its proto number. Raises ValueError naming the choices."""
    if isinstance(value, kind):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        member = from_proto(kind, value)
        if member is None:
            raise ValueError(f"0 is not a {kind.__name__} value: use one of {_numbers(kind)}")
        return member
    if isinstance(value, str):
        key = value.strip().lower()
        for member in kind:
            if key in (member.value, member.name.lower()):
                return member
    raise ValueError(f"{value!r} is not a {kind.__name__}: use one of {names(kind)}")


def names(kind: type[StrEnum]) -> list[str]:
    """The members' values, for "use one of ..." hints."""
    return [member.value for member in kind]


def _numbers(kind: type[StrEnum]) -> dict[int, str]:
    values = _DESCRIPTORS[kind].values_by_name
    return {values[member.name].number: member.name for member in kind}
