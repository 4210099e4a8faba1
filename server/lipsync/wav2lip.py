"""The Wav2Lip renderer: the official model's mouth for each frame, from the frame's mel window of the
session's audio, pasted back into the avatar frame. The frames of all sessions meet in one FrameBatcher,
which runs the model (one per process) on all that is waiting at once."""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from lipstream.server.clock import Clock
from lipstream.server.lipsync.renderer import FrameJob
from lipstream.server.metrics import Metrics
from lipstream.server.models_api import AvatarLike, Wav2LipModel
from lipstream.server.mux import SessionStopped
from lipstream.server.options import EngineSettings
from lipstream.v1.enums import LipSyncEngine

if TYPE_CHECKING:
    from lipstream.models.wav2lip import FrameWindows, StreamingMel

log = logging.getLogger(__name__)

NAME = LipSyncEngine.WAV2LIP
FACE_INPUTS_KEPT = 16  # the model's face input is made once per avatar frame, for up to this many of them


class FrameBatcher:
    """Runs Wav2Lip for every session: each call takes all requests waiting now, up to `max_frames` frames."""

    def __init__(self, engine: Wav2LipModel, max_frames: int = 32) -> None:
        self._engine = engine
        self._max_frames = max_frames
        self._requests: queue.Queue[
            tuple[np.ndarray, np.ndarray, concurrent.futures.Future[np.ndarray]] | None
        ]
        self._requests = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lipstream-wav2lip-batcher", daemon=True)
        self.batches = 0
        self.on_batch: Callable[[int], None] = lambda frames: None
        """Told the frames of each model call (the engine's metrics)."""
        self.frames = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._requests.put(None)
        self._thread.join(timeout)

    def submit(self, mel: np.ndarray, face: np.ndarray) -> concurrent.futures.Future[np.ndarray]:
        """mel (N, 1, 80, 16), face (N, 6, 96, 96) float32 -> a future of (N, 3, 96, 96) float32."""
        future: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()
        self._requests.put((mel, face, future))
        return future

    def _run(self) -> None:
        while True:
            first = self._requests.get()
            if first is None:
                return
            batch = [first]
            frames = len(first[0])
            while frames < self._max_frames:
                try:
                    more = self._requests.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._requests.put(None)
                    break
                batch.append(more)
                frames += len(more[0])
            live = [item for item in batch if item[2].set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                out = self._engine.infer(
                    np.concatenate([m for m, _, _ in live]), np.concatenate([f for _, f, _ in live])
                )
            except Exception as exc:
                for _, _, future in live:
                    future.set_exception(exc)
                continue
            self.batches += 1
            self.frames += len(out)
            self.on_batch(len(out))
            offset = 0
            for mel, _, future in live:
                future.set_result(out[offset : offset + len(mel)])
                offset += len(mel)


class BatcherLike(Protocol):
    """What a renderer needs of the FrameBatcher (tests hand it their own)."""

    def submit(self, mel: np.ndarray, face: np.ndarray) -> concurrent.futures.Future[np.ndarray]: ...


@dataclass
class _Batch:
    """Frames of one session submitted together; `future` is None when none of them is in speech."""

    jobs: list[FrameJob]
    speaking: list[int]
    future: concurrent.futures.Future[np.ndarray] | None


class Wav2LipRenderer:
    """One session's frames: the mel of its audio as it arrives, batches of frames to the FrameBatcher."""

    frames_per_batch = 8

    def __init__(self, batcher: BatcherLike, avatar: AvatarLike, clock: Clock) -> None:
        self._batcher = batcher
        self._avatar = avatar
        self._clock = clock
        self._face_inputs: dict[int, np.ndarray] = {}  # by the avatar's source frame
        self._mel: StreamingMel | None = None  # from restart() on
        self._windows: FrameWindows | None = None

    def restart(self, origin: int) -> None:
        """The mel starts afresh at `origin`, with the official zero padding as its left context."""
        from lipstream.models.wav2lip import FrameWindows, StreamingMel

        self._mel = StreamingMel(self._clock.voice_rate)
        self._windows = FrameWindows(self._clock.fps, self._clock.voice_rate, origin)

    def push(self, samples: np.ndarray) -> None:
        self._stream()[0].push(samples)

    def finish(self) -> None:
        self._stream()[0].finish()

    def has_input(self, frame_index: int) -> bool:
        mel, windows = self._stream()
        return windows.complete(frame_index, mel)

    def _stream(self) -> tuple[StreamingMel, FrameWindows]:
        if self._mel is None or self._windows is None:
            raise RuntimeError("Wav2LipRenderer: restart() comes first")
        return self._mel, self._windows

    def submit(self, jobs: list[FrameJob]) -> _Batch:
        """Sends the speaking frames among `jobs` to the model; frames outside speech need none."""
        speaking = [job.index for job in jobs if job.span is not None]
        future = None
        if speaking:
            mel, frame_windows = self._stream()
            windows = np.stack([frame_windows.window(i, mel) for i in speaking])
            faces = np.stack([self._face_input(i) for i in speaking])
            future = self._batcher.submit(windows[:, None], faces)
        return _Batch(jobs, speaking, future)

    def collect(self, pending: _Batch, stopped: threading.Event) -> list[np.ndarray | None]:
        """Waits for the model's output, then pastes each mouth into its avatar frame."""
        from lipstream.models.wav2lip import paste_mouth

        outputs: dict[int, np.ndarray] = {}
        if pending.future is not None:
            while True:
                try:
                    result = pending.future.result(timeout=0.5)
                    break
                except concurrent.futures.TimeoutError:
                    if stopped.is_set():
                        raise SessionStopped("the session was stopped") from None
            outputs = dict(zip(pending.speaking, result, strict=True))
        pictures: list[np.ndarray | None] = []
        for job in pending.jobs:
            picture = None
            if job.span is not None:
                i = job.index
                picture = paste_mouth(self._avatar.frame(i), self._avatar.box(i), outputs[i])
            pictures.append(picture)
        return pictures

    def cancel(self, pending: _Batch) -> None:
        if pending.future is not None:  # the batcher skips a cancelled batch, or drops its result
            pending.future.cancel()

    def _face_input(self, frame_index: int) -> np.ndarray:
        """The model's face input for a frame, made once per source frame."""
        from lipstream.models.wav2lip import face_input

        source = self._avatar.source_index(frame_index)
        face = self._face_inputs.get(source)
        if face is None:
            face = face_input(self._avatar.face_crop(frame_index))
            if len(self._face_inputs) < FACE_INPUTS_KEPT:
                self._face_inputs[source] = face
        return face


class Wav2LipFactory:
    """The process's Wav2Lip model behind its FrameBatcher, and its sessions' renderers."""

    realtime_lead_s = 0.25  # a frame's mel window reaches 0.2 s past the frame's time

    def __init__(self, model: Wav2LipModel, max_batch_frames: int) -> None:
        self.model = model
        self.batcher = FrameBatcher(model, max_batch_frames)
        self.batcher.start()

    def renderer(self, avatar_name: str, avatar: AvatarLike, clock: Clock) -> Wav2LipRenderer:
        return Wav2LipRenderer(self.batcher, avatar, clock)

    def close(self) -> None:
        self.batcher.stop()


def load(settings: EngineSettings, model: Wav2LipModel | None, metrics: Metrics) -> Wav2LipFactory | None:
    """The model `model` (tests) or the checkpoint --wav2lip-checkpoint names; None without either."""
    if model is None:
        if not settings.wav2lip_checkpoint:
            return None
        from lipstream.models.wav2lip import Wav2LipEngine

        engine = Wav2LipEngine(settings.wav2lip_checkpoint, device=settings.device or None)
        checkpoint = settings.wav2lip_checkpoint
        log.info("Wav2Lip loaded from %s (%s, %s)", checkpoint, engine.device, engine.runtime)
        model = engine
    factory = Wav2LipFactory(model, settings.max_batch_frames)
    factory.batcher.on_batch = metrics.batch_frames.observe
    return factory
