"""The runtimes Wav2LipEngine can run the model on, one object each, chosen once by name.

A cached-face runtime computes a face's 7 constants once (`face_constants`, in its own form: torch
tensors, channels-last numpy for int8, ...) and runs frames against them (`run`); `eager` is the
official module as loaded, which has no cached-face path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .export import CONSTANT_NAMES, CachedGraph, onnx_model
from .fused import FusedWav2Lip

FP32_TOLERANCE = 1e-4
INT8_TOLERANCE = 0.08
"""Max abs error of `onnx-int8` against fp32 on sigmoid outputs in [0, 1] (20/255): 1.6x the measured max
on the conformance fixture. Not tighter: the quantiser recipes compared all land within about that spread
of each other, and another onnxruntime release or int8 kernel moves the figure by as much (the figures:
README "Wav2Lip" and bench/FIGURES.md)."""
INT8_MEAN_TOLERANCE = 0.0128
"""Mean abs error of `onnx-int8` against fp32 on the fixture: 1.9x the measured mean (the max error is set
by a few pixels; the mean catches a systematic drift such as a wrong calibration range)."""
FP16_TOLERANCE = 1e-2
RUNTIMES = ("eager", "torch", "compile", "onnx", "onnx-int8", "cuda-fp16")
TOLERANCE = {
    "eager": 0.0,
    "torch": FP32_TOLERANCE,
    "compile": FP32_TOLERANCE,
    "onnx": FP32_TOLERANCE,
    "onnx-int8": INT8_TOLERANCE,
    "cuda-fp16": FP16_TOLERANCE,
}

Constants = list[Any]
"""The 7 face constants of a crop (or of a batch, stacked), in the runtime's own form."""


class Wav2LipRuntimeError(RuntimeError):
    """A runtime that was asked for by name cannot run here (names the runtime and the fix)."""


class CachedFaceRuntime(Protocol):
    name: str

    def face_constants(self, face: np.ndarray) -> Constants:
        """The constants of one (1, 6, 96, 96) float32 crop."""
        ...

    def stack(self, per_item: Sequence[Constants]) -> Constants:
        """One constants list for a batch whose items use different crops."""
        ...

    def run(self, mel: np.ndarray, constants: Constants) -> np.ndarray:
        """(N, 1, 80, 16) float32 mel windows against these constants -> (N, 3, 96, 96) float32."""
        ...


def _channels_last(face: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(face).contiguous(memory_format=torch.channels_last)


class EagerRuntime:
    """The official module as loaded: the reference, with no cached-face path."""

    name = "eager"

    def __init__(self, reference: torch.nn.Module) -> None:
        self.reference = reference

    def forward(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        # Channels-last: the strides of the official NHWC->NCHW conversion (mkldnn's fast path).
        with torch.inference_mode():
            out: np.ndarray = self.reference(_channels_last(mel), _channels_last(face)).numpy()
        return out


class TorchRuntime:
    """`torch`: the fused module (BatchNorm folded, channels-last); `compile`: it under torch.compile."""

    def __init__(self, fused: FusedWav2Lip, compiled: bool = False) -> None:
        self.name = "compile" if compiled else "torch"
        self.fused = fused
        self._compiled: Any = None
        if compiled:
            try:
                self._compiled = torch.compile(CachedGraph(fused), dynamic=True)
            except Exception as exc:  # torch.compile failures come in many types; report them as one
                raise Wav2LipRuntimeError(f"torch.compile failed ({exc}); use runtime='torch'") from exc

    def face_constants(self, face: np.ndarray) -> Constants:
        with torch.inference_mode():
            constants = self.fused.face_constants(_channels_last(face))
        return [c.contiguous(memory_format=torch.channels_last) for c in constants]

    def stack(self, per_item: Sequence[Constants]) -> Constants:
        return [torch.cat(parts) for parts in zip(*per_item, strict=True)]

    def run(self, mel: np.ndarray, constants: Constants) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(mel)
            if self._compiled is not None:
                return np.asarray(self._compiled(tensor, *constants).numpy())
            return self.fused.forward_cached(tensor, constants).numpy()


class OnnxRuntime:
    """`onnx`: the cached-face graph in onnxruntime, fp32; `onnx-int8`: its int8 form, whose graph takes
    the constants channels-last (see FusedWav2Lip.forward_cached_nhwc)."""

    def __init__(
        self,
        reference: torch.nn.Module,
        fused: FusedWav2Lip,
        checkpoint_path: Path,
        cache_dir: Path,
        threads: int,
        *,
        int8: bool,
    ) -> None:
        self.name = "onnx-int8" if int8 else "onnx"
        self.fused = fused
        self.int8 = int8
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise Wav2LipRuntimeError("onnxruntime is not installed (pip install onnxruntime)") from exc
        try:
            path = onnx_model(reference, fused, checkpoint_path, cache_dir, int8=int8)
        except ImportError as exc:
            raise Wav2LipRuntimeError(
                f"int8 quantisation needs onnx and onnxruntime ({exc}): pip install onnx onnxruntime"
            ) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # Other stages (TTS, JPEG) share the cores: do not busy-wait between ops.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def face_constants(self, face: np.ndarray) -> Constants:
        with torch.inference_mode():
            constants = self.fused.face_constants(_channels_last(face))
        if self.int8:
            return [np.ascontiguousarray(c.permute(0, 2, 3, 1).numpy()) for c in constants]
        return [np.ascontiguousarray(c.numpy()) for c in constants]

    def stack(self, per_item: Sequence[Constants]) -> Constants:
        return [np.concatenate(parts) for parts in zip(*per_item, strict=True)]

    def run(self, mel: np.ndarray, constants: Constants) -> np.ndarray:
        feed = {"mel": mel, **dict(zip(CONSTANT_NAMES, constants, strict=True))}
        return np.asarray(self._session.run(None, feed)[0])


class CudaFp16Runtime:
    """`cuda-fp16`: the fused module in half precision on the GPU."""

    name = "cuda-fp16"

    def __init__(self, reference: torch.nn.Module, device: str) -> None:
        self.device = device
        self.model = FusedWav2Lip(reference).to(device).half().to(memory_format=torch.channels_last)

    def face_constants(self, face: np.ndarray) -> Constants:
        with torch.inference_mode():
            tensor = torch.from_numpy(face).to(self.device).half()
            tensor = tensor.contiguous(memory_format=torch.channels_last)
            return list(self.model.face_constants(tensor))

    def stack(self, per_item: Sequence[Constants]) -> Constants:
        return [torch.cat(parts) for parts in zip(*per_item, strict=True)]

    def run(self, mel: np.ndarray, constants: Constants) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(mel).to(self.device).half()
            return self.model.forward_cached(tensor, constants).float().cpu().numpy()


def build_runtime(
    name: str,
    *,
    reference: torch.nn.Module,
    fused: FusedWav2Lip,
    device: str,
    checkpoint_path: Path,
    cache_dir: Path,
    threads: int,
) -> EagerRuntime | CachedFaceRuntime:
    """The runtime of this name (one of RUNTIMES); raises Wav2LipRuntimeError when it cannot run here."""
    if name == "eager":
        return EagerRuntime(reference)
    if name in ("torch", "compile"):
        return TorchRuntime(fused, compiled=name == "compile")
    if name in ("onnx", "onnx-int8"):
        return OnnxRuntime(reference, fused, checkpoint_path, cache_dir, threads, int8=name == "onnx-int8")
    if name == "cuda-fp16":
        return CudaFp16Runtime(reference, device)
    raise ValueError(f"unknown Wav2Lip runtime {name!r}; choose 'auto' or one of {', '.join(RUNTIMES)}")
