"""The viseme engine draws every session's mouths on its one thread: the same pictures as drawing them on the
session's own thread, its CPU in the ledger, a stopped session's wait ended, and the thread gone at close."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from lipstream.models.avatar import DEFAULT_AVATAR, load_avatar
from lipstream.models.viseme import AvatarMouth, MouthShape
from lipstream.server.clock import Clock
from lipstream.server.cpu import LEDGER
from lipstream.server.lipsync.renderer import FrameJob
from lipstream.server.lipsync.viseme import VisemeFactory
from lipstream.server.mux import SessionStopped
from lipstream.server.timeline import UtteranceSpan

RATE = 16000
FPS = 25.0


@pytest.fixture(scope="module")
def avatar() -> Any:
    return load_avatar(DEFAULT_AVATAR)


def _speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds), dtype=np.float32) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + seed)  # syllable-like loudness
    return (0.3 * envelope * rng.standard_normal(len(t))).astype(np.float32)


def _frames(factory: VisemeFactory, avatar: Any, audio: np.ndarray, count: int) -> list[np.ndarray | None]:
    clock = Clock(RATE, RATE, FPS)
    renderer = factory.renderer("default", avatar, clock)
    renderer.restart(0)
    renderer.push(audio)
    renderer.finish()
    span = UtteranceSpan(1, "audio in", 0, [], end=len(audio))  # no phonemes: the mouth from the audio
    pictures: list[np.ndarray | None] = []
    for index in range(count):
        pictures += renderer.collect(renderer.submit([FrameJob(index, span)]), threading.Event())
    return pictures


def test_sessions_mouths_drawn_on_one_thread_as_on_their_own(avatar: Any) -> None:
    factory = VisemeFactory()
    mouth = factory._avatar_mouth("default", avatar)
    render = mouth.render
    drawn: list[tuple[str, int, MouthShape]] = []  # (thread, frame index, shape) of every mouth drawn

    def recorded(index: int, shape: MouthShape) -> np.ndarray:
        drawn.append((threading.current_thread().name, index, shape))
        return render(index, shape)

    mouth.render = recorded  # type: ignore[method-assign]
    before = LEDGER.snapshot()["renderer"]
    try:
        sessions = [_frames(factory, avatar, _speech(1.0, seed), 20) for seed in (1, 2)]
    finally:
        factory.close()
    threads = {name for name, _, _ in drawn}
    assert len(threads) == 1 and next(iter(threads)).startswith("lipstream-viseme")
    assert LEDGER.snapshot()["renderer"] > before

    # Each picture equals the mouth drawn here, on this thread, with the shape the renderer chose.
    pictures = [picture for session in sessions for picture in session if picture is not None]
    assert len(pictures) == len(drawn) >= 20
    direct = AvatarMouth(avatar)
    for picture, (_, index, shape) in zip(pictures, drawn, strict=True):
        assert np.array_equal(picture, direct.render(index, shape))
    assert not np.array_equal(pictures[0], avatar.frame(drawn[0][1]))  # a mouth was drawn on it
    first = sum(picture is not None for picture in sessions[0])
    assert [d[2] for d in drawn[:first]] != [d[2] for d in drawn[first:]]  # each its own audio's


def test_stopped_session_stops_waiting_for_a_busy_drawer(avatar: Any) -> None:
    factory = VisemeFactory()
    clock = Clock(RATE, RATE, FPS)
    renderer = factory.renderer("default", avatar, clock)
    renderer.restart(0)
    renderer.push(_speech(0.5, 3))
    release = threading.Event()
    busy = factory._drawer.submit(release.wait, 10.0)  # another session's long batch holds the thread
    try:
        span = UtteranceSpan(1, "audio in", 0, [], end=RATE // 2)
        pending = renderer.submit([FrameJob(0, span)])
        stopped = threading.Event()
        stopped.set()
        with pytest.raises(SessionStopped):
            renderer.collect(pending, stopped)
        renderer.cancel(pending)
        assert pending.cancelled()  # never drawn: the stage will not collect it
    finally:
        release.set()
        busy.result(10)
        factory.close()


def test_close_ends_the_drawing_thread(avatar: Any) -> None:
    factory = VisemeFactory()
    _frames(factory, avatar, _speech(0.2, 4), 3)
    threads = list(factory._drawer._threads)  # type: ignore[attr-defined]
    assert threads and all(t.is_alive() and t.name.startswith("lipstream-viseme") for t in threads)
    factory.close()
    for thread in threads:
        thread.join(5)
    assert not any(t.is_alive() for t in threads)
