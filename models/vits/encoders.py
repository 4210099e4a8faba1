"""The text encoder (transformer with windowed relative-position attention) and the posterior encoder."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .layers import WN, LayerNorm, sequence_mask


class MultiHeadAttention(nn.Module):
    """Self-attention with learned relative-position embeddings for offsets within +-window_size."""

    def __init__(
        self, channels: int, out_channels: int, n_heads: int, p_dropout: float = 0.0, window_size: int = 4
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(p_dropout)
        rel_stddev = self.k_channels**-0.5
        self.emb_rel_k = nn.Parameter(torch.randn(1, window_size * 2 + 1, self.k_channels) * rel_stddev)
        self.emb_rel_v = nn.Parameter(torch.randn(1, window_size * 2 + 1, self.k_channels) * rel_stddev)

    def _band(self, length: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Indices of the 2w+1 diagonals that relative embeddings cover, as gathers with validity masks.

        slot[i, j] = j - i + w: the embedding of key j seen from query i (one exists where 0 <= slot <= 2w);
        key[i, k] = i + k - w: the key in slot k of query i (one exists where 0 <= key < length)."""
        w = self.window_size
        positions = torch.arange(length, device=device)
        slot = positions[None, :] - positions[:, None] + w  # [l, l]
        key = positions[:, None] + torch.arange(-w, w + 1, device=device)  # [l, 2w+1]
        no_slot, no_key = (slot < 0) | (slot > 2 * w), (key < 0) | (key >= length)
        return slot.clamp(0, 2 * w), no_slot, key.clamp(0, length - 1), no_key

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, channels, length = x.shape
        heads, d = self.n_heads, self.k_channels
        # [b, c, l] -> [b, h, l, d]
        query = self.conv_q(x).view(b, heads, d, length).transpose(2, 3) / math.sqrt(d)
        key = self.conv_k(x).view(b, heads, d, length).transpose(2, 3)
        value = self.conv_v(x).view(b, heads, d, length).transpose(2, 3)
        scores = torch.matmul(query, key.transpose(-2, -1))  # [b, h, l, l]
        # Offsets beyond +-w have no embedding (upstream pads them with zeros), so the relative terms live on
        # a band of diagonals: gathering it keeps every size a tensor (exportable with a free length) and
        # skips upstream's products with zero rows; the same terms are summed.
        slot, no_slot, key_in_slot, no_key = self._band(length, x.device)
        rel_logits = torch.matmul(query, self.emb_rel_k.transpose(1, 2))  # [b, h, l, 2w+1]
        rel_logits = rel_logits.gather(-1, slot.expand(b, heads, -1, -1)).masked_fill(no_slot, 0.0)
        scores = (scores + rel_logits).masked_fill(attn_mask == 0, -1e4)  # [b, h, l, l]
        p_attn = self.drop(torch.softmax(scores, dim=-1))
        output = torch.matmul(p_attn, value)
        p_band = p_attn.gather(-1, key_in_slot.expand(b, heads, -1, -1)).masked_fill(no_key, 0.0)
        output = output + torch.matmul(p_band, self.emb_rel_v)  # [b, h, l, 2w+1] @ [1, 2w+1, d]
        output = output.transpose(2, 3).reshape(b, channels, length)  # [b, h, l, d] -> [b, c, l]
        return self.conv_o(output)


class FFN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filter_channels: int,
        kernel_size: int,
        p_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, kernel_size)
        self.drop = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(F.pad(x * x_mask, self.pad)))
        x = self.conv_2(F.pad(self.drop(x) * x_mask, self.pad))
        return x * x_mask


class Encoder(nn.Module):
    def __init__(
        self,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int = 1,
        p_dropout: float = 0.0,
        window_size: int = 4,
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.drop = nn.Dropout(p_dropout)
        self.attn_layers = nn.ModuleList()
        self.norm_layers_1 = nn.ModuleList()
        self.ffn_layers = nn.ModuleList()
        self.norm_layers_2 = nn.ModuleList()
        for _ in range(n_layers):
            self.attn_layers.append(
                MultiHeadAttention(hidden_channels, hidden_channels, n_heads, p_dropout, window_size)
            )
            self.norm_layers_1.append(LayerNorm(hidden_channels))
            self.ffn_layers.append(
                FFN(hidden_channels, hidden_channels, filter_channels, kernel_size, p_dropout)
            )
            self.norm_layers_2.append(LayerNorm(hidden_channels))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)  # [b, 1, l, l]
        x = x * x_mask
        for i in range(self.n_layers):
            x = self.norm_layers_1[i](x + self.drop(self.attn_layers[i](x, attn_mask)))
            x = self.norm_layers_2[i](x + self.drop(self.ffn_layers[i](x, x_mask)))
        return x * x_mask


class TextEncoder(nn.Module):
    """Symbol ids -> hidden states and the prior's mean / log-std per symbol."""

    def __init__(
        self,
        n_vocab: int,
        out_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        p_dropout: float,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.emb = nn.Embedding(n_vocab, hidden_channels)
        nn.init.normal_(self.emb.weight, 0.0, hidden_channels**-0.5)
        self.encoder = Encoder(hidden_channels, filter_channels, n_heads, n_layers, kernel_size, p_dropout)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(
        self, x: torch.Tensor, x_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.emb(x) * math.sqrt(self.hidden_channels)  # [b, t, h]
        x = x.transpose(1, 2)  # [b, h, t]
        x_mask = sequence_mask(x_lengths, x.size(2)).unsqueeze(1).to(x.dtype)
        x = self.encoder(x * x_mask, x_mask)
        stats = self.proj(x) * x_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        return x, m, logs, x_mask


class PosteriorEncoder(nn.Module):
    """Linear spectrogram -> latent z (training only; present so full training checkpoints load)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(
        self, x: torch.Tensor, x_lengths: torch.Tensor, g: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x_mask = sequence_mask(x_lengths, x.size(2)).unsqueeze(1).to(x.dtype)
        x = self.enc(self.pre(x) * x_mask, x_mask, g=g)
        stats = self.proj(x) * x_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        z = (m + torch.randn_like(m) * torch.exp(logs)) * x_mask
        return z, m, logs, x_mask
