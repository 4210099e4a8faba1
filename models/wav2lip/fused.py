"""An inference form of the Wav2Lip generator: BatchNorm folded into the convolutions, and the decoder's
skip inputs split off so that a still avatar's share of the work is done once.

Why the split is exact: each decoder block starts with a (transposed) convolution of the concatenation
[decoder output, encoder output]. A convolution is linear in its input channels, so it equals the sum of
a convolution of the decoder part (with the bias) and one of the encoder part. For a still avatar the
encoder part is the same every frame: `face_constants` computes the face encoder and those 7 partial
convolutions once per crop, and `forward_cached` runs only the audio encoder and the decoder. The result
equals the official forward up to float rounding (measured in the tests).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .model import ConvBlock, ConvTransposeBlock, Wav2Lip


def _fold(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of `conv` followed by `bn` in eval mode, as one convolution."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (out,)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    if isinstance(conv, nn.ConvTranspose2d):
        weight = conv.weight * scale[None, :, None, None]  # (in, out, kh, kw)
    else:
        weight = conv.weight * scale[:, None, None, None]  # (out, in, kh, kw)
    return weight.detach().clone(), ((bias - bn.running_mean) * scale + bn.bias).detach().clone()


# Sub-pixel form of ConvTranspose2d(kernel 3, stride 2, padding 1, output_padding 1): output row 2i takes
# x[i] * w[kh=1]; row 2i+1 takes x[i] * w[kh=2] + x[i+1] * w[kh=0] (likewise for columns). So it equals a
# 2x2 convolution over x padded by one zero row/column at the bottom/right, giving 4 phases per output
# channel, followed by a pixel shuffle. `_TAP[(phase, offset)]` is the kernel tap each 2x2 tap reads.
_TAP = {(0, 0): 1, (0, 1): None, (1, 0): 2, (1, 1): 0}


def _subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """(in, out, 3, 3) transposed-conv weight -> (out*4, in, 2, 2) conv weight; channel = out*4 + a*2 + b."""
    cin, cout = weight.shape[:2]
    result = torch.zeros(cout, 2, 2, cin, 2, 2, dtype=weight.dtype)
    for (a, dy), kh in _TAP.items():
        for (b, dx), kw in _TAP.items():
            if kh is not None and kw is not None:
                result[:, a, b, :, dy, dx] = weight[:, :, kh, kw].T
    return result.reshape(cout * 4, cin, 2, 2)


class FusedConv(nn.Module):
    """One folded conv wrapper: relu(conv(x) [+ x]).

    With `subpixel`, transposed convolutions are rewritten as regular ones (exact up to float rounding):
    onnxruntime runs ConvTranspose only in fp32 and slowly (half of the int8 graph's time), but quantises
    Conv. In fp32 the rewrite costs more than it saves (the 2x2 form multiplies some zero taps).
    """

    def __init__(self, block: ConvBlock | ConvTransposeBlock, subpixel: bool = False) -> None:
        super().__init__()
        conv, bn = block.conv_block[0], block.conv_block[1]
        weight, bias = _fold(conv, bn)
        self.mode = "conv"
        self.stride, self.padding = conv.stride, conv.padding
        self.output_padding = (0, 0)
        if isinstance(conv, nn.ConvTranspose2d) and not subpixel:
            self.mode, self.output_padding = "transposed", conv.output_padding
        elif isinstance(conv, nn.ConvTranspose2d):
            geometry = (conv.kernel_size, conv.stride, conv.padding, conv.output_padding)
            if geometry == ((3, 3), (2, 2), (1, 1), (1, 1)):
                self.mode, weight, bias = "subpixel", _subpixel_weight(weight), bias.repeat_interleave(4)
                self.stride, self.padding = (1, 1), (0, 0)
            elif geometry == ((3, 3), (1, 1), (0, 0), (0, 0)):
                # Stride 1, no padding: a full convolution with the flipped kernel.
                weight = weight.flip(2, 3).transpose(0, 1).contiguous()
                self.stride, self.padding = (1, 1), (2, 2)
            else:
                raise ValueError(f"no conv rewrite for ConvTranspose2d geometry {geometry}")
        self.residual = bool(getattr(block, "residual", False))
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.mode == "subpixel":
            out = F.conv2d(F.pad(x, (0, 1, 0, 1)), weight, bias)  # (N, out*4, H, W)
            return F.pixel_shuffle(out, 2)  # (N, out, 2H, 2W)
        if self.mode == "transposed":
            return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, self.output_padding)
        return F.conv2d(x, weight, bias, self.stride, self.padding)

    def conv_nhwc(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """`conv` with its output channels-last, (N, H, W, C): NCHW input (N, C, H, W)."""
        if self.mode != "subpixel":
            return self.conv(x, weight, bias).permute(0, 2, 3, 1)
        # The form exported for onnxruntime int8, whose convolutions run channels-last. Each output phase
        # (a, b) gets its exact kernel (1x1, 1x2, 2x1, 2x2: 9 taps where the 2x2 form multiplies 16, 7 of
        # them zero) with its own bottom/right zero padding (folded into the Conv after export); the phases
        # are joined channels-last and the pixel shuffle moves whole C-channel pixels, so no layout change
        # is needed around it (DepthToSpace is NCHW only). Faster than the 2x2 form (bench/FIGURES.md).
        channels = weight.shape[0] // 4
        taps = weight.unflatten(0, (channels, 2, 2))  # (C, a, b, in, dy, dx)
        phases = []
        for a in (0, 1):
            for b in (0, 1):
                padded = F.pad(x, (0, b, 0, a)) if a or b else x
                phase_bias = None if bias is None else bias.unflatten(0, (channels, 4))[:, 2 * a + b]
                phases.append(F.conv2d(padded, taps[:, a, b, :, : a + 1, : b + 1], phase_bias))
        out = torch.stack([phase.permute(0, 2, 3, 1) for phase in phases], dim=3)  # (N, H, W, 4, C)
        height, width = int(out.shape[1]), int(out.shape[2])  # fixed by the 96x96 input; N stays dynamic
        out = out.reshape(-1, height, width, 2, 2, channels).transpose(2, 3)  # (N, H, a, W, b, C)
        return out.reshape(-1, 2 * height, 2 * width, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x, self.weight, self.bias)
        return torch.relu(out + x if self.residual else out)

    def split_input(self, decoder_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight for the first `decoder_channels` input channels, weight for the rest)."""
        dim = 0 if self.mode == "transposed" else 1  # transposed weights are (in, out, kh, kw)
        rest = self.weight.shape[dim] - decoder_channels
        return self.weight.narrow(dim, 0, decoder_channels), self.weight.narrow(dim, decoder_channels, rest)


class FusedWav2Lip(nn.Module):
    """Wav2Lip with folded BatchNorm; same outputs as `Wav2Lip.forward` up to float rounding."""

    def __init__(self, model: Wav2Lip, subpixel: bool = False) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            nn.Sequential(*(FusedConv(b, subpixel) for b in block)) for block in model.face_encoder_blocks
        )
        self.audio_encoder = nn.Sequential(*(FusedConv(b, subpixel) for b in model.audio_encoder))
        self.face_decoder_blocks = nn.ModuleList(
            nn.Sequential(*(FusedConv(b, subpixel) for b in block)) for block in model.face_decoder_blocks
        )
        self.output_conv = FusedConv(model.output_block[0], subpixel)
        final = model.output_block[1]
        self.final_weight = nn.Parameter(final.weight.detach().clone(), requires_grad=False)
        self.final_bias = nn.Parameter(final.bias.detach().clone(), requires_grad=False)
        # Input channels of each split conv that come from the decoder (the rest come from the encoder).
        self.decoder_channels = [block[0].conv_block[0].out_channels for block in model.face_decoder_blocks]
        self.eval()

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.conv2d(x, self.final_weight, self.final_bias))

    def encode_face(self, face: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.face_encoder_blocks:
            face = block(face)
            feats.append(face)
        return feats

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """(N, 1, 80, 16), (N, 6, 96, 96) -> (N, 3, 96, 96)."""
        feats = self.encode_face(face)
        x = self.audio_encoder(mel)
        for block, skip in zip(self.face_decoder_blocks, reversed(feats), strict=True):
            x = torch.cat((block(x), skip), dim=1)
        return self._output(self.output_conv(x))

    def face_constants(self, face: torch.Tensor) -> list[torch.Tensor]:
        """The per-crop terms of `forward_cached`: for each of the 6 transposed decoder convs and the output
        conv, its convolution of the encoder skip input (no bias). (N, 6, 96, 96) -> 7 tensors, shapes
        (N, 512, 3, 3), (N, 512, 6, 6), (N, 384, 12, 12), (N, 256, 24, 24), (N, 128, 48, 48),
        (N, 64, 96, 96), (N, 32, 96, 96)."""
        feats = self.encode_face(face)
        split_convs = [block[0] for block in self.face_decoder_blocks[1:]] + [self.output_conv]
        constants = []
        # The skip of split conv k is the encoder output concatenated after decoder block k: feats[6 - k].
        for k, conv in enumerate(split_convs):
            _, skip_weight = conv.split_input(self.decoder_channels[k])
            constants.append(conv.conv(feats[6 - k], skip_weight, None))
        return constants

    def _split_convs(self) -> list[tuple[FusedConv, nn.Module]]:
        """Each split conv of `forward_cached` and the rest of its decoder block."""
        split_convs = [block[0] for block in self.face_decoder_blocks[1:]] + [self.output_conv]
        rests = [block[1:] for block in self.face_decoder_blocks[1:]] + [nn.Identity()]
        return list(zip(split_convs, rests, strict=True))

    def forward_cached(self, mel: torch.Tensor, constants: list[torch.Tensor]) -> torch.Tensor:
        """(N, 1, 80, 16) and `face_constants` (batch N or 1) -> (N, 3, 96, 96)."""
        x = self.face_decoder_blocks[0](self.audio_encoder(mel))
        for k, (conv, rest) in enumerate(self._split_convs()):
            decoder_weight, _ = conv.split_input(self.decoder_channels[k])
            x = rest(torch.relu(conv.conv(x, decoder_weight, conv.bias) + constants[k]))
        return self._output(x)

    def forward_cached_nhwc(self, mel: torch.Tensor, constants: list[torch.Tensor]) -> torch.Tensor:
        """`forward_cached` with the constants channels-last, (N or 1, H, W, C), and each split conv's sum
        formed channels-last: the form exported for onnxruntime int8, whose convolutions run channels-last
        (the layout changes this graph asks for cancel against theirs)."""
        x = self.face_decoder_blocks[0](self.audio_encoder(mel))
        for k, (conv, rest) in enumerate(self._split_convs()):
            decoder_weight, _ = conv.split_input(self.decoder_channels[k])
            summed = torch.relu(conv.conv_nhwc(x, decoder_weight, conv.bias) + constants[k])
            x = rest(summed.permute(0, 3, 1, 2))
        return self._output(x)
