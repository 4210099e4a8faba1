"""Helpers a player would otherwise write: collect audio into one clip / WAV file, mux audio and frames
into an MP4 by their timestamps (PyAV, imported only here and only when used), and a jitter buffer that
hands out audio and frames at their presentation times."""

from __future__ import annotations

import heapq
import io
import itertools
import os
import threading
import time
import wave
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from types import TracebackType
from typing import Any

import numpy as np

from .events import AudioChunk, Event, SessionStarted, VideoFrame

__all__ = [
    "AudioClip",
    "FrameCompositor",
    "JitterBuffer",
    "Mp4Writer",
    "collect_audio",
    "play",
    "wav_bytes",
    "write_mp4",
    "write_wav",
]

Media = AudioChunk | VideoFrame


@dataclass(frozen=True)
class AudioClip:
    """One piece of mono audio on the media clock: samples[0] is sample `start_sample` of the session."""

    samples: np.ndarray = field(repr=False)   # float32 mono
    sample_rate: int
    start_sample: int = 0

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def collect_audio(events: Iterable[Event]) -> AudioClip:
    """All AudioChunks of a stream as one clip from sample 0, each chunk placed at its start_sample
    (a gap on the clock is silence). Other events are skipped."""
    chunks: list[AudioChunk] = []
    sample_rate = 0
    for event in events:
        if isinstance(event, SessionStarted):
            sample_rate = event.sample_rate
        elif isinstance(event, AudioChunk):
            if sample_rate and event.sample_rate != sample_rate:
                raise ValueError(f"audio chunk at {event.sample_rate} Hz in a {sample_rate} Hz stream")
            sample_rate = event.sample_rate
            chunks.append(event)
    if not sample_rate:
        raise ValueError("the stream has no SessionStarted and no AudioChunk: nothing to collect")
    total = max((c.start_sample + len(c.samples) for c in chunks), default=0)
    samples = np.zeros(total, dtype=np.float32)
    for c in chunks:
        samples[c.start_sample : c.start_sample + len(c.samples)] = c.samples
    return AudioClip(samples, sample_rate)


def wav_bytes(clip: AudioClip) -> bytes:
    """A 16-bit PCM mono WAV file of the clip."""
    pcm = np.clip(np.round(clip.samples * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(clip.sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def write_wav(path: str | os.PathLike[str], events_or_clip: Iterable[Event] | AudioClip) -> AudioClip:
    """Write a stream's audio (or a clip) as a 16-bit PCM WAV file; returns the clip written."""
    clip = events_or_clip if isinstance(events_or_clip, AudioClip) else collect_audio(events_or_clip)
    with open(path, "wb") as out:
        out.write(wav_bytes(clip))
    return clip


# libavutil's colour tags (H.264 VUI and the MP4 colr box), by number: older PyAV names only some of them.
_AVCOL_RANGE_MPEG = 1           # limited ("TV") range
_AVCOL_SPC_SMPTE170M = 6        # the BT.601 matrix
_AVCOL_PRI_BT709 = 1
_AVCOL_TRC_IEC61966_2_1 = 13    # sRGB


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise ImportError("writing MP4 needs PyAV: pip install 'lipstream[mp4]'") from None
    return av


def _pyav_jpeg_decoder() -> Callable[[bytes], np.ndarray]:
    av = _import_av()
    decoder = av.CodecContext.create("mjpeg", "r")

    def decode(jpeg: bytes) -> np.ndarray:
        frames = decoder.decode(av.Packet(jpeg))
        if not frames:
            raise ValueError(f"a JPEG of {len(jpeg)} bytes decoded to no picture")
        picture: np.ndarray = frames[-1].to_ndarray(format="rgb24")
        return picture

    return decode


class FrameCompositor:
    """The whole picture of each frame of a stream, in either frame mode: a FULL_FRAME frame is its own
    picture; with frame_mode "face_patch" a patch is drawn at (patch_x, patch_y) over the picture so far and
    a repeat (no jpeg, repeat_of set) shows it as it is. Feed it every frame, in order, from the first.

    `decode` turns a JPEG into an H x W x 3 uint8 array (default: PyAV's, RGB); the pictures come out in its
    channel order.
    """

    def __init__(self, decode: Callable[[bytes], np.ndarray] | None = None) -> None:
        self._decode = decode or _pyav_jpeg_decoder()
        self._picture: np.ndarray | None = None

    @staticmethod
    def is_whole(frame: VideoFrame) -> bool:
        """True when the frame carries a whole picture (FULL_FRAME, or FACE_PATCH's first)."""
        return frame.repeat_of is None and bool(frame.jpeg) and not (frame.patch_x or frame.patch_y)

    def add(self, frame: VideoFrame) -> np.ndarray:
        """The picture after `frame`: the compositor's own buffer, drawn over by the next patch (copy it to
        keep it)."""
        if frame.repeat_of is not None or not frame.jpeg:
            return self._require_picture(frame)
        image = self._decode(frame.jpeg)
        height, width = image.shape[:2]
        if (frame.patch_x, frame.patch_y, width, height) == (0, 0, frame.width, frame.height):
            self._picture = np.array(image, copy=True)
            return self._picture
        picture = self._require_picture(frame)
        picture[frame.patch_y : frame.patch_y + height, frame.patch_x : frame.patch_x + width] = image
        return picture

    def _require_picture(self, frame: VideoFrame) -> np.ndarray:
        if self._picture is None:
            raise ValueError(
                f"frame {frame.frame_index} is a patch or a repeat but no whole frame came before it: feed "
                "FrameCompositor every frame from the stream's first"
            )
        return self._picture


class Mp4Writer:
    """Writes a stream into an MP4 as it arrives: H.264 video from the JPEG frames placed at their pts,
    AAC audio from the AudioChunks placed at their start_sample (gaps become silence). Feed it every event
    from SessionStarted on (`add`), then `close()` (or use it as a context manager).

    The video track ends one frame after the last frame; the audio track at the last sample. The file is
    what players expect: a keyframe every `keyframe_interval` seconds, the JPEGs' full-range YCbCr converted
    to limited range and tagged (BT.601 matrix, sRGB primaries and curve), the index (moov) first.
    """

    keyframe_interval = 2.0
    """Seconds between H.264 keyframes (a player seeks to one; more of them make the file bigger)."""

    def __init__(self, path: str | os.PathLike[str], *, crf: int = 23) -> None:
        self._av = _import_av()
        self.path = os.fspath(path)
        self._crf = crf
        self._container: Any = None
        self._video: Any = None
        self._audio: Any = None
        self._jpeg_decoder: Any = None
        self._compositor: FrameCompositor | None = None  # made at the first patch or repeat (FACE_PATCH)
        self._last_whole: bytes = b""  # the last whole frame's JPEG, the compositor's start
        self._next_sample = 0
        self._last_frame_index = -1
        self.frames_written = 0
        self.samples_written = 0

    def add(self, event: Event) -> None:
        if isinstance(event, SessionStarted):
            self._open(event)
        elif isinstance(event, AudioChunk):
            self._require_open("an AudioChunk")
            self._add_audio(event)
        elif isinstance(event, VideoFrame):
            self._require_open("a VideoFrame")
            self._add_frame(event)

    def _require_open(self, what: str) -> None:
        if self._container is None:
            raise ValueError(f"Mp4Writer got {what} before SessionStarted: feed it the stream from its start")

    def _open(self, started: SessionStarted) -> None:
        if self._container is not None:
            raise ValueError("Mp4Writer got a second SessionStarted: write one session per file")
        av = self._av
        # faststart: the index (moov) goes before the media, so a player or a browser starts at once.
        self._container = av.open(self.path, mode="w", format="mp4", options={"movflags": "+faststart"})
        if started.fps > 0:
            rate = Fraction(started.fps).limit_denominator(1001)
            self._video = self._container.add_stream("libx264", rate=rate)
            # H.264 with yuv420p needs even sizes; the frames are scaled to fit when they are not.
            self._video.width = started.frame_width - started.frame_width % 2
            self._video.height = started.frame_height - started.frame_height % 2
            self._video.pix_fmt = "yuv420p"
            codec = self._video.codec_context
            codec.time_base = 1 / rate
            codec.gop_size = max(1, round(self.keyframe_interval * started.fps))
            # The frames are converted to limited range and tagged, so every player shows the JPEGs'
            # colours (untagged yuv420p is read as limited range: full-range data would look washed out).
            codec.color_range = _AVCOL_RANGE_MPEG
            codec.colorspace = _AVCOL_SPC_SMPTE170M         # the BT.601 matrix, as in the JPEGs
            codec.color_primaries = _AVCOL_PRI_BT709        # the JPEGs are sRGB: BT.709 primaries
            codec.color_trc = _AVCOL_TRC_IEC61966_2_1       # and the sRGB transfer curve
            self._video.options = {"crf": str(self._crf), "preset": "veryfast"}
            self._jpeg_decoder = av.CodecContext.create("mjpeg", "r")
        self._audio = self._container.add_stream("aac", rate=started.sample_rate)
        self._audio.layout = "mono"
        self._audio.codec_context.time_base = Fraction(1, started.sample_rate)

    def _add_audio(self, chunk: AudioChunk) -> None:
        samples = chunk.samples
        if chunk.start_sample > self._next_sample:  # a gap on the clock: silence
            self._encode_audio(np.zeros(chunk.start_sample - self._next_sample, dtype=np.float32))
        elif chunk.start_sample < self._next_sample:  # overlap: keep what was written first
            samples = samples[self._next_sample - chunk.start_sample :]
        self._encode_audio(samples)

    def _encode_audio(self, samples: np.ndarray) -> None:
        if len(samples) == 0:
            return
        frame = self._av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = self._audio.codec_context.sample_rate
        frame.pts = self._next_sample
        frame.time_base = Fraction(1, frame.sample_rate)
        self._container.mux(self._audio.encode(frame))
        self._next_sample += len(samples)
        self.samples_written += len(samples)

    def _add_frame(self, video_frame: VideoFrame) -> None:
        if self._video is None:
            raise ValueError("Mp4Writer got a VideoFrame in a session without video (fps 0)")
        if video_frame.frame_index <= self._last_frame_index:
            return  # a repeated or out-of-order frame cannot go into an increasing-pts track
        self._last_frame_index = video_frame.frame_index
        if FrameCompositor.is_whole(video_frame):
            self._last_whole = video_frame.jpeg
            if self._compositor is None:
                for decoded in self._jpeg_decoder.decode(self._av.Packet(video_frame.jpeg)):
                    self._encode_video(decoded, video_frame.frame_index)
                return
        elif self._compositor is None:  # the first patch or repeat: start from the last whole frame
            if not self._last_whole:
                raise ValueError(
                    f"Mp4Writer got frame {video_frame.frame_index}, a patch or repeat, before a whole frame"
                )
            self._compositor = FrameCompositor(_pyav_jpeg_decoder())
            self._compositor.add(
                VideoFrame(self._last_whole, 0, 0.0, video_frame.width, video_frame.height, 0, False)
            )
        # From the first patch on, every picture goes through the compositor's RGB (before it, the whole
        # JPEGs' own YCbCr is used as it is).
        picture = self._compositor.add(video_frame)
        self._encode_video(self._av.VideoFrame.from_ndarray(picture, format="rgb24"), video_frame.frame_index)

    def _encode_video(self, decoded: Any, frame_index: int) -> None:
        # JPEG (JFIF) is full-range BT.601 YCbCr; H.264 players expect limited range.
        sws = self._av.video.reformatter
        frame = decoded.reformat(
            width=self._video.width, height=self._video.height, format="yuv420p",
            src_colorspace=sws.Colorspace.ITU601, dst_colorspace=sws.Colorspace.ITU601,
            src_color_range=sws.ColorRange.JPEG, dst_color_range=sws.ColorRange.MPEG,
        )
        # The MJPEG decoder marks every picture I; passed on, libx264 would make each one a keyframe.
        frame.pict_type = self._av.video.frame.PictureType.NONE
        frame.pts = frame_index
        frame.time_base = self._video.codec_context.time_base
        self._container.mux(self._video.encode(frame))
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoders and finish the file. Idempotent."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            if self._video is not None:
                container.mux(self._video.encode(None))
            container.mux(self._audio.encode(None))
        finally:
            container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_mp4(path: str | os.PathLike[str], events: Iterable[Event]) -> Mp4Writer:
    """Write a whole stream (from SessionStarted on) into an MP4; returns the closed writer (its counts)."""
    with Mp4Writer(path) as writer:
        for event in events:
            writer.add(event)
    return writer


def presentation_time(item: Media) -> float:
    """Seconds on the media clock at which the item is played (audio) or shown (frame)."""
    return item.start_time if isinstance(item, AudioChunk) else item.pts


class JitterBuffer:
    """Holds audio and frames that arrive early (or in bursts) and hands them out at their presentation
    times on a local playback clock.

    Playback starts once `latency` seconds of media are buffered (or `finish()` was called); media time t
    is then due at wall time anchor + t. When the buffer runs dry and late media arrives, the clock stalls
    (re-anchors `latency` ahead) instead of skipping it; `underruns` counts those stalls.
    """

    def __init__(self, latency: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency}")
        self.latency = latency
        self._clock = clock
        self._heap: list[tuple[float, int, Media]] = []
        self._order = itertools.count()   # ties: keep arrival order
        self._anchor: float | None = None  # wall time of media time 0
        self._buffered_until = 0.0         # latest media end time pushed
        self._finished = False
        self.underruns = 0

    def push(self, item: Media) -> None:
        t = presentation_time(item)
        end = t + (item.duration if isinstance(item, AudioChunk) else 0.0)
        if self._anchor is not None and not self._heap and t < self.position():
            # Ran dry and this item is already late: stall the clock so it plays `latency` from now.
            self._anchor = self._clock() + self.latency - t
            self.underruns += 1
        heapq.heappush(self._heap, (t, next(self._order), item))
        self._buffered_until = max(self._buffered_until, end)
        if self._anchor is None and self._buffered_until - self._heap[0][0] >= self.latency:
            self._start()

    def finish(self) -> None:
        """No more media will come: start playback now if it has not started."""
        self._finished = True
        if self._anchor is None and self._heap:
            self._start()

    def _start(self) -> None:
        self._anchor = self._clock() - self._heap[0][0]

    def position(self) -> float:
        """The playback clock in media seconds (-inf before playback starts)."""
        return -float("inf") if self._anchor is None else self._clock() - self._anchor

    def pop_due(self) -> list[Media]:
        """The items whose presentation time has come, in presentation order."""
        now = self.position()
        due: list[Media] = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def time_to_next(self) -> float | None:
        """Seconds until the next item is due (0 when it is due); None when nothing is scheduled yet."""
        if self._anchor is None or not self._heap:
            return None
        return max(0.0, self._heap[0][0] - self.position())

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def finished(self) -> bool:
        return self._finished


def play(
    events: Iterable[Event],
    latency: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    idle_wait: float = 0.01,
) -> Iterator[Media]:
    """Yield the stream's audio chunks and frames at their presentation times (a player loop's input).

    A thread this generator owns reads `events` into a JitterBuffer; it is joined when the generator ends.
    """
    buffer = JitterBuffer(latency, clock)
    lock = threading.Condition()
    failure: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            for event in events:
                if stop.is_set():
                    return
                if isinstance(event, AudioChunk | VideoFrame):
                    with lock:
                        buffer.push(event)
                        lock.notify()
        except BaseException as error:
            failure.append(error)
        finally:
            with lock:
                buffer.finish()
                lock.notify()

    reader = threading.Thread(target=read, name="lipstream-jitter-reader", daemon=True)
    reader.start()
    try:
        while True:
            with lock:
                if failure:
                    raise failure[0]
                due = buffer.pop_due()
                if not due:
                    if buffer.finished and not len(buffer):
                        return
                    wait = buffer.time_to_next()
                    lock.wait(idle_wait if wait is None else min(max(wait, 0.0), idle_wait * 10))
                    continue
            yield from due
    finally:
        stop.set()
        reader.join(1.0)
