"""Typed events of a lipstream stream: one frozen dataclass per ConverseResponse kind.

All times are on the session's media clock: sample 0 is the first sample of the session, frame i is shown
at i / fps. `event_from_proto` is the only place that reads ConverseResponse fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import numpy as np
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1.enums import AudioFormat, LipSyncEngine, UtteranceKind, from_proto

__all__ = [
    "AudioChunk",
    "BlendshapeFrame",
    "Event",
    "SessionStarted",
    "SessionStats",
    "UtteranceEvent",
    "UtteranceKind",
    "VideoFrame",
    "VisemeEvent",
    "WarningEvent",
    "WordEvent",
    "VISEMES",
    "decode_audio",
    "event_from_proto",
]

# Index == VisemeEvent.Viseme id (the Oculus/ARKit-style 15 visemes).
VISEMES: tuple[str, ...] = tuple(pb.VisemeEvent.Viseme.Name(i) for i in range(15))

E = TypeVar("E", bound=StrEnum)
STREAMED_FORMATS = frozenset({AudioFormat.OGG_OPUS})
"""Formats whose chunks are pieces of one stream: a chunk alone does not decode (AudioChunk.samples is
empty); concatenate the chunks' data and decode that (e.g. with PyAV)."""


@dataclass(frozen=True)
class SessionStarted:
    """First event of every stream: the resolved configuration."""

    session_id: str
    sample_rate: int          # of the AudioChunks
    fps: float                # of the VideoFrames; 0 when video is off
    frame_width: int
    frame_height: int
    engine: str               # lip-sync engine actually used: "wav2lip" | "viseme" ("" without video)
    voice: str
    speaker: str
    avatar: str               # "" when video is off
    audio_format: str         # "wav_pcm16" | "wav_float32" | "pcm16" | "ogg_opus"
    config: pb.SessionConfig = field(repr=False, compare=False)  # the full resolved proto
    blendshape_names: tuple[str, ...] = ()  # of BlendshapeFrame.weights (ARKit); () unless blendshapes=True


@dataclass(frozen=True)
class AudioChunk:
    """A piece of speech. `data` is the raw bytes as sent (a whole WAV file for the WAV formats, Ogg pages
    of one stream for ogg_opus)."""

    data: bytes = field(repr=False)
    samples: np.ndarray = field(repr=False, compare=False)  # float32 mono in [-1, 1] decoded from data
    # (empty for ogg_opus, whose chunks decode only together)
    start_sample: int
    num_samples: int
    sample_rate: int
    utterance_id: int

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.num_samples

    @property
    def start_time(self) -> float:
        """Presentation time in seconds on the media clock."""
        return self.start_sample / self.sample_rate

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass(frozen=True)
class VideoFrame:
    """One JPEG frame of the avatar, shown at `pts` seconds."""

    jpeg: bytes = field(repr=False)
    frame_index: int
    pts: float
    width: int
    height: int
    utterance_id: int         # 0 for idle frames
    speaking: bool
    # frame_mode "face_patch": `jpeg` is drawn at (patch_x, patch_y) over the picture so far; a repeat has no
    # jpeg and repeat_of the frame it repeats (FrameCompositor does both)
    patch_x: int = 0
    patch_y: int = 0
    repeat_of: int | None = None


@dataclass(frozen=True)
class VisemeEvent:
    """A mouth shape over [start_sample, end_sample), for game engines that animate their own face."""

    viseme_id: int
    viseme: str               # VISEMES[viseme_id], e.g. "aa"
    phoneme: str
    start_sample: int
    end_sample: int
    utterance_id: int


@dataclass(frozen=True)
class UtteranceEvent:
    """An utterance (a clause of the text) started, finished or was interrupted at end_sample."""

    kind: UtteranceKind       # a StrEnum: == "started" | "finished" | "interrupted"
    utterance_id: int
    text: str
    start_sample: int
    end_sample: int
    spoken_text: str = ""
    """On "interrupted": the text up to the last word whose audio was sent (what a listener heard); put
    this, not `text`, into an agent's history. "" otherwise."""


@dataclass(frozen=True)
class WordEvent:
    """A word of an utterance spoken over [start_sample, end_sample) (sent with words=True)."""

    word: str
    start_sample: int
    end_sample: int
    utterance_id: int


@dataclass(frozen=True)
class BlendshapeFrame:
    """ARKit blendshape weights (0..1) at frame `frame_index` (pts seconds), in the order of
    SessionStarted.blendshape_names (sent with blendshapes=True)."""

    frame_index: int
    pts: float
    weights: tuple[float, ...] = field(repr=False)


@dataclass(frozen=True)
class WarningEvent:
    """Something the server did not do as asked, the session going on; code "unreadable_script": text in a
    script the voice cannot read was skipped (the message names it and the voices that read it)."""

    code: str
    message: str
    utterance_id: int  # the utterance the rest of the text became; 0 when none


@dataclass(frozen=True)
class SessionStats:
    """Last event of a stream that ended normally."""

    time_to_first_audio_s: float
    time_to_first_frame_s: float
    audio_seconds: float
    frames: int
    wall_seconds: float
    tts_real_time_factor: float
    lipsync_real_time_factor: float
    utterances: int
    interrupted: int


Event = (SessionStarted | AudioChunk | VideoFrame | VisemeEvent | UtteranceEvent | SessionStats | WordEvent
         | BlendshapeFrame | WarningEvent)

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def _member(kind: type[E], number: int) -> E | None:
    """The member of a proto enum value; None when unspecified or newer than this client."""
    try:
        return from_proto(kind, number)
    except ValueError:
        return None


def _samples(data: bytes, audio_format: str) -> np.ndarray:
    if audio_format in STREAMED_FORMATS:
        return np.zeros(0, np.float32)
    return decode_audio(data, audio_format)


def decode_audio(data: bytes, audio_format: str = "wav_pcm16") -> np.ndarray:
    """Float32 mono samples of one AudioChunk's data: a RIFF/WAVE file (PCM16 or float32) or raw PCM16."""
    if audio_format in STREAMED_FORMATS:
        raise ValueError(
            f"{audio_format} chunks do not decode one by one: concatenate the chunks' data and decode that "
            "(e.g. with PyAV: av.open(io.BytesIO(data)))"
        )
    if audio_format == "pcm16" or not data.startswith(b"RIFF"):
        if audio_format != "pcm16":
            raise ValueError(f"{audio_format!r} audio chunk does not start with RIFF: {data[:12]!r}")
        return (np.frombuffer(data, dtype="<i2").astype(np.float32)) / 32768.0
    if data[8:12] != b"WAVE":
        raise ValueError(f"audio chunk is RIFF but not WAVE: {data[:12]!r}")
    pos, fmt_tag, bits = 12, 0, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt_tag, channels = struct.unpack_from("<HH", data, body)
            bits = struct.unpack_from("<H", data, body + 14)[0]
            if fmt_tag == _WAVE_FORMAT_EXTENSIBLE:
                fmt_tag = struct.unpack_from("<H", data, body + 24)[0]
            if channels != 1:
                raise ValueError(f"audio chunk has {channels} channels; lipstream sends mono")
        elif chunk_id == b"data":
            # A streamed WAV may carry 0xFFFFFFFF as its data size: take what is there.
            payload = data[body : min(len(data), body + size)]
            if fmt_tag == _WAVE_FORMAT_PCM and bits == 16:
                pcm = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2")
                return pcm.astype(np.float32) / 32768.0
            if fmt_tag == _WAVE_FORMAT_IEEE_FLOAT and bits == 32:
                return np.frombuffer(payload[: len(payload) // 4 * 4], dtype="<f4").astype(np.float32)
            raise ValueError(f"unsupported WAV sample format tag={fmt_tag} bits={bits}")
        pos = body + size + (size & 1)
    raise ValueError("WAV audio chunk has no data chunk")


def event_from_proto(response: pb.ConverseResponse, audio_format: str = "wav_pcm16") -> Event:
    """The typed event for one ConverseResponse; `audio_format` is the session's (from SessionStarted)."""
    kind = response.WhichOneof("response")
    if kind == "audio":
        a = response.audio
        return AudioChunk(
            data=a.data,
            samples=_samples(a.data, audio_format),
            start_sample=a.start_sample,
            num_samples=a.num_samples,
            sample_rate=a.sample_rate,
            utterance_id=a.utterance_id,
        )
    if kind == "frame":
        f = response.frame
        return VideoFrame(
            jpeg=f.jpeg, frame_index=f.frame_index, pts=f.pts, width=f.width, height=f.height,
            utterance_id=f.utterance_id, speaking=f.speaking, patch_x=f.patch_x, patch_y=f.patch_y,
            repeat_of=f.repeat_of if f.HasField("repeat_of") else None,
        )
    if kind == "viseme":
        v = response.viseme
        return VisemeEvent(
            viseme_id=int(v.viseme_id),
            viseme=VISEMES[v.viseme_id] if 0 <= v.viseme_id < len(VISEMES) else str(v.viseme_id),
            phoneme=v.phoneme, start_sample=v.start_sample, end_sample=v.end_sample,
            utterance_id=v.utterance_id,
        )
    if kind == "utterance":
        u = response.utterance
        utterance_kind = _member(UtteranceKind, u.kind)
        if utterance_kind is None:
            raise ValueError(f"UtteranceEvent of unknown kind {u.kind}: upgrade lipstream")
        return UtteranceEvent(
            kind=utterance_kind,
            utterance_id=u.utterance_id, text=u.text, start_sample=u.start_sample, end_sample=u.end_sample,
            spoken_text=u.spoken_text,
        )
    if kind == "word":
        w = response.word
        return WordEvent(
            word=w.word, start_sample=w.start_sample, end_sample=w.end_sample, utterance_id=w.utterance_id
        )
    if kind == "blendshapes":
        b = response.blendshapes
        return BlendshapeFrame(frame_index=b.frame_index, pts=b.pts, weights=tuple(b.weights))
    if kind == "warning":
        warning = response.warning
        return WarningEvent(code=warning.code, message=warning.message, utterance_id=warning.utterance_id)
    if kind == "started":
        s = response.started
        return SessionStarted(
            session_id=s.session_id, sample_rate=s.sample_rate, fps=s.fps,
            frame_width=s.frame_width, frame_height=s.frame_height,
            engine=str(_member(LipSyncEngine, s.engine) or "") if s.config.video.enabled else "",
            voice=s.config.voice, speaker=s.config.speaker,
            avatar=s.config.video.avatar if s.config.video.enabled else "",
            audio_format=str(_member(AudioFormat, s.config.audio_format) or AudioFormat.WAV_PCM16),
            config=s.config, blendshape_names=tuple(s.blendshape_names),
        )
    if kind == "stats":
        t = response.stats
        return SessionStats(
            time_to_first_audio_s=t.time_to_first_audio_s, time_to_first_frame_s=t.time_to_first_frame_s,
            audio_seconds=t.audio_seconds, frames=t.frames, wall_seconds=t.wall_seconds,
            tts_real_time_factor=t.tts_real_time_factor, lipsync_real_time_factor=t.lipsync_real_time_factor,
            utterances=t.utterances, interrupted=t.interrupted,
        )
    raise ValueError(f"ConverseResponse with no known event set (oneof is {kind!r}): upgrade lipstream")
