"""The CPU ledger (lipstream.server.cpu): a session's stage threads add their CPU time by part when they
end, the Wav2Lip batcher per batch, and /metrics serves it; the sessions bench (bench/bench_sessions.py)
reads it there."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from lipstream.server.cpu import LEDGER, PARTS, CpuLedger
from lipstream.server.lipsync.wav2lip import FrameBatcher
from lipstream.server.options import SessionOptions

from tests.servers import tiny_engine


def test_parts_are_added_and_unknown_ones_named() -> None:
    ledger = CpuLedger()
    ledger.add("jpeg", 0.25)
    ledger.add("jpeg", 0.5)
    ledger.add("vits", -1.0)  # a clock step backwards never subtracts
    assert ledger.snapshot()["jpeg"] == 0.75
    assert ledger.snapshot()["vits"] == 0.0
    with pytest.raises(KeyError, match="PARTS"):
        ledger.add("paste", 1.0)


def test_a_video_session_adds_its_parts_and_metrics_serves_them() -> None:
    engine = tiny_engine()
    before = LEDGER.snapshot()

    async def run() -> None:
        session = await engine.open_session(SessionOptions(video=True))
        await session.send_text("Hello there, how are you today?")
        await session.end_input()
        async for _ in session.events():
            pass

    try:
        asyncio.run(run())
    finally:
        engine.close()
    after = LEDGER.snapshot()
    grown = {part: after[part] - before[part] for part in PARTS}
    for part in ("renderer", "jpeg", "audio"):
        assert grown[part] > 0, f"{part} added nothing: {grown}"
    assert grown["vits"] >= 0 and grown["tts_wait"] >= 0
    text = engine.metrics.exposition().decode()
    assert 'lipstream_cpu_seconds_total{part="jpeg"}' in text


class _BusyModel:
    """Spins for a few milliseconds of CPU per call: the batcher thread's CPU, not wall time, must land."""

    device = "cpu"
    runtime = "busy"

    def infer(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        began = time.thread_time()
        while time.thread_time() - began < 0.02:
            pass
        return np.zeros((len(mel), 3, 96, 96), np.float32)


def test_the_wav2lip_batcher_adds_its_model_calls_while_it_runs() -> None:
    batcher = FrameBatcher(_BusyModel(), max_frames=4)
    batcher.start()
    try:
        before = LEDGER.snapshot()["wav2lip"]
        mel, face = np.zeros((2, 1, 80, 16), np.float32), np.zeros((2, 6, 96, 96), np.float32)
        for _ in range(3):
            batcher.submit(mel, face).result(10)
        grown = LEDGER.snapshot()["wav2lip"] - before  # read before the thread ends: per batch
    finally:
        batcher.stop()
    assert grown >= 3 * 0.02
