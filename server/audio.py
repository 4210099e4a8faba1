"""Audio out: self-contained WAV chunks (or raw PCM16) at the session's output rate."""

from __future__ import annotations

import struct

import numpy as np
import soxr

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3


def wav_bytes(samples: np.ndarray, sample_rate: int, audio_format: str) -> bytes:
    """Encodes float32 mono samples: a complete RIFF/WAVE file ("wav_pcm16", "wav_float32") or raw "pcm16"."""
    if audio_format == "wav_float32":
        payload = np.ascontiguousarray(samples, dtype="<f4").tobytes()
        return _riff_header(len(payload), sample_rate, _WAVE_FORMAT_IEEE_FLOAT, 32) + payload
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    if audio_format == "pcm16":
        return pcm
    if audio_format == "wav_pcm16":
        return _riff_header(len(pcm), sample_rate, _WAVE_FORMAT_PCM, 16) + pcm
    raise ValueError(f"audio format {audio_format!r} is unknown: use wav_pcm16, wav_float32 or pcm16")


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


class StreamResampler:
    """Resamples one session's audio chunk by chunk on one continuous clock (identity when rates match)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32")
        )
        self.holds_samples = False  # fed since the last start: soxr keeps the last few ms until it sees more

    def restart(self) -> None:
        """Forgets the samples in flight (an interrupt moved the clock back): the next chunk starts afresh."""
        if self._stream is not None:
            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32")
        self.holds_samples = False

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return np.asarray(samples, dtype=np.float32)
        self.holds_samples = not last
        return self._stream.resample_chunk(np.asarray(samples, dtype=np.float32), last=last)

    def flush(self) -> np.ndarray:
        """The samples held back, as if the input ended here; what comes next starts afresh."""
        tail = self.process(np.zeros(0, dtype=np.float32), last=True)
        self.restart()
        return tail

    def to_output(self, sample: int) -> int:
        """A sample index of the voice's clock on the output clock."""
        return sample if self._stream is None else round(sample * self.out_rate / self.in_rate)

    def to_input(self, sample: int) -> int:
        """A sample index of the output clock on the voice's clock."""
        return sample if self._stream is None else round(sample * self.in_rate / self.out_rate)
