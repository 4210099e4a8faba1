"""The viseme renderer: no model weights; the utterance's phoneme timings and the loudness of each frame's
own audio shape a mouth drawn on the avatar (lipstream.models.viseme).

Each session's thread works out its frames' mouth shapes from its own audio; one thread of the engine draws
the mouths of every session. Drawn on each session's own thread, the many short numpy and OpenCV calls of a
mouth handed the GIL from session to session at every call, which cost more CPU than the drawing
(bench/FIGURES.md)."""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
from lipstream.server.clock import Clock
from lipstream.server.cpu import LEDGER
from lipstream.server.lipsync.renderer import FrameJob, wait_for
from lipstream.server.metrics import Metrics
from lipstream.server.models_api import AvatarLike, MouthLike
from lipstream.server.options import EngineSettings
from lipstream.server.timeline import UtteranceSpan
from lipstream.v1.enums import LipSyncEngine

if TYPE_CHECKING:
    from lipstream.models.viseme import AvatarMouth, MouthShape

NAME = LipSyncEngine.VISEME


class VisemeRenderer:
    """One session's mouths: each frame's shape from the viseme at its middle sample and its audio's level."""

    frames_per_batch = 1  # each frame is drawn as soon as its audio is in

    def __init__(self, mouth: MouthLike, clock: Clock, drawer: concurrent.futures.Executor) -> None:
        self._mouth = mouth  # the avatar's AvatarMouth (its avatar.json placement), shared by sessions
        self._clock = clock
        self._drawer = drawer  # the engine's thread that draws every session's mouths
        self._chunks: collections.deque[np.ndarray] = collections.deque()  # the audio no frame has used yet
        self._start = 0  # the session sample of the first kept sample
        self._end = 0  # one past the last sample pushed

    def restart(self, origin: int) -> None:
        self._chunks.clear()
        self._start = self._end = origin

    def push(self, samples: np.ndarray) -> None:
        if len(samples):
            self._chunks.append(np.array(samples, dtype=np.float32))
            self._end += len(samples)

    def finish(self) -> None:
        pass

    def has_input(self, frame_index: int) -> bool:
        return self._end >= self._clock.frame_start(frame_index + 1)

    def submit(self, jobs: list[FrameJob]) -> concurrent.futures.Future[list[np.ndarray | None]]:
        return self._drawer.submit(self._draw, jobs, [self._shape(job) for job in jobs])

    def collect(
        self, pending: concurrent.futures.Future[list[np.ndarray | None]], stopped: threading.Event
    ) -> list[np.ndarray | None]:
        return wait_for(pending, stopped)

    def cancel(self, pending: concurrent.futures.Future[list[np.ndarray | None]]) -> None:
        pending.cancel()

    def _shape(self, job: FrameJob) -> MouthShape | None:
        """The frame's mouth, None for the avatar as it is."""
        from lipstream.models.viseme import MouthShape, loudness
        from lipstream.models.viseme.audio import audio_mouth_shape

        start, stop = self._clock.frame_start(job.index), self._clock.frame_start(job.index + 1)
        # The frame's own audio: after an interrupt moved the frame index back before the audio's start,
        # none (those frames are idle: the timeline is cut there); at the end of a reply, what there is.
        window = self._take(start, stop)
        if job.span is None:
            return None
        if job.span.phonemes:
            # The frame is on screen for its whole span: the viseme at its middle is heard most.
            middle = (start + stop) // 2
            shape = self._mouth_shape(job.span, middle, loudness(window) if len(window) else 0.0)
        else:  # the client's own speech (audio in): no phoneme timings, the mouth from the audio
            shape = audio_mouth_shape(window, self._clock.voice_rate)
        return None if shape == MouthShape.CLOSED else shape  # pauses inside speech: the avatar as it is

    def _draw(self, jobs: list[FrameJob], shapes: list[MouthShape | None]) -> list[np.ndarray | None]:
        """On the drawer's thread."""
        began = time.thread_time()
        try:
            return [
                None if shape is None else self._mouth.render(job.index, shape)
                for job, shape in zip(jobs, shapes, strict=True)
            ]
        finally:
            # Per batch: the drawer lives as long as the server.
            LEDGER.add("renderer", time.thread_time() - began)

    def _take(self, start: int, stop: int) -> np.ndarray:
        """The kept samples in [start, stop); forgets every sample before `stop`."""
        self._drop(start)
        count = max(0, min(stop, self._end) - self._start)
        parts = []
        while count > 0 and self._chunks:
            head = self._chunks[0]
            if len(head) > count:
                parts.append(head[:count])
                self._chunks[0] = head[count:]
                self._start += count
                break
            parts.append(self._chunks.popleft())
            self._start += len(head)
            count -= len(head)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def _drop(self, before: int) -> None:
        while self._start < before and self._chunks:
            head = self._chunks[0]
            skip = min(len(head), before - self._start)
            if skip == len(head):
                self._chunks.popleft()
            else:
                self._chunks[0] = head[skip:]
            self._start += skip
        self._start = max(self._start, min(before, self._end))

    def _mouth_shape(self, span: UtteranceSpan, sample: int, level: float) -> MouthShape:
        from lipstream.models.viseme import MouthTrack

        track = span.cache.get("track")
        if track is None:
            track = span.cache["track"] = MouthTrack(span.visemes(), self._clock.voice_rate)
        return track.shape_at(sample, level)


class VisemeFactory:
    """The viseme engine of the process: one mouth renderer per avatar, shared by its sessions."""

    realtime_lead_s = 0.1

    def __init__(self) -> None:
        self._mouths: dict[str, AvatarMouth] = {}  # avatar name -> its renderers per source frame
        self._lock = threading.Lock()
        self._drawer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lipstream-viseme")

    def renderer(self, avatar_name: str, avatar: AvatarLike, clock: Clock) -> VisemeRenderer:
        return VisemeRenderer(self._avatar_mouth(avatar_name, avatar), clock, self._drawer)

    def _avatar_mouth(self, avatar_name: str, avatar: AvatarLike) -> MouthLike:
        """The viseme renderer of an avatar (its avatar.json mouth placement), shared by its sessions."""
        from lipstream.models.viseme import AvatarMouth

        with self._lock:
            mouth = self._mouths.get(avatar_name)
            if mouth is None or mouth.avatar is not avatar:
                mouth = self._mouths[avatar_name] = AvatarMouth(avatar)
            return mouth

    def close(self) -> None:
        self._drawer.shutdown(wait=False, cancel_futures=True)


def load(settings: EngineSettings, model: None, metrics: Metrics) -> VisemeFactory:
    """Always there: it needs no weights."""
    return VisemeFactory()
