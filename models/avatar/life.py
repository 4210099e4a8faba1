"""Idle life with no weights: the avatar blinks at natural intervals and breathes, idle or speaking.

- Blinks: every 2.5 to 6 s (a fixed pseudo-random sequence per avatar, so a session's frames are the same
  on every run), each 5 frames at 25 fps (about 200 ms: closing, closed, opening). The eyelid is the skin
  above each eye drawn down over it, inside an ellipse; the eyes are found in the face box of the first
  frame by OpenCV's shipped ``haarcascade_eye`` (the two largest in its upper half). No eyes found: no
  blinks, breathing only.
- Breathing: the head rises and sinks by a few pixels (2 % of the face's height at most) over a 5.5 s
  cycle (11 breaths a minute, an adult at rest), a feathered ellipse hugging the face box moved whole, so
  the rest of the picture stays as it is.

A frame's state is a small key (breath offset in pixels, blink stage): equal keys give equal pictures, so
the caller can keep one encoded picture per avatar frame and key.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

EYE_CASCADE = "haarcascade_eye.xml"
BLINK_INTERVAL_S = (2.5, 6.0)
BLINK_CLOSURE = (0.5, 1.0, 1.0, 0.6, 0.25)  # per frame at 25 fps
BREATH_PERIOD_S = 5.5
BREATH_FRACTION = 0.02  # of the face box's height: the most the head moves
# The moved ellipse reaches this share of the face box beyond it: enough for hair and jaw to move along,
# and each breath step's FACE_PATCH is the ellipse's box, so a wider one costs idle bytes.
BREATH_MARGIN = 1 / 8

Box = tuple[int, int, int, int]
LifeKey = tuple[int, int]  # (breath offset in pixels, blink stage: 0 open, 1..len(BLINK_CLOSURE))


def find_eyes(frame_bgr: np.ndarray, face: Box) -> list[Box]:
    """The two largest eyes OpenCV's eye cascade finds in the upper half of the face box (frame
    coordinates, left to right); [] when it finds fewer than two."""
    import cv2

    x1, y1, x2, y2 = face
    top = frame_bgr[y1 : y1 + (y2 - y1) * 55 // 100, x1:x2]
    if top.size == 0:
        return []
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + EYE_CASCADE)
    if cascade.empty():
        return []
    gray = cv2.cvtColor(top, cv2.COLOR_BGR2GRAY)
    min_side = max(8, (x2 - x1) // 10)
    found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    eyes = sorted((tuple(int(v) for v in e) for e in found), key=lambda e: e[2] * e[3], reverse=True)[:2]
    if len(eyes) < 2:
        return []
    return sorted((x1 + x, y1 + y, x1 + x + w, y1 + y + h) for x, y, w, h in eyes)


class IdleLife:
    """Blinks and breathing for one avatar; shared by its sessions (it keeps no per-session state)."""

    def __init__(self, face: Box, eyes: Sequence[Box], fps: float = 25.0, seed: int = 19) -> None:
        self.face = face
        self.eyes = list(eyes)
        self.fps = fps
        self._amplitude = max(1, round((face[3] - face[1]) * BREATH_FRACTION))
        self._rng = np.random.default_rng(seed)
        self._blinks: list[int] = []  # frame indices where a blink begins, made as far as asked
        self._frames_per_stage = max(1, round(fps / 25.0))

    def key(self, frame_index: int) -> LifeKey:
        t = frame_index / self.fps
        breath = round(self._amplitude * (1 - math.cos(2 * math.pi * t / BREATH_PERIOD_S)) / 2)
        return breath, self._blink_stage(frame_index) if self.eyes else 0

    def apply(self, picture: np.ndarray, key: LifeKey) -> np.ndarray:
        """The picture with this state drawn (a new array); the picture itself when the key is (0, 0)."""
        breath, stage = key
        if breath == 0 and stage == 0:
            return picture
        out = picture.copy()
        if stage:
            for eye in self.eyes:
                _close_eye(out, eye, BLINK_CLOSURE[stage - 1])
        if breath:
            _raise_head(out, self.face, breath)
        return out

    def _blink_stage(self, frame_index: int) -> int:
        low, high = BLINK_INTERVAL_S
        while not self._blinks or self._blinks[-1] <= frame_index:
            last = self._blinks[-1] if self._blinks else 0
            self._blinks.append(last + int(self.fps * float(self._rng.uniform(low, high))))
        began = bisect.bisect_right(self._blinks, frame_index) - 1
        if began < 0:
            return 0
        stage = (frame_index - self._blinks[began]) // self._frames_per_stage
        return stage + 1 if stage < len(BLINK_CLOSURE) else 0


# A face and its eyes per avatar: 8 holds a few avatars' masks and bounds the memory they take.
@functools.lru_cache(maxsize=8)
def _ellipse_mask(height: int, width: int, feather: float) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 3) float32 weights, 1 inside an ellipse filling the box, falling to 0 over `feather` of it,
    and 1 minus them. Cached (they depend on the box's size alone), so read-only. Each channel holds its
    own copy: multiplying by a trailing axis of 1 broadcast over 3 channels is several times slower."""
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1
    r = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    mask = np.repeat(np.clip((1 - r) / feather, 0, 1)[:, :, None], 3, axis=2)
    inverse = 1 - mask
    mask.flags.writeable = inverse.flags.writeable = False
    return mask, inverse


def _close_eye(out: np.ndarray, eye: Box, closure: float) -> None:
    """Draws the eyelid down over `closure` of the eye: the skin row above the eye, stretched down."""
    x1, y1, x2, y2 = eye
    h, w = y2 - y1, x2 - x1
    # Haar eye boxes hold the brow too: the eye itself is about the middle of the box.
    top, bottom = y1 + h * 30 // 100, y1 + h * 75 // 100
    lid = int(top + (bottom - top) * closure)
    if lid <= top or top < 1:
        return
    import cv2

    # The skin above the eye, smoothed along the row (one row repeated would show its pores as stripes).
    skin = out[max(0, top - 3) : top, x1:x2].astype(np.float32).mean(axis=0, keepdims=True)
    skin = cv2.blur(skin, (max(3, w // 4), 1))
    region = out[top:lid, x1:x2].astype(np.float32)
    mask, inverse = _ellipse_mask(bottom - top, w, 0.5)
    mask, inverse = mask[: lid - top], inverse[: lid - top]
    # An eyelid is a little darker than the brow skin, more so towards its edge.
    shade = np.linspace(0.95, 0.8, lid - top, dtype=np.float32)[:, None, None]
    shaded = np.repeat(skin, lid - top, axis=0) * shade
    if closure >= 0.9:  # the lashes: a dark line where the lids meet
        shaded[-2:] *= 0.5
    out[top:lid, x1:x2] = (region * inverse + shaded * mask).astype(np.uint8)


def _raise_head(out: np.ndarray, face: Box, pixels: int) -> None:
    """Moves a feathered ellipse around the face box up by `pixels`."""
    x1, y1, x2, y2 = face
    height, width = out.shape[:2]
    margin_x, margin_y = int((x2 - x1) * BREATH_MARGIN), int((y2 - y1) * BREATH_MARGIN)
    bx1, by1 = max(0, x1 - margin_x), max(pixels, y1 - margin_y)
    bx2, by2 = min(width, x2 + margin_x), min(height, y2 + margin_y)
    if bx2 <= bx1 or by2 <= by1:
        return
    moved = out[by1:by2, bx1:bx2].astype(np.float32)
    target = out[by1 - pixels : by2 - pixels, bx1:bx2].astype(np.float32)
    mask, inverse = _ellipse_mask(by2 - by1, bx2 - bx1, 0.3)
    # target * inverse + moved * mask, in place: fewer large temporaries to allocate (and fault in).
    target *= inverse
    moved *= mask
    target += moved
    out[by1 - pixels : by2 - pixels, bx1:bx2] = target.astype(np.uint8)


def life_for(avatar: Any, fps: float) -> IdleLife:
    """A session's IdleLife for an avatar (lipstream.models.avatar.Avatar): its eyes from avatar.json, or
    found in its first frame once and kept on it."""
    box = avatar.box(0)
    face = (int(box.x1), int(box.y1), int(box.x2), int(box.y2))
    eyes = getattr(avatar, "eyes", None)
    if eyes is None:
        eyes = find_eyes(avatar.frame(0), face)
        with contextlib.suppress(AttributeError):  # an avatar of another kind: looked for each session
            avatar.eyes = eyes
    return IdleLife(face, eyes, fps)
