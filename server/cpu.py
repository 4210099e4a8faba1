"""Where the process's CPU goes, by part of the pipeline: each part adds its threads' CPU time.

The figures are per-thread CPU seconds (`time.thread_time`), not wall time: a stage that waits on the ring
or on flow control costs nothing here, and threads that share the cores do not inflate each other. A
stage thread adds its whole CPU time when it ends (less the parts it measured on its own), so the ledger
costs nothing per frame except where one thread does two parts (the lip-sync stage's renderer and JPEG).
`/metrics` serves the ledger as `lipstream_cpu_seconds_total{part=...}`; what no part claims (the event
loop's multiplexer, servicer and audio encoder, gRPC's threads, torch's own worker threads) is the
process's CPU time less their sum (bench/bench_sessions.py splits it by thread from /proc).
"""

from __future__ import annotations

import threading
import time

__all__ = ["PARTS", "CpuLedger", "LEDGER"]

PARTS = {
    "vits": "the VITS voice synthesizing clauses (TTS stage thread)",
    "tts_wait": "the TTS stage thread outside synthesis (REALTIME silence, waiting for text)",
    "renderer": "the lip-sync renderer and the stage around it: mouths, paste, patch regions",
    "jpeg": "JPEG encoding of frames and face patches",
    "wav2lip": "the Wav2Lip batcher thread: all sessions' model calls (not a runtime's own worker threads)",
    "audio": "the audio stage: resampling and packets (the encoder runs on the event loop, at sending)",
    "blendshapes": "the blendshape stage",
}


class CpuLedger:
    """CPU seconds by part, added from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = dict.fromkeys(PARTS, 0.0)

    def add(self, part: str, seconds: float) -> None:
        if part not in self._seconds:
            raise KeyError(f"unknown CPU part {part!r}: add it to lipstream.server.cpu.PARTS")
        with self._lock:
            self._seconds[part] += max(0.0, seconds)

    def add_thread(self, part: str, already_counted: float = 0.0) -> None:
        """The calling thread's CPU time since it began, less what it already added to other parts: call it
        once, as the thread ends."""
        self.add(part, time.thread_time() - already_counted)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._seconds)


LEDGER = CpuLedger()
"""The process's ledger: CPU time is a property of the process, whichever engine its threads serve."""
