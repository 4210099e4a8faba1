"""Lip-sync stage speed on this machine: Wav2Lip runtimes side by side with plain eager fp32 at batch 8.

Weights: the conformance fill rule (the real `wav2lip.pth` cannot be shipped; speed does not depend on
the values, int8 error is measured on these weights). Inputs: real speech mel windows and the
astronaut face (the default avatar). "Stage" = model + feathered paste into the 512x512 frame + JPEG.
Figures are frames per second of wall time, each measured for a few seconds after a warm-up.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import cv2
import numpy as np
import torch
from lipstream.models.wav2lip import RUNTIMES, Wav2LipEngine, Wav2LipRuntimeError, paste_mouth
from lipstream.server.lipsync import FrameBatcher, encode_jpeg
from skimage import data as skdata

from tests.wav2lip_fill import CONFORMANCE, write_official_checkpoint

BATCH = 8
SECONDS = 4.0
ROUNDS = 3
JPEG_QUALITY = 80


class _Box:
    def __init__(self, x1: int, y1: int, x2: int, y2: int) -> None:
        self.x1, self.y1, self.x2, self.y2 = x1, y1, x2, y2


class Rate:
    """Frames per second of wall time, and frames per CPU-second of this process (all its threads)."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu


def _rate(step: Callable[[], int], seconds: float = SECONDS) -> Rate:
    """How fast `step` (which returns how many frames it did) runs, after one warm-up call.

    With other processes on the cores, wall time mostly measures the load; CPU time (onnxruntime's
    spinning is off) measures the work, so `2 x frames per CPU-second` estimates an idle 2-core machine.
    """
    step()
    done, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while True:
        done += step()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and done >= 3 * BATCH:
            return Rate(done / elapsed, done / max(time.process_time() - cpu_started, 1e-9))


def _interleaved(steps: dict[str, Callable[[], int]], after: Callable[[], None]) -> dict[str, Rate]:
    """Rates of steps to be compared, measured in alternating rounds (a change in the load then hits all of
    them alike): each one's median round by wall time. `after` runs after each measurement."""
    rounds: dict[str, list[Rate]] = {label: [] for label in steps}
    for _ in range(ROUNDS):
        for label, step in steps.items():
            rounds[label].append(_rate(step, SECONDS / ROUNDS))
            after()
    return {label: sorted(rates, key=lambda rate: rate.wall)[ROUNDS // 2] for label, rates in rounds.items()}


def _jpeg_encoders() -> dict[str, Callable[[np.ndarray], bytes]]:
    """The server's encoder and the other candidate, both at 4:2:0 (the subsampling the server sends)."""

    def opencv(image: np.ndarray) -> bytes:
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY,
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
        ok, encoded = cv2.imencode(".jpg", image, params)
        return encoded.tobytes()

    return {"server encode_jpeg": lambda image: encode_jpeg(image, JPEG_QUALITY), "OpenCV 4:2:0": opencv}


def main() -> None:
    with np.load(CONFORMANCE / "model_io.npz") as npz:
        io = {k: npz[k] for k in npz.files}
    with np.load(CONFORMANCE / "mel.npz") as npz:
        chunks = npz["mel_chunks"][:, None].astype(np.float32)  # (87, 1, 80, 16)
    frame = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    y1, y2, x1, x2 = io["paste_box_y1y2x1x2"].tolist()
    box = _Box(x1, y1, x2, y2)
    face = np.repeat(io["face"][:1], BATCH, axis=0)  # a still avatar: the same face every frame
    mels = [chunks[i: i + BATCH] for i in range(0, len(chunks) - BATCH + 1, BATCH)]
    turn = iter(range(10**9))
    rows: list[tuple[str, ...]] = []
    anchor: list[Rate] = []

    def add(label: str, rate: Rate, error: str = "", compare: bool = True) -> None:
        if not anchor:
            anchor.append(rate)
        ratio = f"{rate.cpu / anchor[0].cpu:.2f}x" if compare else ""
        rows.append((label, f"{rate.wall:.1f}", f"{rate.cpu:.1f}", f"{2 * rate.cpu:.1f}", ratio, error))

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_official_checkpoint(Path(tmp) / "wav2lip.pth")
        reference = Wav2LipEngine(checkpoint, device="cpu", runtime="eager", cache_dir=tmp)

        # Plain eager fp32, inputs laid out as the official script makes them (NHWC numpy transposed to
        # NCHW: channels-last strides).
        def eager_step() -> int:
            mel = mels[next(turn) % len(mels)]
            face_t = torch.from_numpy(np.ascontiguousarray(face.transpose(0, 2, 3, 1))).permute(0, 3, 1, 2)
            mel_t = torch.from_numpy(np.ascontiguousarray(mel.transpose(0, 2, 3, 1))).permute(0, 3, 1, 2)
            with torch.inference_mode():
                reference.reference(mel_t, face_t)
            return BATCH

        add("eager fp32 (official module), model only", _rate(eager_step), "0 (the reference)")

        # `compile` is left out: 161 s of inductor compilation here for ~1.05x over `torch` (see README).
        for runtime in ("torch", "onnx", "onnx-int8"):
            assert runtime in RUNTIMES
            try:
                engine = Wav2LipEngine(checkpoint, device="cpu", runtime=runtime, cache_dir=tmp)
            except Wav2LipRuntimeError as exc:
                rows.append((f"{runtime}", "n/a", "", "", "", f"unavailable: {exc}"))
                continue
            fixture_error = float(np.abs(engine.infer(io["mel"], io["face"]) - io["out"]).max())

            def model_step(engine: Wav2LipEngine = engine) -> int:
                engine.infer(mels[next(turn) % len(mels)], face)
                return BATCH

            add(f"{runtime}: folded BN, cached face, model only", _rate(model_step),
                f"{fixture_error:.2e} (tolerance {engine.tolerance:.0e})")

        encoders = _jpeg_encoders()

        def encode_step(encode: Callable[[np.ndarray], bytes]) -> int:
            for _ in range(BATCH):
                encode(frame)
            return BATCH

        encode_steps = {name: functools.partial(encode_step, encode) for name, encode in encoders.items()}
        for name, rate in _interleaved(encode_steps, lambda: None).items():
            add(f"JPEG encode only: {name}, q{JPEG_QUALITY}, 512x512", rate, compare=False)

        def paste_step() -> int:
            for _ in range(BATCH):
                paste_mouth(frame, box, io["out"][0])
            return BATCH

        add("feathered paste only, 512x512", _rate(paste_step, 2.0), compare=False)

        auto = Wav2LipEngine(checkpoint, device="cpu", runtime="auto", cache_dir=tmp)
        auto_error = float(np.abs(auto.infer(io["mel"], io["face"]) - io["out"]).max())
        batcher = FrameBatcher(auto)  # the server's model thread
        batcher.start()
        in_flight: list[Future[np.ndarray]] = []

        def make_pictures(outputs: np.ndarray, encode: Callable[[np.ndarray], bytes]) -> int:
            for item in outputs:
                encode(paste_mouth(frame, box, item))
            return len(outputs)

        def serial_step(encode: Callable[[np.ndarray], bytes]) -> int:
            return make_pictures(batcher.submit(mels[next(turn) % len(mels)], face).result(), encode)

        def pipelined_step(encode: Callable[[np.ndarray], bytes]) -> int:
            """As LipSyncStage: the next batch is submitted before this one is pasted and encoded."""
            if not in_flight:
                in_flight.append(batcher.submit(mels[next(turn) % len(mels)], face))
            in_flight.append(batcher.submit(mels[next(turn) % len(mels)], face))
            return make_pictures(in_flight.pop(0).result(), encode)

        def drain() -> None:
            while in_flight:
                in_flight.pop().result()

        stages = {
            f"serial: model, then paste + {name}": functools.partial(serial_step, encode)
            for name, encode in encoders.items()
        }
        stages["**pipelined (the server): next batch's model during paste + server encode_jpeg**"] = (
            functools.partial(pipelined_step, encoders["server encode_jpeg"])
        )
        for label, rate in _interleaved(stages, drain).items():
            add(f"stage, auto = {auto.runtime}, {label}", rate,
                f"{auto_error:.3f} (calibration check {auto.max_abs_error:.3f})")
        batcher.stop()

        def eager_stage_step() -> int:
            eager_step()
            for item in io["out"][[0] * BATCH]:
                encode_jpeg(paste_mouth(frame, box, item), JPEG_QUALITY)
            return BATCH

        add("stage: eager fp32 + paste + server encode_jpeg", _rate(eager_stage_step), "0")

    threads = torch.get_num_threads()
    print(f"## Wav2Lip lip-sync stage, batch {BATCH}, CPU, {threads} threads (target >= 25 fps; "
          "anchor: eager fp32 at batch 8, ~17 fps when the issue was written)\n")
    print("| configuration | frames/s (wall) | frames per CPU-second | est. idle 2 cores | vs eager (CPU) "
          "| max abs error vs fp32 (fixture) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nWall figures depend on what else runs on the cores; `est. idle 2 cores` = 2 x frames per "
          "CPU-second (perfect 2-thread scaling).\n")


if __name__ == "__main__":
    main()
