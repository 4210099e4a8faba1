"""The source of an audio-in session: the client's own speech (any TTS's PCM16) into the session's ring.

It stands where the TTS stage stands in a text session and has the owner's side the session uses
(start, idle, end_input, interrupt, stop, join); everything after the ring is the same for both: the audio
stage sends the samples back in the session's format and rate, the lip-sync stage makes frames from them.
The ring runs at the input's rate, so the samples go in as they came; the audio stage resamples them to the
output rate like a voice's.

Utterances: the first samples after the session's start (or after an utterance ended or was interrupted)
open one (UtteranceEvent STARTED, empty text); a piece with `end_of_utterance` closes it (FINISHED), and so
does the end of the input. An utterance has no phoneme timings: the viseme renderer draws its mouth from
the audio alone.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from lipstream.server.events import UtteranceOut
from lipstream.server.mux import Multiplexer
from lipstream.server.options import InvalidArgument
from lipstream.server.ring import AudioRing, RingClosed, RingInterrupted
from lipstream.server.stage import SourceStage
from lipstream.server.timeline import Timeline, UtteranceSpan

MIN_INPUT_RATE = 8000
MAX_INPUT_RATE = 48000


def pcm16_samples(pcm16: bytes) -> np.ndarray:
    """float32 samples in [-1, 1) of little-endian PCM16; raises InvalidArgument for half a sample."""
    if len(pcm16) % 2:
        raise InvalidArgument(
            f"AudioInput.pcm16 has {len(pcm16)} bytes: PCM16 takes 2 bytes a sample, send whole samples"
        )
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float32) * np.float32(1.0 / 32768.0)


@dataclass
class _Piece:
    samples: np.ndarray  # float32 at the input rate
    end_of_utterance: bool
    received_at: float  # time.monotonic()


class AudioInputStage(SourceStage):
    """Writes the client's audio pieces into the ring in order, one worker thread; an utterance per
    end_of_utterance. Back-pressure: the worker blocks on the ring, the pieces wait in a queue."""

    def __init__(
        self,
        ring: AudioRing,
        timeline: Timeline,
        mux: Multiplexer,
        to_output: Callable[[int], int],
        *,
        input_rate: int,
        output_rate: int,
        realtime: bool,
        realtime_lead_s: float,
    ) -> None:
        super().__init__(
            "lipstream-audio-in", "the audio input", ring, timeline, mux, to_output,
            rate=input_rate, output_rate=output_rate, realtime=realtime, realtime_lead_s=realtime_lead_s,
        )  # fmt: skip
        self._pieces: collections.deque[_Piece] = collections.deque()
        self._writing = False
        self._open: UtteranceSpan | None = None  # the utterance more pieces go on

    # -- owner's side ------------------------------------------------------------------------------------
    def submit(self, pcm16: bytes, end_of_utterance: bool) -> None:
        """Queues a piece of the client's audio (raises InvalidArgument for an odd byte count)."""
        piece = _Piece(pcm16_samples(pcm16), end_of_utterance, time.monotonic())
        with self._cond:
            self._pieces.append(piece)
            self._cond.notify_all()

    def idle(self) -> bool:
        """True while nothing more is coming for now: every piece is in the ring and no utterance is open
        (inside an utterance the next piece may come any moment; the lip-sync stage waits for it)."""
        with self._cond:
            return not self._pieces and not self._writing and self._open is None

    def _drop_queued(self, *, interrupt: bool) -> None:
        self._pieces.clear()
        if interrupt:
            self._open = None  # audio sent after the interrupt opens a new utterance

    def _paced_now(self) -> bool:
        return self._realtime and self._open is None  # inside an utterance the client's audio is the clock

    # -- worker ------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while (taken := self._next_piece()) is not None:
            try:
                self._write(*taken)
            finally:
                with self._cond:
                    self._writing = False
        self._close_open()

    def _next_piece(self) -> tuple[_Piece, UtteranceSpan | None, int] | None:
        """The next piece, the utterance it goes on (opened here when it is the first), and the ring's
        epoch, taken together under the lock so that an interrupt falls before or after all three."""
        with self._cond:
            if not self._wait_for_work(self._pieces):
                return None
            piece = self._pieces.popleft()
            self._writing = True
            epoch = self._ring.epoch
            if self._open is None and len(piece.samples):
                if self.first_speech_submitted_at is None:
                    self.first_speech_submitted_at = piece.received_at
                span = self._open = UtteranceSpan(self._next_id, "", self._ring.write_position, [])
                self._next_id += 1
                self._timeline.prune(self._ring.slowest_position())
                self._timeline.add(span)
                self._announce(span, epoch)
            return piece, self._open, epoch

    def _write(self, piece: _Piece, span: UtteranceSpan | None, epoch: int) -> None:
        try:
            if len(piece.samples):
                self._ring.write(piece.samples, epoch=epoch)
                self.figures.media_samples += len(piece.samples)
                self._publish_watermark()
        except RingInterrupted:
            self._publish_watermark()
            return
        except RingClosed:
            return
        if piece.end_of_utterance and span is not None:
            with self._cond:
                if self._open is not span:
                    return  # interrupted meanwhile: the interrupt ended it
                self._open = None
            self._finish(span, epoch)

    def _close_open(self) -> None:
        """The input ended inside an utterance: it ends where its audio does."""
        with self._cond:
            span, self._open = self._open, None
            epoch = self._ring.epoch
        if span is not None:
            self._finish(span, epoch)

    def _finish(self, span: UtteranceSpan, epoch: int) -> None:
        end = self._ring.write_position
        self._timeline.finish(span, end)
        out_start, out_end = self._to_output(span.start), self._to_output(end)
        event = UtteranceOut("finished", span.utterance_id, "", out_start, out_end)
        self._mux.push("control", event, out_end / self._output_rate, epoch=epoch)

    def _announce(self, span: UtteranceSpan, epoch: int) -> None:
        out_start = self._to_output(span.start)
        event = UtteranceOut("started", span.utterance_id, "", out_start, out_start)
        self._mux.push("control", event, out_start / self._output_rate, epoch=epoch)
