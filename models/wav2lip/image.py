"""Wav2Lip's image side: the 6-channel model input from a face crop, and pasting the output back."""

from __future__ import annotations

import functools
from typing import Protocol

import cv2
import numpy as np

IMG_SIZE = 96


class BoxLike(Protocol):
    """A face box as the avatar module gives it: crop = frame[y1:y2, x1:x2]."""

    x1: int
    y1: int
    x2: int
    y2: int


def face_input(crop_bgr_96: np.ndarray) -> np.ndarray:
    """(96, 96, 3) BGR uint8 crop -> (6, 96, 96) float32: [crop with rows 48..95 zeroed, crop] / 255.

    Channels 0-2 are the masked B, G, R and 3-5 the reference B, G, R, exactly as the official batch
    builder makes them (the division runs in float64, then float32).
    """
    crop = np.asarray(crop_bgr_96)
    if crop.shape != (IMG_SIZE, IMG_SIZE, 3) or crop.dtype != np.uint8:
        raise ValueError(
            f"face_input needs a (96, 96, 3) uint8 BGR crop, got {crop.shape} {crop.dtype}; "
            f"resize the face box with cv2.resize(crop, (96, 96))"
        )
    masked = crop.copy()
    masked[IMG_SIZE // 2 :] = 0
    stacked = np.concatenate((masked, crop), axis=2) / 255.0  # (96, 96, 6) float64
    return np.ascontiguousarray(stacked.transpose(2, 0, 1), dtype=np.float32)


def output_to_patch(out_3x96x96: np.ndarray, width: int, height: int) -> np.ndarray:
    """The official post-processing of one model output: *255, HWC, truncating uint8 cast, OpenCV
    bilinear resize to the box size. Returns (height, width, 3) uint8 BGR."""
    out = np.asarray(out_3x96x96)
    if out.shape != (3, IMG_SIZE, IMG_SIZE):
        raise ValueError(f"a Wav2Lip output is (3, 96, 96), got {out.shape}")
    pixels = (out.astype(np.float32).transpose(1, 2, 0) * 255.0).astype(np.uint8)
    return cv2.resize(pixels, (width, height))


@functools.lru_cache(maxsize=32)
def _feather_mask(height: int, width: int) -> np.ndarray:
    """(H, W, 1) float32 weights: 1 inside, falling smoothly to 0 at the box's edges over ~12% of its size.

    The upper part of the box is the model's copy of the reference face, so a soft seam there loses
    nothing; the falloff hides the colour step the official hard paste leaves at the box edge.
    """

    def ramp(n: int) -> np.ndarray:
        border = max(2, round(0.12 * n))
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float32)
        t = np.clip(distance / border, 0.0, 1.0)  # 0 on the outermost row and column
        return t * t * (3.0 - 2.0 * t)  # smoothstep

    return (ramp(height)[:, None] * ramp(width)[None, :])[:, :, None].astype(np.float32)


def paste_mouth(
    frame_bgr: np.ndarray, box: BoxLike, out_3x96x96: np.ndarray, feather: bool = True
) -> np.ndarray:
    """A new frame with the model output pasted over `frame[y1:y2, x1:x2]`.

    `feather=False` is the official paste (the whole box replaced, no blending); `feather=True` blends
    the same patch in with a feathered mask so the seam does not show.
    """
    x1, y1, x2, y2 = int(box.x1), int(box.y1), int(box.x2), int(box.y2)
    height, width = frame_bgr.shape[:2]
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(f"box (x1={x1}, y1={y1}, x2={x2}, y2={y2}) is not inside the {width}x{height} frame")
    patch = output_to_patch(out_3x96x96, x2 - x1, y2 - y1)
    result = frame_bgr.copy()
    if not feather:
        result[y1:y2, x1:x2] = patch
        return result
    mask = _feather_mask(y2 - y1, x2 - x1)
    region = result[y1:y2, x1:x2].astype(np.float32)
    blended = region + mask * (patch.astype(np.float32) - region)
    result[y1:y2, x1:x2] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return result
