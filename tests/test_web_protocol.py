"""The kiosk WebSocket protocol: parsing the page's messages and encoding the session's events."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from lipstream.server.events import (
    AudioEvent,
    BlendshapeOut,
    FrameEvent,
    SessionStartedEvent,
    StatsEvent,
    UtteranceOut,
    VisemeOut,
    WordOut,
)
from lipstream.server.options import InvalidArgument, SessionOptions
from lipstream.server.web import protocol
from lipstream.server.web.protocol import (
    ConfigMessage,
    EndMessage,
    InterruptMessage,
    TextMessage,
    encode_error,
    encode_event,
    parse_binary_message,
    parse_client_message,
)

# Audio in is gRPC's (ConverseRequest.audio); the page sends text only.
_GRPC_ONLY_OPTIONS = {"input_sample_rate"}


def test_config_keys_are_the_session_options_fields() -> None:
    fields = {f.name for f in dataclasses.fields(SessionOptions)}
    assert set(protocol._OPTION_TYPES) == fields - _GRPC_ONLY_OPTIONS
    assert _GRPC_ONLY_OPTIONS <= fields


def test_config_message_becomes_session_options() -> None:
    message = parse_client_message(
        json.dumps({"type": "config", "voice": "v", "video": True, "fps": 30, "length_scale": 1.2,
                    "noise_scale": None, "pacing": "realtime", "jpeg_quality": 70, "engine": "viseme"})
    )
    assert message == ConfigMessage(
        SessionOptions(voice="v", video=True, fps=30.0, length_scale=1.2, pacing="realtime", jpeg_quality=70,
                       engine="viseme")
    )
    assert isinstance(message, ConfigMessage) and isinstance(message.options.fps, float)


def test_empty_config_takes_the_defaults() -> None:
    assert parse_client_message('{"type": "config"}') == ConfigMessage(SessionOptions())


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"type": "config", "colour": "red"}', "['colour'] are unknown"),
        ('{"type": "config", "video": 1}', "video = 1 has the wrong type: give true or false"),
        ('{"type": "config", "fps": true}', "fps = True has the wrong type: give a number"),
        ('{"type": "config", "sample_rate": 16000.5}', "sample_rate = 16000.5 has the wrong type"),
        ('{"type": "config", "voice": 3}', "voice = 3 has the wrong type: give a string"),
        ('{"type": "config", "fps": 500}', "fps 500.0 is out of range"),
        ('{"type": "config", "pacing": "slow"}', "pacing 'slow' is unknown"),
        ('{"type": "config", "fps": null}', "fps = None has the wrong type"),
        ("not json", "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"type": "shout"}', "message type 'shout' is unknown"),
        ('{"text": "hi"}', "message type None is unknown"),
        ('{"type": "text"}', "needs 'text' as a string; got None"),
        ('{"type": "text", "text": "hi", "flush": "yes"}', "'flush' must be true or false; got 'yes'"),
        ('{"type": "text", "text": "hi", "loud": true}', "got also ['loud']"),
        ('{"type": "interrupt", "now": true}', "takes no other keys; got ['now']"),
    ],
)
def test_bad_messages_say_what_is_wrong(raw: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_client_message(raw)
    assert says in str(error.value)


def test_text_interrupt_end() -> None:
    assert parse_client_message('{"type": "text", "text": "Hi."}') == TextMessage("Hi.", False)
    assert parse_client_message('{"type": "text", "text": "Hi", "flush": true}') == TextMessage("Hi", True)
    assert parse_client_message('{"type": "interrupt"}') == InterruptMessage()
    assert parse_client_message('{"type": "end"}') == EndMessage()


def test_audio_and_frames_are_binary_with_a_json_header() -> None:
    wav = b"RIFF....WAVEfmt data"
    audio = AudioEvent(wav, np.zeros(3, np.float32), start_sample=2205, num_samples=3, sample_rate=22050,
                       utterance_id=4)
    header, payload = parse_binary_message(_as_bytes(encode_event(audio)))
    assert header == {"type": "audio", "start_sample": 2205, "num_samples": 3, "sample_rate": 22050,
                      "utterance_id": 4}
    assert payload == wav
    frame = FrameEvent(b"\xff\xd8jpeg\xff\xd9", frame_index=7, pts=0.28, width=512, height=512,
                       utterance_id=4,
                       speaking=True)
    raw = _as_bytes(encode_event(frame))
    assert int.from_bytes(raw[:4], "little") == len(raw) - 4 - len(frame.jpeg)
    header, payload = parse_binary_message(raw)
    assert header == {"type": "frame", "frame_index": 7, "pts": 0.28, "width": 512, "height": 512,
                      "utterance_id": 4, "speaking": True}
    assert payload == frame.jpeg


def test_events_are_json_text() -> None:
    options = SessionOptions(video=True)
    started = json.loads(_as_text(encode_event(SessionStartedEvent("s-1", options, 22050, 25.0, 512, 512,
                                                                   "viseme"))))
    assert started["type"] == "started" and started["session_id"] == "s-1" and started["sample_rate"] == 22050
    assert started["options"] == dataclasses.asdict(options)
    assert started["frame_width"] == 512 and started["engine"] == "viseme"
    interrupted = UtteranceOut("interrupted", 2, "Hello there", 100, 900, "Hello", spoken=lambda end: "")
    utterance = json.loads(_as_text(encode_event(interrupted)))
    assert utterance == {"type": "utterance", "kind": "interrupted", "utterance_id": 2, "text": "Hello there",
                         "start_sample": 100, "end_sample": 900, "spoken_text": "Hello"}
    word = json.loads(_as_text(encode_event(WordOut("Hello", 100, 400, 2))))
    assert word == {"type": "word", "word": "Hello", "start_sample": 100, "end_sample": 400,
                    "utterance_id": 2}
    weights = np.array([0.5, 0.123456, 0.0], np.float32)
    shapes = json.loads(_as_text(encode_event(BlendshapeOut(3, 0.12, weights, 2))))
    assert shapes == {"type": "blendshapes", "frame_index": 3, "pts": 0.12, "weights": [0.5, 0.1235, 0.0],
                      "utterance_id": 2}
    viseme = json.loads(_as_text(encode_event(VisemeOut(10, "a", 5, 9, 2))))
    assert viseme == {"type": "viseme", "viseme_id": 10, "phoneme": "a", "start_sample": 5, "end_sample": 9,
                      "utterance_id": 2}
    stats = json.loads(_as_text(encode_event(StatsEvent(0.2, 0.3, 1.5, 37, 2.0, 0.1, 0.05, 1, 0))))
    assert stats["type"] == "stats" and stats["frames"] == 37 and stats["time_to_first_audio_s"] == 0.2
    assert json.loads(encode_error("invalid_argument", "voice 'x' is unknown")) == {
        "type": "error", "code": "invalid_argument", "message": "voice 'x' is unknown"}


def test_truncated_binary_messages_are_refused() -> None:
    with pytest.raises(ValueError, match="shorter than its 4-byte header length"):
        parse_binary_message(b"\x01")
    with pytest.raises(ValueError, match="header length 100 runs past"):
        parse_binary_message((100).to_bytes(4, "little") + b"{}")


def _as_bytes(message: str | bytes) -> bytes:
    assert isinstance(message, bytes)
    return message


def _as_text(message: str | bytes) -> str:
    assert isinstance(message, str)
    return message
