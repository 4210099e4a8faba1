"""The mel window of each video frame in a streaming mel (one that starts at some sample of a session).

Frame i's window is the official one: MEL_STEP columns from column int(i * 80 / fps) of the whole audio's
mel. A session's mel may start later than its sample 0 (after an interrupt it starts afresh where the new
audio begins): its columns are then counted from there.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .audio import MEL_COLUMNS_PER_SECOND, MEL_STEP, NUM_MELS, mel_window_start


class MelColumns(Protocol):
    """A mel computed so far (StreamingMel)."""

    @property
    def num_columns(self) -> int: ...

    def columns(self, start: int, stop: int) -> np.ndarray: ...


class FrameWindows:
    """Where each frame's window lies in a mel whose column 0 is at session sample `origin`."""

    def __init__(self, fps: float, sample_rate: int, origin: int = 0) -> None:
        self.fps = fps
        # 0 from a session's start: exact; after an interrupt the nearest column, at most half a column off.
        self._origin_columns = origin * MEL_COLUMNS_PER_SECOND / sample_rate

    def start(self, frame_index: int) -> int:
        """The first column of the frame's window in this mel (0 for frames before the mel's start)."""
        return max(0, round(mel_window_start(frame_index, self.fps) - self._origin_columns))

    def complete(self, frame_index: int, mel: MelColumns) -> bool:
        """True when every column of the frame's window is final."""
        return self.start(frame_index) + MEL_STEP <= mel.num_columns

    def window(self, frame_index: int, mel: MelColumns) -> np.ndarray:
        """(80, 16) float32: the official window; past the end, the last 16 columns (as the official
        inference does), and with fewer than 16 columns, the first one repeated on the left."""
        start = self.start(frame_index)
        columns = mel.num_columns
        if start + MEL_STEP <= columns:
            return mel.columns(start, start + MEL_STEP)
        if columns >= MEL_STEP:
            return mel.columns(columns - MEL_STEP, columns)
        window = mel.columns(0, columns) if columns else np.full((NUM_MELS, 1), -4.0, dtype=np.float32)
        return np.pad(window, ((0, 0), (MEL_STEP - window.shape[1], 0)), mode="edge")
