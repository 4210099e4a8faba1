"""The blendshape stage: ARKit weights per frame at the session's fps, from the ring, video on or off.

Frame i covers the voice samples [frame_start(i), frame_start(i + 1)); its weights are the utterance's
co-articulated viseme track at the middle of that interval, scaled by the loudness of the interval's own
audio (lipstream.models.viseme.blendshapes), so they follow the same samples the client hears. Speech with
no phoneme timings (an audio-in session) takes them from the audio-driven mouth of the 2D renderer. A frame
goes out once its audio is in the ring (or at the end of a reply with what there is); outside utterances the
weights are all 0.

After an interrupt the stage goes on from the first frame the client has not received, as the lip-sync
stage does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from lipstream.server.clock import Clock, Rewind
from lipstream.server.events import BlendshapeOut
from lipstream.server.mux import Multiplexer
from lipstream.server.ring import RingReader
from lipstream.server.stage import StageFigures, StageWorker
from lipstream.server.timeline import Timeline, UtteranceSpan


def blendshape_names() -> tuple[str, ...]:
    from lipstream.models.viseme.blendshapes import BLENDSHAPE_NAMES

    return BLENDSHAPE_NAMES


class BlendshapeStage(StageWorker):
    """One session's blendshape frames, in order, from the ring."""

    cpu_part = "blendshapes"

    def __init__(
        self,
        reader: RingReader,
        timeline: Timeline,
        mux: Multiplexer,
        *,
        clock: Clock,
        tts_idle: Callable[[], bool],
    ) -> None:
        from lipstream.models.viseme.blendshapes import silent_weights

        self._timeline = timeline
        self._clock = clock
        self._fps = clock.fps
        self._tts_idle = tts_idle
        self._silent = silent_weights()
        self.figures = StageFigures()
        self._first_frame = 0  # where _work starts: 0, or after an interrupt the first frame not sent
        super().__init__("lipstream-blendshapes", "blendshapes", reader, mux)

    def frame_start(self, frame_index: int) -> int:
        """The first sample (voice rate, session clock) of frame `frame_index`."""
        return self._clock.frame_start(frame_index)

    def _rewound(self, rewind: Rewind) -> None:
        self._first_frame = rewind.next_blendshapes

    def _work(self) -> None:
        from lipstream.models.viseme import loudness
        from lipstream.models.viseme.audio import audio_mouth_shape
        from lipstream.models.viseme.blendshapes import weights_from_shape

        frame_index = self._first_frame
        while not self._stopped.is_set():
            if not self._wait_flow(frame_index / self._fps):
                continue
            start, stop = self.frame_start(frame_index), self.frame_start(frame_index + 1)
            # The reader is at or before `start`, or past it when an interrupt moved the frame index back
            # before the reader (those frames are idle: the timeline is cut there).
            position = self._reader.position
            needed = stop - position
            available = self._reader.wait(max(0, needed), timeout=0.05)
            if available < needed and not self._reader.closed:
                # Not all of the frame's audio is there: wait, unless the reply has ended (nothing more to
                # say for now) and the frame has begun: then it is made from the audio there is.
                if position + available <= start or not self._tts_idle():
                    continue
            elif position + available <= start:
                break  # the stream has ended before this frame
            began = time.perf_counter()
            begin = max(start, position)
            self._reader.advance(begin - position)
            count = max(0, min(position + available, stop) - begin)
            views = self._reader.peek(count)
            window = np.concatenate(views) if len(views) > 1 else views[0] if views else np.zeros(0)
            middle = (start + stop) // 2
            span, _ = self._timeline.at(middle)
            weights = self._silent
            if span is not None and span.phonemes:
                weights = self._track(span).weights_at(middle, loudness(window) if count else 0.0)
            elif span is not None and count:  # the client's own speech (audio in): from its audio alone
                weights = weights_from_shape(audio_mouth_shape(window, self._clock.voice_rate))
            self._reader.advance(count)
            self._emit(frame_index, weights, span, time.perf_counter() - began)
            frame_index += 1
        self._mux.finish("blendshapes")

    def _track(self, span: UtteranceSpan) -> Any:
        from lipstream.models.viseme import BlendshapeTrack, MouthTrack

        track = span.cache.get("blendshapes")
        if track is None:
            mouth = span.cache.get("track")  # the lip-sync stage's, when it made one: the same
            mouth = mouth or MouthTrack(span.visemes(), self._clock.voice_rate)
            track = span.cache["blendshapes"] = BlendshapeTrack(mouth)
        return track

    def _emit(self, frame_index: int, weights: np.ndarray, span: UtteranceSpan | None, spent: float) -> None:
        self.figures.compute_s += spent
        self.figures.media_samples = self.frame_start(frame_index + 1)
        pts = frame_index / self._fps
        event = BlendshapeOut(frame_index, pts, weights, span.utterance_id if span is not None else 0)
        self._mux.push("blendshapes", event, pts, epoch=self._epoch)
        self._mux.watermark("blendshapes", (frame_index + 1) / self._fps, epoch=self._epoch)
