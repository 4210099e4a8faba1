"""Wav2Lip lip-sync: the official generator, its checkpoint loader, mel numerics and the fast engine."""

from .audio import (
    MEL_STEP,
    StreamingMel,
    mel_chunk_starts,
    mel_chunks,
    mel_window_start,
    melspectrogram,
    num_mel_columns,
)
from .checkpoint import Wav2LipCheckpointError, load_wav2lip
from .engine import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    INT8_MEAN_TOLERANCE,
    INT8_RECIPE,
    INT8_TOLERANCE,
    RUNTIMES,
    Wav2LipEngine,
    Wav2LipRuntimeError,
)
from .image import face_input, output_to_patch, paste_mouth
from .model import Wav2Lip
from .window import FrameWindows

__all__ = [
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "FrameWindows",
    "INT8_MEAN_TOLERANCE",
    "INT8_RECIPE",
    "INT8_TOLERANCE",
    "MEL_STEP",
    "RUNTIMES",
    "StreamingMel",
    "Wav2Lip",
    "Wav2LipCheckpointError",
    "Wav2LipEngine",
    "Wav2LipRuntimeError",
    "face_input",
    "load_wav2lip",
    "mel_chunk_starts",
    "mel_chunks",
    "mel_window_start",
    "melspectrogram",
    "num_mel_columns",
    "output_to_patch",
    "paste_mouth",
]
