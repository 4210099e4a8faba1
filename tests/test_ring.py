"""AudioRing: wrap-around, several readers, back-pressure, close, interrupt, abort, threaded stress."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from lipstream.server.ring import AudioRing, ReaderRewound, RingAborted, RingClosed, RingInterrupted


def ramp(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32)


def test_views_are_zero_copy_and_split_across_the_wrap() -> None:
    ring = AudioRing(8)
    reader = ring.reader()
    ring.write(ramp(0, 6))
    assert reader.read(6).tolist() == list(range(6))
    ring.write(ramp(6, 5))  # positions 6..10 occupy slots 6, 7, 0, 1, 2
    views = reader.peek(5)
    assert len(views) == 2
    assert [len(v) for v in views] == [2, 3]
    assert np.concatenate(views).tolist() == list(range(6, 11))
    assert np.shares_memory(views[0], ring._buffer) and np.shares_memory(views[1], ring._buffer)
    assert not views[0].flags.writeable
    reader.advance(5)
    assert reader.position == 11 and ring.write_position == 11


def test_absolute_positions_keep_counting_over_many_wraps() -> None:
    ring = AudioRing(5)
    reader = ring.reader()
    received = []
    for start in range(0, 103, 3):
        ring.write(ramp(start, 3))
        received += reader.read(3).tolist()
    assert received == list(range(105))
    assert reader.position == 105


def test_readers_at_different_speeds_each_get_everything() -> None:
    ring = AudioRing(16)
    fast, slow = ring.reader(), ring.reader()
    ring.write(ramp(0, 10))
    assert fast.read(10).tolist() == list(range(10))
    assert slow.read(3).tolist() == [0, 1, 2]
    ring.write(ramp(10, 9))  # 19 written, slow at 3: exactly 16 held
    assert fast.read(100).tolist() == list(range(10, 19))
    assert slow.read(100).tolist() == list(range(3, 19))


def test_writer_blocks_until_the_slowest_reader_releases() -> None:
    ring = AudioRing(4)
    fast, slow = ring.reader(), ring.reader()
    ring.write(ramp(0, 4))
    fast.advance(4)
    with pytest.raises(TimeoutError):
        ring.write(ramp(4, 2), timeout=0.05)  # slow is a whole capacity behind
    assert ring.write_position == 4
    finished = threading.Event()

    def writer() -> None:
        ring.write(ramp(4, 2))
        finished.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert not finished.wait(0.05)
    assert slow.read(2).tolist() == [0, 1]  # frees two slots: the writer goes on
    thread.join(5)
    assert finished.is_set()
    assert slow.read(10).tolist() == [2, 3, 4, 5]


def test_close_lets_readers_drain_then_signals_the_end() -> None:
    ring = AudioRing(8)
    reader = ring.reader()
    ring.write(ramp(0, 3))
    ring.close()
    assert not reader.at_end
    assert reader.wait(10, timeout=1) == 3  # returns at once: the ring is closed
    assert reader.read(10).tolist() == [0, 1, 2]
    assert reader.at_end
    assert reader.wait(1, timeout=1) == 0
    with pytest.raises(RingClosed):
        ring.write(ramp(3, 1))


def test_interrupt_rewinds_to_a_point_and_tells_every_reader() -> None:
    ring = AudioRing(16)
    fast, slow = ring.reader(), ring.reader()
    ring.write(ramp(0, 10))
    fast.advance(6)
    slow.advance(2)
    epoch = ring.epoch
    assert ring.interrupt(4) == ring.epoch != epoch  # samples 4..9 are gone
    assert ring.write_position == 4
    assert fast.position == 4 and slow.position == 2  # the reader past 4 moved back, the other kept its place
    for reader in (fast, slow):
        assert reader.rewound
        with pytest.raises(ReaderRewound):
            reader.wait(1)
        with pytest.raises(ReaderRewound):
            reader.peek(0)
        with pytest.raises(ReaderRewound):
            reader.advance(0)
        assert reader.take_rewind() == ring.epoch and not reader.rewound
    with pytest.raises(RingInterrupted):
        ring.write(ramp(6, 1), epoch=epoch)
    ring.write(ramp(100, 3), epoch=ring.epoch)
    assert slow.read(100).tolist() == [2, 3, 100, 101, 102]  # the old samples before 4 are still valid
    assert fast.read(100).tolist() == [100, 101, 102]
    with pytest.raises(ValueError, match="cannot rewind to 8"):
        ring.interrupt(8)


def test_a_rewind_between_peek_and_advance_is_seen_at_advance() -> None:
    ring = AudioRing(8)
    reader = ring.reader()
    ring.write(ramp(0, 6))
    (view,) = reader.peek(6)
    assert view.tolist() == [0, 1, 2, 3, 4, 5]
    ring.interrupt(3)
    with pytest.raises(ReaderRewound):
        reader.advance(6)  # would have skipped samples that are about to be written again
    reader.take_rewind()
    assert reader.position == 0 and reader.read(100).tolist() == [0, 1, 2]  # the samples before 3 stay


def test_interrupt_releases_a_writer_blocked_on_back_pressure() -> None:
    ring = AudioRing(4)
    reader = ring.reader()
    ring.write(ramp(0, 4))
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            ring.write(ramp(4, 4), epoch=ring.epoch)
        except RingInterrupted as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join(0.05)
    ring.interrupt(0)
    thread.join(5)
    assert not thread.is_alive() and len(errors) == 1
    reader.take_rewind()
    assert reader.available() == 0  # nothing was read: all discarded, the reader sees the new end
    assert reader.position == 0 and ring.write_position == 0


def test_abort_ends_every_wait() -> None:
    ring = AudioRing(4)
    reader = ring.reader()
    ring.write(ramp(0, 4))
    outcomes: list[str] = []

    def blocked_writer() -> None:
        try:
            ring.write(ramp(4, 1))
        except RingAborted:
            outcomes.append("writer")

    def blocked_reader() -> None:
        other = ring.reader(4)
        try:
            other.wait(1)
        except RingAborted:
            outcomes.append("reader")

    threads = [threading.Thread(target=blocked_writer), threading.Thread(target=blocked_reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(0.05)
    ring.abort()
    for thread in threads:
        thread.join(5)
    assert sorted(outcomes) == ["reader", "writer"]
    with pytest.raises(RingAborted):
        reader.wait(1)


def test_a_reader_that_leaves_no_longer_holds_the_writer() -> None:
    ring = AudioRing(4)
    stays, leaves = ring.reader(), ring.reader()
    ring.write(ramp(0, 4))
    stays.advance(4)
    leaves.close()
    ring.write(ramp(4, 4), timeout=1)
    assert stays.read(10).tolist() == [4, 5, 6, 7]


def test_bad_requests_name_the_numbers() -> None:
    ring = AudioRing(4)
    reader = ring.reader()
    ring.write(ramp(0, 2))
    with pytest.raises(ValueError, match="cannot peek 3 samples: 2 are available"):
        reader.peek(3)
    with pytest.raises(ValueError, match="at least 1"):
        AudioRing(0)


def test_threaded_stress_every_sample_once_and_in_order() -> None:
    total = 200_000
    ring = AudioRing(1_000)
    readers = [ring.reader() for _ in range(3)]
    results: list[list[np.ndarray]] = [[] for _ in readers]
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 700, size=10_000)

    def write_all() -> None:
        position = 0
        for size in sizes:
            size = int(min(size, total - position))
            if size == 0:
                break
            ring.write(ramp(position, size), timeout=30)
            position += size
        ring.close()

    def read_all(index: int) -> None:
        reader = readers[index]
        step = (50, 333, 997)[index]
        for _ in range(total):  # bounded: every pass reads at least one sample or ends
            available = reader.wait(1, timeout=30)
            if available == 0:
                return
            count = min(available, step)
            results[index].append(np.concatenate(reader.peek(count)))
            reader.advance(count)

    threads = [threading.Thread(target=read_all, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=write_all))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    expected = np.arange(total, dtype=np.float32)
    for chunks in results:
        np.testing.assert_array_equal(np.concatenate(chunks), expected)
