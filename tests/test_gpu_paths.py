"""The GPU path's batched forms against the CPU path they replace, on the CPU: batches padded to fixed sizes
give the rows unpadded batches give, the fixed-shape runtime's buffers change nothing, the torch paste
equals the numpy paste pixel for pixel, and the batcher's device paste gives the pictures each session's
own paste gives. The JPEG and CUDA checks run where torchvision / CUDA are present."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import simplejpeg
import torch
from lipstream.models.wav2lip import Wav2LipEngine, Wav2LipRuntimeError, paste_mouth
from lipstream.models.wav2lip.batch_paste import paste_mouths, resize_linear
from lipstream.models.wav2lip.runtimes import GraphRuntime
from lipstream.server.clock import Clock
from lipstream.server.lipsync.gpu import DeviceCompositor, DeviceUnavailableError, JpegBatcher, encode_jpegs
from lipstream.server.lipsync.renderer import FrameJob
from lipstream.server.lipsync.stage import encode_jpeg
from lipstream.server.lipsync.wav2lip import (
    FrameBatcher,
    Wav2LipFactory,
    Wav2LipRenderer,
    batch_buckets,
    bucket_for,
)
from lipstream.server.timeline import UtteranceSpan
from skimage import data as skdata

from tests.wav2lip_fill import CONFORMANCE, write_official_checkpoint

CUDA = torch.cuda.is_available()


def _has_torchvision_jpeg() -> bool:
    try:
        from torchvision.io import encode_jpeg  # noqa: F401
    except (ImportError, RuntimeError):  # the CUDA wheel on the CPU build of torch raises RuntimeError
        return False
    return True


class Box:
    def __init__(self, x1: int, y1: int, x2: int, y2: int) -> None:
        self.x1, self.y1, self.x2, self.y2 = x1, y1, x2, y2


@pytest.fixture(scope="module")
def model_io() -> dict[str, np.ndarray]:
    with np.load(CONFORMANCE / "model_io.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def mel_windows() -> np.ndarray:
    with np.load(CONFORMANCE / "mel.npz") as npz:
        return npz["mel_chunks"][:, None].astype(np.float32)  # (87, 1, 80, 16)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Wav2LipEngine:
    folder = tmp_path_factory.mktemp("w2l_gpu_paths")
    checkpoint = write_official_checkpoint(folder / "wav2lip.pth")
    return Wav2LipEngine(checkpoint, device="cpu", runtime="torch", cache_dir=folder)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def box(model_io: dict[str, np.ndarray]) -> Box:
    y1, y2, x1, x2 = model_io["paste_box_y1y2x1x2"].tolist()
    return Box(x1, y1, x2, y2)


def _outputs(model_io: dict[str, np.ndarray], n: int, seed: int = 0) -> np.ndarray:
    """n model outputs: the fixture's, then random ones (sigmoid range, with exact 0 and 1 at corners)."""
    rng = np.random.default_rng(seed)
    out = rng.random((n, 3, 96, 96), dtype=np.float32)
    out[0] = model_io["out"][0]
    out[:, :, 0, 0], out[:, :, -1, -1] = 0.0, 1.0
    return out


# ---- fixed batch buckets ------------------------------------------------------------------------------


def test_buckets_are_powers_of_two_up_to_the_batch_bound() -> None:
    assert batch_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert batch_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    assert batch_buckets(1) == (1,)
    assert [bucket_for(n, batch_buckets(32)) for n in (1, 2, 3, 5, 9, 17, 32)] == [1, 2, 4, 8, 16, 32, 32]
    assert bucket_for(40, batch_buckets(32)) == 40  # past the largest: as it is
    assert bucket_for(7, ()) == 7


def test_padding_never_reaches_the_real_rows(engine: Wav2LipEngine, model_io, mel_windows) -> None:
    """Exact: with a batch's shape fixed, what fills the padding rows (other mel windows, other faces,
    so other stacked face constants) changes no bit of the real rows."""
    face, other = model_io["face"][0], np.ascontiguousarray(model_io["face"][0, :, :, ::-1])
    for frames, bucket in ((3, 4), (5, 8), (9, 16)):
        mel = mel_windows[:frames]
        faces = np.stack([face, other] * frames)[:frames]
        copies = engine.infer(
            np.concatenate([mel, np.repeat(mel[-1:], bucket - frames, 0)]),
            np.concatenate([faces, np.repeat(faces[-1:], bucket - frames, 0)]),
        )[:frames]
        others = engine.infer(
            np.concatenate([mel, mel_windows[40 : 40 + bucket - frames]]),
            np.concatenate([faces, np.repeat(face[None], bucket - frames, 0)]),
        )[:frames]
        assert np.array_equal(copies, others)


def test_padded_batches_give_the_unpadded_rows(engine: Wav2LipEngine, model_io, mel_windows) -> None:
    """Through the batcher, requests of 3 and 5 frames (a batch of 8 then of 3 and 5 in buckets 4 and 8)
    against the same requests unpadded: equal within 1e-5, not always bit for bit, because the CPU's
    convolution picks its algorithm by batch size (batch 1 against 2 differs by ~1e-6 here)."""
    face = model_io["face"][:1]
    requests = [(mel_windows[:3], np.repeat(face, 3, 0)), (mel_windows[10:15], np.repeat(face, 5, 0))]
    results = {}
    for buckets in ((), batch_buckets(8)):
        batcher = FrameBatcher(engine, max_frames=8, buckets=buckets)
        batcher.start()
        try:
            futures = [batcher.submit(mel, faces) for mel, faces in requests]
            results[buckets] = [f.result(timeout=60) for f in futures]
        finally:
            batcher.stop()
        assert batcher.frames == 8
        if buckets:
            assert batcher.padded_frames in (0, 1 + 3)  # one batch of 8, or 3 -> 4 and 5 -> 8
    for unpadded, padded, (mel, _) in zip(results[()], results[batch_buckets(8)], requests, strict=True):
        assert padded.shape == unpadded.shape == (len(mel), 3, 96, 96)
        assert np.abs(padded - unpadded).max() < 1e-5
    alone = engine.infer(mel_windows[:3], np.repeat(face, 3, 0))
    padded = engine.infer(mel_windows[[0, 1, 2, 2]], np.repeat(face, 4, 0))[:3]
    assert np.array_equal(alone, padded)  # 3 in a bucket of 4: bit for bit here


class _ShapeRecorder:
    """A model that records its batch sizes and returns each item's mel mean as its output."""

    device = "cpu"
    runtime = "fake"

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.release = threading.Event()

    def infer(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        self.release.wait(10)
        self.sizes.append(len(mel))
        return np.broadcast_to(mel.mean(axis=(1, 2, 3))[:, None, None, None], (len(mel), 3, 96, 96)).copy()


def test_the_batcher_runs_only_bucket_sizes_within_its_bound() -> None:
    model = _ShapeRecorder()
    batcher = FrameBatcher(model, max_frames=8, buckets=batch_buckets(8))
    batcher.start()
    try:
        # A full first batch goes alone; the rest queue while it waits: 3 + 5, 6 + 2, then 3 padded to 4.
        first = batcher.submit(np.full((8, 1, 80, 16), -1, np.float32), np.zeros((8, 6, 96, 96), np.float32))
        sizes = (3, 5, 6, 2, 3)
        futures = [
            batcher.submit(np.full((n, 1, 80, 16), i, np.float32), np.zeros((n, 6, 96, 96), np.float32))
            for i, n in enumerate(sizes)
        ]
        model.release.set()
        first.result(timeout=10)
        outputs = [f.result(timeout=10) for f in futures]
    finally:
        batcher.stop()
    assert all(size in batch_buckets(8) for size in model.sizes)
    assert model.sizes == [8, 8, 8, 4] and batcher.padded_frames == 1
    for i, (n, out) in enumerate(zip(sizes, outputs, strict=True)):
        assert out.shape == (n, 3, 96, 96) and np.all(out == i)  # each request gets its own rows back


def test_fixed_shape_runtime_buffers_change_nothing(engine: Wav2LipEngine, model_io, mel_windows) -> None:
    """The CUDA-graph runtime's fixed buffers, on the CPU (nothing captured): per shape, its outputs are the
    fused model's bit for bit, call after call, for one face and for stacked faces."""
    runtime = GraphRuntime(engine.reference, "cpu", max_graphs=3)
    face = model_io["face"][:1]
    one = runtime.face_constants(face)
    two = runtime.stack([one, runtime.face_constants(np.ascontiguousarray(face[:, :, :, ::-1]))])
    fused = runtime.model
    for mel, constants in ((mel_windows[:4], one), (mel_windows[4:8], one), (mel_windows[:2], two)):
        with torch.inference_mode():
            expected = fused.forward_cached(torch.from_numpy(mel), constants).numpy()
        assert np.array_equal(runtime.run(mel, constants), expected)
    assert len(runtime._shapes) == 2  # (4, one face) and (2, two faces)
    runtime.run(mel_windows[:1], one)
    runtime.run(mel_windows[:3], one)  # past max_graphs: runs as it is
    assert len(runtime._shapes) == 3


def test_cuda_runtimes_refuse_a_cpu(tmp_path: Path) -> None:
    checkpoint = write_official_checkpoint(tmp_path / "wav2lip.pth")
    for runtime in ("cuda-graph", "cuda-compile"):
        with pytest.raises(Wav2LipRuntimeError, match="device='cuda'"):
            Wav2LipEngine(checkpoint, device="cpu", runtime=runtime, cache_dir=tmp_path)


# ---- paste on the device ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [(200, 230), (97, 101), (313, 287), (96, 96), (48, 48), (37, 41), (128, 64), (192, 192)]
)
def test_resize_equals_opencv_bit_for_bit(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    images = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    images[1] = rng.integers(250, 256)  # near white: the rounding at the top of the range
    images[2, ::2] = 0  # stripes: the largest steps between rows
    out = resize_linear(torch.from_numpy(images), *size).numpy()
    for image, resized in zip(images, out, strict=True):
        assert np.array_equal(resized, cv2.resize(image, size))


@pytest.mark.parametrize("feather", [True, False])
def test_torch_paste_equals_the_numpy_paste(astronaut, box, model_io, feather: bool) -> None:
    outputs = _outputs(model_io, 4)
    frames = np.stack([astronaut, astronaut[::-1], astronaut, np.zeros_like(astronaut)])
    pasted = paste_mouths(torch.from_numpy(frames), box, torch.from_numpy(outputs), feather=feather).numpy()
    for frame, out, picture in zip(frames, outputs, pasted, strict=True):
        assert np.array_equal(picture, paste_mouth(frame, box, out, feather=feather))
    assert np.array_equal(frames[1], astronaut[::-1])  # the frames themselves are left as they were
    with pytest.raises(ValueError, match="not inside"):
        paste_mouths(torch.from_numpy(frames), Box(400, 400, 600, 520), torch.from_numpy(outputs))


def test_the_compositor_pastes_a_mixed_batch_as_each_session_would(astronaut, box, model_io) -> None:
    """Sessions with different avatars (sizes, boxes) in one batch; each picture as its own numpy paste."""
    small = np.ascontiguousarray(cv2.resize(astronaut, (320, 240)))
    small_box = Box(100, 40, 230, 190)
    pictures = [astronaut, small, astronaut, small, astronaut]
    boxes = [box, small_box, box, small_box, Box(10, 10, 110, 140)]
    outputs = _outputs(model_io, 5, seed=1)
    compositor = DeviceCompositor("cpu", frames_kept=1)
    pasted = compositor.paste(pictures, boxes, outputs)
    for picture, frame_box, out, got in zip(pictures, boxes, outputs, pasted, strict=True):
        assert np.array_equal(got, paste_mouth(picture, frame_box, out))
    assert len(compositor._frames) == 1  # kept frames are bounded
    assert np.array_equal(compositor.paste([small], [small_box], outputs[1:2])[0], pasted[1])


class _StillAvatar:
    name, width, height, num_frames = "still", 512, 512, 1

    def __init__(self, frame: np.ndarray, box: Box, crop: np.ndarray) -> None:
        self._frame, self._box, self._crop = frame, box, crop

    def source_index(self, i: int) -> int:
        return 0

    def frame(self, i: int) -> np.ndarray:
        return self._frame

    def box(self, i: int) -> Box:
        return self._box

    def face_crop(self, i: int) -> np.ndarray:
        return self._crop

    @property
    def mouth(self) -> dict[str, float]:
        return {}


def test_device_paste_through_the_batcher_gives_the_renderers_pictures(
    engine: Wav2LipEngine, astronaut, box
) -> None:
    """Two sessions' renderers, one pasting itself and one through the batcher's compositor: the same
    pictures from the same audio."""
    crop = np.ascontiguousarray(cv2.resize(astronaut[box.y1 : box.y2, box.x1 : box.x2], (96, 96)))
    avatar = _StillAvatar(astronaut, box, crop)
    clock = Clock(16000, 16000, 25.0)
    audio = (0.1 * np.sin(np.arange(16000, dtype=np.float32) * 0.05)).astype(np.float32)
    span = UtteranceSpan(1, "la", 0, [], end=len(audio))
    jobs = [FrameJob(i, span) for i in range(4)] + [FrameJob(4, None)]
    pictures = []
    for compositor in (None, DeviceCompositor("cpu")):
        batcher = FrameBatcher(engine, max_frames=8, buckets=batch_buckets(8), compositor=compositor)
        batcher.start()
        try:
            renderer = Wav2LipRenderer(batcher, avatar, clock, device_paste=compositor is not None)
            renderer.restart(0)
            renderer.push(audio)
            renderer.finish()
            pictures.append(renderer.collect(renderer.submit(jobs), threading.Event()))
        finally:
            batcher.stop()
    cpu, device = pictures
    assert device[-1] is None and cpu[-1] is None  # silence: the avatar as it is
    for mine, theirs in zip(cpu[:-1], device[:-1], strict=True):
        assert theirs is not None and mine is not None
        assert np.array_equal(mine, theirs)


def test_a_batcher_without_a_compositor_refuses_to_paste(engine: Wav2LipEngine) -> None:
    batcher = FrameBatcher(engine)
    with pytest.raises(ValueError, match="no device compositor"):
        batcher.submit(np.zeros((1, 1, 80, 16), np.float32), np.zeros((1, 6, 96, 96), np.float32), [])


# ---- JPEG batches across sessions --------------------------------------------------------------------


class _BatchRecorder:
    """A batch encoder that encodes each picture as the server does, and records its batches; its first
    batch waits for `release`."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []  # (frames, quality)
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, pictures, quality: int) -> list[bytes]:
        self.entered.set()
        self.release.wait(4)  # within the batcher's 5 s timeout
        self.batches.append((len(pictures), quality))
        return [encode_jpeg(picture.numpy(), quality) for picture in pictures]


def test_the_jpeg_batcher_encodes_every_sessions_frames_in_one_batch(astronaut) -> None:
    """Five sessions' threads ask while the first batch is on the device: the next batch holds all their
    frames, one encoder call per quality, and each gets its own picture's JPEG."""
    recorder = _BatchRecorder()
    jpeg = JpegBatcher("cpu", encode=recorder)
    jpeg.start()
    pictures = [np.ascontiguousarray(np.roll(astronaut, 7 * i, axis=1)) for i in range(6)]
    qualities = [80, 80, 80, 60, 80, 60]
    results: dict[int, bytes] = {}
    try:
        def ask(i: int) -> None:
            results[i] = jpeg.encode(pictures[i], qualities[i])

        first = threading.Thread(target=ask, args=(0,))
        first.start()
        assert recorder.entered.wait(10)  # the first batch is on the "device"
        others = [threading.Thread(target=ask, args=(i,)) for i in range(1, 6)]
        for thread in others:
            thread.start()
        for _ in range(10_000):
            if jpeg._requests.qsize() == 5:
                break
            threading.Event().wait(0.001)
        recorder.release.set()
        for thread in (first, *others):
            thread.join(10)
    finally:
        jpeg.stop()
    assert sorted(recorder.batches) == sorted([(1, 80), (3, 80), (2, 60)])
    for i, picture in enumerate(pictures):
        assert results[i] == encode_jpeg(picture, qualities[i])
    assert not jpeg.failed


def test_a_failing_device_leaves_the_jpegs_to_the_cpu(astronaut) -> None:
    calls = []

    def broken(pictures, quality: int) -> list[bytes]:
        calls.append(len(pictures))
        raise RuntimeError("nvJPEG said no")

    jpeg = JpegBatcher("cpu", encode=broken)
    jpeg.start()
    try:
        assert jpeg.encode(astronaut, 80) == encode_jpeg(astronaut, 80)
        assert jpeg.failed
        assert jpeg.encode(astronaut, 70) == encode_jpeg(astronaut, 70)
    finally:
        jpeg.stop()
    assert calls == [1]  # once failed, the device is not asked again
    with pytest.raises(DeviceUnavailableError, match="failed its check"):
        JpegBatcher("cpu", encode=broken).check(astronaut)
    with pytest.raises(DeviceUnavailableError, match="dB"):
        black = np.zeros_like(astronaut)
        JpegBatcher("cpu", encode=lambda pictures, q: [encode_jpeg(black, q)]).check(astronaut)
    if not _has_torchvision_jpeg():
        with pytest.raises(DeviceUnavailableError, match="lipstream\\[gpu\\]"):
            JpegBatcher("cpu").check(astronaut)


def test_the_stage_encodes_with_the_engines_jpeg_batcher(engine: Wav2LipEngine, astronaut, box) -> None:
    """A session of a factory with a JPEG batcher: every frame the stage sends went through the batcher."""
    import asyncio

    from lipstream.server.lipsync import LipSyncStage
    from lipstream.server.mux import Multiplexer
    from lipstream.server.ring import AudioRing
    from lipstream.server.timeline import Timeline

    recorder = _BatchRecorder()
    recorder.release.set()
    jpeg = JpegBatcher("cpu", encode=recorder)
    factory = Wav2LipFactory(engine, 8, fixed_shapes=True, compositor=DeviceCompositor("cpu"), jpeg=jpeg)
    crop = np.ascontiguousarray(cv2.resize(astronaut[box.y1 : box.y2, box.x1 : box.x2], (96, 96)))
    avatar = _StillAvatar(astronaut, box, crop)
    clock = Clock(16000, 16000, 25.0)
    samples = 8000  # 0.5 s: 13 frames
    ring = AudioRing(2 * samples)
    reader = ring.reader()
    ring.write(0.1 * np.sin(np.arange(samples, dtype=np.float32) * 0.05))
    ring.close()
    timeline = Timeline()
    timeline.add(UtteranceSpan(1, "la", 0, [], end=samples))
    loop = asyncio.new_event_loop()  # never run: the frames' events just queue on it
    try:
        mux = Multiplexer(loop, ("video",), realtime=False, max_ahead_s=1000.0)
        stage = LipSyncStage(
            reader, timeline, mux, avatar, factory.renderer("still", avatar, clock),
            clock=clock, jpeg_quality=75, tts_idle=lambda: True,
        )
        stage.start()
        assert stage.join(60.0)
    finally:
        loop.close()
        factory.close()
    assert jpeg.frames == 13 and {quality for _, quality in recorder.batches} == {75}
    assert factory.batcher.frames == 13


# ---- JPEG on the device (torchvision) and CUDA ---------------------------------------------------------


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


@pytest.mark.skipif(not _has_torchvision_jpeg(), reason="torchvision (the gpu extra) is not importable here")
def test_batched_jpeg_equals_one_by_one_and_is_close_to_the_server_encoder(astronaut, box, model_io) -> None:
    device = "cuda" if CUDA else "cpu"
    compositor = DeviceCompositor(device)
    tensors = compositor.paste_tensors([astronaut] * 3, [box] * 3, _outputs(model_io, 3))
    batch = encode_jpegs(tensors, 80)
    for tensor, jpeg in zip(tensors, batch, strict=True):
        assert jpeg == encode_jpegs([tensor], 80)[0]
        picture = tensor.cpu().numpy()
        ours = simplejpeg.decode_jpeg(jpeg, "BGR")
        server = simplejpeg.decode_jpeg(encode_jpeg(picture, 80), "BGR")
        assert _psnr(ours, picture) > 30 and abs(_psnr(ours, picture) - _psnr(server, picture)) < 3


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_graph_runtime_and_device_paste_on_the_gpu(tmp_path: Path, astronaut, box, model_io) -> None:
    checkpoint = write_official_checkpoint(tmp_path / "wav2lip.pth")
    graph = Wav2LipEngine(checkpoint, device="cuda", runtime="cuda-graph", cache_dir=tmp_path)
    assert graph.fixed_shapes and graph.max_abs_error < graph.tolerance
    out = graph.infer(model_io["mel"], model_io["face"])
    assert np.abs(out - model_io["out"]).max() < graph.tolerance
    assert np.array_equal(graph.infer(model_io["mel"], model_io["face"]), out)  # a replay, the same
    outputs = _outputs(model_io, 4)
    pasted = DeviceCompositor("cuda").paste([astronaut] * 4, [box] * 4, outputs)
    for got, item in zip(pasted, outputs, strict=True):
        assert np.array_equal(got, paste_mouth(astronaut, box, item))


def test_futures_of_a_stopped_batcher_do_not_hang() -> None:
    """A cancelled request is skipped, the others answered."""
    model = _ShapeRecorder()
    batcher = FrameBatcher(model, max_frames=4, buckets=batch_buckets(4))
    batcher.start()
    try:
        waiting = batcher.submit(np.zeros((2, 1, 80, 16), np.float32), np.zeros((2, 6, 96, 96), np.float32))
        cancelled = batcher.submit(np.zeros((2, 1, 80, 16), np.float32), np.zeros((2, 6, 96, 96), np.float32))
        assert cancelled.cancel()
        model.release.set()
        assert waiting.result(timeout=10).shape == (2, 3, 96, 96)
        with pytest.raises(concurrent.futures.CancelledError):
            cancelled.result(timeout=1)
    finally:
        batcher.stop()
