"""AudioRing: one session's audio on its media clock, written once and read by several stages.

A preallocated float32 ring addressed by absolute sample index (int64, sample 0 = the session's first
sample). One writer (the TTS stage) and several readers (the WAV packetizer, the lip-sync stage) that each
keep their own position. Readers get zero-copy views of the ring's memory (two views when the range wraps);
a view stays valid until the reader advances past it, because the writer never overwrites samples that a
reader has not released. The writer blocks when the slowest reader is a whole capacity behind: memory stays
bounded and nothing is dropped. An interrupt() moves the end of the stream back (what the client has not
received is rewritten); each reader learns of it through ReaderRewound so that its stage can re-sync (the
order of a session's interrupt: Session.interrupt).
"""

from __future__ import annotations

import threading
import time

import numpy as np


class RingClosed(RuntimeError):
    """Written after close() or abort(): the stream has ended."""


class RingAborted(RuntimeError):
    """The ring was aborted (the session was cancelled); every wait ends with this."""


class RingInterrupted(RuntimeError):
    """A write was made for an epoch that an interrupt() has ended; the samples were not written."""


class ReaderRewound(RuntimeError):
    """interrupt() moved the stream's end back: the reader's stage must re-sync, then call take_rewind()."""


class AudioRing:
    """Single-writer, multi-reader float32 ring on an absolute sample clock. Thread-safe."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity {capacity} must be at least 1 sample")
        self.capacity = capacity
        self._buffer = np.zeros(capacity, dtype=np.float32)
        self._cond = threading.Condition()
        self._write_pos = 0  # absolute index one past the last written sample
        self._readers: list[RingReader] = []
        self._closed = False
        self._aborted = False
        self._epoch = 0

    # -- state ------------------------------------------------------------------------------------------
    @property
    def write_position(self) -> int:
        with self._cond:
            return self._write_pos

    @property
    def epoch(self) -> int:
        """Changes at each interrupt(); pass it to write() to refuse samples of an interrupted utterance."""
        with self._cond:
            return self._epoch

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def slowest_position(self) -> int:
        """The position of the reader furthest behind (the write position when there is none)."""
        with self._cond:
            return min((r._position for r in self._readers), default=self._write_pos)

    def reader(self, start: int | None = None) -> RingReader:
        """A new reader at `start` (default: the write position; it must not be older than the ring holds)."""
        with self._cond:
            position = self._write_pos if start is None else start
            oldest = max(0, self._write_pos - self.capacity)
            if not oldest <= position <= self._write_pos:
                raise ValueError(
                    f"reader start {position} is outside the held samples [{oldest}, {self._write_pos}]"
                )
            if self._readers:
                position = max(position, min(r._position for r in self._readers))
            reader = RingReader(self, position)
            self._readers.append(reader)
            return reader

    # -- writer -----------------------------------------------------------------------------------------
    def write(self, samples: np.ndarray, *, epoch: int | None = None, timeout: float | None = None) -> None:
        """Appends all samples, blocking while the slowest reader is a whole capacity behind.

        Raises RingClosed after close(), RingAborted after abort(), RingInterrupted when `epoch` is given and
        an interrupt() has changed it (before or while waiting), TimeoutError when `timeout` passes first
        (the samples written before that stay written).
        """
        data = np.asarray(samples, dtype=np.float32).reshape(-1)
        deadline = None if timeout is None else time.monotonic() + timeout
        done = 0
        with self._cond:
            while done < len(data):
                self._check_writable(epoch)
                free = self._free_locked()
                if free == 0:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(
                            f"ring full for {timeout} s: a reader is {self.capacity} samples behind"
                        )
                    self._cond.wait(remaining)
                    continue
                count = min(free, len(data) - done)
                self._copy_in(data[done : done + count])
                done += count
                self._cond.notify_all()

    def _check_writable(self, epoch: int | None) -> None:
        if self._aborted:
            raise RingAborted("the audio ring was aborted")
        if self._closed:
            raise RingClosed("the audio ring is closed: no more samples can be written")
        if epoch is not None and epoch != self._epoch:
            raise RingInterrupted(f"epoch {epoch} was interrupted (now {self._epoch})")

    def _free_locked(self) -> int:
        if not self._readers:
            return self.capacity  # nobody reads: the oldest samples are simply overwritten
        slowest = min(r._position for r in self._readers)
        return self.capacity - (self._write_pos - slowest)

    def _copy_in(self, data: np.ndarray) -> None:
        start = self._write_pos % self.capacity
        first = min(len(data), self.capacity - start)
        self._buffer[start : start + first] = data[:first]
        self._buffer[: len(data) - first] = data[first:]
        self._write_pos += len(data)

    def close(self) -> None:
        """Ends the stream: readers read what is left, then see the end. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> None:
        """Cancels the ring: every current and future wait of the writer and readers raises RingAborted."""
        with self._cond:
            self._aborted = True
            self._closed = True
            self._cond.notify_all()

    def interrupt(self, rewind_to: int) -> int:
        """Ends the epoch and moves the end of the stream back to `rewind_to`; returns the new epoch.

        The samples from `rewind_to` on are discarded and the writer goes on from there. Readers past it are
        moved back to it; readers behind it still read the old samples up to it (they stay valid). Every
        reader is marked rewound: its wait/peek/advance raise ReaderRewound until it calls take_rewind().
        """
        with self._cond:
            if not 0 <= rewind_to <= self._write_pos:
                raise ValueError(f"cannot rewind to {rewind_to}: the stream ends at {self._write_pos}")
            self._write_pos = rewind_to
            for reader in self._readers:
                reader._position = min(reader._position, rewind_to)
                reader._rewound = True
            self._epoch += 1
            self._cond.notify_all()
            return self._epoch

    # -- reader side (called by RingReader under the lock) ---------------------------------------------
    def _views(self, start: int, count: int) -> tuple[np.ndarray, ...]:
        offset = start % self.capacity
        first = min(count, self.capacity - offset)
        head = self._buffer[offset : offset + first]
        head.flags.writeable = False
        if first == count:
            return (head,)
        tail = self._buffer[: count - first]
        tail.flags.writeable = False
        return (head, tail)

    def _remove(self, reader: RingReader) -> None:
        with self._cond:
            if reader in self._readers:
                self._readers.remove(reader)
                self._cond.notify_all()


class RingReader:
    """One consumer's position in an AudioRing. Use from one thread."""

    def __init__(self, ring: AudioRing, position: int) -> None:
        self._ring = ring
        self._position = position
        self._rewound = False

    @property
    def position(self) -> int:
        """Absolute index of the next sample this reader reads."""
        with self._ring._cond:
            return self._position

    @property
    def rewound(self) -> bool:
        """True from an interrupt() until take_rewind()."""
        with self._ring._cond:
            return self._rewound

    def take_rewind(self) -> int:
        """Acknowledges an interrupt() (the stage has re-synced); returns the ring's epoch."""
        with self._ring._cond:
            self._rewound = False
            return self._ring._epoch

    def _check_rewound(self) -> None:
        if self._rewound:
            raise ReaderRewound("the audio ring was rewound by an interrupt")

    def available(self) -> int:
        with self._ring._cond:
            return self._ring._write_pos - self._position

    @property
    def closed(self) -> bool:
        """True when the writer has ended the stream (there may still be samples to read)."""
        with self._ring._cond:
            return self._ring._closed

    @property
    def at_end(self) -> bool:
        """True when the ring is closed and this reader has read everything."""
        with self._ring._cond:
            return self._ring._closed and self._position >= self._ring._write_pos

    def wait(self, count: int = 1, timeout: float | None = None) -> int:
        """Blocks until `count` samples are available, the ring is closed, or `timeout` passes.

        Returns the number of samples available now (fewer than `count` at the end or on timeout; 0 at the
        end of the stream). Raises RingAborted when the ring is aborted, ReaderRewound after an interrupt().
        """
        ring = self._ring
        deadline = None if timeout is None else time.monotonic() + timeout
        with ring._cond:
            while True:
                if ring._aborted:
                    raise RingAborted("the audio ring was aborted")
                self._check_rewound()
                available = ring._write_pos - self._position
                if available >= count or ring._closed:
                    return available
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return available
                ring._cond.wait(remaining)

    def peek(self, count: int) -> tuple[np.ndarray, ...]:
        """Read-only zero-copy views of `count` samples (two across the wrap), valid until advance()."""
        with self._ring._cond:
            self._check_rewound()
            available = self._ring._write_pos - self._position
            if not 0 <= count <= available:
                raise ValueError(f"cannot peek {count} samples: {available} are available")
            return self._ring._views(self._position, count)

    def advance(self, count: int) -> None:
        """Releases the next `count` samples to the writer."""
        with self._ring._cond:
            self._check_rewound()  # what was peeked before the rewind may be gone: the stage re-syncs
            available = self._ring._write_pos - self._position
            if not 0 <= count <= available:
                raise ValueError(f"cannot advance {count} samples: {available} are available")
            self._position += count
            self._ring._cond.notify_all()

    def read(self, max_count: int, timeout: float | None = None) -> np.ndarray:
        """Waits for at least one sample and returns a copy of up to `max_count`; empty at the end/timeout."""
        available = self.wait(1, timeout)
        count = min(available, max_count)
        views = self.peek(count)
        out = np.concatenate(views) if len(views) > 1 else views[0].copy()
        self.advance(count)
        return out

    def close(self) -> None:
        """Unregisters: the writer no longer waits for this reader."""
        self._ring._remove(self)
