"""Duration predictors: the stochastic one (a flow over log-durations) and the plain convolutional one.

Only the inverse (sampling) direction of the flows is implemented; the training-only parts (`post_*`) are
built so full checkpoints load.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .layers import DDSConv, LayerNorm

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def _inverse_rational_quadratic_spline(
    inputs: torch.Tensor,
    widths_raw: torch.Tensor,
    heights_raw: torch.Tensor,
    derivatives_raw: torch.Tensor,
    tail_bound: float,
) -> torch.Tensor:
    """Inverse of the monotone rational-quadratic spline on [-B, B], identity outside (linear tails).

    inputs: [...]; widths_raw / heights_raw: [..., K]; derivatives_raw: [..., K-1].
    """
    num_bins = widths_raw.shape[-1]
    # Linear tails: the boundary derivatives are fixed so that the slope there is 1.
    constant = float(np.log(np.exp(1 - MIN_DERIVATIVE) - 1))
    derivatives_raw = F.pad(derivatives_raw, (1, 1), value=constant)
    # Every element goes through the spline and `torch.where` keeps the identity outside [-B, B]: no
    # data-dependent shapes, so the graph exports with a free length (upstream indexes the inside ones).
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    x = inputs.clamp(-tail_bound, tail_bound)
    left, right, bottom, top = -tail_bound, tail_bound, -tail_bound, tail_bound

    # Knots: left, then the running sums of all widths but the last, then exactly right (the sum of all
    # widths is 1 only up to rounding). Pads rather than index assignments: fewer nodes once exported.
    widths = torch.softmax(widths_raw, dim=-1)
    widths = MIN_BIN_WIDTH + (1 - MIN_BIN_WIDTH * num_bins) * widths
    cumwidths = F.pad(torch.cumsum(widths[..., :-1], dim=-1), (1, 0), value=0.0)
    cumwidths = F.pad((right - left) * cumwidths + left, (0, 1), value=right)
    widths = cumwidths[..., 1:] - cumwidths[..., :-1]

    derivatives = MIN_DERIVATIVE + F.softplus(derivatives_raw)

    heights = torch.softmax(heights_raw, dim=-1)
    heights = MIN_BIN_HEIGHT + (1 - MIN_BIN_HEIGHT * num_bins) * heights
    cumheights = F.pad(torch.cumsum(heights[..., :-1], dim=-1), (1, 0), value=0.0)
    cumheights = (top - bottom) * cumheights + bottom  # every knot but the top one
    # The search nudges the top knot up, so that x == top falls in the last bin.
    locations = F.pad(cumheights, (0, 1), value=top + 1e-6)
    cumheights = F.pad(cumheights, (0, 1), value=top)
    heights = cumheights[..., 1:] - cumheights[..., :-1]

    bin_idx = (torch.sum(x[..., None] >= locations, dim=-1) - 1)[..., None]

    in_cumwidths = cumwidths.gather(-1, bin_idx)[..., 0]
    in_widths = widths.gather(-1, bin_idx)[..., 0]
    in_cumheights = cumheights.gather(-1, bin_idx)[..., 0]
    in_delta = (heights / widths).gather(-1, bin_idx)[..., 0]
    in_derivatives = derivatives.gather(-1, bin_idx)[..., 0]
    in_derivatives_next = derivatives[..., 1:].gather(-1, bin_idx)[..., 0]
    in_heights = heights.gather(-1, bin_idx)[..., 0]

    shifted = x - in_cumheights
    slope_sum = in_derivatives + in_derivatives_next - 2 * in_delta
    a = shifted * slope_sum + in_heights * (in_delta - in_derivatives)
    b = in_heights * in_derivatives - shifted * slope_sum
    c = -in_delta * shifted
    discriminant = b.pow(2) - 4 * a * c
    root = (2 * c) / (-b - torch.sqrt(discriminant))
    return torch.where(inside, root * in_widths + in_cumwidths, inputs)


class Flip(nn.Module):
    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return torch.flip(x, [1])


class ElementwiseAffine(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(channels, 1))
        self.logs = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        return (x - self.m) * torch.exp(-self.logs) * x_mask


class ConvFlow(nn.Module):
    """Coupling layer whose transform is a rational-quadratic spline predicted by DDS convolutions."""

    def __init__(
        self,
        in_channels: int,
        filter_channels: int,
        kernel_size: int,
        n_layers: int,
        num_bins: int = 10,
        tail_bound: float = 5.0,
    ) -> None:
        super().__init__()
        self.filter_channels = filter_channels
        self.num_bins = num_bins
        self.tail_bound = tail_bound
        self.half_channels = in_channels // 2
        self.pre = nn.Conv1d(self.half_channels, filter_channels, 1)
        self.convs = DDSConv(filter_channels, kernel_size, n_layers, p_dropout=0.0)
        self.proj = nn.Conv1d(filter_channels, self.half_channels * (num_bins * 3 - 1), 1)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half_channels] * 2, dim=1)
        h = self.convs(self.pre(x0), x_mask, g=g)
        h = self.proj(h) * x_mask
        b, c, t = x0.shape
        h = h.reshape(b, c, -1, t).permute(0, 1, 3, 2)  # [b, c, t, 3K-1]
        scale = math.sqrt(self.filter_channels)
        k = self.num_bins
        x1 = _inverse_rational_quadratic_spline(
            x1, h[..., :k] / scale, h[..., k : 2 * k] / scale, h[..., 2 * k :], self.tail_bound
        )
        return torch.cat([x0, x1], dim=1) * x_mask


class StochasticDurationPredictor(nn.Module):
    def __init__(
        self,
        in_channels: int,
        filter_channels: int,
        kernel_size: int,
        p_dropout: float,
        n_flows: int = 4,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        filter_channels = in_channels  # as upstream: the argument is overridden
        self.flows = nn.ModuleList([ElementwiseAffine(2)])
        for _ in range(n_flows):
            self.flows.extend([ConvFlow(2, filter_channels, kernel_size, n_layers=3), Flip()])
        self.post_pre = nn.Conv1d(1, filter_channels, 1)
        self.post_proj = nn.Conv1d(filter_channels, filter_channels, 1)
        self.post_convs = DDSConv(filter_channels, kernel_size, n_layers=3, p_dropout=p_dropout)
        self.post_flows = nn.ModuleList([ElementwiseAffine(2)])
        for _ in range(4):
            self.post_flows.extend([ConvFlow(2, filter_channels, kernel_size, n_layers=3), Flip()])
        self.pre = nn.Conv1d(in_channels, filter_channels, 1)
        self.proj = nn.Conv1d(filter_channels, filter_channels, 1)
        self.convs = DDSConv(filter_channels, kernel_size, n_layers=3, p_dropout=p_dropout)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, filter_channels, 1)

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor, noise: torch.Tensor, g: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Log-durations [b, 1, t] from `noise` [b, 2, t]: a normal sample times noise_scale_w."""
        x = self.pre(x)
        if g is not None:
            x = x + self.cond(g)
        x = self.proj(self.convs(x, x_mask)) * x_mask
        # Reverse order, skipping the first ConvFlow (upstream drops it at inference as a no-op flow).
        flows = list(reversed(self.flows))
        flows = flows[:-2] + [flows[-1]]
        z = noise
        for flow in flows:
            z = flow(z, x_mask, g=x)
        return z[:, :1]


class DurationPredictor(nn.Module):
    def __init__(
        self,
        in_channels: int,
        filter_channels: int,
        kernel_size: int,
        p_dropout: float,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(p_dropout)
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_1 = LayerNorm(filter_channels)
        self.conv_2 = nn.Conv1d(filter_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_2 = LayerNorm(filter_channels)
        self.proj = nn.Conv1d(filter_channels, 1, 1)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, in_channels, 1)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """Log-durations [b, 1, t]."""
        if g is not None:
            x = x + self.cond(g)
        x = self.drop(self.norm_1(torch.relu(self.conv_1(x * x_mask))))
        x = self.drop(self.norm_2(torch.relu(self.conv_2(x * x_mask))))
        return self.proj(x * x_mask) * x_mask
