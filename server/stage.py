"""StageWorker: the base of the stages that read the session's ring (audio packetizer, lip sync).

Each stage is one worker thread owned by the Session: it starts it, stops it (stop flag, ring abort) and
joins it. Stages talk through the ring (audio), the Timeline (which utterance covers which samples) and the
Multiplexer (events out).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from lipstream.server.clock import Rewind
from lipstream.server.cpu import LEDGER
from lipstream.server.mux import Multiplexer, SessionStopped, StageFailed
from lipstream.server.ring import ReaderRewound, RingAborted, RingReader

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
