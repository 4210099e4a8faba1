"""Building blocks of the VITS networks: weight norm, layer norm, WaveNet, dilated depth-separable convs.

Attribute names follow the official VITS modules, so a state dict of the official code loads unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LRELU_SLOPE = 0.1


def _norm_except_dim0(weight: torch.Tensor) -> torch.Tensor:
    """The L2 norm of every output slice, shaped like the weight with singleton trailing dims."""
    return weight.flatten(1).norm(dim=1).view(-1, *([1] * (weight.dim() - 1)))


def _compute_weight(module: nn.Module, _inputs: object) -> None:
    module.weight = module.weight_g * (module.weight_v / _norm_except_dim0(module.weight_v))


def weight_norm(module: nn.Module) -> nn.Module:
    """Reparametrise `module.weight` as `weight_g * weight_v / ||weight_v||` (legacy torch layout).

    The parameters are registered after the bias, so the state-dict order and names are those of the
    official checkpoints (`bias`, `weight_g`, `weight_v`).
    """
    weight = module.weight
    del module._parameters["weight"]
    module.weight_g = nn.Parameter(_norm_except_dim0(weight.detach()).clone())
    module.weight_v = nn.Parameter(weight.detach())
    module._weight_norm_hook = module.register_forward_pre_hook(_compute_weight)
    return module


def fold_weight_norm(root: nn.Module) -> int:
    """Replace each weight-normed layer under `root` by a plain `weight` (faster); returns the count."""
    folded = 0
    for module in root.modules():
        hook = getattr(module, "_weight_norm_hook", None)
        if hook is None:
            continue
        with torch.no_grad():
            weight = module.weight_g * (module.weight_v / _norm_except_dim0(module.weight_v))
        hook.remove()
        del module._weight_norm_hook
        del module._parameters["weight_g"], module._parameters["weight_v"]
        if "weight" in module.__dict__:
            del module.__dict__["weight"]
        module.weight = nn.Parameter(weight.detach().contiguous())
        folded += 1
    return folded


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    if max_length is None:
        max_length = int(lengths.max())
    positions = torch.arange(max_length, dtype=lengths.dtype, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


class LayerNorm(nn.Module):
    """Layer norm over the channel axis of a [batch, channels, time] tensor (official names gamma/beta)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, -1), (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class DDSConv(nn.Module):
    """Dilated, depth-separable convolutions (stochastic duration predictor)."""

    def __init__(self, channels: int, kernel_size: int, n_layers: int, p_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.drop = nn.Dropout(p_dropout)
        self.convs_sep = nn.ModuleList()
        self.convs_1x1 = nn.ModuleList()
        self.norms_1 = nn.ModuleList()
        self.norms_2 = nn.ModuleList()
        for i in range(n_layers):
            dilation = kernel_size**i
            padding = (kernel_size * dilation - dilation) // 2
            self.convs_sep.append(
                nn.Conv1d(
                    channels, channels, kernel_size, groups=channels, dilation=dilation, padding=padding
                )
            )
            self.convs_1x1.append(nn.Conv1d(channels, channels, 1))
            self.norms_1.append(LayerNorm(channels))
            self.norms_2.append(LayerNorm(channels))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if g is not None:
            x = x + g
        for i in range(self.n_layers):
            y = self.convs_sep[i](x * x_mask)
            y = F.gelu(self.norms_1[i](y))
            y = self.convs_1x1[i](y)
            y = F.gelu(self.norms_2[i](y))
            x = x + self.drop(y)
        return x * x_mask


class WN(nn.Module):
    """The non-causal WaveNet of the flow and the posterior encoder (gated tanh units, skip sums)."""

    def __init__(
        self,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
        p_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.drop = nn.Dropout(p_dropout)
        if gin_channels:
            self.cond_layer = weight_norm(nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1))
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(
                weight_norm(
                    nn.Conv1d(
                        hidden_channels, 2 * hidden_channels, kernel_size, dilation=dilation, padding=padding
                    )
                )
            )
            # The last layer only feeds the skip sum, so it has half the outputs.
            res_skip_channels = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(weight_norm(nn.Conv1d(hidden_channels, res_skip_channels, 1)))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.hidden_channels
        output = torch.zeros_like(x)
        if g is not None:
            g = self.cond_layer(g)
        for i in range(self.n_layers):
            x_in = self.in_layers[i](x)
            if g is not None:
                x_in = x_in + g[:, i * 2 * hidden : (i + 1) * 2 * hidden]
            acts = torch.tanh(x_in[:, :hidden]) * torch.sigmoid(x_in[:, hidden:])
            res_skip = self.res_skip_layers[i](self.drop(acts))
            if i < self.n_layers - 1:
                x = (x + res_skip[:, :hidden]) * x_mask
                output = output + res_skip[:, hidden:]
            else:
                output = output + res_skip
        return output * x_mask
