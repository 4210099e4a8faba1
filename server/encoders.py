"""Audio encoders, one per session (or per HTTP response), chosen by format name from one registry.

An encoder is stateful: `encode` takes the next float32 mono samples and returns the bytes to send for
them now (a codec may hold some back), `flush` returns the rest at the end of the stream. A session makes
one where its events are sent (server/audio.py AudioEncoding); an HTTP handler may make its own with
`encoder_for`.

A new format (say FLAC) adds:

    1. server/encoders.py                   its encoder (often PyAvEncoder's arguments) and one FORMATS entry
    2. protos/lipstream/v1/enums.py         one AudioFormat member
    3. protos/lipstream/v1/lipstream.proto  one AudioFormat value, saying what a chunk is (then `make proto`)

and, when its chunks decode only together, its name in client/events.py's STREAMED_FORMATS.
"""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from lipstream.v1.enums import AudioFormat

__all__ = [
    "FORMATS",
    "AudioEncoder",
    "EncoderFormat",
    "PyAvEncoder",
    "encoder_for",
    "unavailable_reason",
]

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3


class AudioEncoder(Protocol):
    def encode(self, samples: np.ndarray) -> bytes:
        """The bytes for the next samples (float32 mono in [-1, 1]); may be b"" while a codec buffers."""
        ...

    def flush(self) -> bytes:
        """The bytes still held at the end of the stream; the encoder takes nothing more afterwards."""
        ...


@dataclass(frozen=True)
class EncoderFormat:
    """What a format's bytes are, and how to make its encoder."""

    mime_type: str
    self_contained: bool
    """Each chunk decodes on its own (a whole WAV file, raw PCM); otherwise a client concatenates them."""
    make: Callable[[int], AudioEncoder]
    """The encoder for a stream at this sample rate."""
    codec: str = ""
    """The FFmpeg encoder it needs through PyAV (checked before a session starts); "" = numpy only."""


def pcm16(samples: np.ndarray) -> bytes:
    """Little-endian 16-bit PCM of float samples, clipped to [-1, 1]."""
    data: bytes = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    return data


class Pcm16Encoder:
    """Raw PCM16, no header: every chunk is just samples."""

    def encode(self, samples: np.ndarray) -> bytes:
        return pcm16(samples)

    def flush(self) -> bytes:
        return b""


class WavEncoder:
    """Every chunk a complete RIFF/WAVE file (a browser plays it as `data:audio/wav;base64,...`)."""

    def __init__(self, sample_rate: int, *, float32: bool) -> None:
        self.sample_rate = sample_rate
        self.float32 = float32

    def encode(self, samples: np.ndarray) -> bytes:
        if self.float32:
            payload = np.ascontiguousarray(samples, dtype="<f4").tobytes()
            return _riff_header(len(payload), self.sample_rate, _WAVE_FORMAT_IEEE_FLOAT, 32) + payload
        payload = pcm16(samples)
        return _riff_header(len(payload), self.sample_rate, _WAVE_FORMAT_PCM, 16) + payload

    def flush(self) -> bytes:
        return b""


def _riff_header(data_bytes: int, sample_rate: int, format_tag: int, bits: int) -> bytes:
    block_align = bits // 8  # mono
    fmt = struct.pack("<HHIIHH", format_tag, 1, sample_rate, sample_rate * block_align, block_align, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class _Sink:
    """A write-only file for PyAV's muxer: what it wrote is taken after each call."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class PyAvEncoder:
    """A codec in a container through PyAV (FFmpeg), streamed: each call returns the container's bytes
    completed so far, the first call's starting with the container's headers.

    codec_rate: the rate the codec runs at (default: the input's, or the nearest above that the codec
    takes); the codec context resamples. container_options: the muxer's options (Ogg: a short page
    duration, so pages go out with each chunk instead of once a second).
    """

    def __init__(
        self,
        codec: str,
        container: str,
        sample_rate: int,
        *,
        codec_rate: int | None = None,
        container_options: dict[str, str] | None = None,
    ) -> None:
        import av
        from av.audio.stream import AudioStream

        self._sample_rate = sample_rate
        self._sink = _Sink()
        options = container_options or {}
        self._container = av.open(self._sink, mode="w", format=container, options=options)
        rates = sorted(av.codec.Codec(codec, "w").audio_rates or ())
        if codec_rate is None and rates and sample_rate not in rates:
            # The codec's rate nearest above (Opus: 8, 12, 16, 24, 48 kHz); the codec context resamples.
            codec_rate = next((rate for rate in rates if rate >= sample_rate), rates[-1])
        stream = self._container.add_stream(codec, rate=codec_rate or sample_rate)
        if not isinstance(stream, AudioStream):
            raise ValueError(f"{codec!r} is not an audio codec: use one such as 'libopus'")
        stream.layout = "mono"
        self._stream = stream
        self._frame = av.AudioFrame
        self._container.start_encoding()  # the headers now, so that the first chunk holds them
        self._closed = False

    def encode(self, samples: np.ndarray) -> bytes:
        if len(samples):
            frame = self._frame.from_ndarray(
                np.ascontiguousarray(samples, dtype=np.float32)[None, :], format="flt", layout="mono"
            )
            frame.sample_rate = self._sample_rate
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def flush(self) -> bytes:
        if not self._closed:
            self._closed = True
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._sink.take()


def _pyav(codec: str, container: str, **options: str) -> Callable[[int], AudioEncoder]:
    return lambda rate: PyAvEncoder(codec, container, rate, container_options=options)


class StreamedWavEncoder:
    """One WAV file for a whole stream of unknown length: the header (its sizes 0xFFFFFFFF, as streamed
    WAV has them) with the first samples, then PCM16."""

    def __init__(self, sample_rate: int) -> None:
        header = bytearray(_riff_header(0, sample_rate, _WAVE_FORMAT_PCM, 16))
        struct.pack_into("<I", header, 4, _UNKNOWN_SIZE)  # the RIFF size
        struct.pack_into("<I", header, len(header) - 4, _UNKNOWN_SIZE)  # the data size
        self._header = bytes(header)

    def encode(self, samples: np.ndarray) -> bytes:
        header, self._header = self._header, b""
        return header + pcm16(samples)

    def flush(self) -> bytes:
        header, self._header = self._header, b""
        return header


_UNKNOWN_SIZE = 0xFFFFFFFF
_OGG_PAGES = {"page_duration": "20000"}  # microseconds: pages go out with each chunk, not once a second
_PCM16 = EncoderFormat("audio/pcm", True, lambda rate: Pcm16Encoder())
_OGG_OPUS = EncoderFormat(
    "audio/ogg; codecs=opus", False, _pyav("libopus", "ogg", **_OGG_PAGES), codec="libopus"
)

FORMATS: dict[str, EncoderFormat] = {
    # The contract's formats (lipstream.v1.enums.AudioFormat), for gRPC and the page.
    AudioFormat.WAV_PCM16: EncoderFormat("audio/wav", True, lambda rate: WavEncoder(rate, float32=False)),
    AudioFormat.WAV_FLOAT32: EncoderFormat("audio/wav", True, lambda rate: WavEncoder(rate, float32=True)),
    AudioFormat.PCM16: _PCM16,
    AudioFormat.OGG_OPUS: _OGG_OPUS,
    # Whole-response formats for HTTP handlers (server/web/speech.py), by OpenAI's response_format names;
    # pcm and opus are the contract's PCM16 and OGG_OPUS.
    "wav": EncoderFormat("audio/wav", False, StreamedWavEncoder),
    "pcm": _PCM16,
    "mp3": EncoderFormat("audio/mpeg", False, _pyav("libmp3lame", "mp3"), codec="libmp3lame"),
    "opus": _OGG_OPUS,
    "aac": EncoderFormat("audio/aac", False, _pyav("aac", "adts"), codec="aac"),
    "flac": EncoderFormat("audio/flac", False, _pyav("flac", "flac"), codec="flac"),
}


def encoder_for(audio_format: str, sample_rate: int) -> AudioEncoder:
    """A fresh encoder of a format in FORMATS ("wav_pcm16", "ogg_opus", "mp3", ...) for one stream at
    `sample_rate`; check `unavailable_reason` first for the PyAV formats."""
    if audio_format not in FORMATS:
        raise ValueError(f"audio format {audio_format!r} is unknown: use one of {list(FORMATS)}")
    return FORMATS[audio_format].make(sample_rate)


def unavailable_reason(audio_format: str) -> str | None:
    """Why this installation cannot encode a format (with the fix), or None when it can."""
    codec = FORMATS[audio_format].codec
    if not codec:
        return None
    if importlib.util.find_spec("av") is None:
        return f"audio_format {audio_format!r} needs PyAV on the server: pip install 'lipstream[mp4]' there"
    import av

    try:
        av.codec.Codec(codec, "w")
    except Exception:  # this FFmpeg build lacks the encoder
        return f"audio_format {audio_format!r} needs FFmpeg's {codec} encoder, which this PyAV build lacks"
    return None
