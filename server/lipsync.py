"""The lip-sync stage: reads the session's ring (the same samples the WAV packetizer sends) and makes frames.

Frame i shows media time i / fps. With Wav2Lip, its input is the official mel window (16 mel columns from
column int(i * 80 / fps)), computed incrementally from the ring's audio; frames of all sessions are batched
into one model call by the engine's FrameBatcher. Without a checkpoint, the viseme renderer shapes the
mouth from the utterance's phoneme timings and the loudness of the frame's own audio. A frame goes out as
soon as the audio its input needs is in the ring.

After an interrupt the stage goes on from the first frame the client has not received (frames made past it
are made again); the frames up to the next utterance are idle (the timeline is cut there). Wav2Lip's mel
starts afresh at the reader's position then, with the official zero padding as its left context.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import simplejpeg
from lipstream.server.events import FrameEvent
from lipstream.server.mux import Multiplexer, SessionStopped
from lipstream.server.pipeline import StageFigures, StageWorker, Timeline, UtteranceSpan
from lipstream.server.ring import RingReader

log = logging.getLogger(__name__)

WAV2LIP_WINDOW_COLUMNS = 16


def encode_jpeg(frame_bgr: np.ndarray, quality: int) -> bytes:
    """JPEG with libjpeg-turbo through simplejpeg, at 4:2:0 and the fast DCT (as video codecs do).

    Measured on the 512x512 avatar at q80 (bench_wav2lip, 2 shared cores, five runs, faster in each):
    1110-1264 frames/s against OpenCV at 4:2:0 1006-1229 (OpenCV's default subsampling; libjpeg-turbo
    underneath both, and both release the GIL), and 620-650 frames/s for simplejpeg at 4:4:4, exact DCT.
    """
    image = np.ascontiguousarray(frame_bgr)
    return simplejpeg.encode_jpeg(image, quality, "BGR", colorsubsampling="420", fastdct=True)


@dataclass
class _Batch:
    """Frames of one session submitted together; `future` is None when none of them is in speech."""

    indices: list[int]
    spans: list[UtteranceSpan | None]
    speaking: list[int]
    future: concurrent.futures.Future[np.ndarray] | None
    submit_s: float  # this thread's time spent preparing the model inputs


class FrameBatcher:
    """Runs Wav2Lip for every session: each call takes all requests waiting now, up to `max_frames` frames."""

    def __init__(self, engine: Any, max_frames: int = 32) -> None:
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


class LipSyncStage(StageWorker):
    """One session's frames, in order, from the ring; idle frames (the avatar as is) outside utterances."""

    def __init__(
        self,
        reader: RingReader,
        timeline: Timeline,
        mux: Multiplexer,
        avatar: Any,
        *,
        sample_rate: int,
        fps: float,
        jpeg_quality: int,
        batcher: FrameBatcher | None,
        mouth: Any,
        tts_idle: Callable[[], bool],
    ) -> None:
        self._timeline = timeline
        self._avatar = avatar
        self._rate = sample_rate
        self._fps = fps
        self._quality = jpeg_quality
        self._batcher = batcher
        self._mouth = mouth  # the avatar's AvatarMouth (its avatar.json placement), shared by sessions
        self._tts_idle = tts_idle
        self._idle_jpegs: dict[int, bytes] = {}
        self._face_inputs: dict[int, np.ndarray] = {}  # by the avatar's source frame
        self.figures = StageFigures()
        self._first_frame = 0  # where _work starts: 0, or after an interrupt the first frame not sent
        super().__init__("lipstream-lipsync", "lip sync", reader, mux)

    def frame_start(self, frame_index: int) -> int:
        """The first sample (voice rate, session clock) of frame `frame_index`."""
        return round(frame_index * self._rate / self._fps)

    def _rewound(self, target: int) -> None:
        self._first_frame = target

    def _work(self) -> None:
        if self._batcher is None:
            self._run_viseme()
        else:
            self._run_wav2lip()
        self._mux.finish("video")

    # -- viseme renderer ---------------------------------------------------------------------------------
    def _run_viseme(self) -> None:
        from lipstream.models.viseme import MouthShape, loudness

        frame_index = self._first_frame
        while not self._stopped.is_set():
            if not self._wait_flow(frame_index / self._fps):
                continue
            start, stop = self.frame_start(frame_index), self.frame_start(frame_index + 1)
            # <= start; < start after a frame made at the end of a reply; > start after an interrupt moved
            # the frame index back before the reader (those frames are idle: the timeline is cut there).
            position = self._reader.position
            needed = stop - position
            available = self._reader.wait(needed, timeout=0.05)
            if available < needed and not self._reader.closed:
                # The frame's audio is not all there: wait, unless the TTS has nothing more to say for now
                # (the end of a reply) and the frame has begun: then it is made from the audio there is.
                if position + available <= start or not self._tts_idle():
                    continue
            elif position + available <= start:
                break  # the stream has ended before this frame
            began = time.perf_counter()
            begin = max(start, position)
            self._reader.advance(begin - position)
            count = max(0, min(position + available, stop) - begin)
            views = self._reader.peek(count)
            window = np.concatenate(views) if len(views) > 1 else views[0]
            span, _ = self._timeline.at(start)
            if span is None:
                jpeg, speaking = self._idle_jpeg(frame_index), False
            else:
                shape = self._mouth_shape(span, start, loudness(window) if count else 0.0)
                speaking = True
                if shape == MouthShape.CLOSED:  # pauses inside speech: the avatar as it is, encoded once
                    jpeg = self._idle_jpeg(frame_index)
                else:
                    jpeg = encode_jpeg(self._render_viseme(frame_index, shape), self._quality)
            self._reader.advance(count)
            self._emit(frame_index, jpeg, span, speaking, time.perf_counter() - began)
            frame_index += 1

    def _mouth_shape(self, span: UtteranceSpan, sample: int, level: float) -> Any:
        from lipstream.models.viseme import MouthTrack

        track = span.cache.get("track")
        if track is None:
            track = MouthTrack(span.visemes(), self._rate)
            span.cache["track"] = track
        return track.shape_at(sample, level)

    def _render_viseme(self, frame_index: int, shape: Any) -> np.ndarray:
        return self._mouth.render(frame_index, shape)

    def _idle_jpeg(self, frame_index: int) -> bytes:
        frame = self._avatar.frame(frame_index)
        jpeg = self._idle_jpegs.get(id(frame))
        if jpeg is None:
            jpeg = encode_jpeg(frame, self._quality)
            if len(self._idle_jpegs) < 256:
                self._idle_jpegs[id(frame)] = jpeg
        return jpeg

    def _emit(
        self, frame_index: int, jpeg: bytes, span: UtteranceSpan | None, speaking: bool, spent: float
    ) -> None:
        self.figures.compute_s += spent
        self.figures.media_samples = self.frame_start(frame_index + 1)
        utterance_id = span.utterance_id if span is not None else 0
        pts = frame_index / self._fps
        event = FrameEvent(
            jpeg, frame_index, pts, self._avatar.width, self._avatar.height, utterance_id, speaking
        )
        self._mux.push("video", event, pts, epoch=self._epoch)
        self._mux.watermark("video", (frame_index + 1) / self._fps, epoch=self._epoch)

    # -- Wav2Lip -----------------------------------------------------------------------------------------
    def _run_wav2lip(self) -> None:
        from lipstream.models.wav2lip import StreamingMel

        mel = StreamingMel(self._rate)
        mel_origin = self._reader.position  # the session sample of the mel's sample 0 (not 0 after a rewind)
        finished = False
        frame_index = self._first_frame  # the next frame to submit
        end_sample = mel_origin
        in_flight: _Batch | None = None  # submitted to the model, not yet pasted and encoded
        submitted: _Batch | None = None
        try:
            while not self._stopped.is_set():
                reply_ended = False  # the TTS has nothing more for now and all its audio is in the mel
                if not finished:
                    # With a batch in flight, take only the audio already there: that batch comes first.
                    available = self._reader.wait(1, timeout=0.0 if in_flight else 0.1)
                    reply_ended = available == 0 and self._tts_idle() and self._reader.available() == 0
                    if available:
                        views = self._reader.peek(available)
                        for view in views:
                            mel.push(view)
                        self._reader.advance(available)
                        end_sample = self._reader.position
                    elif self._reader.at_end:
                        mel.finish()
                        finished = True
                ready = self._ready_frames(mel, mel_origin, frame_index, end_sample, finished, reply_ended)
                # The next batch goes to the model (the batcher's thread) before this thread pastes and
                # encodes the one in flight, so the two overlap. While a batch is in flight, flow control is
                # only asked, not awaited: waiting would hold back frames the model has already made.
                submitted = None
                if ready and self._wait_flow(ready[0] / self._fps, 0.0 if in_flight else 0.2):
                    submitted = self._submit(mel, mel_origin, ready)
                    frame_index = ready[-1] + 1
                if in_flight is not None:
                    self._finish(in_flight)
                in_flight = submitted
                if in_flight is None and not ready and finished:
                    break
        finally:
            for batch in (in_flight, submitted):  # the batcher skips a cancelled batch, or drops its result
                if batch is not None and batch.future is not None:
                    batch.future.cancel()

    def _mel_column(self, frame_index: int, mel_origin: int) -> int:
        """The first column of the frame's official window in a mel that starts at session sample
        `mel_origin` (after a rewind: the nearest column, at most half a column (6 ms) off)."""
        from lipstream.models.wav2lip import mel_window_start
        from lipstream.models.wav2lip.audio import MEL_COLUMNS_PER_SECOND

        origin_columns = mel_origin * MEL_COLUMNS_PER_SECOND / self._rate  # 0 until an interrupt: exact
        return max(0, round(mel_window_start(frame_index, self._fps) - origin_columns))

    def _ready_frames(
        self, mel: Any, mel_origin: int, first: int, end_sample: int, finished: bool, reply_ended: bool
    ) -> list[int]:
        """Up to 8 frames from `first` on whose mel windows are complete (or, at the end of a reply or of the
        audio, whose frames have begun: they use the last columns there are, as at the end of audio)."""
        ready: list[int] = []
        index = first
        while len(ready) < 8:
            window = self._mel_column(index, mel_origin)
            if self.frame_start(index) >= end_sample:
                break
            if not finished and window + WAV2LIP_WINDOW_COLUMNS > mel.num_columns and not reply_ended:
                break
            ready.append(index)
            index += 1
        return ready

    def _submit(self, mel: Any, mel_origin: int, indices: list[int]) -> _Batch:
        """Sends the speaking frames among `indices` to the model; frames outside speech need none."""
        began = time.perf_counter()
        spans = [self._timeline.at(self.frame_start(i))[0] for i in indices]
        speaking = [i for i, span in zip(indices, spans, strict=True) if span is not None]
        future = None
        if speaking:
            windows = np.stack([self._mel_window(mel, self._mel_column(i, mel_origin)) for i in speaking])
            faces = np.stack([self._face_input(i) for i in speaking])
            future = self._batcher.submit(windows[:, None], faces)  # type: ignore[union-attr]
        return _Batch(indices, spans, speaking, future, time.perf_counter() - began)

    def _face_input(self, frame_index: int) -> np.ndarray:
        """The model's face input for a frame, made once per source frame (kept for up to 16 of them)."""
        from lipstream.models.wav2lip import face_input

        source = self._avatar.source_index(frame_index)
        face = self._face_inputs.get(source)
        if face is None:
            face = face_input(self._avatar.face_crop(frame_index))
            if len(self._face_inputs) < 16:
                self._face_inputs[source] = face
        return face

    def _finish(self, batch: _Batch) -> None:
        """Waits for the batch's model output, then pastes, encodes and emits its frames in order."""
        from lipstream.models.wav2lip import paste_mouth

        began = time.perf_counter()
        outputs: dict[int, np.ndarray] = {}
        if batch.future is not None:
            while True:
                try:
                    result = batch.future.result(timeout=0.5)
                    break
                except concurrent.futures.TimeoutError:
                    if self._stopped.is_set():
                        raise SessionStopped("the session was stopped") from None
            outputs = dict(zip(batch.speaking, result, strict=True))
        # This thread's time on the batch: preparing it and waiting for the model (overlapped work is not
        # counted twice), shared by its frames, plus each frame's paste and JPEG.
        waited = (batch.submit_s + time.perf_counter() - began) / len(batch.indices)
        for i, span in zip(batch.indices, batch.spans, strict=True):
            started = time.perf_counter()
            if span is None:
                jpeg = self._idle_jpeg(i)
            else:
                frame = paste_mouth(self._avatar.frame(i), self._avatar.box(i), outputs[i])
                jpeg = encode_jpeg(frame, self._quality)
            self._emit(i, jpeg, span, span is not None, waited + time.perf_counter() - started)

    @staticmethod
    def _mel_window(mel: Any, start: int) -> np.ndarray:
        """The official window; past the end, the last 16 columns (as the official inference does)."""
        columns = mel.num_columns
        if start + WAV2LIP_WINDOW_COLUMNS <= columns:
            return mel.columns(start, start + WAV2LIP_WINDOW_COLUMNS)
        if columns >= WAV2LIP_WINDOW_COLUMNS:
            return mel.columns(columns - WAV2LIP_WINDOW_COLUMNS, columns)
        window = mel.columns(0, columns) if columns else np.full((80, 1), -4.0, dtype=np.float32)
        return np.pad(window, ((0, 0), (WAV2LIP_WINDOW_COLUMNS - window.shape[1], 0)), mode="edge")
