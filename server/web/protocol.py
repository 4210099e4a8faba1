"""The kiosk WebSocket protocol: one WebSocket carries one session, the same one `Converse` carries.

Page -> server: JSON text messages, each an object with a "type".

- ``{"type": "config", ...}`` first and once. The other keys are the fields of the session's options, by the
  names of the proto ``SessionConfig`` flattened: ``voice``, ``speaker``, ``length_scale``, ``noise_scale``,
  ``noise_scale_w``, ``audio_format`` (``"wav_pcm16"`` | ``"wav_float32"`` | ``"pcm16"``), ``sample_rate``,
  ``video`` (bool), ``avatar``, ``fps``, ``jpeg_quality``, ``engine`` (``"auto"`` | ``"wav2lip"`` |
  ``"viseme"``), ``visemes`` (bool), ``pacing`` (``"fast"`` | ``"realtime"``). Every key is optional;
  a missing one takes the server's default.
- ``{"type": "text", "text": "Hello there.", "flush": false}``: any size chunk of the reply.
- ``{"type": "interrupt"}``: stop the current utterance now and drop the text not yet spoken.
- ``{"type": "end"}``: no more text: the server speaks the rest, sends ``stats`` and closes (code 1000).

Server -> page:

- Binary messages carry the media: ``[uint32 little-endian n][n bytes of UTF-8 JSON header][payload]``.
  ``{"type": "audio", "start_sample", "num_samples", "sample_rate", "utterance_id"}`` + the chunk in the
  session's audio format (a complete WAV file by default: ``decodeAudioData`` takes it as it is);
  ``{"type": "frame", "frame_index", "pts", "width", "height", "utterance_id", "speaking"}`` + a JPEG.
- JSON text messages carry the events: ``started`` (``session_id``, ``options``, ``sample_rate``, ``fps``,
  ``frame_width``, ``frame_height``, ``engine``), ``utterance`` (``kind`` = ``"started"`` | ``"finished"``
  | ``"interrupted"``, ``utterance_id``, ``text``, ``start_sample``, ``end_sample``), ``viseme``
  (``viseme_id``, ``phoneme``, ``start_sample``, ``end_sample``, ``utterance_id``), ``stats`` (the
  ``SessionStats`` fields) and ``error`` (``code`` = ``"invalid_argument"`` | ``"resource_exhausted"`` |
  ``"unavailable"`` | ``"internal"``, ``message``; the server closes the socket after it).

Timestamps are on the session's media clock (DESIGN.md): play audio at ``start_sample / sample_rate`` and
show frame i at ``pts`` and they are in sync.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from typing import Any

from lipstream.server.events import (
    AudioEvent,
    FrameEvent,
    SessionEvent,
    SessionStartedEvent,
    StatsEvent,
    UtteranceOut,
    VisemeOut,
)
from lipstream.server.options import InvalidArgument, SessionOptions

__all__ = [
    "ClientMessage",
    "ConfigMessage",
    "EndMessage",
    "InterruptMessage",
    "TextMessage",
    "encode_error",
    "encode_event",
    "parse_binary_message",
    "parse_client_message",
]

_HEADER_LENGTH = struct.Struct("<I")

# The JSON type of each config key (the fields of SessionOptions); a test checks the two lists agree.
_NUMBER = (int, float)
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "voice": (str,),
    "speaker": (str,),
    "length_scale": _NUMBER,
    "noise_scale": _NUMBER,
    "noise_scale_w": _NUMBER,
    "audio_format": (str,),
    "sample_rate": (int,),
    "video": (bool,),
    "avatar": (str,),
    "fps": _NUMBER,
    "jpeg_quality": (int,),
    "engine": (str,),
    "visemes": (bool,),
    "pacing": (str,),
}
_NULLABLE = frozenset({"length_scale", "noise_scale", "noise_scale_w"})


@dataclasses.dataclass(frozen=True)
class ConfigMessage:
    options: SessionOptions


@dataclasses.dataclass(frozen=True)
class TextMessage:
    text: str
    flush: bool = False


@dataclasses.dataclass(frozen=True)
class InterruptMessage:
    pass


@dataclasses.dataclass(frozen=True)
class EndMessage:
    pass


ClientMessage = ConfigMessage | TextMessage | InterruptMessage | EndMessage


def parse_client_message(raw: str) -> ClientMessage:
    """One JSON text message from the page; raises InvalidArgument naming what is wrong and how to fix it."""
    try:
        message = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"message {raw[:80]!r} is not JSON ({error.msg}): send a JSON object") from None
    if not isinstance(message, dict):
        raise InvalidArgument(f"message {raw[:80]!r} is not a JSON object: send {{\"type\": ..., ...}}")
    kind = message.pop("type", None)
    if kind == "config":
        return ConfigMessage(options_from_json(message))
    if kind == "text":
        return _text_message(message)
    if kind in ("interrupt", "end"):
        if message:
            raise InvalidArgument(f"a {kind!r} message takes no other keys; got {sorted(message)}")
        return InterruptMessage() if kind == "interrupt" else EndMessage()
    raise InvalidArgument(
        f"message type {kind!r} is unknown: use one of 'config', 'text', 'interrupt', 'end'"
    )


def options_from_json(config: dict[str, Any]) -> SessionOptions:
    """The session options of a config message's keys, type-checked and range-checked."""
    unknown = sorted(set(config) - set(_OPTION_TYPES))
    if unknown:
        raise InvalidArgument(f"config keys {unknown} are unknown: use some of {sorted(_OPTION_TYPES)}")
    values: dict[str, Any] = {}
    for name, value in config.items():
        allowed = _OPTION_TYPES[name]
        if value is None and name in _NULLABLE:
            values[name] = None
            continue
        # bool is an int in Python and JSON true must not pass as a number (nor 1 as true).
        if isinstance(value, bool) != (allowed == (bool,)) or not isinstance(value, allowed):
            wanted = {(bool,): "true or false", (int,): "an integer", (str,): "a string"}.get(
                allowed, "a number"
            )
            raise InvalidArgument(f"config {name} = {value!r} has the wrong type: give {wanted}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"config {name} = {value!r} is not a finite number")
        values[name] = float(value) if allowed == _NUMBER else value
    return SessionOptions(**values).validated()


def _text_message(message: dict[str, Any]) -> TextMessage:
    text = message.pop("text", None)
    flush = message.pop("flush", False)
    if message:
        raise InvalidArgument(f"a 'text' message takes 'text' and 'flush'; got also {sorted(message)}")
    if not isinstance(text, str):
        raise InvalidArgument(f"a 'text' message needs 'text' as a string; got {text!r}")
    if not isinstance(flush, bool):
        raise InvalidArgument(f"'flush' must be true or false; got {flush!r}")
    return TextMessage(text, flush)


def encode_event(event: SessionEvent) -> str | bytes:
    """The WebSocket message of one session event: bytes for audio and frames, JSON text for the rest."""
    if isinstance(event, AudioEvent):
        header = {
            "type": "audio",
            "start_sample": event.start_sample,
            "num_samples": event.num_samples,
            "sample_rate": event.sample_rate,
            "utterance_id": event.utterance_id,
        }
        return _binary_message(header, event.data)
    if isinstance(event, FrameEvent):
        header = {
            "type": "frame",
            "frame_index": event.frame_index,
            "pts": event.pts,
            "width": event.width,
            "height": event.height,
            "utterance_id": event.utterance_id,
            "speaking": event.speaking,
        }
        return _binary_message(header, event.jpeg)
    if isinstance(event, SessionStartedEvent):
        body = dataclasses.asdict(event)
        return json.dumps({"type": "started", **body})
    if isinstance(event, UtteranceOut):
        return json.dumps({"type": "utterance", **dataclasses.asdict(event)})
    if isinstance(event, VisemeOut):
        return json.dumps({"type": "viseme", **dataclasses.asdict(event)})
    if isinstance(event, StatsEvent):
        return json.dumps({"type": "stats", **dataclasses.asdict(event)})
    raise TypeError(f"no WebSocket message for session event {type(event).__name__}")


def encode_error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


def _binary_message(header: dict[str, Any], payload: bytes) -> bytes:
    header_bytes = json.dumps(header).encode()
    return _HEADER_LENGTH.pack(len(header_bytes)) + header_bytes + payload


def parse_binary_message(message: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and payload of a binary server message (the page does the same in JavaScript)."""
    if len(message) < _HEADER_LENGTH.size:
        raise ValueError(f"binary message of {len(message)} bytes is shorter than its 4-byte header length")
    (length,) = _HEADER_LENGTH.unpack_from(message)
    end = _HEADER_LENGTH.size + length
    if end > len(message):
        raise ValueError(f"binary header length {length} runs past the message's {len(message)} bytes")
    return json.loads(message[_HEADER_LENGTH.size : end]), message[end:]
