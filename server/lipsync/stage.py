"""The lip-sync stage: reads the session's ring (the same samples the audio stage sends) and makes frames.

Frame i shows media time i / fps. The stage feeds the ring's audio to the session's FrameRenderer (the
engine's part: Wav2Lip, visemes, ...), and a frame is made as soon as the renderer has the audio it needs,
or at the end of a reply or of the audio with what there is. Frames in silence are the avatar as it is,
encoded once per avatar frame. While the renderer makes one batch (Wav2Lip: on the batcher's thread), the
stage encodes the one before, so the two overlap.

After an interrupt the stage goes on from the first frame the client has not received (frames made past it
are made again); the frames up to the next utterance are idle (the timeline is cut there). The renderer
starts afresh at the reader's position then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import simplejpeg
from lipstream.server.clock import Clock, Rewind
from lipstream.server.cpu import LEDGER
from lipstream.server.events import FrameEvent
from lipstream.server.lipsync.patches import Patch, PatchCoder
from lipstream.server.lipsync.renderer import FrameJob, FrameRenderer
from lipstream.server.models_api import AvatarLike, IdleLifeLike
from lipstream.server.mux import Multiplexer
from lipstream.server.ring import RingReader
from lipstream.server.stage import StageFigures, StageWorker
from lipstream.server.timeline import Timeline, UtteranceSpan
from lipstream.v1.enums import FrameMode

IDLE_JPEGS_KEPT = 256  # idle frames encoded once per avatar frame, for avatars of up to this many frames


def encode_jpeg(frame_bgr: np.ndarray, quality: int) -> bytes:
    """JPEG with libjpeg-turbo through simplejpeg, at 4:2:0 and the fast DCT (as video codecs do): the
    fastest encoder of those bench_wav2lip compares, at the subsampling browsers and players expect."""
    image = np.ascontiguousarray(frame_bgr)
    jpeg: bytes = simplejpeg.encode_jpeg(image, quality, "BGR", colorsubsampling="420", fastdct=True)
    return jpeg


@dataclass
class _Submitted:
    jobs: list[FrameJob]
    pending: Any  # the renderer's handle
    submit_s: float  # this thread's time spent submitting


class LipSyncStage(StageWorker):
    """One session's frames, in order, from the ring; idle frames (the avatar as is) outside utterances."""

    cpu_part = "renderer"  # less the JPEG time, which _encode adds to its own part

    def __init__(
        self,
        reader: RingReader,
        timeline: Timeline,
        mux: Multiplexer,
        avatar: AvatarLike,
        renderer: FrameRenderer[Any],
        *,
        clock: Clock,
        jpeg_quality: int,
        tts_idle: Callable[[], bool],
        frame_mode: FrameMode = FrameMode.FULL_FRAME,
        life: IdleLifeLike | None = None,
    ) -> None:
        """`life`: blinks and breathing drawn on every frame (lipstream.models.avatar.life), None for the
        avatar as it is."""
        self._life = life
        self._timeline = timeline
        self._avatar = avatar
        self._renderer = renderer
        self._clock = clock
        self._fps = clock.fps
        self._quality = jpeg_quality
        # An engine on a GPU may encode there, in batches across sessions (Wav2LipRenderer.jpeg_encoder).
        self._jpeg: Callable[[np.ndarray, int], bytes]
        self._jpeg = getattr(renderer, "jpeg_encoder", None) or encode_jpeg
        self._tts_idle = tts_idle
        self._idle_jpegs: dict[tuple[int, object], bytes] = {}  # (id of the avatar frame, life key)
        self._idle_pictures: dict[tuple[int, object], np.ndarray] = {}  # the same, drawn (shared, read-only)
        self._patches = PatchCoder(self._encode) if frame_mode == FrameMode.FACE_PATCH else None
        self.figures = StageFigures()
        self._first_frame = 0  # where _work starts: 0, or after an interrupt the first frame not sent
        self._frame_spans: dict[int, UtteranceSpan | None] = {}  # looked up, not yet submitted
        self._next_noted = 0  # the next frame whose utterance is to be looked up
        super().__init__("lipstream-lipsync", "lip sync", reader, mux)

    def frame_start(self, frame_index: int) -> int:
        """The first sample (voice rate, session clock) of frame `frame_index`."""
        return self._clock.frame_start(frame_index)

    def _rewound(self, rewind: Rewind) -> None:
        self._first_frame = rewind.next_frame
        if self._patches is not None:
            self._patches.reset()  # the client never got the frames made past the interrupt

    def _work(self) -> None:
        renderer = self._renderer
        renderer.restart(self._reader.position)
        finished = False
        frame_index = self._first_frame  # the next frame to submit
        end_sample = self._reader.position  # one past the last sample pushed to the renderer
        in_flight: _Submitted | None = None  # submitted to the renderer, not yet encoded
        submitted: _Submitted | None = None
        self._frame_spans.clear()
        self._next_noted = frame_index
        try:
            while not self._stopped.is_set():
                reply_ended = False  # the TTS has nothing more for now and all its audio is pushed
                if not finished:
                    # With a batch in flight, take only the audio already there: that batch comes first.
                    available = self._reader.wait(1, timeout=0.0 if in_flight else 0.1)
                    reply_ended = available == 0 and self._tts_idle() and self._reader.available() == 0
                    if available:
                        self._note_spans(self._reader.position + available)
                        for view in self._reader.peek(available):
                            renderer.push(view)
                        self._reader.advance(available)
                        end_sample = self._reader.position
                    elif self._reader.at_end:
                        renderer.finish()
                        finished = True
                ready = self._ready_frames(frame_index, end_sample, finished or reply_ended)
                # The next batch goes to the renderer before this thread encodes the one in flight, so the two
                # overlap. While a batch is in flight, flow control is only asked, not awaited: waiting would
                # hold back frames that are already made.
                submitted = None
                if ready and self._wait_flow(ready[0] / self._fps, 0.0 if in_flight else 0.2):
                    submitted = self._submit(ready)
                    frame_index = ready[-1] + 1
                if in_flight is not None:
                    self._finish(in_flight)
                in_flight = submitted
                if in_flight is None and not ready and finished:
                    break
        finally:
            for batch in (in_flight, submitted):
                if batch is not None:
                    renderer.cancel(batch.pending)
        self._mux.finish("video")

    def _ready_frames(self, first: int, end_sample: int, at_end: bool) -> list[int]:
        """Frames from `first` on (a batch at most) whose audio the renderer has, or, at the end of a reply
        or of the audio (`at_end`), that have begun."""
        ready: list[int] = []
        index = first
        while len(ready) < self._renderer.frames_per_batch:
            if self.frame_start(index) >= end_sample:
                break
            if not at_end and not self._renderer.has_input(index):
                break
            ready.append(index)
            index += 1
        return ready

    def _note_spans(self, end_sample: int) -> None:
        """The utterance of each frame that begins before `end_sample`, looked up before this reader moves
        past those samples: once every reader is past a span's end, the TTS stage forgets it."""
        while (start := self.frame_start(self._next_noted)) < end_sample:
            self._frame_spans[self._next_noted] = self._timeline.at(start)[0]
            self._next_noted += 1

    def _span_of(self, frame_index: int) -> UtteranceSpan | None:
        start = self.frame_start(frame_index)
        if frame_index in self._frame_spans:
            span = self._frame_spans.pop(frame_index)
        else:
            span = self._timeline.at(start)[0]
        if span is not None and span.end is not None and start >= span.end:  # an interrupt cut it since
            return None
        return span

    def _submit(self, indices: list[int]) -> _Submitted:
        began = time.perf_counter()
        jobs = [FrameJob(i, self._span_of(i)) for i in indices]
        pending = self._renderer.submit(jobs)
        return _Submitted(jobs, pending, time.perf_counter() - began)

    def _finish(self, batch: _Submitted) -> None:
        """Waits for the batch's pictures, then encodes and emits its frames in order."""
        began = time.perf_counter()
        pictures = self._renderer.collect(batch.pending, self._stopped)
        # This thread's time on the batch: submitting it and waiting for the renderer (overlapped work is not
        # counted twice), shared by its frames, plus each frame's JPEG.
        waited = (batch.submit_s + time.perf_counter() - began) / len(batch.jobs)
        for job, picture in zip(batch.jobs, pictures, strict=True):
            started = time.perf_counter()
            if picture is not None and self._life is not None:
                picture = self._life.apply(picture, self._life.key(job.index))
            if self._patches is not None:
                still = picture is None
                whole = self._idle_picture(job.index) if picture is None else picture
                patch = self._patches.encode(job.index, whole, still=still)
            else:
                patch = Patch(self._idle_jpeg(job.index) if picture is None else self._encode(picture))
            speaking = job.span is not None
            self._emit(job.index, patch, job.span, speaking, waited + time.perf_counter() - started)

    def _idle_key(self, frame_index: int) -> tuple[int, object]:
        frame = self._avatar.frame(frame_index)
        return id(frame), self._life.key(frame_index) if self._life is not None else None

    def _idle_picture(self, frame_index: int) -> np.ndarray:
        """The avatar's frame with its idle life drawn: one shared array per frame and life state."""
        key = self._idle_key(frame_index)
        picture = self._idle_pictures.get(key)
        if picture is None:
            frame = self._avatar.frame(frame_index)
            picture = frame if self._life is None else self._life.apply(frame, self._life.key(frame_index))
            if len(self._idle_pictures) < IDLE_JPEGS_KEPT:
                self._idle_pictures[key] = picture
        return picture

    def _idle_jpeg(self, frame_index: int) -> bytes:
        key = self._idle_key(frame_index)
        jpeg = self._idle_jpegs.get(key)
        if jpeg is None:
            jpeg = self._encode(self._idle_picture(frame_index))
            if len(self._idle_jpegs) < IDLE_JPEGS_KEPT:
                self._idle_jpegs[key] = jpeg
        return jpeg

    def _encode(self, picture: np.ndarray) -> bytes:
        began = time.thread_time()
        jpeg = self._jpeg(picture, self._quality)
        spent = time.thread_time() - began
        self._cpu_counted += spent
        LEDGER.add("jpeg", spent)
        return jpeg

    def _emit(
        self, frame_index: int, patch: Patch, span: UtteranceSpan | None, speaking: bool, spent: float
    ) -> None:
        self.figures.compute_s += spent
        self.figures.media_samples = self.frame_start(frame_index + 1)
        utterance_id = span.utterance_id if span is not None else 0
        pts = frame_index / self._fps
        event = FrameEvent(
            patch.jpeg, frame_index, pts, self._avatar.width, self._avatar.height, utterance_id, speaking,
            patch.x, patch.y, patch.repeat_of,
        )
        self._mux.push("video", event, pts, epoch=self._epoch)
        self._mux.watermark("video", (frame_index + 1) / self._fps, epoch=self._epoch)
