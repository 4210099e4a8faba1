"""The kiosk WebSocket protocol: one WebSocket carries one session, the same one `Converse` carries.

Page -> server: JSON text messages, each an object with a "type".

- ``{"type": "config", ...}`` first and once. The other keys are the fields of the session's options, by the
  names of the proto ``SessionConfig`` flattened: ``voice``, ``speaker``, ``length_scale``, ``noise_scale``,
  ``noise_scale_w``, ``audio_format`` (``"wav_pcm16"`` | ``"wav_float32"`` | ``"pcm16"``), ``sample_rate``,
  ``video`` (bool), ``avatar``, ``fps``, ``jpeg_quality``, ``frame_mode`` (``"full_frame"`` |
  ``"face_patch"``: the page's), ``engine`` (``"auto"`` | ``"wav2lip"`` |
  ``"viseme"``), ``visemes`` (bool), ``words`` (bool), ``blendshapes`` (bool), ``pacing`` (``"fast"`` |
  ``"realtime"``). Every key is optional;
  a missing one takes the server's default.
- ``{"type": "text", "text": "Hello there.", "flush": false}``: any size chunk of the reply.
- ``{"type": "interrupt"}``: stop the current utterance now and drop the text not yet spoken.
- ``{"type": "end"}``: no more text: the server speaks the rest, sends ``stats`` and closes (code 1000).

Server -> page:

- Binary messages carry the media: ``[uint32 little-endian n][n bytes of UTF-8 JSON header][payload]``.
  ``{"type": "audio", "start_sample", "num_samples", "sample_rate", "utterance_id"}`` + the chunk in the
  session's audio format (a complete WAV file by default: ``decodeAudioData`` takes it as it is);
  ``{"type": "frame", "frame_index", "pts", "width", "height", "utterance_id", "speaking"}`` + a JPEG;
  with ``frame_mode`` ``"face_patch"`` a patch has ``patch_x``, ``patch_y`` too (where its JPEG is drawn
  over the picture so far) and a repeat ``repeat_of`` and no JPEG (nothing changed since that frame).
- JSON text messages carry the events: ``started`` (``session_id``, ``options``, ``sample_rate``, ``fps``,
  ``frame_width``, ``frame_height``, ``engine``, ``blendshape_names``), ``utterance`` (``kind`` =
  ``"started"`` | ``"finished"`` | ``"interrupted"``, ``utterance_id``, ``text``, ``start_sample``,
  ``end_sample``, ``spoken_text``: on ``"interrupted"`` the text up to the last word heard), ``viseme``
  (``viseme_id``, ``phoneme``, ``start_sample``, ``end_sample``, ``utterance_id``), ``word`` (``word``,
  ``start_sample``, ``end_sample``, ``utterance_id``; with ``words``), ``blendshapes`` (``frame_index``,
  ``pts``, ``weights`` in the order of ``blendshape_names``, ``utterance_id``; with ``blendshapes``),
  ``warning`` (``code``, ``message``, ``utterance_id``: ``"unreadable_script"``, text skipped, or
  ``"text_refused"``, a text over --max-text-chars or with too much still waiting: send it again later or
  in parts; the session goes on),
  ``stats`` (the
  ``SessionStats`` fields) and ``error`` (``code`` = ``"invalid_argument"`` | ``"unauthenticated"`` |
  ``"resource_exhausted"`` | ``"unavailable"`` | ``"internal"``, ``message``; the server closes the socket
  after it).

Refusals: a message that breaks the protocol (not JSON, not a flat object, a wrong type, NaN or a number
out of a double's range, over ``MAX_MESSAGE_CHARS``, binary from the page, a second config, anything after
``end``) gets ``error`` ``invalid_argument`` and close 1008 (policy violation); so does a missing or wrong
token (``unauthenticated``). Two refusals come from the WebSocket layer itself, with no ``error`` message
before them: a frame over 1 MiB closes 1009 (message too big), a text frame that is not UTF-8 closes 1007.

Timestamps are on the session's media clock, the one the gRPC stream uses (lipstream/v1/lipstream.proto;
sample 0 is the session's first sample): play audio at ``start_sample / sample_rate`` and show frame i at
``pts`` and they are in sync.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Iterable
from typing import Any

from lipstream.server.events import (
    AudioEvent,
    BlendshapeOut,
    FrameEvent,
    SessionEvent,
    SessionStartedEvent,
    StatsEvent,
    UtteranceOut,
    VisemeOut,
    WarningOut,
    WordOut,
)
from lipstream.server.options import InvalidArgument, SessionOptions

__all__ = [
    "MAX_MESSAGE_CHARS",
    "ClientMessage",
    "ConfigMessage",
    "EndMessage",
    "InterruptMessage",
    "TextMessage",
    "encode_error",
    "encode_event",
    "encode_warning",
    "parse_binary_message",
    "parse_client_message",
]

_HEADER_LENGTH = struct.Struct("<I")

MAX_MESSAGE_CHARS = 256 * 1024
"""Bound on one JSON message from the page, checked before parsing. A text chunk at the engine's default
bound (10,000 characters) is at most 120 KB of JSON even with every character escaped."""
_MAX_INT_DIGITS = 15
_MAX_FLOAT_CHARS = 40
_ECHO_CHARS = 40

# The JSON type of each config key (the fields of SessionOptions); a test checks the two lists agree.
_NUMBER = (int, float)
_WANTED: dict[tuple[type, ...], str] = {(bool,): "true or false", (int,): "an integer", (str,): "a string"}
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
    "frame_mode": (str,),
    "engine": (str,),
    "visemes": (bool,),
    "words": (bool,),
    "blendshapes": (bool,),
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
    """One JSON text message from the page; raises InvalidArgument naming what is wrong and how to fix it.

    Nothing in `raw` can make this raise anything else: the size is bounded before parsing, numbers are
    checked as they are read (no 4,300-digit integers, no NaN or Infinity, no overflow to inf), nesting
    deeper than the parser's recursion limit is refused, and every field's type is checked.
    """
    if len(raw) > MAX_MESSAGE_CHARS:
        raise InvalidArgument(
            f"a message of {len(raw)} characters is over the bound of {MAX_MESSAGE_CHARS}: "
            "send long text in several 'text' messages"
        )
    message = _loads(raw)
    if not isinstance(message, dict):
        raise InvalidArgument(f"message {_show(message)} is not a JSON object: send {{\"type\": ..., ...}}")
    _check_strings(message)
    kind = message.pop("type", None)
    if kind == "config":
        return ConfigMessage(options_from_json(message))
    if kind == "text":
        return _text_message(message)
    if kind in ("interrupt", "end"):
        if message:
            raise InvalidArgument(f"a {kind!r} message takes no other keys; got {_keys(message)}")
        return InterruptMessage() if kind == "interrupt" else EndMessage()
    raise InvalidArgument(
        f"message type {_show(kind)} is unknown: use one of 'config', 'text', 'interrupt', 'end'"
    )


def options_from_json(config: dict[str, Any]) -> SessionOptions:
    """The session options of a config message's keys, type-checked and range-checked."""
    unknown = set(config) - set(_OPTION_TYPES)
    if unknown:
        raise InvalidArgument(
            f"config keys {_keys(unknown)} are unknown: use some of {sorted(_OPTION_TYPES)}"
        )
    values: dict[str, Any] = {}
    for name, value in config.items():
        allowed = _OPTION_TYPES[name]
        if value is None and name in _NULLABLE:
            values[name] = None
            continue
        # bool is an int in Python and JSON true must not pass as a number (nor 1 as true).
        if isinstance(value, bool) != (allowed == (bool,)) or not isinstance(value, allowed):
            wanted = _WANTED.get(allowed, "a number")
            raise InvalidArgument(f"config {name} = {_show(value)} has the wrong type: give {wanted}")
        # config[name], not value: the isinstance against a tuple variable left value typed `object`.
        values[name] = float(config[name]) if allowed == _NUMBER else value
    return SessionOptions(**values).validated()


def _text_message(message: dict[str, Any]) -> TextMessage:
    text = message.pop("text", None)
    flush = message.pop("flush", False)
    if message:
        raise InvalidArgument(f"a 'text' message takes 'text' and 'flush'; got also {_keys(message)}")
    if not isinstance(text, str):
        raise InvalidArgument(f"a 'text' message needs 'text' as a string; got {_show(text)}")
    if not isinstance(flush, bool):
        raise InvalidArgument(f"'flush' must be true or false; got {_show(flush)}")
    return TextMessage(text, flush)


def _loads(raw: str) -> Any:
    try:
        return json.loads(
            raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant
        )
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"message {_show(raw)} is not JSON ({error.msg}): send a JSON object") from None
    except RecursionError:
        # The C parser counts its depth against the interpreter's recursion limit and stops cleanly.
        raise InvalidArgument(
            "message nests arrays or objects too deeply: send a flat JSON object such as "
            '{"type": "text", "text": "..."}'
        ) from None


def _parse_int(literal: str) -> int:
    # Checked before int() sees it: int() refuses over 4,300 digits with a ValueError of its own.
    if len(literal.lstrip("-")) > _MAX_INT_DIGITS:
        raise InvalidArgument(
            f"the integer {_show(literal)} has {len(literal.lstrip('-'))} digits: "
            f"integers in messages have at most {_MAX_INT_DIGITS}"
        )
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > _MAX_FLOAT_CHARS:
        raise InvalidArgument(
            f"the number {_show(literal)} is {len(literal)} characters long: "
            f"numbers in messages have at most {_MAX_FLOAT_CHARS}"
        )
    value = float(literal)
    if not math.isfinite(value):
        raise InvalidArgument(f"the number {literal} is too large for a double: give a finite number")
    return value


def _refuse_constant(literal: str) -> Any:
    raise InvalidArgument(f"{literal} is not a number the server takes: give a finite number")


def _check_strings(message: dict[str, Any]) -> None:
    """Refuses unpaired surrogates (JSON's "\\ud800"), which no UTF-8 text, voice or log line can hold."""
    for key, value in message.items():
        for text in (key, value) if isinstance(value, str) else (key,):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                raise InvalidArgument(
                    f"{_show(text)} holds an unpaired UTF-16 surrogate at {error.start}: send valid Unicode"
                ) from None


def _show(value: object) -> str:
    """A short echo of a client's value for an error message: never long, never a nested structure."""
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return repr(value[:_ECHO_CHARS]) + ("..." if len(value) > _ECHO_CHARS else "")
    text = repr(value)
    return text[:_ECHO_CHARS] + ("..." if len(text) > _ECHO_CHARS else "")


def _keys(keys: Iterable[str]) -> str:
    names = sorted(keys)
    shown = ", ".join(_show(name) for name in names[:5])
    return f"[{shown}{', ...' if len(names) > 5 else ''}]"


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
        if event.repeat_of is not None:
            header["repeat_of"] = event.repeat_of
        elif event.patch_x or event.patch_y:
            header.update(patch_x=event.patch_x, patch_y=event.patch_y)
        return _binary_message(header, event.jpeg)
    if isinstance(event, SessionStartedEvent):
        body = dataclasses.asdict(event)
        return json.dumps({"type": "started", **body})
    if isinstance(event, UtteranceOut):
        fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name != "spoken"}
        return json.dumps({"type": "utterance", **fields})
    if isinstance(event, WordOut):
        return json.dumps({"type": "word", **dataclasses.asdict(event)})
    if isinstance(event, BlendshapeOut):
        weights = [round(float(w), 4) for w in event.weights]  # 4 digits: the weights' precision that matters
        return json.dumps({"type": "blendshapes", "frame_index": event.frame_index, "pts": event.pts,
                           "weights": weights, "utterance_id": event.utterance_id})
    if isinstance(event, VisemeOut):
        return json.dumps({"type": "viseme", **dataclasses.asdict(event)})
    if isinstance(event, WarningOut):
        return encode_warning(event.code, event.message, event.utterance_id)
    if isinstance(event, StatsEvent):
        return json.dumps({"type": "stats", **dataclasses.asdict(event)})
    raise TypeError(f"no WebSocket message for session event {type(event).__name__}")


def encode_warning(code: str, message: str, utterance_id: int = 0) -> str:
    return json.dumps({"type": "warning", "code": code, "message": message, "utterance_id": utterance_id})


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
