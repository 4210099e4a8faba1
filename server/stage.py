"""The bases of a session's stages: SourceStage writes the session's ring (the TTS stage, the audio input),
StageWorker reads it (audio packetizer, lip sync).

Each stage is one worker thread owned by the Session: it starts it, stops it (stop flag, ring abort) and
joins it. Stages talk through the ring (audio), the Timeline (which utterance covers which samples) and the
Multiplexer (events out).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from lipstream.server.clock import Rewind
from lipstream.server.cpu import LEDGER
from lipstream.server.mux import Multiplexer, SessionStopped, StageFailed
from lipstream.server.ring import AudioRing, ReaderRewound, RingAborted, RingInterrupted, RingReader
from lipstream.server.timeline import Timeline

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A session's worker thread, as the session drives it."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float) -> bool: ...


@dataclass
class StageFigures:
    compute_s: float = 0.0
    media_samples: int = 0


class SourceStage:
    """The one writer of a session's ring (the TTS stage for text, the audio input for the client's PCM): a
    worker thread owned by the session, which drives it by start(), end_input(), holding(), rewind(), stop()
    and join(). A subclass queues its own work (submit), says when it is idle and does the work (_work); this
    base keeps the utterance ids, the wait for work with REALTIME's silence, the interrupt and the end.

    Lock order: the stage's condition, then the ring and the timeline; the multiplexer is told outside it.
    """

    def __init__(
        self,
        thread_name: str,
        task: str,
        ring: AudioRing,
        timeline: Timeline,
        mux: Multiplexer,
        to_output: Callable[[int], int],
        *,
        rate: int,
        output_rate: int,
        realtime: bool,
        realtime_lead_s: float,
    ) -> None:
        """`rate`: the ring's (the voice's or the input's); `to_output` maps its samples to the output's."""
        self._task = task  # what the stage does, for the failure's message
        self._ring = ring
        self._timeline = timeline
        self._mux = mux
        self._to_output = to_output
        self._rate = rate
        self._output_rate = output_rate
        self._realtime = realtime
        self._realtime_lead = int(realtime_lead_s * rate)
        self._cond = threading.Condition()
        self._input_ended = False
        self._stopped = False
        self._next_id = 1  # the next utterance's
        self._dead_below = 1  # utterances below this id were interrupted
        self._watermark_cap: int | None = None  # ring sample the clock may not pass yet (events held back)
        self._clock_start = time.monotonic()
        self.figures = StageFigures()
        self.first_speech_submitted_at: float | None = None
        """When the first speech (a clause that spoke, a piece with samples) was submitted (time.monotonic):
        the session's time to first audio / frame is measured from there."""
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    # -- owner's side ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._clock_start = time.monotonic()
        self._thread.start()

    def pending_chars(self) -> int:
        """The characters queued and not yet spoken (the session's text bound counts them)."""
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
        """Drops what is queued and stops the utterance under way: the ring's stream ends at rewind.ring_end
        (where the next utterance starts), the timeline is cut at rewind.cut_at."""
        with self._cond:
            self._drop_queued(interrupt=True)
            self._dead_below = rewind.dead_below
            epoch = self._ring.interrupt(rewind.ring_end)  # the writer's epoch changes: its next write fails
            if epoch != rewind.epoch:
                raise RuntimeError(f"the ring went to epoch {epoch}, the rewind to {rewind.epoch}")
            self._timeline.cut(rewind.cut_at)
            self._cond.notify_all()
        self._publish_watermark()  # the multiplexer sets it back to what was sent; the clock is here now

    def stop(self) -> None:
        """Ends the worker after the step it is in: what is queued is dropped, nothing more is started."""
        with self._cond:
            self._stopped = True
            self._drop_queued(interrupt=False)
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the subclass's part -----------------------------------------------------------------------------
    def _drop_queued(self, *, interrupt: bool) -> None:
        """Drops the queued work (the condition is held): on stop(), and on rewind() with interrupt=True."""
        raise NotImplementedError

    def _work(self) -> None:
        """The worker's loop, until _wait_for_work says nothing more comes."""
        raise NotImplementedError

    def _failure(self, exc: Exception) -> StageFailed:
        """What the session ends with when _work raised `exc` (called in the except block: logs it)."""
        log.exception("%s failed", self._task)
        return StageFailed(f"{self._task} failed: {exc}")

    def _paced_now(self) -> bool:
        """Whether the wait for work keeps the clock in step with the wall clock (REALTIME pacing)."""
        return self._realtime

    # -- worker ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._work()
        except (RingAborted, SessionStopped):
            return
        except Exception as exc:
            self._mux.fail(self._failure(exc))
        self._ring.close()
        self._mux.finish("control")

    def _wait_for_work(self, queue: Sized) -> bool:
        """Waits, the condition held, until `queue` holds work: True then; False when none will be done
        (stopped, or the input ended with the queue empty). Paced, it writes silence meanwhile."""
        while not queue:
            if self._stopped or self._input_ended:
                return False
            if self._paced_now():
                self._cond.release()
                try:
                    self._fill_silence()
                finally:
                    self._cond.acquire()
                if queue or self._stopped or self._input_ended:
                    continue
                self._cond.wait(0.02)
            else:
                self._cond.wait(0.5)
        return not self._stopped  # stopped while work was queued (stop() drops it; a race leaves none)

    def _fill_silence(self) -> None:
        """REALTIME pacing: keeps the clock in step with the wall clock while there is nothing to say."""
        target = int((time.monotonic() - self._clock_start) * self._rate) + self._realtime_lead
        missing = target - self._ring.write_position
        if missing > 0:
            try:
                self._ring.write(np.zeros(missing, dtype=np.float32), epoch=self._ring.epoch)
            except RingInterrupted:
                return
            self._publish_watermark()

    def _publish_watermark(self) -> None:
        # The epoch first: a rewind between the two reads makes the watermark stale (ignored), not too late.
        epoch = self._ring.epoch
        position = self._ring.write_position
        if self._watermark_cap is not None:
            position = min(position, self._watermark_cap)
        self._mux.watermark("control", self._to_output(position) / self._output_rate, epoch=epoch)

    def _is_dead(self, utterance_id: int) -> bool:
        with self._cond:
            return utterance_id < self._dead_below

    def _is_stopped(self) -> bool:
        with self._cond:
            return self._stopped


class StageWorker:
    """A stage's one worker thread reading the ring, owned by its session: start(), stop() (seen between two
    steps), join(). A failure ends the session with StageFailed; the reader is released however it ends.

    An interrupt (the order: Session.interrupt): rewind() tells the stage where it goes on, then the ring
    rewinds; the worker sees ReaderRewound at its next read, re-syncs (_rewound), works on in the new epoch.
    """

    cpu_part = ""
    """The lipstream.server.cpu part the thread's CPU time goes to when it ends ("": none)."""

    def __init__(self, thread_name: str, task: str, reader: RingReader, mux: Multiplexer) -> None:
        self._task = task  # what the stage does, for the failure's message
        self._reader = reader
        self._mux = mux
        self._epoch = 0  # the ring's epoch this stage's events belong to
        self._rewind_lock = threading.Lock()
        self._rewind: Rewind | None = None  # the last interrupt's
        self._stopped = threading.Event()
        self._cpu_counted = 0.0  # this thread's CPU seconds already added to the ledger under other parts
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def rewind(self, rewind: Rewind) -> None:
        """An interrupt is coming: the stage goes on from where `rewind` says once the ring has rewound."""
        with self._rewind_lock:
            self._rewind = rewind

    def _wait_flow(self, media_time: float, timeout: float = 0.2) -> bool:
        """Flow control's wait_until_near; raises ReaderRewound first after an interrupt (the stage's media
        time is then stale: waiting on it could block the stage for good)."""
        if self._reader.rewound:
            raise ReaderRewound("the audio ring was rewound by an interrupt")
        return self._mux.flow.wait_until_near(media_time, timeout)

    def _run(self) -> None:
        try:
            while True:
                try:
                    self._work()
                    return
                except ReaderRewound:
                    # The ring's epoch first, then the rewind: a second interrupt in between rewinds again
                    # (its Rewind may be here while the ring is still in the first one's epoch).
                    self._epoch = self._reader.take_rewind()
                    with self._rewind_lock:
                        rewind = self._rewind
                    if rewind is None:
                        raise RuntimeError("the ring rewound with no Rewind: see Session.interrupt") from None
                    self._rewound(rewind)
        except (RingAborted, SessionStopped):
            return
        except Exception as exc:
            log.exception("%s failed", self._task)
            self._mux.fail(StageFailed(f"{self._task} failed: {exc}"))
        finally:
            self._reader.close()
            if self.cpu_part:
                LEDGER.add_thread(self.cpu_part, self._cpu_counted)

    def _work(self) -> None:
        """The stage's loop; raises ReaderRewound (from its reader) after an interrupt: it is run again."""
        raise NotImplementedError

    def _rewound(self, rewind: Rewind) -> None:
        """Re-syncs the stage after the ring rewound: it goes on from where `rewind` says."""
        raise NotImplementedError
