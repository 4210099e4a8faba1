"""The VITS synthesizer (`SynthesizerTrn`): module names equal the keys of official checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .duration import DurationPredictor, StochasticDurationPredictor
from .encoders import PosteriorEncoder, TextEncoder
from .generator import Generator, ResidualCouplingBlock
from .layers import fold_weight_norm


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of `SynthesizerTrn` (the `model` section of a VITS config.json)."""

    n_vocab: int
    """Number of input symbols."""
    spec_channels: int = 513
    """Linear-spectrogram bins of the posterior encoder: filter_length // 2 + 1."""
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    p_dropout: float = 0.1
    resblock: str = "1"
    """HiFi-GAN residual block type: "1" (two convs per step) or "2" (one)."""
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    n_speakers: int = 0
    """Rows of the speaker embedding `emb_g`; 0: none. (A VITS-fast-fine-tuning voice of one speaker has
    one row; an official config's `n_speakers: 1` means none: the loader decides.)"""
    gin_channels: int = 0
    use_sdp: bool = True
    """Stochastic duration predictor (True) or the plain one."""
    n_layers_q: int = 16
    """WaveNet layers of the posterior encoder (upstream hard-codes 16; `n_layers_q` in configs is unused)."""
    n_flows: int = 4
    flow_n_layers: int = 4

    @classmethod
    def from_dict(
        cls, model: Mapping[str, Any], n_vocab: int, spec_channels: int, n_speakers: int
    ) -> ModelConfig:
        """From the `model` section of an official / fast-fine-tuning config.json."""

        def ints(key: str, default: Sequence[int]) -> tuple[int, ...]:
            return tuple(int(v) for v in model.get(key, default))

        return cls(
            n_vocab=n_vocab,
            spec_channels=spec_channels,
            inter_channels=int(model["inter_channels"]),
            hidden_channels=int(model["hidden_channels"]),
            filter_channels=int(model["filter_channels"]),
            n_heads=int(model["n_heads"]),
            n_layers=int(model["n_layers"]),
            kernel_size=int(model["kernel_size"]),
            p_dropout=float(model.get("p_dropout", 0.1)),
            resblock=str(model["resblock"]),
            resblock_kernel_sizes=ints("resblock_kernel_sizes", (3, 7, 11)),
            resblock_dilation_sizes=tuple(
                tuple(int(d) for d in ds) for ds in model["resblock_dilation_sizes"]
            ),
            upsample_rates=ints("upsample_rates", (8, 8, 2, 2)),
            upsample_initial_channel=int(model["upsample_initial_channel"]),
            upsample_kernel_sizes=ints("upsample_kernel_sizes", (16, 16, 4, 4)),
            n_speakers=n_speakers,
            gin_channels=int(model.get("gin_channels", 0)),
            use_sdp=bool(model.get("use_sdp", True)),
        )


class PointwiseConv1d(nn.Conv1d):
    """A kernel-1 Conv1d computed as one matrix product per batch item."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(0) != 1 or self.bias is None:
            return super().forward(x)
        return torch.addmm(self.bias[:, None], self.weight[:, :, 0], x[0]).unsqueeze(0)  # [out, in] @ [in, t]


TextStats = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]
"""(ids, noise_w, g) -> (m_p, logs_p, logw): the signature of `SynthesizerTrn.text_stats`."""


@dataclass
class Prior:
    """What the text side produces for one utterance: the latent to decode and the symbol durations."""

    z_p: torch.Tensor
    """[1, inter, frames] sample of the prior; the flow (`SynthesizerTrn.latent`) turns it into z."""
    durations: torch.Tensor
    """[symbols] int64 frames per input symbol."""
    g: torch.Tensor | None
    """[1, gin, 1] speaker conditioning, or None."""


class SynthesizerTrn(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.enc_p = TextEncoder(
            c.n_vocab,
            c.inter_channels,
            c.hidden_channels,
            c.filter_channels,
            c.n_heads,
            c.n_layers,
            c.kernel_size,
            c.p_dropout,
        )
        self.dec = Generator(
            c.inter_channels,
            c.resblock,
            c.resblock_kernel_sizes,
            c.resblock_dilation_sizes,
            c.upsample_rates,
            c.upsample_initial_channel,
            c.upsample_kernel_sizes,
            gin_channels=c.gin_channels,
        )
        self.enc_q = PosteriorEncoder(
            c.spec_channels,
            c.inter_channels,
            c.hidden_channels,
            5,
            1,
            c.n_layers_q,
            gin_channels=c.gin_channels,
        )
        self.flow = ResidualCouplingBlock(
            c.inter_channels,
            c.hidden_channels,
            5,
            1,
            c.flow_n_layers,
            n_flows=c.n_flows,
            gin_channels=c.gin_channels,
        )
        if c.use_sdp:
            self.dp: nn.Module = StochasticDurationPredictor(
                c.hidden_channels, 192, 3, 0.5, 4, gin_channels=c.gin_channels
            )
        else:
            self.dp = DurationPredictor(c.hidden_channels, 256, 3, 0.5, gin_channels=c.gin_channels)
        if c.n_speakers > 0:
            self.emb_g = nn.Embedding(c.n_speakers, c.gin_channels)

    @property
    def hop_length(self) -> int:
        return self.dec.hop_length

    def prepare_for_inference(self) -> None:
        """Eval mode, no gradients, weight norm folded into plain weights (faster; the keys change), and the
        training-only posterior encoder dropped (tens of MB per voice)."""
        self.eval()
        self.enc_q = None
        fold_weight_norm(self)
        self.dec.use_channels_last()
        for module in self.modules():
            if type(module) is nn.Conv1d and module.kernel_size == (1,) and module.groups == 1:
                # Same parameters and keys; only the forward changes (a GEMM beats the generic conv path).
                module.__class__ = PointwiseConv1d
        for p in self.parameters():
            p.requires_grad_(False)

    def speaker_embedding(self, speaker_id: int | None) -> torch.Tensor | None:
        """[1, gin, 1] conditioning of a model with a speaker embedding, else None."""
        if speaker_id is None or not hasattr(self, "emb_g"):
            return None
        return self.emb_g(torch.tensor([speaker_id], device=self.emb_g.weight.device)).unsqueeze(-1)

    def text_stats(
        self, ids: torch.Tensor, noise_w: torch.Tensor, g: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Symbol ids [1, t] -> the prior's mean and log-std [1, inter, t] and log-durations [1, 1, t].

        `noise_w` [1, 2, t] drives the stochastic duration predictor (the plain one ignores it). The
        text side without randomness or data-dependent shapes: what `onnx_runtime` exports."""
        lengths = torch.full((1,), ids.size(1), dtype=torch.long, device=ids.device)
        x, m_p, logs_p, x_mask = self.enc_p(ids, lengths)
        if isinstance(self.dp, StochasticDurationPredictor):
            logw = self.dp(x, x_mask, noise_w, g=g)
        else:
            logw = self.dp(x, x_mask, g=g)
        return m_p, logs_p, logw

    def prior(
        self,
        ids: torch.Tensor,
        speaker_id: int | None,
        noise_scale: float,
        length_scale: float,
        noise_scale_w: float,
        generator: torch.Generator | None = None,
        text_stats: TextStats | None = None,
    ) -> Prior:
        """Symbol ids [1, t] -> latent z and durations: everything but the decoder.

        `text_stats` replaces `self.text_stats` (an exported copy of it; same inputs and outputs)."""
        g = self.speaker_embedding(speaker_id)
        noise_w = torch.randn(1, 2, ids.size(1), generator=generator).to(ids.device) * noise_scale_w
        m_p, logs_p, logw = (text_stats or self.text_stats)(ids, noise_w, g)
        durations = torch.ceil(torch.exp(logw[0, 0]) * length_scale).long()  # [t]
        # Expand each symbol's prior over its frames (the monotonic path is a repeat).
        repeats = durations.clamp_min(0)
        if int(repeats.sum()) == 0:  # upstream keeps one frame whose prior is all zeros
            m = torch.zeros(1, m_p.size(1), 1, dtype=m_p.dtype, device=m_p.device)
            logs = torch.zeros_like(m)
        else:
            m = torch.repeat_interleave(m_p[0], repeats, dim=1).unsqueeze(0)  # [1, inter, frames]
            logs = torch.repeat_interleave(logs_p[0], repeats, dim=1).unsqueeze(0)
        noise = torch.randn(m.shape, generator=generator, dtype=m.dtype).to(m.device)
        z_p = m + noise * torch.exp(logs) * noise_scale
        return Prior(z_p=z_p, durations=repeats, g=g)

    def latent(
        self, z_p: torch.Tensor, g: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Prior sample [1, inter, frames] -> decoder latent z through the reversed flow; with `keep` =
        [first, end), the latent of those frames only.

        The flow is convolutional, so a window of z_p with `flow_context_frames` of real neighbours each
        side gives the window's z exactly (what chunked synthesis relies on)."""
        y_mask = torch.ones(1, 1, z_p.size(2), dtype=z_p.dtype, device=z_p.device)
        return self.flow(z_p, y_mask, g=g, keep=keep)

    @property
    def flow_context_frames(self) -> int:
        return self.flow.context_frames

    @property
    def decoder_context_frames(self) -> int:
        return self.dec.context_frames

    def decode(
        self, z: torch.Tensor, g: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latent [1, inter, frames] -> audio [frames * hop]; with `keep` = [first, end), those frames' only
        (a window with `decoder_context_frames` of real neighbours each side is exact)."""
        return self.dec(z, g=g, keep=keep)[0, 0]

    def infer(
        self,
        ids: torch.Tensor,
        speaker_id: int | None = None,
        noise_scale: float = 0.667,
        length_scale: float = 1.0,
        noise_scale_w: float = 0.8,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Symbol ids [1, t] -> (audio [samples], durations [t] in frames)."""
        prior = self.prior(ids, speaker_id, noise_scale, length_scale, noise_scale_w, generator)
        return self.decode(self.latent(prior.z_p, prior.g), prior.g), prior.durations
