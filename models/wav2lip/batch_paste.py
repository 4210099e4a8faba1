"""`paste_mouth` for a batch of frames as torch tensors on any device, pixel for pixel the same pictures.

The numpy paste resizes the model's 96x96 output with OpenCV's bilinear resize, whose uint8 path is fixed
point: 11-bit weights (source positions in float32 as OpenCV computes them), a horizontal pass kept in
integers, and a vertical pass that takes the top 16 bits of (row >> 4) x weight for each of the two rows and
rounds away the last 2 bits (its SIMD form, which OpenCV's scalar tail and SSE2 baseline agree with).
Columns are clamped to the image, rows only in which source row is read (their weights are not: the first
and last rows blend a row with itself and lose a little to the truncations, as OpenCV does). An exact 2x
reduction is OpenCV's area average instead. `resize_linear` does the same integer arithmetic in int32, so
the GPU can paste for every session at once and send exactly the pictures the CPU path would.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .image import IMG_SIZE, BoxLike, _feather_mask

WEIGHT_BITS = 11
WEIGHT_ONE = 1 << WEIGHT_BITS  # OpenCV's INTER_RESIZE_COEF_SCALE


@functools.lru_cache(maxsize=64)
def _taps(source: int, target: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each target position: the two source indices and their 11-bit weights, as OpenCV makes them."""
    scale = 1.0 / (target / source)  # a double, as OpenCV's 1 / inv_scale
    position = ((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32)
    index = np.floor(position).astype(np.int64)
    fraction = (position - index.astype(np.float32)).astype(np.float32)
    if clamp:  # columns: a position past either edge reads the edge pixel with full weight
        low, high = index < 0, index >= source - 1
        fraction[low | high] = 0.0
        index = np.clip(index, 0, source - 1)
    w1 = np.rint(fraction * np.float32(WEIGHT_ONE)).astype(np.int64)
    w0 = np.rint((np.float32(1.0) - fraction) * np.float32(WEIGHT_ONE)).astype(np.int64)
    return np.clip(index, 0, source - 1), np.clip(index + 1, 0, source - 1), w0, w1


def resize_linear(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(N, h, w, C) uint8 -> (N, height, width, C) uint8, equal to cv2.resize(image, (width, height)) per
    image (INTER_LINEAR)."""
    n, source_h, source_w, channels = images.shape
    device = images.device
    if (source_w, source_h) == (2 * width, 2 * height):  # OpenCV takes its area path for an exact half
        quads = images.to(torch.int32).reshape(n, height, 2, width, 2, channels)
        return ((quads.sum(dim=(2, 4)) + 2) >> 2).to(torch.uint8)
    x0, x1, a0, a1 = (torch.from_numpy(t).to(device) for t in _taps(source_w, width, clamp=True))
    y0, y1, b0, b1 = (torch.from_numpy(t).to(device) for t in _taps(source_h, height, clamp=False))
    pixels = images.to(torch.int32)
    a0, a1 = a0.to(torch.int32)[:, None], a1.to(torch.int32)[:, None]
    rows = pixels[:, :, x0] * a0 + pixels[:, :, x1] * a1  # (N, h, width, C), < 255 * 2048
    b0, b1 = b0.to(torch.int32)[:, None, None], b1.to(torch.int32)[:, None, None]
    top, bottom = rows[:, y0] >> 4, rows[:, y1] >> 4  # (N, height, width, C), < 2^15
    out = (((top * b0) >> 16) + ((bottom * b1) >> 16) + 2) >> 2
    return out.clamp(0, 255).to(torch.uint8)


def paste_mouths(
    frames: torch.Tensor, box: BoxLike, outputs: torch.Tensor, feather: bool = True
) -> torch.Tensor:
    """`paste_mouth` for N frames that share one face box: (N, H, W, 3) uint8 frames, (N, 3, 96, 96) model
    outputs (float) -> new (N, H, W, 3) uint8 frames on the frames' device, equal to the numpy paste's."""
    x1, y1, x2, y2 = int(box.x1), int(box.y1), int(box.x2), int(box.y2)
    height, width = frames.shape[1:3]
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(f"box (x1={x1}, y1={y1}, x2={x2}, y2={y2}) is not inside the {width}x{height} frame")
    if outputs.shape[1:] != (3, IMG_SIZE, IMG_SIZE) or len(outputs) != len(frames):
        raise ValueError(f"outputs must be ({len(frames)}, 3, 96, 96), got {tuple(outputs.shape)}")
    # As output_to_patch: *255 in float32, HWC, a truncating uint8 cast, then the resize.
    pixels = (outputs.to(frames.device, torch.float32).permute(0, 2, 3, 1) * 255.0).to(torch.uint8)
    patch = resize_linear(pixels, x2 - x1, y2 - y1)
    result = frames.clone()
    if not feather:
        result[:, y1:y2, x1:x2] = patch
        return result
    mask = torch.from_numpy(_feather_mask(y2 - y1, x2 - x1)).to(frames.device)  # (h, w, 1) float32
    region = result[:, y1:y2, x1:x2].to(torch.float32)
    # The numpy paste's float32 operations in its order: each is rounded alike on any device.
    blended = region + mask * (patch.to(torch.float32) - region)
    result[:, y1:y2, x1:x2] = torch.clamp(blended + 0.5, 0, 255).to(torch.uint8)
    return result
