"""The GPU path (issue 20, item 4) on the device this machine has: Wav2Lip frames/s per batch bucket, paste
+ JPEG batched against per frame, and the REALTIME Wav2Lip sessions the server holds at 25 fps.

`python -m bench gpu [-- --quick] [-- --skip sessions]`. Sizes are bounded so that the whole run fits in
about 8 minutes on one H100 (about 4 with --quick); on a machine without CUDA it runs the same code at small
sizes on the CPU and says so.

Rows:

- **Official module, fp16, channels-last** (the issue's anchors on an H100: eager 16,800 frames/s at batch
  512, torch.compile 33,461 frames/s at batch 512, a CUDA graph 1.1 ms at batch 1): the full forward, face
  encoder included, inputs already on the device; the ratio column is measured / anchor.
- **The server's runtimes** (models/wav2lip/runtimes.py, a still avatar's cached face constants): numpy
  mel in, numpy frames out, as the FrameBatcher calls them, per bucket. `cuda-fp16` is eager;
  `cuda-graph` replays a CUDA graph per bucket (`auto` on CUDA); `cuda-compile` is torch.compile
  (reduce-overhead), compiled per bucket (only some buckets: each compile takes a while).
- **Paste + JPEG**: the 512x512 default avatar, the model output pasted (feathered) and encoded at q80:
  the CPU path of today per frame (numpy paste, simplejpeg), and the device path (batch_paste +
  torchvision's nvJPEG) per frame and batched.
- **Sessions**: bench_sessions with `--engine wav2lip` (the server's auto runtime and, on CUDA, its device
  paste), REALTIME at 25 fps.

Weights: the conformance fill (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from lipstream.models.wav2lip import Wav2LipEngine, load_wav2lip, paste_mouth
from lipstream.models.wav2lip.fused import FusedWav2Lip
from lipstream.models.wav2lip.runtimes import CudaFp16Runtime, GraphRuntime, TorchRuntime, _StaticShape
from lipstream.server.lipsync.gpu import DeviceCompositor, DeviceUnavailableError, encode_jpegs
from lipstream.server.lipsync.stage import encode_jpeg
from skimage import data as skdata

from tests.wav2lip_fill import CONFORMANCE, write_official_checkpoint

ANCHOR_EAGER_FPS = 16_800.0  # official architecture, eager fp16, batch 512, H100
ANCHOR_COMPILE_FPS = 33_461.0  # the same under torch.compile, batch 512
ANCHOR_GRAPH_MS = 1.1  # a CUDA graph at batch 1
JPEG_QUALITY = 80
BUDGET_S = 450.0  # compiles are skipped once this much has gone (the rest still runs)


class _Box:
    def __init__(self, x1: int, y1: int, x2: int, y2: int) -> None:
        self.x1, self.y1, self.x2, self.y2 = x1, y1, x2, y2


class Clock:
    """Seconds on the device: work queued on a GPU counts when it has finished."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def _rate(call: Callable[[], Any], frames: int, clock: Clock, seconds: float) -> tuple[float, float]:
    """(frames/s, median ms per call) of `call` after two warm-up calls, over about `seconds`."""
    call()
    call()
    times: list[float] = []
    began = clock.now()
    while True:
        started = clock.now()
        call()
        times.append(clock.now() - started)
        if time.perf_counter() - began >= seconds and len(times) >= 3:
            break
    return frames * len(times) / sum(times), 1000 * statistics.median(times)


class Table:
    def __init__(self, title: str, header: tuple[str, ...]) -> None:
        self.title, self.header = title, header
        self.rows: list[tuple[str, ...]] = []

    def add(self, *cells: str) -> None:
        self.rows.append(cells)
        print("  " + " | ".join(cells), flush=True)  # as it goes: a run cut short still shows its rows

    def print(self) -> None:
        print(f"\n## {self.title}\n")
        print("| " + " | ".join(self.header) + " |")
        print("|" + "---|" * len(self.header))
        for row in self.rows:
            print("| " + " | ".join(row) + " |")
        print()


def _ratio(value: float, anchor: float, cuda: bool) -> str:
    return f"{value / anchor:.2f}x" if cuda else "n/a (no CUDA)"


def _inputs(batch: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(CONFORMANCE / "model_io.npz") as npz:
        mel, face = npz["mel"], npz["face"]
    index = np.arange(batch) % len(mel)
    mel_t = torch.from_numpy(mel[index]).to(device, dtype)
    face_t = torch.from_numpy(face[index]).to(device, dtype).contiguous(memory_format=torch.channels_last)
    return mel_t, face_t


def official_rows(
    table: Table, checkpoint: Path, device: torch.device, big: int, seconds: float, deadline: float
) -> None:
    """The anchors' setting: the official module in fp16 (fp32 on a CPU), channels-last, inputs on the
    device."""
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    precision = "fp16" if cuda else "fp32"
    clock = Clock(device)
    official = load_wav2lip(checkpoint, device).to(dtype).to(memory_format=torch.channels_last)

    def official_call(module: Any, batch: int) -> Callable[[], Any]:
        mel, face = _inputs(batch, device, dtype)

        def call() -> Any:
            with torch.inference_mode():
                return module(mel, face)

        return call

    fps, ms = _rate(official_call(official, big), big, clock, seconds)
    anchor = f"{ANCHOR_EAGER_FPS:,.0f} fps @512" if big == 512 else "(batch 512)"
    table.add(f"official, eager {precision} channels-last", str(big), f"{fps:,.0f}", f"{ms:.2f}", anchor,
              _ratio(fps, ANCHOR_EAGER_FPS, cuda and big == 512))
    if cuda and time.perf_counter() < deadline:
        label = "official, torch.compile fp16"
        try:
            compiled = torch.compile(official, dynamic=False)
            began = time.perf_counter()
            official_call(compiled, big)()
            compile_s = time.perf_counter() - began
            fps, ms = _rate(official_call(compiled, big), big, clock, seconds)
            table.add(f"{label} (compiled in {compile_s:.0f} s)", str(big), f"{fps:,.0f}", f"{ms:.2f}",
                      f"{ANCHOR_COMPILE_FPS:,.0f} fps @512", _ratio(fps, ANCHOR_COMPILE_FPS, big == 512))
        except Exception as exc:  # a compile failure is a figure too: the row says why
            table.add(label, str(big), "failed", "", "", f"{type(exc).__name__}: {exc}")
    mel1, face1 = _inputs(1, device, dtype)
    with torch.inference_mode():
        static = _StaticShape(official, mel1, [face1], capture=cuda)
        fps, ms = _rate(lambda: static(mel1, [face1]), 1, clock, seconds)
    label = "official, CUDA graph fp16" if cuda else "official, eager fp32 (no CUDA graph on a CPU)"
    speed = _ratio(ANCHOR_GRAPH_MS, ms, cuda) + (" (anchor ms / measured ms)" if cuda else "")
    table.add(label, "1", f"{fps:,.0f}", f"{ms:.3f}", f"{ANCHOR_GRAPH_MS} ms @1", speed)


def model_rows(
    checkpoint: Path, device: torch.device, buckets: tuple[int, ...], compile_buckets: tuple[int, ...],
    seconds: float, deadline: float,
) -> Table:
    cuda = device.type == "cuda"
    clock = Clock(device)
    table = Table(
        f"Wav2Lip frames/s per batch on {_device_name(device)}",
        ("model, runtime", "batch", "frames/s", "ms per batch", "anchor (H100)", "measured / anchor"),
    )
    official_rows(table, checkpoint, device, max(buckets), seconds, deadline)

    # The server's runtimes: numpy in and out, a still avatar's cached face constants.
    reference = load_wav2lip(checkpoint, "cpu")
    with np.load(CONFORMANCE / "mel.npz") as npz:
        chunks = npz["mel_chunks"][:, None].astype(np.float32)
    with np.load(CONFORMANCE / "model_io.npz") as npz:
        face = npz["face"][:1]
    runtimes: list[tuple[Any, tuple[int, ...]]] = []
    if cuda:
        runtimes = [
            (CudaFp16Runtime(reference, str(device)), buckets),
            (GraphRuntime(reference, str(device)), buckets),
        ]
    else:
        fused = FusedWav2Lip(reference).to(memory_format=torch.channels_last)
        runtimes = [(TorchRuntime(fused), buckets), (GraphRuntime(reference, "cpu"), buckets)]
    for runtime, sizes in runtimes:
        constants = runtime.face_constants(face)
        for batch in sizes:
            mel = chunks[np.arange(batch) % len(chunks)]
            fps, ms = _rate(lambda: runtime.run(mel, constants), batch, clock, seconds)  # noqa: B023
            table.add(f"server `{runtime.name}`, cached face, numpy in/out", str(batch), f"{fps:,.0f}",
                      f"{ms:.3f}", "", "")
    if cuda:
        runtime = GraphRuntime(reference, str(device), compiled=True)
        constants = runtime.face_constants(face)
        for batch in compile_buckets:
            if time.perf_counter() > deadline:
                table.add("server `cuda-compile`", str(batch), "skipped", "", "", "time budget spent")
                continue
            mel = chunks[np.arange(batch) % len(chunks)]
            try:
                began = time.perf_counter()
                runtime.run(mel, constants)
                compile_s = time.perf_counter() - began
                fps, ms = _rate(lambda: runtime.run(mel, constants), batch, clock, seconds)  # noqa: B023
                table.add(f"server `cuda-compile` (compiled in {compile_s:.0f} s)", str(batch), f"{fps:,.0f}",
                          f"{ms:.3f}", "", "")
            except Exception as exc:  # the row says why
                reason = f"{type(exc).__name__}: {exc}"
                table.add("server `cuda-compile`", str(batch), "failed", "", "", reason)
                break
    return table


def paste_rows(device: torch.device, batches: tuple[int, ...], seconds: float) -> Table:
    """Paste + JPEG of the 512x512 avatar: the CPU's per-frame path, the device's per frame and batched."""
    clock = Clock(device)
    with np.load(CONFORMANCE / "model_io.npz") as npz:
        out = npz["out"][0]
        y1, y2, x1, x2 = npz["paste_box_y1y2x1x2"].tolist()
    frame = np.ascontiguousarray(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    box = _Box(x1, y1, x2, y2)
    table = Table(
        f"Paste + JPEG q{JPEG_QUALITY}, 512x512 frames, on {_device_name(device)}",
        ("path", "frames per call", "frames/s", "ms per call", "note"),
    )

    def cpu_frame() -> bytes:
        return encode_jpeg(paste_mouth(frame, box, out), JPEG_QUALITY)

    fps, ms = _rate(cpu_frame, 1, Clock(torch.device("cpu")), seconds)
    table.add("CPU today: numpy paste + simplejpeg, per frame", "1", f"{fps:,.0f}", f"{ms:.2f}", "one core")
    compositor = DeviceCompositor(device)
    for batch in (1, *batches):
        outputs = np.repeat(out[None], batch, axis=0)

        def paste() -> list[torch.Tensor]:
            return compositor.paste_tensors([frame] * batch, [box] * batch, outputs)  # noqa: B023

        fps, ms = _rate(paste, batch, clock, seconds)
        table.add(f"{device.type}: batch_paste only", str(batch), f"{fps:,.0f}", f"{ms:.2f}", "")
        try:
            def paste_and_encode() -> list[bytes]:
                return encode_jpegs(paste(), JPEG_QUALITY)  # noqa: B023

            fps, ms = _rate(paste_and_encode, batch, clock, seconds)
            table.add(f"{device.type}: batch_paste + torchvision encode_jpeg", str(batch), f"{fps:,.0f}",
                      f"{ms:.2f}", "")
        except DeviceUnavailableError as exc:
            label = f"{device.type}: batch_paste + torchvision encode_jpeg"
            table.add(label, str(batch), "n/a", "", str(exc))
    return table


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    return f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__} (CUDA absent)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench gpu --")
    parser.add_argument("--quick", action="store_true", help="fewer buckets and compiles (about 4 minutes)")
    parser.add_argument("--skip", action="append", default=[], choices=("model", "paste", "sessions"))
    parser.add_argument("--seconds", type=float, default=0.0, help="per row (default 1.5; 0.5 --quick)")
    args = parser.parse_args(argv if argv is not None else [])
    began = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    seconds = args.seconds or (0.5 if args.quick or not cuda else 1.5)
    if cuda:
        buckets = (1, 8, 32, 512) if args.quick else (1, 8, 32, 128, 512)
        compile_buckets = (1, 512) if args.quick else (1, 32, 512)
        paste_batches = (32,) if args.quick else (8, 32, 128)
        sessions = ["1", "8", "16"] if args.quick else ["1", "8", "16", "32"]
        speech_s = "8" if args.quick else "12"
    else:
        buckets, compile_buckets, paste_batches, sessions, speech_s = (1, 8), (), (8,), ["1"], "4"
        print("CUDA is absent: the same code at small sizes on the CPU (no CUDA graphs, no compiles, no "
              "nvJPEG); the figures are not the GPU's.\n")
    tables: list[Table] = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_official_checkpoint(Path(tmp) / "wav2lip.pth")
        if "model" not in args.skip:
            print(f"# Wav2Lip on {_device_name(device)}", flush=True)
            tables.append(model_rows(checkpoint, device, buckets, compile_buckets, seconds, began + BUDGET_S))
            auto = Wav2LipEngine(checkpoint, device=str(device), runtime="auto", cache_dir=tmp)
            print(f"\nThe server's `auto` here: runtime {auto.runtime} on {auto.device}, fixed shapes "
                  f"{auto.fixed_shapes}, max abs error vs fp32 {auto.max_abs_error:.4f} "
                  f"(tolerance {auto.tolerance:.0e})", flush=True)
            del auto
        if "paste" not in args.skip:
            print("# Paste + JPEG", flush=True)
            tables.append(paste_rows(device, paste_batches, seconds))
    for table in tables:
        table.print()
    if "sessions" not in args.skip:
        from bench import bench_sessions

        if cuda:
            torch.cuda.empty_cache()  # the server is another process on the same GPU
        print("# Sessions (bench_sessions --engine wav2lip)", flush=True)
        bench_sessions.main([*sessions, "--engine", "wav2lip", "--seconds", speech_s])
    print(f"bench gpu: {time.perf_counter() - began:.0f} s on {_device_name(device)}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
