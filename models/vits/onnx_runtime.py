"""A loaded torch voice exported to ONNX and run by onnxruntime on CPU: three graphs, each with a free
length, so one export serves every sentence and window.

- text: symbol ids (+ duration noise, speaker conditioning) -> prior mean / log-std and log-durations
  (`SynthesizerTrn.text_stats`; the random draws and the expansion over frames stay in torch);
- flow: prior sample z_p -> latent z;
- dec: latent z -> audio.

The exports are cached next to the Piper imports, keyed by a digest of the exported weights and
`EXPORT_VERSION` (change it whenever an exported graph changes), so later loads only open sessions.
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
from .duration import StochasticDurationPredictor

_LOGGER = logging.getLogger(__name__)

EXPORT_VERSION = "text-flow-dec-4"
OPSET = 17


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _TextSide(nn.Module):
    """ids [1, t], noise_w [1, 2, t] (stochastic duration predictor only), g (conditioned voices only)
    -> m_p, logs_p [1, inter, t], logw [1, 1, t]."""

    def __init__(self, model: Any, stochastic: bool) -> None:
        super().__init__()
        self.model = model
        self.stochastic = stochastic

    def forward(
        self, ids: torch.Tensor, *rest: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The plain predictor never reads its noise: the graph gets no such input.
        noise_w, g = (rest[0], rest[1:]) if self.stochastic else (torch.zeros(0), rest)
        return self.model.text_stats(ids, noise_w, *g)


class _Flow(nn.Module):
    """z_p [1, inter, frames], keep [2] (and g [1, gin, 1]) -> z [1, inter, keep[1] - keep[0]]: the reversed
    flow without a mask (all frames real)."""

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, z_p: torch.Tensor, keep: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow(z_p, torch.ones_like(z_p[:, :1]), g=g, keep=keep)


class _Decoder(nn.Module):
    """z [1, inter, frames], keep [2] (and g) -> audio [1, 1, (keep[1] - keep[0]) * hop], the generator's
    plain 1-D conv path."""

    def __init__(self, dec: nn.Module) -> None:
        super().__init__()
        self.dec = dec

    def forward(self, z: torch.Tensor, keep: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        return self.dec(z, g=g, keep=keep)


def _weights_digest(modules: list[nn.Module], conditioned: bool) -> str:
    digest = hashlib.sha256(f"{EXPORT_VERSION} opset {OPSET} g {conditioned}".encode())
    for module in modules:
        for key, value in module.state_dict().items():
            digest.update(key.encode())
            digest.update(str(tuple(value.shape)).encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


_FREE_AXES = {"ids": {1: "symbols"}, "noise_w": {2: "symbols"}, "x": {2: "frames"}}


def _export(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    names: list[str],
    outputs: dict[str, dict[int, str]],
    path: Path,
) -> None:
    """`outputs`: output name -> its free axes; the inputs' free axes are named in `_FREE_AXES`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter puts the wrapper back into the mode it found it in, recursively: a fresh wrapper is in
    # training mode, which would switch the voice's dropout layers on for good.
    module.eval()
    # Written beside and renamed: a concurrent loader never opens a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        # The tracer's warnings are about batch sizes other than 1 and the exporter's own deprecations;
        # the graphs are only ever run with batch 1 and checked against torch by the tests.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                inputs,
                tmp,
                input_names=names,
                output_names=list(outputs),
                dynamic_axes={**{n: _FREE_AXES[n] for n in names if n in _FREE_AXES}, **outputs},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class OnnxVoiceRuntime:
    """`text_stats`, `latent` and `decode` of `SynthesizerTrn` through onnxruntime sessions (thread-safe)."""

    def __init__(self, model: Any, threads: int | None = None) -> None:
        import onnxruntime

        self.conditioned = bool(model.config.gin_channels) and hasattr(model, "emb_g")
        self.stochastic = isinstance(model.dp, StochasticDurationPredictor)
        symbols = 16
        ids = torch.randint(1, model.config.n_vocab, (1, symbols))
        noise_w = torch.zeros(1, 2, symbols)
        z = torch.zeros(1, model.config.inter_channels, 2 * model.flow_context_frames + 8)
        g = torch.zeros(1, model.config.gin_channels, 1) if self.conditioned else None
        speaker = (g,) if g is not None else ()
        text_names = ["ids"] + (["noise_w"] if self.stochastic else []) + (["g"] if g is not None else [])
        digest = _weights_digest([model.enc_p, model.dp, model.flow, model.dec], self.conditioned)[:32]
        self.paths = tuple(cache_dir() / f"{part}-{digest}.onnx" for part in ("text", "flow", "dec"))
        if not all(path.exists() for path in self.paths):
            _LOGGER.info("exporting the voice to ONNX (once per voice): %s", cache_dir())
            text_inputs = (ids, noise_w, *speaker) if self.stochastic else (ids, *speaker)
            stats = {"m_p": {2: "symbols"}, "logs_p": {2: "symbols"}, "logw": {2: "symbols"}}
            _export(_TextSide(model, self.stochastic), text_inputs, text_names, stats, self.paths[0])
            names = ["x", "keep", "g"] if g is not None else ["x", "keep"]
            keep = torch.tensor([model.flow_context_frames, z.size(2) - model.flow_context_frames])
            _export(_Flow(model.flow), (z, keep, *speaker), names, {"y": {2: "frames"}}, self.paths[1])
            # The decoder as prepared for inference: its convs 2-D over [b, c, 1, t], which onnxruntime runs
            # in its blocked-channel layout (less CPU per second of speech than the 1-D graph: FIGURES.md).
            _export(_Decoder(model.dec), (z, keep, *speaker), names, {"y": {2: "samples"}}, self.paths[2])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Idle workers sleep instead of spinning, as torch's OpenMP workers do here (OMP_WAIT_POLICY): the
        # server shares its cores with its other stages. Spinning, even only while a run lasts
        # (force_spinning_stop), cut the server's media seconds per wall second from 7.2 to 5.7 with one
        # session and from 1.9 to 1.5 with four, for no gain in its first audio.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._text, self._flow, self._dec = (
            onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
            for path in self.paths
        )

    def _speaker(self, g: torch.Tensor | None) -> dict[str, np.ndarray]:
        if not self.conditioned:
            return {}
        if g is None:
            raise ValueError("this voice's exported graphs need the speaker conditioning g")
        return {"g": _numpy(g)}

    def text_stats(
        self, ids: torch.Tensor, noise_w: torch.Tensor, g: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As `SynthesizerTrn.text_stats`: ids [1, t], noise_w [1, 2, t] -> m_p, logs_p, logw."""
        feeds = {"ids": ids.detach().cpu().numpy().astype(np.int64), **self._speaker(g)}
        if self.stochastic:
            feeds["noise_w"] = _numpy(noise_w)
        m_p, logs_p, logw = self._text.run(None, feeds)
        return torch.from_numpy(m_p), torch.from_numpy(logs_p), torch.from_numpy(logw)

    def latent(
        self, z_p: torch.Tensor, g: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Prior sample [1, inter, frames] -> latent z of the frames [first, end) in keep (default: all)."""
        return torch.from_numpy(self._flow.run(None, self._window(z_p, g, keep))[0])

    def decode(
        self, z: torch.Tensor, g: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latent [1, inter, frames] -> audio of the frames [first, end) in keep (default: all)."""
        return torch.from_numpy(self._dec.run(None, self._window(z, g, keep))[0][0, 0])

    def _window(
        self, x: torch.Tensor, g: torch.Tensor | None, keep: torch.Tensor | None
    ) -> dict[str, np.ndarray]:
        kept = np.array([0, x.size(2)]) if keep is None else keep.cpu().numpy()
        return {"x": _numpy(x), "keep": kept.astype(np.int64), **self._speaker(g)}


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().float().numpy())
