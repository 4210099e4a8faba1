"""Where a voice runs: the device, and torch or onnxruntime for its networks."""

from __future__ import annotations

import torch

from .errors import VoiceError
from .onnx_runtime import onnxruntime_available

RUNTIMES = ("auto", "torch", "onnxruntime")


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """The runtime a voice runs in: "auto" is onnxruntime on CPU when it is installed (faster there, to the
    first samples and on whole sentences: bench_vits), else torch; "torch" stays selectable (and is what
    CUDA uses). Raises VoiceError for a runtime that cannot run here."""
    if runtime not in RUNTIMES:
        raise VoiceError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return "torch"
    if device.type != "cpu":
        if runtime == "onnxruntime":
            raise VoiceError(f"runtime 'onnxruntime' runs on the CPU only; got device {device}: use 'auto'")
        return "torch"
    if not onnxruntime_available():
        if runtime == "onnxruntime":
            raise VoiceError("runtime 'onnxruntime' needs the onnxruntime package: pip install onnxruntime")
        return "torch"
    return "onnxruntime"


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise VoiceError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
