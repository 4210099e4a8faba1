"""The audio stage (the WAV packetizer): the ring's samples to the client, resampled, in chunks."""

from __future__ import annotations

import numpy as np
from lipstream.server.audio import StreamResampler
from lipstream.server.clock import Clock, Rewind
from lipstream.server.events import AudioEvent
from lipstream.server.mux import Multiplexer
from lipstream.server.ring import RingReader
from lipstream.server.stage import StageWorker
from lipstream.server.timeline import Timeline


class AudioStage(StageWorker):
    """The WAV packetizer: reads the ring, resamples, and sends chunks that never straddle two utterances."""

    cpu_part = "audio"

    def __init__(
        self,
        reader: RingReader,
        timeline: Timeline,
        mux: Multiplexer,
        resampler: StreamResampler,
        clock: Clock,
        *,
        chunk_samples: int,
    ) -> None:
        self._timeline = timeline
        self._resampler = resampler  # this thread's only: the clock's conversions are the Clock's
        self._clock = clock
        self._chunk = chunk_samples
        self._out_position = 0
        self._last_utterance = 0
        super().__init__("lipstream-audio", "audio packetizing", reader, mux)

    def _work(self) -> None:
        while not self._stopped.is_set():
            out_time = self._clock.output_seconds(self._out_position)
            if not self._wait_flow(out_time):
                continue
            # While the resampler holds an utterance's last samples, look again soon: its end may be known
            # (the TTS stage marks it after writing the samples), and its FINISHED waits on them.
            available = self._reader.wait(1, timeout=0.05 if self._resampler.holds_samples else 0.5)
            if available == 0:
                if self._reader.at_end:
                    break
                self._end_utterance()
                continue
            self._send_next(available)
            self._end_utterance()
        else:
            return
        self._emit(self._resampler.flush(), self._last_utterance)
        self._mux.finish("audio")

    def _rewound(self, rewind: Rewind) -> None:
        """Goes on at the end of the audio sent, with a fresh resampler."""
        self._out_position = rewind.audio_end
        self._resampler.restart()

    def _end_utterance(self) -> None:
        """At the end of a finished utterance, sends what the resampler holds back, ending exactly where the
        utterance ends on the output clock (where its FINISHED is); the next utterance starts it afresh.
        Without this, with nothing to say next and the input still open, the reply would never end."""
        position = self._reader.position
        if not self._resampler.holds_samples or position == 0:
            return
        span, _ = self._timeline.at(position - 1)
        if span is None or span.end != position:
            return
        tail = self._resampler.flush()
        missing = self._clock.to_output(position) - (self._out_position + len(tail))
        tail = np.pad(tail, (0, missing)) if missing > 0 else tail[: max(0, len(tail) + missing)]
        self._emit(tail, span.utterance_id)

    def _send_next(self, available: int) -> None:
        position = self._reader.position
        span, region_end = self._timeline.at(position)
        count = min(available, self._chunk)
        if region_end is not None and region_end > position:
            count = min(count, region_end - position)
        views = self._reader.peek(count)
        samples = np.concatenate(views) if len(views) > 1 else views[0]
        out = self._resampler.process(samples)  # copies: the ring's memory is released right after
        self._reader.advance(count)
        utterance_id = span.utterance_id if span is not None else 0
        self._last_utterance = utterance_id
        self._emit(out, utterance_id)

    def _emit(self, samples: np.ndarray, utterance_id: int) -> None:
        if len(samples) == 0:
            return
        samples = np.array(samples, dtype=np.float32, copy=True)
        rate = self._clock.output_rate
        start = self._out_position
        # The data is the session's encoder's, at sending (server/audio.py AudioEncoding).
        event = AudioEvent(b"", samples, start, len(samples), rate, utterance_id)
        self._out_position += len(samples)
        self._mux.push("audio", event, start / rate, epoch=self._epoch)
        self._mux.watermark("audio", self._out_position / rate, epoch=self._epoch)
