"""What a lip-sync engine gives the lip-sync stage: a FrameRenderer per session, from its RendererFactory."""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from lipstream.server.clock import Clock
from lipstream.server.models_api import AvatarLike
from lipstream.server.mux import SessionStopped
from lipstream.server.timeline import UtteranceSpan

PendingT = TypeVar("PendingT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class FrameJob:
    """One frame to make: its index and the utterance that covers its first sample (None: silence)."""

    index: int
    span: UtteranceSpan | None


class FrameRenderer(Protocol[PendingT]):
    """The mouths of one session's frames. The stage feeds it the session's audio in order (from `origin`
    on), asks which frames have all the audio they need, and hands it frames in order, a batch at a time:
    `submit` starts a batch (possibly on another thread), `collect` returns its pictures. The stage makes
    the JPEGs, the idle frames and the events; a renderer makes only pictures.
    Used from the stage's thread only."""

    frames_per_batch: int
    """How many frames the stage submits at most at once."""

    def restart(self, origin: int) -> None:
        """The audio pushed from now on starts at session sample `origin` (the start, or where an interrupt
        moved the ring back to: what was pushed before is forgotten)."""

    def push(self, samples: np.ndarray) -> None:
        """The next samples (voice rate) of the session's audio; a view the renderer must copy to keep."""

    def finish(self) -> None:
        """The audio has ended: what was pushed is all there is."""

    def has_input(self, frame_index: int) -> bool:
        """True when all the audio frame `frame_index` needs has been pushed. Frames without it are still
        made at the end of a reply or of the audio, from what there is."""

    def submit(self, jobs: list[FrameJob]) -> PendingT:
        """Starts making these frames (consecutive, in order; their spans are None in silence)."""

    def collect(self, pending: PendingT, stopped: threading.Event) -> list[np.ndarray | None]:
        """The submitted frames' pictures (BGR, the avatar's size), in order; None: the avatar's frame as
        it is. Raises SessionStopped when `stopped` is set while it waits."""

    def cancel(self, pending: PendingT) -> None:
        """The stage will not collect this batch (the session stopped or was interrupted)."""


class RendererFactory(Protocol):
    """A lip-sync engine in the server process: its model, shared by every session, and their renderers."""

    realtime_lead_s: float
    """How far ahead of the wall clock the speech is made with REALTIME pacing: the audio context a frame
    needs past its own time, so that the frames keep up."""

    def renderer(self, avatar_name: str, avatar: AvatarLike, clock: Clock) -> FrameRenderer[Any]:
        """A new session's renderer."""

    def close(self) -> None:
        """Stops the engine's own workers (the server is shutting down)."""


def wait_for(future: concurrent.futures.Future[ResultT], stopped: threading.Event) -> ResultT:
    """The result of work a renderer handed to an engine's own thread (`collect`); raises SessionStopped
    once `stopped` is set while it waits."""
    while True:
        try:
            return future.result(timeout=0.5)
        except concurrent.futures.TimeoutError:
            if stopped.is_set():
                raise SessionStopped("the session was stopped") from None
