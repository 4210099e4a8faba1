"""`Wav2LipEngine`: one lip-sync model per process, shared by all sessions, on the fastest runtime whose
output stays within its stated tolerance of the official fp32 forward.

Runtimes (`runtime=`; each one object in runtimes.py, chosen once):

- `eager`: the official module as loaded (the reference; tolerance 0).
- `torch`: BatchNorm folded, channels-last, face constants cached (see `fused.py`); 1e-4.
- `compile`: `torch` under `torch.compile` (inductor; needs a C++ compiler); 1e-4.
- `onnx`: the cached-face graph exported to ONNX, run by onnxruntime in fp32; 1e-4.
- `onnx-int8`: that graph in its sub-pixel, channels-last form statically quantised to int8 (export.py);
  `INT8_TOLERANCE`.
- `cuda-fp16`: `torch` in half precision on the GPU; `FP16_TOLERANCE`.
- `cuda-graph`: `cuda-fp16` replayed as one CUDA graph per batch shape (`fixed_shapes`: pad batches to a
  few sizes); `cuda-compile`: under torch.compile(mode="reduce-overhead"); `FP16_TOLERANCE`.

`auto` picks `cuda-graph` when CUDA is present (`cuda-fp16` when its capture fails), else `onnx-int8` (the
fastest CPU runtime: the bench measures them all), falling back to `onnx` when onnxruntime's int8 error on
the held-out calibration items exceeds its tolerance.

Face constants: a still avatar feeds the same face every frame, so the face encoder and the encoder
half of each decoder skip convolution are computed once per crop and kept in a small LRU cache keyed
by the crop's bytes; `infer` finds them by content, `infer_cached` by a key the caller chooses.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import threading
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_wav2lip
from .export import INT8_RECIPE, calibration_inputs, default_cache_dir
from .fused import FusedWav2Lip
from .runtimes import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    INT8_MEAN_TOLERANCE,
    INT8_TOLERANCE,
    RUNTIMES,
    TOLERANCE,
    CachedFaceRuntime,
    Constants,
    EagerRuntime,
    Wav2LipRuntimeError,
    build_runtime,
)

__all__ = [
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "INT8_MEAN_TOLERANCE",
    "INT8_RECIPE",
    "INT8_TOLERANCE",
    "RUNTIMES",
    "Wav2LipEngine",
    "Wav2LipRuntimeError",
]

log = logging.getLogger(__name__)


class Wav2LipEngine:
    """The process's lip-sync model. Thread-safe: sessions call `infer` from their worker threads; model
    runs are serialised (they already use every core), the face-constant cache has its own lock."""

    def __init__(
        self,
        checkpoint_path: str | os.PathLike[str],
        device: str | torch.device | None = None,
        runtime: str = "auto",
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        face_cache_size: int = 32,
        threads: int | None = None,
    ) -> None:
        if runtime != "auto" and runtime not in RUNTIMES:
            raise ValueError(
                f"unknown Wav2Lip runtime {runtime!r}; choose 'auto' or one of {', '.join(RUNTIMES)}"
            )
        self.checkpoint_path = Path(checkpoint_path)
        self.device = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        if runtime.startswith("cuda-") and not self.device.startswith("cuda"):
            raise Wav2LipRuntimeError(
                f"runtime {runtime!r} needs device='cuda' and a CUDA build of torch; "
                "use runtime='auto' on a CPU"
            )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.threads = threads or torch.get_num_threads()
        self.reference = load_wav2lip(self.checkpoint_path, "cpu")  # the fp32 eager reference
        self.fused = FusedWav2Lip(self.reference).to(memory_format=torch.channels_last)
        self._run_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._face_cache: collections.OrderedDict[Hashable, Constants] = collections.OrderedDict()
        self.face_cache_size = face_cache_size
        self._runtime: EagerRuntime | CachedFaceRuntime = EagerRuntime(self.reference)
        self.mean_abs_error = 0.0

        if runtime == "auto":
            cuda = self.device.startswith("cuda")
            runtime, fallback = ("cuda-graph", "cuda-fp16") if cuda else ("onnx-int8", "torch")
            try:
                self._build(runtime)
                error = self._measure_error()  # a CUDA graph is captured on its first run
            except Wav2LipRuntimeError as exc:
                log.warning("Wav2Lip runtime %s unavailable (%s); using %s", runtime, exc, fallback)
                runtime = fallback
                self._build(runtime)
                error = self._measure_error()
            # The same bounds as the fixture test, on the held-out calibration items, so that a checkpoint
            # that int8 serves badly falls back to fp32.
            too_far = error > INT8_TOLERANCE or self.mean_abs_error > INT8_MEAN_TOLERANCE
            if runtime == "onnx-int8" and too_far:
                log.warning(
                    "Wav2Lip int8 error (max %.4f, mean %.4f) exceeds (%.4f, %.4f) on the calibration check; "
                    "using onnx fp32",
                    error,
                    self.mean_abs_error,
                    INT8_TOLERANCE,
                    INT8_MEAN_TOLERANCE,
                )
                runtime = "onnx"
                self._build(runtime)
                error = self._measure_error()
        else:
            self._build(runtime)
            try:
                error = self._measure_error()
            except Exception as exc:  # torch.compile compiles on the first call and fails in many ways
                if runtime != "compile":
                    raise
                raise Wav2LipRuntimeError(f"torch.compile failed on the first call ({exc}); use "
                                          f"runtime='torch'") from exc
        self.tolerance = TOLERANCE[runtime]
        self.max_abs_error = error
        """Max abs difference from the fp32 eager reference on the held-out calibration inputs (the mean
        is in `mean_abs_error`)."""
        log.info(
            "Wav2Lip engine: runtime %s on %s, max abs error vs fp32 %.2e (tolerance %.0e)",
            runtime,
            self.device,
            error,
            self.tolerance,
        )

    @property
    def runtime(self) -> str:
        """The runtime's name (one of RUNTIMES)."""
        return self._runtime.name

    @property
    def fixed_shapes(self) -> bool:
        """True when the runtime keeps a graph per batch size: batches padded to a few sizes reuse them."""
        return self._runtime.fixed_shapes

    @property
    def preferred_batch_size(self) -> int:
        """Frames per `infer` call that use the hardware well: 8 on a CPU, 64 on a GPU."""
        return 64 if self.device.startswith("cuda") else 8

    def _build(self, runtime: str) -> None:
        self._runtime = build_runtime(
            runtime,
            reference=self.reference,
            fused=self.fused,
            device=self.device,
            checkpoint_path=self.checkpoint_path,
            cache_dir=self.cache_dir,
            threads=self.threads,
        )
        self._face_cache.clear()

    def _measure_error(self) -> float:
        mel, faces = calibration_inputs()
        held_out = np.arange(1, len(mel), 4)  # 6 of the odd items (the even ones calibrate int8)
        face = faces[held_out % len(faces)]
        reference = EagerRuntime(self.reference).forward(mel[held_out], face)
        difference = np.abs(self.infer(mel[held_out], face) - reference)
        self.mean_abs_error = float(difference.mean())
        return float(difference.max())

    # ---- inference ---------------------------------------------------------------------------------------

    def infer(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        """(N, 1, 80, 16), (N, 6, 96, 96) float32 -> (N, 3, 96, 96) float32 in [0, 1], BGR.

        Items may come from different sessions and avatars; faces seen before reuse their cached
        encoder work (looked up by content).
        """
        mel, face = self._check(mel, face)
        runtime = self._runtime
        if isinstance(runtime, EagerRuntime):
            with self._run_lock:
                return runtime.forward(mel, face)
        keys: list[Hashable] = []
        for index, item in enumerate(face):
            if index and np.array_equal(item, face[index - 1]):  # a still avatar's run: compared, not hashed
                keys.append(keys[-1])
            else:
                keys.append(hashlib.blake2b(item.tobytes(), digest_size=16).digest())
        constants = self._constants_for(runtime, keys, face)
        with self._run_lock:
            return runtime.run(mel, constants)

    def infer_cached(self, mel: np.ndarray, key: Hashable, face: np.ndarray | None = None) -> np.ndarray:
        """(N, 1, 80, 16) frames that all use the one face crop named by `key` (e.g. (avatar, frame)):
        its (6, 96, 96) `face` is needed only the first time (or after the cache evicted it)."""
        runtime = self._runtime
        if isinstance(runtime, EagerRuntime):
            raise Wav2LipRuntimeError("the eager runtime has no cached-face path; use infer(mel, face)")
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        with self._cache_lock:
            cached = self._face_cache.get(key)
        if cached is None:
            if face is None:
                raise KeyError(f"no face constants cached for key {key!r}; pass the (6, 96, 96) face as well")
            face = np.ascontiguousarray(face, dtype=np.float32).reshape(1, 6, 96, 96)
            cached = self._constants_for(runtime, [key], face)
        else:
            self._touch(key)
        with self._run_lock:
            return runtime.run(mel, cached)

    def _check(self, mel: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        face = np.ascontiguousarray(face, dtype=np.float32)
        if mel.ndim != 4 or mel.shape[1:] != (1, 80, 16):
            raise ValueError(f"mel must be (N, 1, 80, 16), got {mel.shape}; add the axis with mel[:, None]")
        if face.ndim != 4 or face.shape[1:] != (6, 96, 96) or len(face) != len(mel):
            raise ValueError(
                f"face must be (N, 6, 96, 96) with N = {len(mel)} (from face_input), got {face.shape}"
            )
        return mel, face

    def _touch(self, key: Hashable) -> None:
        with self._cache_lock:
            if key in self._face_cache:
                self._face_cache.move_to_end(key)

    def _constants_for(self, runtime: CachedFaceRuntime, keys: list[Hashable], face: np.ndarray) -> Constants:
        """The 7 constants for a batch: batch 1 when every item has the same crop, else stacked per item."""
        per_key: dict[Hashable, Constants] = {}
        for index, key in enumerate(keys):
            if key in per_key:
                continue
            with self._cache_lock:
                hit = self._face_cache.get(key)
                if hit is not None:
                    self._face_cache.move_to_end(key)
            if hit is None:
                with self._run_lock:
                    hit = runtime.face_constants(face[index : index + 1])
                with self._cache_lock:
                    self._face_cache[key] = hit
                    while len(self._face_cache) > self.face_cache_size:
                        self._face_cache.popitem(last=False)
            per_key[key] = hit
        if len(per_key) == 1:
            return next(iter(per_key.values()))
        return runtime.stack([per_key[key] for key in keys])
