"""Avatars: a still image or a short looping video, with the face box and crop of every frame.

Preparing an avatar detects the face in every frame once, pads and smooths the boxes the official
Wav2Lip way and stores the boxes and 96x96 crops in a cache keyed by the file's content, so the next
start skips detection. A video plays forward then backward so its loop never jumps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .faces import (
    CROP_SIZE,
    DEFAULT_PADS,
    HAAR_CASCADE,
    HAAR_MAX_SIDE,
    HAAR_MIN_NEIGHBORS,
    HAAR_SCALE_FACTOR,
    SMOOTHING_WINDOW,
    FaceBox,
    HaarFaceDetector,
    crop_face,
    pad_box,
    smooth_boxes,
)

log = logging.getLogger(__name__)

DEFAULT_AVATAR = "astronaut"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
CONFIG_FILE = "avatar.json"
MAX_VIDEO_FRAMES = 1500
"""A looping avatar is held decoded in memory: 1500 frames is a minute at 25 fps."""

MOUTH_KEYS = ("center_x", "lips_y", "half_width", "smile", "max_open")

CACHE_VERSION = 1
"""Bump when what the cache holds, or how it is computed, changes: old entries are then ignored."""


class AvatarError(ValueError):
    """An avatar cannot be used: unknown name, unreadable file, bad avatar.json, or no face in a frame."""


class NoFaceError(AvatarError):
    """The face detector found no face in a frame (a client's photo is told so in its own words)."""


@dataclass(frozen=True)
class AvatarConfig:
    """What ``avatar.json`` beside the image may say. Every field is optional."""

    box: tuple[int, int, int, int] | None = None
    """Face box (x1, y1, x2, y2) for every frame. Like the official ``--box`` it is used as given:
    no detection, no padding, no smoothing."""
    pads: tuple[int, int, int, int] = DEFAULT_PADS
    """Padding (top, bottom, left, right) added to detected boxes."""
    file: str | None = None
    """The image or video this config is for (when a folder holds several, the others ignore it)."""
    mouth: dict[str, float] | None = None
    """Where the mouth sits in the face box, for the viseme renderer: any of ``center_x``, ``lips_y``,
    ``half_width``, ``smile``, ``max_open`` (fractions of the box; see
    ``lipstream.models.viseme.MouthGeometry``)."""
    eyes: tuple[tuple[int, int, int, int], ...] | None = None
    """The eyes' boxes [[x1, y1, x2, y2], ...] in the first frame, for the blinks of idle life
    (``lipstream.models.avatar.life``); without them OpenCV's eye cascade looks for them. [] : no blinks."""

    @classmethod
    def from_dict(cls, data: object, path: Path) -> AvatarConfig:
        if not isinstance(data, dict):
            raise AvatarError(f"{path}: expected a JSON object like {{\"box\": [x1, y1, x2, y2]}}, "
                              f"got {data!r}")
        unknown = sorted(set(data) - {"box", "pads", "file", "mouth", "eyes"})
        if unknown:
            raise AvatarError(f"{path}: unknown keys {unknown}; allowed keys are 'box', 'pads', 'file', "
                              f"'mouth' and 'eyes'")
        eyes = data.get("eyes")
        if eyes is not None:
            if not isinstance(eyes, list):
                raise AvatarError(f"{path}: 'eyes' must be a list of [x1, y1, x2, y2] boxes, got {eyes!r}")
            eyes = tuple(_four_ints(eye, "eyes", path) for eye in eyes)
        box = _four_ints(data["box"], "box", path) if data.get("box") is not None else None
        if box is not None and not (box[0] < box[2] and box[1] < box[3] and min(box) >= 0):
            raise AvatarError(f"{path}: box {list(box)} must be [x1, y1, x2, y2] with 0 <= x1 < x2 "
                              f"and 0 <= y1 < y2")
        pads = _four_ints(data["pads"], "pads", path) if data.get("pads") is not None else DEFAULT_PADS
        file = data.get("file")
        if file is not None and not isinstance(file, str):
            raise AvatarError(f"{path}: 'file' must be a file name, got {file!r}")
        mouth = data.get("mouth")
        if mouth is not None:
            if not isinstance(mouth, dict) or not set(mouth) <= set(MOUTH_KEYS) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1.5
                    for v in mouth.values()):
                raise AvatarError(f"{path}: 'mouth' must map some of {list(MOUTH_KEYS)} to fractions of "
                                  f"the face box (0 to 1.5), got {mouth!r}")
            mouth = {k: float(v) for k, v in mouth.items()}
        return cls(box=box, pads=pads, file=file, mouth=mouth, eyes=eyes)


def _four_ints(value: object, key: str, path: Path) -> tuple[int, int, int, int]:
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) for v in value)):
        raise AvatarError(f"{path}: {key!r} must be a list of four integers, got {value!r}")
    return (value[0], value[1], value[2], value[3])


class Avatar:
    """A prepared avatar. Frame ``i`` of a session is ``frame(i)``; indices loop for ever.

    A video of n frames loops as 0, 1, ..., n-1, n-2, ..., 1 (``num_frames`` = 2n - 2), so playback
    never jumps. Arrays returned are shared and read-only: copy before drawing on them.
    """

    def __init__(self, name: str, source: Path, frames: Sequence[np.ndarray], boxes: np.ndarray,
                 crops: np.ndarray, mouth: dict[str, float] | None = None) -> None:
        if not (len(frames) == len(boxes) == len(crops) > 0):
            raise ValueError(f"frames, boxes and crops differ in length: "
                             f"{len(frames)}, {len(boxes)}, {len(crops)}")
        self.name = name
        self.source = source
        self.mouth: dict[str, float] = dict(mouth or {})
        """Mouth placement from avatar.json for the viseme renderer ({} for its defaults)."""
        self.eyes: list[tuple[int, int, int, int]] | None = None
        """The eyes' boxes in the first frame (avatar.json's, or found once by idle life); None: not yet
        looked for."""
        self._frames = [_read_only(f) for f in frames]
        self._boxes = [FaceBox(*(int(v) for v in b)) for b in boxes]
        self._crops = _read_only(np.ascontiguousarray(crops, dtype=np.uint8))
        self.height, self.width = self._frames[0].shape[:2]
        n = len(self._frames)
        self.num_frames = 1 if n == 1 else 2 * n - 2

    @property
    def num_source_frames(self) -> int:
        """Distinct frames of the file (a still image has 1)."""
        return len(self._frames)

    def source_index(self, i: int) -> int:
        """Which frame of the file session frame ``i`` shows (forward, then backward)."""
        k = int(i) % self.num_frames
        n = len(self._frames)
        return k if k < n else 2 * n - 2 - k

    def frame(self, i: int) -> np.ndarray:
        """BGR uint8 (H, W, 3) of frame i of the session (loops). Read-only."""
        return self._frames[self.source_index(i)]

    def box(self, i: int) -> FaceBox:
        return self._boxes[self.source_index(i)]

    def face_crop(self, i: int) -> np.ndarray:
        """(96, 96, 3) BGR uint8: the Wav2Lip model's crop of frame i. Read-only."""
        return self._crops[self.source_index(i)]

    def __repr__(self) -> str:
        size = f"{self.width}x{self.height}"
        return f"Avatar({self.name!r}, {size}, {self.num_source_frames} frame(s), {self.source})"


def builtin_avatars() -> list[str]:
    """Names ``load_avatar`` accepts without a path (the files in ``models/avatar/assets/``)."""
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    return sorted(p.stem for p in ASSETS_DIR.iterdir() if p.suffix.lower() in suffixes)


def default_cache_dir() -> Path:
    """``$LIPSTREAM_CACHE_DIR/avatars``, else ``$XDG_CACHE_HOME/lipstream/avatars``, else ``~/.cache/...``."""
    root = os.environ.get("LIPSTREAM_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "avatars"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lipstream" / "avatars"


def load_avatar(path_or_name: str | os.PathLike[str] | None = None,
                cache_dir: str | os.PathLike[str] | None = None) -> Avatar:
    """Load a built-in avatar by name (default ``astronaut``) or an image / short video by path.

    The face boxes and crops come from the cache in ``cache_dir`` (default: ``default_cache_dir()``)
    when it holds this file's content; otherwise they are computed and stored there.
    """
    path = _resolve(DEFAULT_AVATAR if path_or_name is None else path_or_name)
    name = path.stem
    config = _read_config(path)
    data = path.read_bytes()
    frames = _read_frames(path, name, data)

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = _cache_key(data, config)
    cache_file = cache / f"{name}-{key[:24]}.npz"
    cached = _load_cache(cache_file, frames)
    if cached is not None:
        boxes, crops = cached
        log.debug("avatar %r: boxes and crops from cache %s", name, cache_file)
    else:
        boxes = _face_boxes(frames, config, name)
        crops = np.stack([crop_face(frame, FaceBox(*(int(v) for v in box)))
                          for frame, box in zip(frames, boxes, strict=True)])
        _store_cache(cache_file, boxes, crops)
    avatar = Avatar(name, path, frames, boxes, crops, config.mouth)
    if config.eyes is not None:
        avatar.eyes = [tuple(eye) for eye in config.eyes]
    return avatar


def _resolve(path_or_name: str | os.PathLike[str]) -> Path:
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        config_path = path / CONFIG_FILE
        config = _load_json(config_path) if config_path.is_file() else {}
        file = config.get("file") if isinstance(config, dict) else None
        if not isinstance(file, str):
            raise AvatarError(f"avatar folder {str(path)!r}: give the image or video's path, or name it in "
                              f"{CONFIG_FILE} there as {{\"file\": \"portrait.png\"}}")
        path = path / file
    if path.is_file():
        return path
    if isinstance(path_or_name, str) and os.sep not in path_or_name and "/" not in path_or_name:
        for suffix in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
            candidate = ASSETS_DIR / f"{path_or_name}{suffix}"
            if candidate.is_file():
                return candidate
    raise AvatarError(f"unknown avatar {str(path_or_name)!r}: not a file, and not a built-in avatar "
                      f"{builtin_avatars()}; give the path of an image or a short looping video")


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AvatarError(f"{path}: not readable JSON ({e})") from None


def _read_config(path: Path) -> AvatarConfig:
    config_path = path.parent / CONFIG_FILE
    if not config_path.is_file():
        return AvatarConfig()
    config = AvatarConfig.from_dict(_load_json(config_path), config_path)
    if config.file is not None and config.file != path.name:
        return AvatarConfig()  # that config describes another file of the folder
    return config


def _read_frames(path: Path, name: str, data: bytes) -> list[np.ndarray]:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _read_video(path, name)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise AvatarError(f"avatar {name!r}: OpenCV cannot decode {str(path)!r} as an image; use a PNG or "
                          f"JPEG image, or a video ({', '.join(VIDEO_SUFFIXES)})")
    return [image]


def _read_video(path: Path, name: str) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while capture.isOpened():
            ok, frame = capture.read()
            if not ok:
                break
            if len(frames) == MAX_VIDEO_FRAMES:
                raise AvatarError(f"avatar {name!r}: {str(path)!r} has more than {MAX_VIDEO_FRAMES} frames; "
                                  f"an avatar loop is held in memory, so cut it to a short clip")
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise AvatarError(f"avatar {name!r}: OpenCV cannot read any frame of {str(path)!r}; use an MP4 "
                          f"(H.264) or another format OpenCV's FFmpeg backend decodes, or a still image")
    return frames


def _face_boxes(frames: Sequence[np.ndarray], config: AvatarConfig, name: str) -> np.ndarray:
    """(N, 4) int64 boxes (x1, y1, x2, y2): the fixed box of avatar.json, or detected, padded, smoothed."""
    height, width = frames[0].shape[:2]
    if config.box is not None:
        x1, y1, x2, y2 = config.box
        if x2 > width or y2 > height:
            raise AvatarError(f"avatar {name!r}: box {list(config.box)} of {CONFIG_FILE} reaches outside the "
                              f"{width}x{height} frame")
        return np.tile(np.array(config.box, dtype=np.int64), (len(frames), 1))
    detector = HaarFaceDetector()
    boxes = []
    for i, frame in enumerate(frames):
        found = detector.detect(frame)
        if found is None:
            raise NoFaceError(f"avatar {name!r}: no face found in frame {i}; use a frontal, well-lit face, "
                              f"or give its box in {CONFIG_FILE} beside the file: "
                              f"{{\"box\": [x1, y1, x2, y2]}}")
        boxes.append(pad_box(found, config.pads, height, width))
    return smooth_boxes(np.array(boxes, dtype=np.int64))


def _cache_key(data: bytes, config: AvatarConfig) -> str:
    digest = hashlib.sha256(data)
    # Everything that changes the result is part of the key, so a stale entry is never read.
    recipe = (CACHE_VERSION, config.box, config.pads, HAAR_CASCADE, HAAR_SCALE_FACTOR, HAAR_MIN_NEIGHBORS,
              HAAR_MAX_SIDE, SMOOTHING_WINDOW, CROP_SIZE, cv2.__version__)
    digest.update(repr(recipe).encode())
    return digest.hexdigest()


def _load_cache(cache_file: Path, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as entry:
            boxes, crops = entry["boxes"], entry["crops"]
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring unreadable avatar cache %s (%s); recomputing", cache_file, e)
        return None
    n = len(frames)
    if boxes.shape != (n, 4) or crops.shape != (n, CROP_SIZE, CROP_SIZE, 3) or crops.dtype != np.uint8:
        log.warning("ignoring avatar cache %s: it does not fit the file's %d frame(s); recomputing",
                    cache_file, n)
        return None
    return boxes.astype(np.int64), crops


def _store_cache(cache_file: Path, boxes: np.ndarray, crops: np.ndarray) -> None:
    tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, boxes=boxes, crops=crops)
        os.replace(tmp, cache_file)  # atomic: a concurrent reader sees the old state or the whole entry
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log.warning("could not write the avatar cache %s (%s); the next start detects faces again",
                    cache_file, e)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
