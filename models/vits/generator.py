"""HiFi-GAN generator (the VITS decoder) with resblock types "1" and "2", and the residual coupling flow."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .layers import LRELU_SLOPE, WN, get_padding, weight_norm


def conv(module: nn.Conv1d | nn.ConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """Run a 1-D conv on [b, c, t], or on [b, c, 1, t] channels-last as a 2-D conv (3-4x faster on CPU for
    the decoder's few-channel, long layers) once `Generator.use_channels_last` has made its 4-D weight."""
    if x.dim() == 3:
        return module(x)
    weight = module.weight_4d
    if isinstance(module, nn.ConvTranspose1d):
        return F.conv_transpose2d(
            x,
            weight,
            module.bias,
            stride=(1, module.stride[0]),
            padding=(0, module.padding[0]),
            output_padding=(0, module.output_padding[0]),
        )
    return F.conv2d(
        x,
        weight,
        module.bias,
        stride=(1, module.stride[0]),
        padding=(0, module.padding[0]),
        dilation=(1, module.dilation[0]),
        groups=module.groups,
    )


def _reach(module: nn.Module) -> int:
    """How far the chain of 'same' 1-D convs in a module reaches either side: each as far as it pads."""
    return sum(m.padding[0] for m in module.modules() if isinstance(m, nn.Conv1d))


class ResBlock1(nn.Module):
    """Pairs of (dilated conv, plain conv), each pair a residual step."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(
                nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d))
            )
            for d in dilation
        )
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, padding=get_padding(kernel_size)))
            for _ in dilation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            # In-place where the tensor is fresh: fewer large allocations on long outputs.
            xt = F.leaky_relu_(conv(c1, F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)
            x = conv(c2, xt).add_(x)
        return x


class ResBlock2(nn.Module):
    """One dilated conv per residual step (the lighter variant Piper's medium voices use)."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3)) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            weight_norm(
                nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d))
            )
            for d in dilation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.convs:
            x = conv(layer, F.leaky_relu(x, LRELU_SLOPE)).add_(x)
        return x


class Generator(nn.Module):
    def __init__(
        self,
        initial_channel: int,
        resblock: str,
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        upsample_rates: Sequence[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: Sequence[int],
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.conv_pre = nn.Conv1d(initial_channel, upsample_initial_channel, 7, 1, padding=3)
        block = ResBlock1 if str(resblock) == "1" else ResBlock2
        self.ups = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes, strict=True)):
            self.ups.append(
                weight_norm(
                    nn.ConvTranspose1d(
                        upsample_initial_channel // (2**i),
                        upsample_initial_channel // (2 ** (i + 1)),
                        kernel,
                        rate,
                        padding=(kernel - rate) // 2,
                    )
                )
            )
        self.resblocks = nn.ModuleList()
        channels = upsample_initial_channel
        for i in range(len(self.ups)):
            channels = upsample_initial_channel // (2 ** (i + 1))
            for kernel, dilation in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True):
                self.resblocks.append(block(channels, kernel, dilation))
        self.conv_post = nn.Conv1d(channels, 1, 7, 1, padding=3, bias=False)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)
        self._plan_cuts()

    def _plan_cuts(self) -> None:
        """Where `forward(keep=...)` cuts: before each upsampling layer, keeping `cut_margins[i]` samples
        beyond the kept frames, as far as that layer and all after it reach (summed in audio samples: a
        'same' conv reaches as far as it pads; a transposed conv, kernel - stride - padding)."""
        hop = self.hop_length
        reach = [self.conv_post.padding[0]]  # audio samples reached by what follows each cut, last first
        unit = 1  # audio samples per sample of upsampling layer i's output
        for i in reversed(range(self.num_upsamples)):
            up = self.ups[i]
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            stage = max(_reach(block) for block in blocks) + up.kernel_size[0] - up.stride[0] - up.padding[0]
            reach.append(reach[-1] + stage * unit)
            unit *= up.stride[0]
        reach = reach[:0:-1]  # reach[i]: from the cut before upsampling layer i on
        self.cut_scales = [hop // math.prod(up.stride[0] for up in self.ups[i:]) for i in range(len(reach))]
        self.cut_margins = [math.ceil(r * s / hop) for r, s in zip(reach, self.cut_scales, strict=True)]
        # Latent frames either side of a window that its audio depends on (conv_pre included).
        self.context_frames = math.ceil((reach[0] + self.conv_pre.padding[0] * hop) / hop)

    def use_channels_last(self) -> None:
        """Precompute [out, in, 1, k] channels-last weights (after weight norm is folded) for `conv`."""
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)) and module is not self.cond_or_none:
                weight = module.weight.detach().unsqueeze(2)
                module.weight_4d = weight.contiguous(memory_format=torch.channels_last)
        self.channels_last = True

    @property
    def cond_or_none(self) -> nn.Module | None:
        return getattr(self, "cond", None)

    def forward(
        self, x: torch.Tensor, g: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[b, inter, frames] -> [b, 1, frames * hop] in [-1, 1].

        keep: [2] frames [first, end) of x whose samples are wanted (the rest of x is their context). Before
        each upsampling, x is then cut to what the layers after it reach, so the costly late stages run on
        little more than the kept frames, and only the kept frames' samples are returned."""
        x = self.conv_pre(x)
        if g is not None:
            x = x + self.cond(g)
        if getattr(self, "channels_last", False):
            x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # [b, c, 1, t] stored as b,t,c
        offset: torch.Tensor | int = 0
        for i in range(self.num_upsamples):
            # Before upsampling, where the cut costs a copy of the fewest samples.
            x, offset = self._cut(x, keep, i, offset)
            x = conv(self.ups[i], F.leaky_relu_(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs.add_(block(x))
            x = xs.div_(self.num_kernels)
        x = conv(self.conv_post, F.leaky_relu_(x))  # default slope 0.01 here, as upstream
        if x.dim() == 4:
            x = x.squeeze(2)
        if keep is not None:
            x = x[..., keep[0] * self.hop_length - offset : keep[1] * self.hop_length - offset]
        return torch.tanh_(x)

    def _cut(
        self, x: torch.Tensor, keep: torch.Tensor | None, k: int, offset: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor | int]:
        """The cut before upsampling layer k: x's samples that reach the kept frames. offset: audio samples
        before x's first sample."""
        if keep is None:
            return x, offset
        scale, margin = self.cut_scales[k], self.cut_margins[k]
        unit = self.hop_length // scale
        start = (keep[0] * scale - margin - offset // unit).clamp(min=0)
        # Slicing stops at the end by itself; a start below zero would count from the end.
        return x[..., start : keep[1] * scale + margin - offset // unit], offset + start * unit

    @property
    def hop_length(self) -> int:
        hop = 1
        for up in self.ups:
            hop *= up.stride[0]
        return hop


class ResidualCouplingLayer(nn.Module):
    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        p_dropout: float = 0.0,
        gin_channels: int = 0,
        mean_only: bool = False,
    ) -> None:
        super().__init__()
        self.half_channels = channels // 2
        self.mean_only = mean_only
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WN(
            hidden_channels,
            kernel_size,
            dilation_rate,
            n_layers,
            gin_channels=gin_channels,
            p_dropout=p_dropout,
        )
        self.post = nn.Conv1d(hidden_channels, self.half_channels * (2 - int(mean_only)), 1)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """The inverse direction (sampling)."""
        x0, x1 = torch.split(x, [self.half_channels] * 2, dim=1)
        h = self.enc(self.pre(x0) * x_mask, x_mask, g=g)
        stats = self.post(h) * x_mask
        if self.mean_only:
            x1 = (x1 - stats) * x_mask
        else:
            m, logs = torch.split(stats, [self.half_channels] * 2, dim=1)
            x1 = (x1 - m) * torch.exp(-logs) * x_mask
        return torch.cat([x0, x1], dim=1)


class Flip(nn.Module):
    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return torch.flip(x, [1])


class ResidualCouplingBlock(nn.Module):
    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        n_flows: int = 4,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(
                ResidualCouplingLayer(
                    channels,
                    hidden_channels,
                    kernel_size,
                    dilation_rate,
                    n_layers,
                    gin_channels=gin_channels,
                    mean_only=True,
                )
            )
            self.flows.append(Flip())

    @property
    def context_frames(self) -> int:
        """Frames either side of a window that its latent depends on."""
        return sum(_reach(flow) for flow in self.flows)

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        g: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Prior sample z_p -> latent z (the flows run in reverse).

        keep: [2] frames [first, end) of x whose latent is wanted; after each coupling, x is cut to what the
        couplings after it reach, and only the kept frames are returned."""
        reach, offset = self.context_frames, 0
        for flow in reversed(self.flows):
            x = flow(x, x_mask, g=g)
            if keep is not None and isinstance(flow, ResidualCouplingLayer):
                reach -= _reach(flow)
                start = (keep[0] - reach - offset).clamp(min=0)
                end = keep[1] + reach - offset
                x, x_mask, offset = x[..., start:end], x_mask[..., start:end], offset + start
        return x
