"""Multiplexer: merges the stages' event streams into one stream in media-time order.

Each source (control, audio, video) pushes its events from its worker thread together with a *watermark*:
a time before which it will push nothing more. An event goes out once no source can still push an earlier
one, so the output is ordered by media time and audio runs ahead of video only as far as the video stage
lags. Workers are held back (flow control) when their events are more than `max_ahead_s` of media time ahead
of what has been sent, so a slow client bounds the memory of its session.

An interrupt (a Rewind, see Session.interrupt) takes the session back to what the client has received
(sent_position): the queued audio and frames are dropped and the stages make them again from there. Each
push and watermark carries the epoch it was made in (the ring's); those of an epoch before the last
interrupt are stale and ignored.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVarTuple

from lipstream.server.clock import Rewind
from lipstream.server.events import (
    AudioEvent,
    BlendshapeOut,
    FrameEvent,
    SessionEvent,
    UtteranceOut,
    VisemeOut,
    WordOut,
)

Ts = TypeVarTuple("Ts")
SOURCES = ("control", "audio", "video", "blendshapes")
# Order of events at the same media time: an utterance ends before the next starts, its visemes, then
# its audio, then the frame.
_PRIORITY = {"finished": 0, "started": 1}
_VISEME_PRIORITY, _AUDIO_PRIORITY, _FRAME_PRIORITY = 2, 3, 4


class SessionStopped(RuntimeError):
    """The session was cancelled; a worker waiting on flow control leaves with this."""


class StageFailed(RuntimeError):
    """A worker of the session failed; the session ends with this error (the servicer: INTERNAL)."""


class FlowControl:
    """Lets worker threads wait until the media time they are at is close enough to what has been sent."""

    def __init__(self, max_ahead_s: float) -> None:
        self.max_ahead_s = max_ahead_s
        self._cond = threading.Condition()
        self._sent_time = 0.0
        self._rewinds = 0
        self._stopped = False

    def wait_until_near(self, media_time: float, timeout: float = 0.2) -> bool:
        """Blocks while `media_time` is more than max_ahead_s past the sent time; False on timeout or rewind.

        Raises SessionStopped when the session stops meanwhile.
        """
        with self._cond:
            deadline = time.monotonic() + timeout
            rewinds = self._rewinds
            while media_time - self._sent_time > self.max_ahead_s:
                if self._stopped:
                    raise SessionStopped("the session was stopped")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._rewinds != rewinds:
                    return False  # after a rewind the worker re-syncs before it waits again
                self._cond.wait(remaining)
            if self._stopped:
                raise SessionStopped("the session was stopped")
            return True

    def rewind(self, media_time: float) -> None:
        """The media after `media_time` will be made again (an interrupt): the sent time goes back there."""
        with self._cond:
            self._sent_time = media_time
            self._rewinds += 1
            self._cond.notify_all()

    def sent(self, media_time: float) -> None:
        with self._cond:
            if media_time > self._sent_time:
                self._sent_time = media_time
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


@dataclass(order=True)
class _Queued:
    time: float
    priority: int
    seq: int
    event: SessionEvent = field(compare=False)


@dataclass
class MuxFigures:
    """What the multiplexer has sent, for the session's stats."""

    first_audio_at: float | None = None  # when the first audio / frame of an utterance was sent
    first_frame_at: float | None = None
    audio_samples: int = 0
    audio_rate: int = 0
    frames: int = 0
    utterances: int = 0
    interrupted: int = 0


class Multiplexer:
    """One session's ordered output. Thread-side methods: any thread; the rest: the event loop only."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sources: tuple[str, ...],
        *,
        realtime: bool,
        realtime_lead_s: float = 0.1,
        max_ahead_s: float = 2.0,
    ) -> None:
        unknown = set(sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown sources {sorted(unknown)}: use {SOURCES}")
        self._loop = loop
        self._heap: list[_Queued] = []
        self._seq = itertools.count()
        self._watermarks = {source: 0.0 for source in sources}
        self._wake = asyncio.Event()
        self._dead_below = 1  # utterance ids below this (except 0) were interrupted: drop their events
        self._open: UtteranceOut | None = None  # started and sent, not yet finished
        self._open_sent_end = 0
        self._epoch = 0  # the ring's epoch since the last interrupt: older pushes and watermarks are stale
        self._last_sent_time = 0.0
        self._audio_sent_end = 0  # output samples
        self._next_frame = 0  # the first frame index not sent
        self._next_blendshapes = 0  # the first blendshape frame index not sent
        self._realtime = realtime
        self._realtime_lead_s = realtime_lead_s
        self._clock_start = time.monotonic()
        self._closed = False
        self._failure: StageFailed | None = None
        self._urgent: list[SessionEvent] = []  # sent before anything queued (the INTERRUPTED event)
        self.flow = FlowControl(max_ahead_s)
        self.figures = MuxFigures()

    # -- thread side -------------------------------------------------------------------------------------
    def push(self, source: str, event: SessionEvent, media_time: float, *, epoch: int) -> None:
        self._call(self._push, source, event, media_time, epoch)

    def watermark(self, source: str, media_time: float, *, epoch: int) -> None:
        self._call(self._set_watermark, source, media_time, epoch)

    def finish(self, source: str) -> None:
        """The source has ended (in any epoch: a finished stage makes nothing more)."""
        self._call(self._set_watermark, source, math.inf, None)

    def fail(self, error: StageFailed) -> None:
        """A worker failed: the session's stream ends with `error`."""
        self._call(self._fail, error)

    def _fail(self, error: StageFailed) -> None:
        if self._failure is None:
            self._failure = error
        self._wake.set()

    def _call(self, function: Callable[[*Ts], object], *args: *Ts) -> None:
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:
            pass  # the loop is closed: the session is gone and nobody reads any more

    # -- loop side ---------------------------------------------------------------------------------------
    def _push(self, source: str, event: SessionEvent, media_time: float, epoch: int) -> None:
        if self._closed or epoch < self._epoch:
            return
        if self._is_dead(event):
            self.flow.sent(media_time)  # dropped counts as sent: the worker must not wait for it
            return
        heapq.heappush(self._heap, _Queued(media_time, _priority(event), next(self._seq), event))
        self._wake.set()

    def _set_watermark(self, source: str, media_time: float, epoch: int | None) -> None:
        if epoch is not None and epoch < self._epoch:
            return
        if media_time > self._watermarks[source]:
            self._watermarks[source] = media_time
            self._wake.set()

    def _is_dead(self, event: SessionEvent) -> bool:
        utterance_id = getattr(event, "utterance_id", 0)
        return 0 < utterance_id < self._dead_below

    def sent_position(self) -> tuple[int, int]:
        """What the client has received: the end of its audio (output samples), the first frame not sent."""
        return self._audio_sent_end, self._next_frame

    def _heard(self, word: WordOut) -> bool:
        """The word belongs to the utterance being sent and all its audio was sent."""
        opened = self._open
        return (opened is not None and word.utterance_id == opened.utterance_id
                and word.end_sample <= max(opened.start_sample, self._open_sent_end))

    def next_blendshape_frame(self) -> int:
        """The first blendshape frame the client has not received."""
        return self._next_blendshapes

    def interrupt(self, rewind: Rewind) -> None:
        """Drops every queued and future event of the interrupted utterances, sends INTERRUPTED (with where
        it stopped: the end of its audio sent so far) for the one that was being sent, and starts the
        rewind's epoch: the stages make the audio and frames again from sent_position(), so every queued one
        is dropped, and the watermarks go back to the last sent time (nothing new is earlier)."""
        self._dead_below = max(self._dead_below, rewind.dead_below)
        self._epoch = rewind.epoch
        # Words whose audio the client already has but that are still queued (a word that starts inside the
        # last audio chunk sent goes after it): they are sent before INTERRUPTED, so that the words a client
        # received are exactly the event's spoken_text.
        heard_words = sorted(
            item for item in self._heap if isinstance(item.event, WordOut) and self._heard(item.event)
        )
        self._heap = [
            item
            for item in self._heap
            if not self._is_dead(item.event)
            and not isinstance(item.event, AudioEvent | FrameEvent | BlendshapeOut)
        ]
        heapq.heapify(self._heap)
        for source, mark in self._watermarks.items():
            if not math.isinf(mark):
                self._watermarks[source] = min(mark, self._last_sent_time)
        self.flow.rewind(self._last_sent_time)
        self._wake.set()
        opened = self._open
        if opened is None or not self._is_dead(opened):
            return
        self._open = None
        self.figures.interrupted += 1
        end = max(opened.start_sample, self._open_sent_end)
        spoken = opened.spoken(end) if opened.spoken is not None else ""
        self._urgent.extend(item.event for item in heard_words)
        self._urgent.append(
            UtteranceOut("interrupted", opened.utterance_id, opened.text, opened.start_sample, end, spoken)
        )

    def close(self) -> None:
        self._closed = True
        self._heap.clear()
        self.flow.stop()
        self._wake.set()

    async def next_event(self) -> SessionEvent | None:
        """The next event in media-time order; None when every source has finished and all is sent.

        Raises StageFailed when a worker failed."""
        while not self._closed:
            if self._failure is not None:
                raise self._failure
            if self._urgent:
                return self._urgent.pop(0)
            item = self._ready()
            if item is not None:
                delay = self._realtime_delay(item.time)
                if delay > 0:
                    await self._sleep_or_wake(min(delay, 0.05))
                    continue  # an interrupt may have dropped it meanwhile
                heapq.heappop(self._heap)
                self._account(item.event, item.time)
                return item.event
            if not self._heap and all(math.isinf(w) for w in self._watermarks.values()):
                return None
            self._wake.clear()
            await self._wake.wait()
        return None

    def _ready(self) -> _Queued | None:
        if not self._heap:
            return None
        head = self._heap[0]
        if head.time <= min(self._watermarks.values()):
            return head
        return None

    def _realtime_delay(self, media_time: float) -> float:
        if not self._realtime:
            return 0.0
        return self._clock_start + media_time - self._realtime_lead_s - time.monotonic()

    async def _sleep_or_wake(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    def _account(self, event: SessionEvent, media_time: float) -> None:
        figures = self.figures
        now = time.monotonic()
        if isinstance(event, AudioEvent):
            if event.utterance_id:  # speech, not the silence REALTIME pacing sends before it
                figures.first_audio_at = figures.first_audio_at or now
            figures.audio_samples += event.num_samples
            figures.audio_rate = event.sample_rate
            self._audio_sent_end = event.start_sample + event.num_samples
            if self._open is not None and event.utterance_id == self._open.utterance_id:
                self._open_sent_end = event.start_sample + event.num_samples
        elif isinstance(event, FrameEvent):
            if event.utterance_id:  # a frame of speech, not an idle one
                figures.first_frame_at = figures.first_frame_at or now
            figures.frames += 1
            self._next_frame = event.frame_index + 1
        elif isinstance(event, BlendshapeOut):
            self._next_blendshapes = event.frame_index + 1
        elif isinstance(event, UtteranceOut):
            if event.kind == "started":
                self._open, self._open_sent_end = event, event.start_sample
            elif event.kind == "finished":
                self._open = None
                figures.utterances += 1
        self._last_sent_time = max(self._last_sent_time, media_time)
        self.flow.sent(media_time)


def _priority(event: SessionEvent) -> int:
    if isinstance(event, UtteranceOut):
        return _PRIORITY.get(event.kind, 0)
    if isinstance(event, VisemeOut | WordOut):
        return _VISEME_PRIORITY
    if isinstance(event, AudioEvent):
        return _AUDIO_PRIORITY
    return _FRAME_PRIORITY
