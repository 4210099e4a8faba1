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
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from lipstream.server.clock import Rewind
from lipstream.server.events import UtteranceOut
from lipstream.server.mux import Multiplexer, SessionStopped, StageFailed
from lipstream.server.options import InvalidArgument
from lipstream.server.ring import AudioRing, RingAborted, RingClosed, RingInterrupted
from lipstream.server.stage import StageFigures
from lipstream.server.timeline import Timeline, UtteranceSpan

log = logging.getLogger(__name__)

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


class AudioInputStage:
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
        self._ring = ring
        self._timeline = timeline
        self._mux = mux
        self._to_output = to_output
        self._input_rate = input_rate
        self._output_rate = output_rate
        self._realtime = realtime
        self._realtime_lead = int(realtime_lead_s * input_rate)
        self._cond = threading.Condition()
        self._pieces: collections.deque[_Piece] = collections.deque()
        self._input_ended = False
        self._stopped = False
        self._writing = False
        self._open: UtteranceSpan | None = None  # the utterance more pieces go on
        self._next_id = 1
        self._dead_below = 1
        self._clock_start = time.monotonic()
        self.figures = StageFigures()
        self.first_speech_submitted_at: float | None = None
        """When the first audio piece with samples arrived: the session's time to first audio / frame is
        measured from there (for the lip-sync stage: its latency from the first audio to the first frame)."""
        self._thread = threading.Thread(target=self._run, name="lipstream-audio-in", daemon=True)

    # -- owner's side ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._clock_start = time.monotonic()
        self._thread.start()

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

    def pending_chars(self) -> int:
        return 0

    def end_input(self) -> None:
        with self._cond:
            self._input_ended = True
            self._cond.notify_all()

    @contextlib.contextmanager
    def holding(self) -> Iterator[int]:
        """Holds the stage: no utterance starts meanwhile. Yields the id the next utterance would get (every
        id below it has started: those an interrupt now ends)."""
        with self._cond:
            yield self._next_id

    def rewind(self, rewind: Rewind) -> None:
        """Drops the queued pieces and the open utterance: the ring's stream ends at rewind.ring_end, the
        timeline is cut at rewind.cut_at; audio sent after this opens a new utterance."""
        with self._cond:
            self._pieces.clear()
            self._open = None
            self._dead_below = rewind.dead_below
            epoch = self._ring.interrupt(rewind.ring_end)
            if epoch != rewind.epoch:
                raise RuntimeError(f"the ring went to epoch {epoch}, the rewind to {rewind.epoch}")
            self._timeline.cut(rewind.cut_at)
            self._cond.notify_all()
        self._publish_watermark()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._pieces.clear()
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- worker ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while (taken := self._next_piece()) is not None:
                try:
                    self._write(*taken)
                finally:
                    with self._cond:
                        self._writing = False
            self._close_open()
        except (RingAborted, SessionStopped):
            return
        except Exception as exc:
            log.exception("audio input stage failed")
            self._mux.fail(StageFailed(f"the audio input failed: {exc}"))
        self._ring.close()
        self._mux.finish("control")

    def _next_piece(self) -> tuple[_Piece, UtteranceSpan | None, int] | None:
        """The next piece, the utterance it goes on (opened here when it is the first), and the ring's
        epoch, taken together under the lock so that an interrupt falls before or after all three."""
        with self._cond:
            while not self._pieces:
                if self._stopped or self._input_ended:
                    return None
                if self._realtime and self._open is None:
                    self._cond.release()
                    try:
                        self._fill_silence()
                    finally:
                        self._cond.acquire()
                    if self._pieces or self._stopped or self._input_ended:
                        continue
                    self._cond.wait(0.02)
                else:
                    self._cond.wait(0.5)
            if self._stopped:
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

    def _fill_silence(self) -> None:
        """REALTIME pacing: keeps the clock in step with the wall clock between utterances."""
        target = int((time.monotonic() - self._clock_start) * self._input_rate) + self._realtime_lead
        missing = target - self._ring.write_position
        if missing > 0:
            try:
                self._ring.write(np.zeros(missing, dtype=np.float32), epoch=self._ring.epoch)
            except RingInterrupted:
                return
            self._publish_watermark()

    def _publish_watermark(self) -> None:
        epoch = self._ring.epoch
        position = self._ring.write_position
        self._mux.watermark("control", self._to_output(position) / self._output_rate, epoch=epoch)
