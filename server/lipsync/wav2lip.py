"""The Wav2Lip renderer: the official model's mouth for each frame, from the frame's mel window of the
session's audio, pasted back into the avatar frame. The frames of all sessions meet in one FrameBatcher,
which runs the model (one per process) on all that is waiting at once.

On a GPU the batcher pads each batch to a fixed size (1, 2, 4, ... frames: the runtime keeps a CUDA graph
per size) and pastes every session's mouths into their avatar frames on the device in the same pass
(lipstream.server.lipsync.gpu); on a CPU it runs batches as they come and each session pastes its own."""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from lipstream.server.clock import Clock
from lipstream.server.cpu import LEDGER
from lipstream.server.lipsync.renderer import FrameJob, wait_for
from lipstream.server.metrics import Metrics
from lipstream.server.models_api import AvatarLike, Wav2LipModel
from lipstream.server.options import EngineSettings
from lipstream.v1.enums import LipSyncEngine

if TYPE_CHECKING:
    from lipstream.models.wav2lip import FrameWindows, StreamingMel
    from lipstream.server.lipsync.gpu import DeviceCompositor, JpegBatcher

JpegEncoder = Callable[[np.ndarray, int], bytes]

log = logging.getLogger(__name__)

NAME = LipSyncEngine.WAV2LIP
FACE_INPUTS_KEPT = 16  # the model's face input is made once per avatar frame, for up to this many of them


def batch_buckets(max_frames: int) -> tuple[int, ...]:
    """1, 2, 4, ... below `max_frames`, then `max_frames`: the batch sizes a fixed-shape runtime sees."""
    sizes = [1 << k for k in range(max(1, max_frames).bit_length()) if 1 << k < max_frames]
    return (*sizes, max(1, max_frames))


def bucket_for(frames: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `frames`; `frames` itself past the largest (or with no buckets)."""
    return next((size for size in buckets if size >= frames), frames)


PasteTargets = Sequence[tuple[np.ndarray, Any]]
"""Per frame of a request: the avatar picture (H, W, 3) uint8 BGR and the face box the mouth goes into."""


@dataclass
class _Request:
    mel: np.ndarray
    face: np.ndarray
    future: concurrent.futures.Future[np.ndarray]
    paste: PasteTargets | None


class FrameBatcher:
    """Runs Wav2Lip for every session: each call takes the requests waiting now, up to `max_frames` frames.

    `buckets` (for a fixed-shape runtime, see batch_buckets): each batch of n frames runs padded to the
    smallest bucket that holds it, with copies of its last frame (the same face: no new face constants),
    and the padding's outputs are dropped. `compositor`: requests may ask for their mouths pasted into
    their avatar pictures on the compositor's device, all sessions' at once."""

    def __init__(
        self,
        engine: Wav2LipModel,
        max_frames: int = 32,
        *,
        buckets: Sequence[int] = (),
        compositor: DeviceCompositor | None = None,
    ) -> None:
        self._engine = engine
        self._max_frames = max_frames
        self.buckets = tuple(buckets)
        self.compositor = compositor
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._carried: _Request | None = None  # taken from the queue, did not fit the last batch
        self._thread = threading.Thread(target=self._run, name="lipstream-wav2lip-batcher", daemon=True)
        self.batches = 0
        self.on_batch: Callable[[int], None] = lambda frames: None
        """Told the frames of each model call (the engine's metrics)."""
        self.frames = 0
        self.padded_frames = 0
        """Frames run only to fill a bucket."""
        self._device_paste_failed = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._requests.put(None)
        self._thread.join(timeout)

    def submit(
        self, mel: np.ndarray, face: np.ndarray, paste: PasteTargets | None = None
    ) -> concurrent.futures.Future[np.ndarray]:
        """mel (N, 1, 80, 16), face (N, 6, 96, 96) float32 -> a future of (N, 3, 96, 96) float32; with
        `paste` (N pictures and boxes of one size), of the pasted pictures (N, H, W, 3) uint8."""
        if paste is not None and self.compositor is None:
            raise ValueError("this FrameBatcher has no device compositor: paste the outputs with paste_mouth")
        future: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()
        self._requests.put(_Request(mel, face, future, paste))
        return future

    def _take(self) -> list[_Request] | None:
        """The next batch: the requests waiting now, up to max_frames frames (at least one request)."""
        first = self._carried if self._carried is not None else self._requests.get()
        self._carried = None
        if first is None:
            return None
        batch = [first]
        frames = len(first.mel)
        while frames < self._max_frames:
            try:
                more = self._requests.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._requests.put(None)
                break
            if frames + len(more.mel) > self._max_frames:
                self._carried = more  # first in the next batch: a batch stays within its bucket
                break
            batch.append(more)
            frames += len(more.mel)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            live = [request for request in batch if request.future.set_running_or_notify_cancel()]
            if not live:
                continue
            began = time.thread_time()
            try:
                results = self._infer(live)
            except Exception as exc:
                for request in live:
                    request.future.set_exception(exc)
                continue
            finally:
                # Per batch, not at the thread's end: the batcher lives as long as the server.
                LEDGER.add("wav2lip", time.thread_time() - began)
            for request, result in zip(live, results, strict=True):
                request.future.set_result(result)

    def _infer(self, live: list[_Request]) -> list[np.ndarray]:
        mel = np.concatenate([request.mel for request in live])
        face = np.concatenate([request.face for request in live])
        frames = len(mel)
        padding = bucket_for(frames, self.buckets) - frames
        if padding:
            mel = np.concatenate([mel, np.repeat(mel[-1:], padding, axis=0)])
            face = np.concatenate([face, np.repeat(face[-1:], padding, axis=0)])
        out = self._engine.infer(mel, face)[:frames]
        self.batches += 1
        self.frames += frames
        self.padded_frames += padding
        self.on_batch(frames)
        bounds = np.cumsum([0] + [len(request.mel) for request in live])
        results = [out[start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
        pasting = [i for i, request in enumerate(live) if request.paste is not None]
        if pasting:
            targets = [target for i in pasting for target in live[i].paste or ()]
            pictures = self._paste(targets, np.concatenate([results[i] for i in pasting]))
            offset = 0
            for i in pasting:
                results[i] = np.stack(pictures[offset : offset + len(live[i].mel)])
                offset += len(live[i].mel)
        return results

    def _paste(self, targets: PasteTargets, outputs: np.ndarray) -> list[np.ndarray]:
        """On the compositor's device; on the CPU (paste_mouth, the same pixels) once that has failed."""
        if self.compositor is not None and not self._device_paste_failed:
            try:
                return self.compositor.paste([p for p, _ in targets], [b for _, b in targets], outputs)
            except Exception as exc:  # a device fails in many ways; the frames go on from the CPU
                self._device_paste_failed = True
                log.error("paste on %s failed (%r); the CPU pastes from now on", self.compositor.device, exc)
        from lipstream.models.wav2lip import paste_mouth

        return [paste_mouth(picture, box, out) for (picture, box), out in zip(targets, outputs, strict=True)]


class BatcherLike(Protocol):
    """What a renderer needs of the FrameBatcher (tests hand it their own)."""

    def submit(
        self, mel: np.ndarray, face: np.ndarray, paste: PasteTargets | None = None
    ) -> concurrent.futures.Future[np.ndarray]: ...


@dataclass
class _Batch:
    """Frames of one session submitted together; `future` is None when none of them is in speech."""

    jobs: list[FrameJob]
    speaking: list[int]
    future: concurrent.futures.Future[np.ndarray] | None
    pasted: bool = False  # the future holds pictures, pasted by the batcher on its device


class Wav2LipRenderer:
    """One session's frames: the mel of its audio as it arrives, batches of frames to the FrameBatcher."""

    frames_per_batch = 8

    def __init__(
        self,
        batcher: BatcherLike,
        avatar: AvatarLike,
        clock: Clock,
        *,
        device_paste: bool = False,
        jpeg_encoder: JpegEncoder | None = None,
    ) -> None:
        """`device_paste`: the batcher pastes the mouths on its device (it has a compositor);
        `jpeg_encoder`: how the stage encodes this session's frames (the device's JpegBatcher), None: the
        stage's own encode_jpeg."""
        self._batcher = batcher
        self._device_paste = device_paste
        self.jpeg_encoder = jpeg_encoder
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
            if self._device_paste:
                targets = [(self._avatar.frame(i), self._avatar.box(i)) for i in speaking]
                future = self._batcher.submit(windows[:, None], faces, targets)
            else:
                future = self._batcher.submit(windows[:, None], faces)
        return _Batch(jobs, speaking, future, pasted=self._device_paste)

    def collect(self, pending: _Batch, stopped: threading.Event) -> list[np.ndarray | None]:
        """Waits for the model's output, then pastes each mouth into its avatar frame."""
        from lipstream.models.wav2lip import paste_mouth

        outputs: dict[int, np.ndarray] = {}
        if pending.future is not None:
            result = wait_for(pending.future, stopped)
            outputs = dict(zip(pending.speaking, result, strict=True))
        pictures: list[np.ndarray | None] = []
        for job in pending.jobs:
            picture = None
            if job.span is not None:
                i = job.index
                if pending.pasted:
                    picture = outputs[i]
                else:
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

    def __init__(
        self,
        model: Wav2LipModel,
        max_batch_frames: int,
        *,
        fixed_shapes: bool = False,
        compositor: DeviceCompositor | None = None,
        jpeg: JpegBatcher | None = None,
    ) -> None:
        """`fixed_shapes`: the model keeps a graph per batch size (batches are padded to batch_buckets);
        `compositor`: the batcher pastes every session's mouths on this device; `jpeg`: the sessions'
        JPEGs are encoded in batches there (started here, stopped by close)."""
        self.model = model
        buckets = batch_buckets(max_batch_frames) if fixed_shapes else ()
        self.batcher = FrameBatcher(model, max_batch_frames, buckets=buckets, compositor=compositor)
        self.jpeg = jpeg
        self.batcher.start()
        if jpeg is not None:
            jpeg.start()

    def renderer(self, avatar_name: str, avatar: AvatarLike, clock: Clock) -> Wav2LipRenderer:
        device_paste = self.batcher.compositor is not None
        encoder = self.jpeg.encode if self.jpeg is not None else None
        return Wav2LipRenderer(self.batcher, avatar, clock, device_paste=device_paste, jpeg_encoder=encoder)

    def close(self) -> None:
        self.batcher.stop()
        if self.jpeg is not None:
            self.jpeg.stop()


def load(settings: EngineSettings, model: Wav2LipModel | None, metrics: Metrics) -> Wav2LipFactory | None:
    """The model `model` (tests) or the checkpoint --wav2lip-checkpoint names; None without either. On
    CUDA the batcher pads to fixed batch sizes when the runtime keeps graphs, and pastes on the GPU."""
    fixed_shapes = False
    compositor: DeviceCompositor | None = None
    jpeg: JpegBatcher | None = None
    if model is None:
        if not settings.wav2lip_checkpoint:
            return None
        from lipstream.models.wav2lip import Wav2LipEngine

        engine = Wav2LipEngine(settings.wav2lip_checkpoint, device=settings.device or None)
        checkpoint = settings.wav2lip_checkpoint
        log.info("Wav2Lip loaded from %s (%s, %s)", checkpoint, engine.device, engine.runtime)
        fixed_shapes = engine.fixed_shapes
        if engine.device.startswith("cuda"):
            compositor, jpeg = _device_path(engine.device)
        model = engine
    factory = Wav2LipFactory(
        model, settings.max_batch_frames, fixed_shapes=fixed_shapes, compositor=compositor, jpeg=jpeg
    )
    factory.batcher.on_batch = metrics.batch_frames.observe
    return factory


def _device_path(device: str) -> tuple[DeviceCompositor, JpegBatcher | None]:
    """The paste on `device`, and its JPEG encoder once it has encoded a test picture right (else None:
    the stages encode on the CPU)."""
    from lipstream.server.lipsync.gpu import DeviceCompositor, DeviceUnavailableError, JpegBatcher

    ys, xs = np.mgrid[0:128, 0:128]
    ramps = np.stack([2 * xs, 2 * ys, xs + ys], axis=2).astype(np.uint8)  # smooth: a JPEG keeps it well
    batcher = JpegBatcher(device)
    jpeg: JpegBatcher | None = batcher
    try:
        batcher.check(ramps)
    except DeviceUnavailableError as exc:
        log.warning("JPEG stays on the CPU: %s", exc)
        jpeg = None
    log.info("Wav2Lip on %s: paste on the device, JPEG on %s", device, device if jpeg else "the CPU")
    return DeviceCompositor(device), jpeg
