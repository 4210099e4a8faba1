"""Face boxes the way the official Wav2Lip inference makes them: detect, pad, smooth, crop.

The official code detects with S3FD (whose weights are not shipped); we detect with OpenCV's Haar cascade,
which is what the conformance fixture in ``tests/data/conformance/wav2lip/`` was measured with. Padding,
smoothing and cropping follow the official numerics exactly (README section 6 of that fixture).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

CROP_SIZE = 96
"""Side of the square face crop the Wav2Lip generator takes."""

DEFAULT_PADS: tuple[int, int, int, int] = (0, 10, 0, 0)
"""Official default ``--pads``: (top, bottom, left, right); the box grows 10 px down to take in the chin."""

SMOOTHING_WINDOW = 5
"""Official ``T``: each box is the mean of the next five detections."""

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_NEIGHBORS = 5
HAAR_MAX_SIDE = 1024
"""Frames are searched at most this many pixels a side (scaled down, the box scaled back): the cascade's time
grows with the pixels (seconds for a 4096-pixel photo) and a face a quarter of such a frame is still large."""


@dataclass(frozen=True)
class FaceBox:
    """The padded, smoothed face box (Wav2Lip convention): the crop is ``frame[y1:y2, x1:x2]``."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade; returns the largest face of a BGR frame, or None.

    One instance per thread: ``cv2.CascadeClassifier`` keeps scratch state while it runs.
    """

    def __init__(self) -> None:
        path = cv2.data.haarcascades + HAAR_CASCADE
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV could not load its Haar cascade {path!r}; "
                               f"reinstall opencv-python-headless")

    def detect(self, frame_bgr: np.ndarray) -> tuple[int, int, int, int] | None:
        """(x1, y1, x2, y2) of the largest face, or None when the cascade finds none."""
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        scale = min(1.0, HAAR_MAX_SIDE / max(gray.shape[:2]))
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        faces = self._cascade.detectMultiScale(gray, scaleFactor=HAAR_SCALE_FACTOR,
                                               minNeighbors=HAAR_MIN_NEIGHBORS)
        if len(faces) == 0:
            return None
        # Largest by area; on a tie the first, as the cascade ordered them.
        x, y, w, h = (round(int(v) / scale) for v in max(faces, key=lambda f: int(f[2]) * int(f[3])))
        height, width = frame_bgr.shape[:2]
        return x, y, min(width, x + w), min(height, y + h)


def pad_box(
    box: Sequence[int], pads: Sequence[int], frame_height: int, frame_width: int
) -> tuple[int, int, int, int]:
    """Official padding: grow (x1, y1, x2, y2) by pads (top, bottom, left, right), clipped to the frame."""
    x1, y1, x2, y2 = (int(v) for v in box)
    top, bottom, left, right = (int(p) for p in pads)
    return max(0, x1 - left), max(0, y1 - top), min(frame_width, x2 + right), min(frame_height, y2 + bottom)


def smooth_boxes(boxes: np.ndarray, window: int = SMOOTHING_WINDOW) -> np.ndarray:
    """Official temporal smoothing of (N, 4) integer boxes; returns a new array.

    Entry i becomes the mean of entries i..i+window-1; near the end, of ``boxes[N - window:]``. The
    official code updates an integer array in place, so each mean is truncated and the tail windows see
    boxes already smoothed; we keep both quirks so our crops match the official ones. ``N - window`` is a
    Python slice start, so when N < window it is negative and counts from the end, as it does there.
    """
    out = np.array(boxes, dtype=np.int64, copy=True)
    n = len(out)
    for i in range(n):
        chunk = out[n - window:] if i + window > n else out[i : i + window]
        out[i] = np.mean(chunk, axis=0)  # assignment into int64 truncates toward zero, as in the official
    return out


def crop_face(frame_bgr: np.ndarray, box: FaceBox) -> np.ndarray:
    """The model's (96, 96, 3) uint8 crop: ``cv2.resize(frame[y1:y2, x1:x2], (96, 96))``, bilinear."""
    region = frame_bgr[box.y1 : box.y2, box.x1 : box.x2]
    return cv2.resize(region, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
