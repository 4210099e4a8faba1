"""The client's media helpers on synthetic streams: audio decoding, WAV collection, MP4 muxing (probed
with PyAV) and the jitter buffer. On real server output: test_client.py and test_client_cli.py."""

from __future__ import annotations

import io
import struct
import time
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from lipstream.client import (
    AudioChunk,
    AudioClip,
    JitterBuffer,
    Mp4Writer,
    SessionStarted,
    VideoFrame,
    collect_audio,
    decode_audio,
    play,
    wav_bytes,
    write_mp4,
    write_wav,
)
from lipstream.v1 import lipstream_pb2 as pb

RATE = 22050


def started(fps: float = 25.0, width: int = 161, height: int = 120) -> SessionStarted:
    return SessionStarted(
        session_id="s", sample_rate=RATE, fps=fps, frame_width=width, frame_height=height, engine="viseme",
        voice="v", speaker="", avatar="a", audio_format="wav_pcm16", config=pb.SessionConfig(),
    )


def audio(start: int, samples: np.ndarray) -> AudioChunk:
    data = wav_bytes(AudioClip(samples.astype(np.float32), RATE))
    return AudioChunk(data, decode_audio(data), start, len(samples), RATE, 1)


def jpeg(width: int, height: int, shade: int) -> bytes:
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    codec.time_base = Fraction(1, 25)
    image = np.full((height, width, 3), shade, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(p) for p in codec.encode(frame))


def frame(i: int, fps: float = 25.0, width: int = 161, height: int = 120) -> VideoFrame:
    return VideoFrame(jpeg(width, height, (i * 7) % 256), i, i / fps, width, height, 1, True)


def test_decode_audio_reads_all_three_formats() -> None:
    tone = (0.5 * np.sin(np.arange(1000) / 10.0)).astype(np.float32)
    pcm16 = decode_audio(wav_bytes(AudioClip(tone, RATE)), "wav_pcm16")
    assert pcm16.dtype == np.float32 and np.allclose(pcm16, tone, atol=1 / 16384)
    raw = np.round(tone * 32767).astype("<i2").tobytes()
    assert np.allclose(decode_audio(raw, "pcm16"), tone, atol=1 / 16384)
    body = tone.astype("<f4").tobytes()
    float_wav = (
        b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 3, 1, RATE, RATE * 4, 4, 32)
        + b"data" + struct.pack("<I", len(body)) + body
    )
    assert np.array_equal(decode_audio(float_wav, "wav_float32"), tone)
    with pytest.raises(ValueError, match="does not start with RIFF"):
        decode_audio(raw, "wav_pcm16")


def test_collect_audio_places_chunks_by_start_sample(tmp_path: Path) -> None:
    first, second = np.full(100, 0.5, np.float32), np.full(50, -0.25, np.float32)
    clip = collect_audio([started(), audio(0, first), audio(300, second)])  # a gap of 200 samples
    assert clip.sample_rate == RATE and len(clip.samples) == 350
    assert np.allclose(clip.samples[:100], 0.5, atol=1e-4) and not clip.samples[100:300].any()
    assert np.allclose(clip.samples[300:], -0.25, atol=1e-4)
    path = tmp_path / "out.wav"
    write_wav(path, [started(), audio(0, first), audio(300, second)])
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (RATE, 1, 2, 350)
    with pytest.raises(ValueError, match="nothing to collect"):
        collect_audio([])


def probe(path: Path) -> tuple[float, float, int, tuple[int, int]]:
    """(audio seconds, video seconds, frames, (width, height)) by decoding the file."""
    with av.open(str(path)) as container:
        a_stream, v_stream = container.streams.audio[0], container.streams.video[0]
        samples = sum(f.samples for f in container.decode(a_stream))
    with av.open(str(path)) as container:
        v_stream = container.streams.video[0]
        frames = list(container.decode(v_stream))
        rate = v_stream.average_rate or v_stream.guessed_rate
        video_end = float(frames[-1].pts * v_stream.time_base) + 1 / float(rate)
        size = (frames[0].width, frames[0].height)
    return samples / a_stream.rate, video_end, len(frames), size


def test_mp4_has_audio_and_video_of_matching_duration(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    fps, seconds = 25.0, 2.0
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(RATE * seconds)) / RATE)).astype(np.float32)
    events: list[object] = [started(fps)]
    for i in range(int(seconds * fps)):   # interleaved as a server sends them, audio a little ahead
        lo, hi = int(i * RATE / fps), int((i + 1) * RATE / fps)
        events += [audio(lo, tone[lo:hi]), frame(i, fps)]
    writer = write_mp4(path, events)  # type: ignore[arg-type]
    assert writer.frames_written == 50 and writer.samples_written == len(tone)
    audio_s, video_s, frames, size = probe(path)
    assert frames == 50 and size == (160, 120)   # odd width made even for H.264
    assert abs(video_s - seconds) < 1e-6
    assert abs(audio_s - seconds) < 2048 / RATE   # AAC pads to whole 1024-sample frames


def portrait(i: int, width: int = 256, height: int = 192) -> bytes:
    """A JPEG like an avatar frame: a smooth full-range picture (0..255 in every channel) whose "mouth"
    opens and closes with i."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([255 * x / (width - 1), 255 * y / (height - 1), 255 * (1 - x / (width - 1))], axis=-1)
    mouth = ((x - width / 2) / 30) ** 2 + ((y - 0.75 * height) / (2 + 8 * abs(np.sin(i / 3)))) ** 2 <= 1
    image[mouth] = (120, 20, 40)
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    codec.time_base = Fraction(1, 25)
    rgb = av.VideoFrame.from_ndarray(np.round(image).astype(np.uint8), format="rgb24")
    return b"".join(bytes(p) for p in codec.encode(rgb.reformat(format="yuvj420p")))


def top_level_boxes(path: Path) -> list[str]:
    data, boxes, at = path.read_bytes(), [], 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8 : at + 16])[0]
        boxes.append(kind.decode("latin-1"))
        at += size if size else len(data)
    return boxes


def test_mp4_is_what_players_expect(tmp_path: Path) -> None:
    """A keyframe every ~2 s (not every frame), limited-range BT.601 tagged as such, the index first,
    and the decoded pictures within a mean error of 4 (of 255) of the JPEGs (measured: 1.35)."""
    fps, seconds, width, height = 25.0, 6, 256, 192
    jpegs = [portrait(i, width, height) for i in range(int(fps * seconds))]
    events: list[object] = [started(fps, width, height)]
    events += [VideoFrame(j, i, i / fps, width, height, 1, True) for i, j in enumerate(jpegs)]
    events.append(audio(0, np.zeros(RATE * seconds, np.float32)))
    path = tmp_path / "out.mp4"
    write_mp4(path, events)  # type: ignore[arg-type]

    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes   # +faststart
    assert path.stat().st_size < sum(map(len, jpegs)) / 5, (path.stat().st_size, sum(map(len, jpegs)))
    decoder = av.CodecContext.create("mjpeg", "r")
    with av.open(str(path)) as container:
        video = container.streams.video[0].codec_context
        assert (video.color_range, video.colorspace, video.color_primaries, video.color_trc) == (
            1, 6, 1, 13   # MPEG (limited) range, SMPTE170M = BT.601 matrix, BT.709 primaries, sRGB curve
        )
        frames = list(container.decode(video=0))
    keyframes = sum(f.key_frame for f in frames)
    assert len(frames) == len(jpegs) and seconds / 2 <= keyframes <= seconds / 2 + 1, keyframes
    errors = []
    for decoded, source in zip(frames, jpegs, strict=True):
        (expected,) = decoder.decode(av.Packet(source))
        shown = decoded.reformat(format="rgb24", src_colorspace="itu601", src_color_range="MPEG")
        reference = expected.reformat(format="rgb24", src_colorspace="itu601", src_color_range="JPEG")
        errors.append(np.abs(shown.to_ndarray().astype(np.int16) - reference.to_ndarray()).mean())
    assert float(np.mean(errors)) < 4.0, np.mean(errors)


def test_mp4_writer_needs_the_stream_from_its_start(tmp_path: Path) -> None:
    with Mp4Writer(tmp_path / "x.mp4") as writer, pytest.raises(ValueError, match="before SessionStarted"):
        writer.add(frame(0))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_jitter_buffer_starts_after_latency_and_hands_out_on_time() -> None:
    clock = FakeClock()
    buffer = JitterBuffer(latency=0.2, clock=clock)
    samples = np.zeros(int(0.1 * RATE), np.float32)
    buffer.push(frame(0))
    buffer.push(audio(0, samples))                 # 0.0 .. 0.1 s buffered: not yet 0.2
    assert buffer.pop_due() == [] and buffer.time_to_next() is None
    buffer.push(frame(2))                          # pts 0.08
    buffer.push(frame(1))                          # out of order: pts 0.04
    buffer.push(audio(int(0.1 * RATE), samples))   # now 0.2 s ahead: playback starts at this instant
    first = buffer.pop_due()
    assert [type(x) for x in first] == [VideoFrame, AudioChunk]   # both at t = 0, arrival order
    clock.now += 0.05
    assert [x.frame_index for x in buffer.pop_due()] == [1]        # type: ignore[union-attr]
    assert buffer.time_to_next() == pytest.approx(0.03)
    clock.now += 0.06
    assert [presentation for presentation in map(_time, buffer.pop_due())] == [0.08, 0.1]
    assert len(buffer) == 0 and buffer.underruns == 0


def _time(item: object) -> float:
    return round(item.start_time if isinstance(item, AudioChunk) else item.pts, 3)  # type: ignore[union-attr]


def test_jitter_buffer_stalls_instead_of_skipping_on_underrun() -> None:
    clock = FakeClock()
    buffer = JitterBuffer(latency=0.1, clock=clock)
    buffer.push(audio(0, np.zeros(int(0.1 * RATE), np.float32)))
    assert len(buffer.pop_due()) == 1
    clock.now += 0.5                                # ran dry; the next chunk (t = 0.1) arrives 0.4 s late
    late = audio(int(0.1 * RATE), np.zeros(100, np.float32))
    buffer.push(late)
    assert buffer.underruns == 1 and buffer.pop_due() == []
    clock.now += 0.099
    assert buffer.pop_due() == []                  # plays `latency` after it arrived, not before
    clock.now += 0.002
    assert buffer.pop_due() == [late]


def test_play_yields_each_item_no_earlier_than_its_presentation_time() -> None:
    events = [started()] + [frame(i) for i in range(6)] + [audio(0, np.zeros(int(0.24 * RATE), np.float32))]
    out: list[tuple[float, object]] = []
    begin = time.monotonic()
    for item in play(events, latency=0.05):
        out.append((time.monotonic() - begin, item))
    assert [type(x) for _, x in out] == [VideoFrame, AudioChunk] + [VideoFrame] * 5
    first_at = out[0][0]
    for at, item in out:
        assert at - first_at >= _time(item) - 1e-3   # never early on the playback clock


def test_wav_bytes_is_a_plain_pcm16_file() -> None:
    data = wav_bytes(AudioClip(np.array([0.0, 1.0, -1.0], np.float32), 8000))
    with wave.open(io.BytesIO(data)) as w:
        assert w.getframerate() == 8000
        assert np.frombuffer(w.readframes(3), "<i2").tolist() == [0, 32767, -32767]
