"""A session's audio on its way out: resampled to the output rate, then encoded in its format."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import soxr
from lipstream.server.encoders import encoder_for
from lipstream.server.events import AudioEvent


class AudioEncoding:
    """A session's audio encoder at the point where events are sent: an interrupt drops queued chunks before
    they get here, so a stateful codec (Opus) sees exactly the audio the client gets, in order."""

    def __init__(self, audio_format: str, sample_rate: int) -> None:
        self._encoder = encoder_for(audio_format, sample_rate)
        self._sample_rate = sample_rate
        self._end = 0
        self._utterance_id = 0

    def encode(self, event: AudioEvent) -> AudioEvent:
        """The event with its data: the encoder's bytes for its samples."""
        self._end = event.start_sample + event.num_samples
        self._utterance_id = event.utterance_id
        return replace(event, data=self._encoder.encode(event.samples))

    def finish(self) -> AudioEvent | None:
        """The bytes the encoder still holds at the end of the stream, as a chunk of no samples (None when
        it holds none: every WAV and PCM format)."""
        tail = self._encoder.flush()
        if not tail:
            return None
        empty = np.zeros(0, dtype=np.float32)
        return AudioEvent(tail, empty, self._end, 0, self._sample_rate, self._utterance_id)


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
        return np.asarray(self._stream.resample_chunk(np.asarray(samples, dtype=np.float32), last=last))

    def flush(self) -> np.ndarray:
        """The samples held back, as if the input ended here; what comes next starts afresh."""
        tail = self.process(np.zeros(0, dtype=np.float32), last=True)
        self.restart()
        return tail
