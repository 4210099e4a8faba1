"""FACE_PATCH frames: a session's pictures as the first whole, then only the region that changed since the
picture before, and a frame where nothing changed as a repeat of the last frame that carried a JPEG.

The region is where the pixels differ, grown to the 16-pixel blocks of a 4:2:0 JPEG on the whole frame's
grid: the patch's blocks are then the whole frame's own, so drawn over the picture so far it gives (up to
the decoder's chroma smoothing at the patch's edges) the JPEG FULL_FRAME would have sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BLOCK = 16  # a 4:2:0 JPEG's MCU: a patch starts and ends on the whole frame's MCU grid
WHOLE_ABOVE = 0.6  # a region over this share of the frame goes as the whole frame (one JPEG is smaller)


@dataclass(frozen=True)
class Patch:
    """One frame's payload: `jpeg` drawn at (x, y); or no JPEG and `repeat_of` the frame it repeats."""

    jpeg: bytes
    x: int = 0
    y: int = 0
    repeat_of: int | None = None


def changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the pixels that differ between two pictures of one shape, None when none does."""
    height, width = before.shape[:2]
    a = np.ascontiguousarray(before).reshape(height, -1)
    b = np.ascontiguousarray(after).reshape(height, -1)
    row_bytes = a.shape[1]
    channels = row_bytes // width
    # Comparing 8 bytes at a time is several times faster; a word's columns are then its pixels' span.
    word = 8 if row_bytes % 8 == 0 else 1
    differs = a.view(np.uint64) != b.view(np.uint64) if word == 8 else a != b
    rows = np.flatnonzero(differs.any(axis=1))
    if len(rows) == 0:
        return None
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(differs[y0:y1].any(axis=0))
    x0 = int(cols[0]) * word // channels
    x1 = min(width, ((int(cols[-1]) + 1) * word + channels - 1) // channels)
    return x0, y0, x1, y1


def block_aligned(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (
        x0 // BLOCK * BLOCK,
        y0 // BLOCK * BLOCK,
        min(width, -(-x1 // BLOCK) * BLOCK),
        min(height, -(-y1 // BLOCK) * BLOCK),
    )


class PatchCoder:
    """One session's FACE_PATCH state: the last picture sent and the last frame that carried a JPEG."""

    def __init__(self, encode: Callable[[np.ndarray], bytes]) -> None:
        self._encode = encode
        self._previous: np.ndarray | None = None  # the last picture, as the client has it (before JPEG)
        self._previous_still: np.ndarray | None = None  # the same, when it was a shared immutable frame
        self._copy: np.ndarray | None = None  # this coder's own copy of a renderer's picture, reused
        self._last_sent = -1  # the last frame index that carried a JPEG

    def reset(self) -> None:
        """The next frame goes whole (at the start; after an interrupt the client lacks frames made since)."""
        self._previous = self._previous_still = None

    def encode(self, frame_index: int, picture: np.ndarray, *, still: bool) -> Patch:
        """Frame `frame_index`'s payload. `still`: the picture is a shared frame nobody writes to (the
        avatar's own), so the same object again means the same picture, with no comparing."""
        previous = self._previous
        if previous is None or previous.shape != picture.shape:
            return self._sent(frame_index, picture, still, Patch(self._encode(picture)))
        if still and picture is self._previous_still:
            return Patch(b"", repeat_of=self._last_sent)
        box = changed_box(previous, picture)
        if box is None:
            self._keep(picture, still)
            return Patch(b"", repeat_of=self._last_sent)
        height, width = picture.shape[:2]
        x0, y0, x1, y1 = block_aligned(box, width, height)
        if (x1 - x0) * (y1 - y0) > WHOLE_ABOVE * width * height:
            return self._sent(frame_index, picture, still, Patch(self._encode(picture)))
        patch = Patch(self._encode(picture[y0:y1, x0:x1]), x0, y0)
        return self._sent(frame_index, picture, still, patch)

    def _sent(self, frame_index: int, picture: np.ndarray, still: bool, patch: Patch) -> Patch:
        self._last_sent = frame_index
        self._keep(picture, still)
        return patch

    def _keep(self, picture: np.ndarray, still: bool) -> None:
        # A renderer's picture may be a buffer it reuses: kept as a copy, into the same array each frame (a
        # new frame-sized one each time costs more than the copy). The avatar's frames never change.
        if still:
            self._previous = self._previous_still = picture
            return
        if self._copy is None or self._copy.shape != picture.shape or self._copy.dtype != picture.dtype:
            self._copy = np.empty_like(picture)
        np.copyto(self._copy, picture)
        self._previous, self._previous_still = self._copy, None
