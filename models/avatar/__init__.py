"""Avatars for the lip-sync stage: frames, face boxes and Wav2Lip face crops, cached by file content."""

from .avatar import (
    DEFAULT_AVATAR,
    Avatar,
    AvatarConfig,
    AvatarError,
    NoFaceError,
    builtin_avatars,
    default_cache_dir,
    load_avatar,
)
from .faces import CROP_SIZE, DEFAULT_PADS, FaceBox, HaarFaceDetector, crop_face, pad_box, smooth_boxes

__all__ = [
    "CROP_SIZE",
    "DEFAULT_AVATAR",
    "DEFAULT_PADS",
    "Avatar",
    "AvatarConfig",
    "AvatarError",
    "FaceBox",
    "HaarFaceDetector",
    "NoFaceError",
    "builtin_avatars",
    "crop_face",
    "default_cache_dir",
    "load_avatar",
    "pad_box",
    "smooth_boxes",
]
