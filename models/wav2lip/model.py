"""The Wav2Lip generator (Prajwal et al. 2020), with the attribute names of the official checkpoints.

Attribute names are the checkpoint keys: `face_encoder_blocks.{0..6}`, `audio_encoder.{0..12}`,
`face_decoder_blocks.{0..6}`, `output_block`, and inside each wrapper `conv_block.0` (the convolution)
and `conv_block.1` (its BatchNorm). `wav2lip.pth` and `wav2lip_gan.pth` load with `strict=True` and no
rename table.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Conv2d + BatchNorm2d (+ the block's input when residual) + ReLU; official `models/conv.py` Conv2d."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class ConvTransposeBlock(nn.Module):
    """ConvTranspose2d + BatchNorm2d + ReLU; official `models/conv.py` Conv2dTranspose (never residual)."""

    def __init__(
        self, cin: int, cout: int, kernel_size: int, stride: int, padding: int, output_padding: int = 0
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(channels: int, count: int) -> list[nn.Module]:
    """`count` residual 3x3 blocks that keep `channels` and the spatial size."""
    return [ConvBlock(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def _up(cin: int, cout: int, residual_blocks: int) -> nn.Sequential:
    """A decoder block: a stride-2 transposed conv (doubles H and W), then residual blocks."""
    return nn.Sequential(
        ConvTransposeBlock(cin, cout, 3, 2, 1, output_padding=1), *_res(cout, residual_blocks)
    )


class Wav2Lip(nn.Module):
    """The generator: audio encoder, face encoder with skip connections, face decoder, output block."""

    def __init__(self) -> None:
        super().__init__()
        # Spatial size after each face-encoder block: 96, 48, 24, 12, 6, 3, 1.
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBlock(6, 16, 7, 1, 3)),
                nn.Sequential(ConvBlock(16, 32, 3, 2, 1), *_res(32, 2)),
                nn.Sequential(ConvBlock(32, 64, 3, 2, 1), *_res(64, 3)),
                nn.Sequential(ConvBlock(64, 128, 3, 2, 1), *_res(128, 2)),
                nn.Sequential(ConvBlock(128, 256, 3, 2, 1), *_res(256, 2)),
                nn.Sequential(ConvBlock(256, 512, 3, 2, 1), *_res(512, 1)),
                nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),
            ]
        )
        # (B, 1, 80, 16) -> (B, 512, 1, 1): heights 80, 27, 9, 3, 1; widths 16, 16, 6, 3, 1.
        self.audio_encoder = nn.Sequential(
            ConvBlock(1, 32, 3, 1, 1),
            *_res(32, 2),
            ConvBlock(32, 64, 3, (3, 1), 1),
            *_res(64, 2),
            ConvBlock(64, 128, 3, 3, 1),
            *_res(128, 2),
            ConvBlock(128, 256, 3, (3, 2), 1),
            *_res(256, 1),
            ConvBlock(256, 512, 3, 1, 0),
            ConvBlock(512, 512, 1, 1, 0),
        )
        # Each decoder block's input is [previous decoder output, the matching encoder output] on channels.
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),  # 1x1
                nn.Sequential(ConvTransposeBlock(1024, 512, 3, 1, 0), *_res(512, 1)),  # 3x3
                _up(1024, 512, 2),  # 6x6
                _up(768, 384, 2),  # 12x12
                _up(512, 256, 2),  # 24x24
                _up(320, 128, 2),  # 48x48
                _up(160, 64, 2),  # 96x96
            ]
        )
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def encode_face(self, face_sequences: torch.Tensor) -> list[torch.Tensor]:
        """The 7 face-encoder block outputs, shallowest first.

        (N, 6, 96, 96) -> [(N, 16, 96, 96), (N, 32, 48, 48), ..., (N, 512, 1, 1)]
        """
        feats = []
        x = face_sequences
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        return feats

    def decode(self, audio_embedding: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """Decoder + output block from the audio embedding (N, 512, 1, 1) and the 7 encoder outputs."""
        x = audio_embedding
        for block, skip in zip(self.face_decoder_blocks, reversed(feats), strict=True):
            x = torch.cat((block(x), skip), dim=1)
        return self.output_block(x)

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """(B, 1, 80, 16), (B, 6, 96, 96) -> (B, 3, 96, 96) in [0, 1], BGR.

        The 5-D form (B, T, 1, 80, 16), (B, 6, T, 96, 96) -> (B, 3, T, 96, 96) folds time into the batch,
        time-major, as the official code does.
        """
        batch = audio_sequences.size(0)
        five_d = face_sequences.dim() > 4
        if five_d:
            # (B, T, 1, 80, 16) -> (T*B, 1, 80, 16); (B, 6, T, 96, 96) -> (T*B, 6, 96, 96), time-major.
            audio_sequences = torch.cat(audio_sequences.unbind(1), dim=0)
            face_sequences = torch.cat(face_sequences.unbind(2), dim=0)
        out = self.decode(self.audio_encoder(audio_sequences), self.encode_face(face_sequences))
        if five_d:
            out = torch.stack(torch.split(out, batch, dim=0), dim=2)  # (B, 3, T, 96, 96)
        return out
