"""A 2D mouth on the avatar: the mouth region is warped (jaw down, lips spread or rounded) and the gap
between the lips is painted as a mouth interior, blended in with a feathered mask.

Everything that does not depend on the shape (grids, profiles, masks) is computed once per avatar
frame; a frame then costs a few small array operations and one ``cv2.remap`` on the mouth region only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .track import MouthShape


class BoxLike(Protocol):
    x1: int
    y1: int
    x2: int
    y2: int


class AvatarLike(Protocol):
    """What ``lipstream.models.avatar.Avatar`` provides."""

    @property
    def mouth(self) -> dict[str, float]: ...
    def source_index(self, i: int) -> int: ...
    def frame(self, i: int) -> np.ndarray: ...
    def box(self, i: int) -> BoxLike: ...


@dataclass(frozen=True)
class MouthGeometry:
    """Where the mouth sits in the Wav2Lip face box (padded box, fractions of its width / height).

    The defaults were tuned on the built-in astronaut (a frontal, smiling face boxed by the Haar cascade
    with the official padding); other faces can set them in their ``avatar.json`` (``mouth``).
    """

    center_x: float = 0.49
    """Mouth centre, from the box's left edge."""
    lips_y: float = 0.79
    """Where the lips part at the centre (the lower edge of the upper lip or teeth), from the box's top."""
    half_width: float = 0.22
    """Half the mouth's width, corner to centre."""
    smile: float = 0.25
    """How far the parting line rises towards the corners, in half-widths (0: a straight line)."""
    max_open: float = 0.17
    """Jaw drop at ``jaw_open`` 1, as a fraction of the box width."""


SHADOW_BGR = np.array([22.0, 20.0, 44.0], dtype=np.float32)
"""Mouth interior at the top of the opening: the throat in the upper teeth's shadow."""
TONGUE_BGR = np.array([58.0, 58.0, 118.0], dtype=np.float32)
"""Mouth interior at the bottom of the opening: the tongue, dark red."""
TEETH_BGR = np.array([186.0, 194.0, 206.0], dtype=np.float32)
"""A hint of the lower teeth at the bottom of the opening."""


def _smoothstep(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _channels(weights: np.ndarray) -> np.ndarray:
    """(h, w) float32 weights as (h, w, 3), one copy per channel: multiplying a picture by a trailing axis
    of 1 broadcast over its 3 channels is several times slower than by an array of its own shape (and
    OpenCV's gray to BGR copies them faster than np.repeat)."""
    return cv2.cvtColor(weights, cv2.COLOR_GRAY2BGR)


def _clip01(value: float) -> float:
    """``float(np.clip(value, 0.0, 1.0))`` for one number, without numpy's overhead."""
    return float(min(max(value, 0.0), 1.0))


class MouthRenderer:
    """Draws mouth shapes on one avatar frame. Cheap: work is confined to the mouth region.

    ``render(MouthShape.CLOSED)`` returns an exact copy of the frame.
    """

    def __init__(self, frame_bgr: np.ndarray, box: BoxLike | tuple[int, int, int, int],
                 geometry: MouthGeometry | None = None) -> None:
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(f"frame must be BGR uint8 (H, W, 3), got {frame_bgr.dtype} {frame_bgr.shape}")
        corners = box if isinstance(box, tuple) else (box.x1, box.y1, box.x2, box.y2)
        x1, y1, x2, y2 = (int(v) for v in corners)
        height, width = frame_bgr.shape[:2]
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise ValueError(f"face box {(x1, y1, x2, y2)} is not inside the {width}x{height} frame")
        g = geometry or MouthGeometry()
        self.frame = frame_bgr
        box_w, box_h = x2 - x1, y2 - y1
        cx = x1 + g.center_x * box_w
        lips_y = y1 + g.lips_y * box_h
        a = max(4.0, g.half_width * box_w)  # mouth half-width in pixels
        self.max_open_px = g.max_open * box_w
        self._teeth_px = 0.04 * box_w + 1.0  # tallest the lower-teeth band gets

        # The region that moves: the mouth, the chin below it, and margins where the warp fades out.
        rx1, rx2 = int(max(0, np.floor(cx - 2.3 * a))), int(min(width, np.ceil(cx + 2.3 * a)))
        ry1, ry2 = int(max(0, np.floor(lips_y - 1.0 * a))), int(min(height, np.ceil(lips_y + 3.4 * a)))
        self.roi = (rx1, ry1, rx2, ry2)
        xs = np.arange(rx1, rx2, dtype=np.float32)
        ys = np.arange(ry1, ry2, dtype=np.float32)
        self._grid_x, self._grid_y = np.meshgrid(xs, ys)  # (h, w) absolute pixel coordinates
        self._cx, self._lips_y, self._a = float(cx), float(lips_y), float(a)
        self._u = (xs - cx) / a  # horizontal position in mouth half-widths, per column

        # The jaw drop: the lower lip (about 0.45 a thick) bends with the lens of the opening, everything
        # below moves with the broad jaw, and the drop fades out below the chin so the neck stays put.
        # `_lip_rows` / `_fade_start` / `_fade_rows` place those bands.
        self._lip_rows = 0.45 * a
        self._fade_start, self._fade_rows = 1.6 * a, 1.7 * a
        # The parting line, per column: rises by `smile` half-widths towards the corners, flat beyond them.
        self._parting = lips_y - g.smile * a * np.minimum(self._u**2, 1.0)
        self._below = (self._grid_y - self._parting[None, :]).astype(np.float32)  # px under the parting line
        self._parting_slope = np.sqrt(1.0 + np.gradient(self._parting) ** 2)[None, :].astype(np.float32)
        self._is_below = self._below >= 0.0
        # The broad jaw profile (per column): the whole chin, fading before the region's sides.
        self._jaw_profile = (1.0 - _smoothstep((np.abs(self._u) - 0.8) / 1.3))[None, :].astype(np.float32)
        # Rows the opening can reach: from the highest point of the parting line to the widest drop.
        band_top = int(np.floor(self._parting.min())) - 1 - ry1
        band_bottom = int(np.ceil(lips_y + self.max_open_px)) + 2 - ry1
        self._band = slice(max(0, band_top), max(0, min(ry2 - ry1, band_bottom)))
        # Per band pixel: how far inside the parting line (see render_roi), and the interior's colours
        # (see _channels).
        self._inside_parting = np.clip(self._below[self._band] / self._parting_slope + 0.5, 0.0, 1.0)
        band_shape = (*self._inside_parting.shape, 3)
        self._shadow = np.ascontiguousarray(np.broadcast_to(SHADOW_BGR, band_shape))
        self._tongue_shadow = np.ascontiguousarray(np.broadcast_to(TONGUE_BGR - SHADOW_BGR, band_shape))
        self._teeth = np.ascontiguousarray(np.broadcast_to(TEETH_BGR, band_shape))
        # Horizontal spreading / rounding acts around the lips and fades out smoothly.
        du = self._u[None, :]
        dv = ((ys - lips_y) / a)[:, None]
        self._spread = (np.exp(-(du / 1.3) ** 2 - (dv / 0.7) ** 2) * (self._grid_x - cx)).astype(np.float32)
        # Feathered blend mask: 1 in the middle, 0 at the region's border, so no seam can show there.
        fy = np.minimum(_smoothstep((ys - ry1) / (0.35 * a)), _smoothstep((ry2 - 1 - ys) / (0.6 * a)))
        fx = np.minimum(_smoothstep((xs - rx1) / (0.5 * a)), _smoothstep((rx2 - 1 - xs) / (0.5 * a)))
        self._feather = (fy[:, None] * fx[None, :]).astype(np.float32)
        self._unfeather = 1.0 - self._feather
        self._roi = np.ascontiguousarray(frame_bgr[ry1:ry2, rx1:rx2])

    def render(self, shape: MouthShape) -> np.ndarray:
        """A new BGR frame with the mouth in ``shape``."""
        out = self.frame.copy()
        if shape == MouthShape.CLOSED:
            return out
        rx1, ry1, rx2, ry2 = self.roi
        out[ry1:ry2, rx1:rx2] = self.render_roi(shape)
        return out

    def render_roi(self, shape: MouthShape) -> np.ndarray:
        """Only the mouth region (``self.roi``) in ``shape``, uint8: for callers that paste it themselves."""
        jaw = _clip01(shape.jaw_open) * self.max_open_px
        rounding = _clip01(shape.rounding)
        # >0 spreads the lips, <0 draws them together (rounding narrows the mouth too).
        spread = 0.45 * (_clip01(shape.lip_width) - 0.5) - 0.22 * rounding
        # The opening between the lips is a lens from corner to corner; rounding makes it narrower, rounder.
        half = (1.0 + 0.8 * spread) * (1.0 - 0.3 * rounding)
        power = 0.5 + 0.4 * rounding  # higher: fuller, rounder lens
        lens = (np.clip(1.0 - (self._u / half) ** 2, 0.0, 1.0) ** power).astype(np.float32)[None, :]
        gap = jaw * lens  # (1, w) height of the opening per column: where the lower lip's edge went
        # Below the opening, the drop is written in output rows `t` under the lower lip's new edge, so no
        # inversion is needed: at the edge it is the lens (`gap`), over the lower lip it bends to the broad
        # jaw, under the chin it fades out. The lip band grows with the drop (1.6 jaw) so that the source
        # row never runs backwards (d source / d t = 1 - d drop / d t stays above 0).
        t = np.maximum(self._below - gap, 0.0)
        lip = _smoothstep(t * (1.0 / (self._lip_rows + 1.6 * jaw)))
        fade = 1.0 - _smoothstep((t - self._fade_start) * (1.0 / self._fade_rows))
        drop = jaw * fade * (lens + lip * (self._jaw_profile - lens))
        map_y = np.where(self._is_below, self._grid_y - np.minimum(drop, self._below), self._grid_y)
        map_x = self._grid_x - spread * self._spread
        warped = cv2.remap(self.frame, map_x, map_y.astype(np.float32, copy=False),
                           interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        if jaw > 0.5 and len(self._shadow):  # (an empty band, at a frame's edge, has nothing to paint)
            # The opening: below the parting line and above the lower lip's new edge, anti-aliased by a
            # pixel; computed on the band of rows it can reach only.
            below = self._below[self._band]
            from_bottom = gap - below  # pixels above the lower lip's edge
            # Vertical distances divided by the edges' slopes are distances to the edges: one pixel of
            # anti-aliasing across them, also where they run steeply near the corners.
            bottom_slope = np.sqrt(1.0 + np.gradient(gap[0]) ** 2)[None, :]
            inside = self._inside_parting * np.clip(from_bottom / bottom_slope + 0.5, 0.0, 1.0)
            inside *= np.clip(gap, 0.0, 1.0)  # no sliver of interior where the lips stay together
            # Shadow under the upper teeth, the tongue's dark red towards the bottom, and a hint of the
            # lower teeth just above the lower lip.
            depth = np.clip(below / np.maximum(gap, 1e-3), 0.0, 1.0)
            interior = self._shadow + self._tongue_shadow * _channels(depth * depth)
            taper = np.clip((0.5 * half - np.abs(self._u)) / (0.15 * half), 0.0, 1.0)[None, :]
            teeth_height = np.minimum(0.2 * gap, self._teeth_px) * taper
            teeth = np.clip(teeth_height - from_bottom, 0.0, 1.0)
            interior += (self._teeth - interior) * _channels(0.55 * teeth)
            band = warped[self._band].astype(np.float32)
            band += (interior - band) * _channels(inside)
            warped[self._band] = np.clip(band + 0.5, 0.0, 255.0).astype(np.uint8)
        # The feathered blend with the untouched region, in OpenCV (uint8 in, uint8 out, rounded).
        return cv2.blendLinear(warped, self._roi, self._feather, self._unfeather)


class AvatarMouth:
    """Mouth renderers for every frame of an avatar, built on first use (a video avatar's frames differ).

    ``render(i, shape)`` draws session frame ``i`` (looping as ``Avatar.frame`` does) with ``shape``.
    The mouth's place comes from ``geometry``, else from the avatar's ``avatar.json`` (``mouth``), else
    the ``MouthGeometry`` defaults.
    """

    def __init__(self, avatar: AvatarLike, geometry: MouthGeometry | None = None) -> None:
        self.avatar = avatar
        self.geometry = geometry or MouthGeometry(**avatar.mouth)
        self._renderers: dict[int, MouthRenderer] = {}

    def renderer(self, i: int) -> MouthRenderer:
        """The renderer of session frame ``i``."""
        k = self.avatar.source_index(i)
        found = self._renderers.get(k)
        if found is None:  # two threads may both build it: harmless, the result is the same
            found = MouthRenderer(self.avatar.frame(i), self.avatar.box(i), self.geometry)
            self._renderers[k] = found
        return found

    def render(self, i: int, shape: MouthShape) -> np.ndarray:
        return self.renderer(i).render(shape)
