"""The flow and HiFi-GAN decoder of a loaded torch voice, exported to ONNX and run by onnxruntime on CPU.

Both networks are convolution-only with a free time axis, so one export with a dynamic axis serves every
window. The export is cached next to the Piper imports, keyed by a digest of the exported weights and
`EXPORT_VERSION` (change it whenever the exported graph changes), so later loads only open a session.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import cache_dir

_LOGGER = logging.getLogger(__name__)

EXPORT_VERSION = "flow-dec-1"
OPSET = 17


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _Flow(nn.Module):
    """z_p [1, inter, frames] (and g [1, gin, 1]) -> z: the reversed flow without a mask (all frames real)."""

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, z_p: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow(z_p, torch.ones_like(z_p[:, :1]), g=g)


class _Decoder(nn.Module):
    """z [1, inter, frames] (and g) -> audio [1, 1, frames * hop], the generator's plain 1-D conv path."""

    def __init__(self, dec: nn.Module) -> None:
        super().__init__()
        self.dec = dec

    def forward(self, z: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        return self.dec(z, g=g)


def _weights_digest(modules: list[nn.Module], conditioned: bool) -> str:
    digest = hashlib.sha256(f"{EXPORT_VERSION} opset {OPSET} g {conditioned}".encode())
    for module in modules:
        for key, value in module.state_dict().items():
            digest.update(key.encode())
            digest.update(str(tuple(value.shape)).encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _export(module: nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str], path: Path) -> None:
    dynamic = {"x": {2: "frames"}, "y": {2: "samples"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed: a concurrent loader never opens a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        # The tracer's warnings are about batch sizes other than 1 and the exporter's own deprecations;
        # the graph is only ever run with batch 1 and checked against torch by the tests.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                inputs,
                tmp,
                input_names=names,
                output_names=["y"],
                dynamic_axes={k: v for k, v in dynamic.items() if k in names or k == "y"},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class OnnxFlowDecoder:
    """`latent` and `decode` of `SynthesizerTrn`, through onnxruntime sessions (thread-safe `run`)."""

    def __init__(self, model: Any, threads: int | None = None) -> None:
        import onnxruntime

        dec, flow = model.dec, model.flow
        self.conditioned = bool(model.config.gin_channels) and hasattr(model, "emb_g")
        frames = 2 * model.flow_context_frames + 8
        z = torch.zeros(1, model.config.inter_channels, frames)
        g = torch.zeros(1, model.config.gin_channels, 1) if self.conditioned else None
        names = ["x", "g"] if self.conditioned else ["x"]
        inputs = (z, g) if g is not None else (z,)
        digest = _weights_digest([flow, dec], self.conditioned)[:32]
        flow_path = cache_dir() / f"flow-{digest}.onnx"
        dec_path = cache_dir() / f"dec-{digest}.onnx"
        if not (flow_path.exists() and dec_path.exists()):
            _LOGGER.info("exporting the flow and decoder to ONNX (once per voice): %s", cache_dir())
            channels_last = getattr(dec, "channels_last", False)
            dec.channels_last = False  # export the plain 1-D convs; onnxruntime picks its own layout
            try:
                _export(_Flow(flow), inputs, names, flow_path)
                _export(_Decoder(dec), inputs, names, dec_path)
            finally:
                dec.channels_last = channels_last
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Idle workers sleep instead of spinning, as torch's OpenMP workers do here (OMP_WAIT_POLICY): the
        # server shares its cores, and spinning measured 1.26x slower than sleeping under that load.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self._flow = onnxruntime.InferenceSession(str(flow_path), sess_options=options, providers=providers)
        self._dec = onnxruntime.InferenceSession(str(dec_path), sess_options=options, providers=providers)
        self.paths = (flow_path, dec_path)

    def _feeds(self, x: torch.Tensor, g: torch.Tensor | None) -> dict[str, np.ndarray]:
        feeds = {"x": np.ascontiguousarray(x.detach().cpu().float().numpy())}
        if self.conditioned:
            if g is None:
                raise ValueError("this voice's flow and decoder need the speaker conditioning g")
            feeds["g"] = np.ascontiguousarray(g.detach().cpu().float().numpy())
        return feeds

    def latent(self, z_p: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """Prior sample [1, inter, frames] -> latent z [1, inter, frames]."""
        return torch.from_numpy(self._flow.run(None, self._feeds(z_p, g))[0])

    def decode(self, z: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """Latent [1, inter, frames] -> audio [frames * hop]."""
        return torch.from_numpy(self._dec.run(None, self._feeds(z, g))[0][0, 0])
