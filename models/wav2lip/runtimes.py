"""The runtimes Wav2LipEngine can run the model on, one object each, chosen once by name.

A cached-face runtime computes a face's 7 constants once (`face_constants`, in its own form: torch
tensors, channels-last numpy for int8, ...) and runs frames against them (`run`); `eager` is the
official module as loaded, which has no cached-face path. A runtime with `fixed_shapes` keeps a graph per
input shape (CUDA graphs, torch.compile): its callers pad batches to a few sizes (the server's FrameBatcher
pads to powers of 2) so that the graphs are reused.
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
RUNTIMES = ("eager", "torch", "compile", "onnx", "onnx-int8", "cuda-fp16", "cuda-graph", "cuda-compile")
TOLERANCE = {
    "eager": 0.0,
    "torch": FP32_TOLERANCE,
    "compile": FP32_TOLERANCE,
    "onnx": FP32_TOLERANCE,
    "onnx-int8": INT8_TOLERANCE,
    "cuda-fp16": FP16_TOLERANCE,
    "cuda-graph": FP16_TOLERANCE,
    "cuda-compile": FP16_TOLERANCE,
}
MAX_GRAPHS = 32
"""Input shapes a fixed-shape runtime keeps a graph for; others run eagerly (each graph holds its own
activation memory)."""

Constants = list[Any]
"""The 7 face constants of a crop (or of a batch, stacked), in the runtime's own form."""


class Wav2LipRuntimeError(RuntimeError):
    """A runtime that was asked for by name cannot run here (names the runtime and the fix)."""


class CachedFaceRuntime(Protocol):
    name: str
    fixed_shapes: bool
    """True when each new input shape costs a capture or compile: pad batches to a few sizes."""

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
    fixed_shapes = False

    def __init__(self, reference: torch.nn.Module) -> None:
        self.reference = reference

    def forward(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        # Channels-last: the strides of the official NHWC->NCHW conversion (mkldnn's fast path).
        with torch.inference_mode():
            out: np.ndarray = self.reference(_channels_last(mel), _channels_last(face)).numpy()
        return out


class TorchRuntime:
    """`torch`: the fused module (BatchNorm folded, channels-last); `compile`: it under torch.compile."""

    fixed_shapes = False  # compiled with dynamic=True

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
        self.fixed_shapes = False
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
    fixed_shapes = False

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


class _StaticShape:
    """One input shape's buffers: inputs are copied into them, so a CUDA graph captured on them (or
    torch.compile's, which keys on shapes) is replayed at fixed addresses."""

    def __init__(
        self, forward: Any, mel: torch.Tensor, constants: Sequence[torch.Tensor], capture: bool
    ) -> None:
        self.forward = forward
        self.mel = torch.zeros_like(mel)
        self.constants = [torch.zeros_like(c) for c in constants]  # zeros_like keeps channels-last
        self.graph: Any = None
        self.out: torch.Tensor | None = None
        if capture:
            # cuDNN picks its algorithms on the first runs: warm up on a side stream, then capture.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    forward(self.mel, *self.constants)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = forward(self.mel, *self.constants)

    def __call__(self, mel: torch.Tensor, constants: Sequence[torch.Tensor]) -> torch.Tensor:
        """The output for these inputs; valid until the next call (the graph writes the same buffer)."""
        self.mel.copy_(mel)
        for static, constant in zip(self.constants, constants, strict=True):
            static.copy_(constant)
        if self.graph is None:
            out: torch.Tensor = self.forward(self.mel, *self.constants)
            return out
        self.graph.replay()
        assert self.out is not None
        return self.out


class GraphRuntime:
    """`cuda-graph`: the fused module in half precision on the GPU, one CUDA graph per input shape (a
    batch of 1 is a few hundred kernel launches: replaying them as one graph takes the CPU out);
    `cuda-compile`: the same under torch.compile(mode="reduce-overhead"), inductor's kernels in its own
    CUDA graphs, one compile per shape. Inputs go through fixed buffers per shape (`_StaticShape`).

    On a CPU (`device="cpu"`, float32: for tests of the buffers and of padding) nothing is captured: the
    module runs on the same buffers."""

    fixed_shapes = True

    def __init__(
        self,
        reference: torch.nn.Module,
        device: str,
        *,
        compiled: bool = False,
        max_graphs: int = MAX_GRAPHS,
    ) -> None:
        self.name = "cuda-compile" if compiled else "cuda-graph"
        self.device = torch.device(device)
        self.capture = self.device.type == "cuda" and not compiled
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        fused = FusedWav2Lip(reference).to(self.device, self.dtype)
        self.model = fused.to(memory_format=torch.channels_last)
        self.max_graphs = max_graphs
        self._shapes: dict[tuple[tuple[int, ...], ...], _StaticShape] = {}
        self._forward: Any = CachedGraph(self.model)
        if compiled:
            # One compile per shape: let dynamo keep as many as there are graphs (its default is 8).
            config = torch._dynamo.config
            for option in ("recompile_limit", "cache_size_limit"):
                if hasattr(config, option):
                    setattr(config, option, max(getattr(config, option), max_graphs))
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            try:
                self._forward = torch.compile(self._forward, mode=mode, dynamic=False)
            except Exception as exc:  # torch.compile failures come in many types; report them as one
                raise Wav2LipRuntimeError(f"torch.compile failed ({exc}); use runtime='cuda-graph'") from exc

    def face_constants(self, face: np.ndarray) -> Constants:
        with torch.inference_mode():
            tensor = torch.from_numpy(face).to(self.device, self.dtype)
            tensor = tensor.contiguous(memory_format=torch.channels_last)
            constants = self.model.face_constants(tensor)
            return [c.contiguous(memory_format=torch.channels_last) for c in constants]

    def stack(self, per_item: Sequence[Constants]) -> Constants:
        stacked = (torch.cat(parts) for parts in zip(*per_item, strict=True))
        return [c.contiguous(memory_format=torch.channels_last) for c in stacked]

    def run_tensor(self, mel: np.ndarray, constants: Constants) -> torch.Tensor:
        """`run` with the output left on the device, in the runtime's dtype; valid until the next call."""
        with torch.inference_mode():
            tensor = torch.from_numpy(mel).to(self.device, self.dtype)
            key = (tuple(tensor.shape), *(tuple(c.shape) for c in constants))
            static = self._shapes.get(key)
            if static is None:
                if len(self._shapes) >= self.max_graphs:
                    out: torch.Tensor = self._forward(tensor, *constants)
                    return out
                try:
                    static = _StaticShape(self._forward, tensor, constants, self.capture)
                except Exception as exc:  # capture and compile failures come in many types
                    raise Wav2LipRuntimeError(
                        f"{self.name} could not prepare batch shape {tuple(tensor.shape)} ({exc}); "
                        f"use runtime='cuda-fp16'"
                    ) from exc
                self._shapes[key] = static
            return static(tensor, constants)

    def run(self, mel: np.ndarray, constants: Constants) -> np.ndarray:
        out = self.run_tensor(mel, constants)
        with torch.inference_mode():
            return out.float().cpu().numpy()


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
    if name in ("cuda-graph", "cuda-compile"):
        return GraphRuntime(reference, device, compiled=name == "cuda-compile")
    raise ValueError(f"unknown Wav2Lip runtime {name!r}; choose 'auto' or one of {', '.join(RUNTIMES)}")
