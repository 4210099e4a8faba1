"""Viseme renderer: frames per second on one core, and a contact sheet of a rendered sentence.

``python -m bench.bench_viseme`` (or ``make bench``) prints a markdown table and writes
``out/viseme_contact_sheet.png`` (every second frame of the sentence, the viseme under each).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from lipstream.models.avatar import load_avatar
from lipstream.models.viseme import (
    VISEMES,
    MouthRenderer,
    MouthShape,
    MouthTrack,
    loudness,
    visemes_from_phonemes,
)
from lipstream.models.viseme.track import LOUDNESS_WINDOW_S

SENTENCE = "Welcome to the gallery; the tour starts at ten. How are you today?"
FPS = 25.0
OUT_DIR = Path(__file__).resolve().parent.parent / "out"
TARGET_FPS = 200.0
"""The issue's bar: hundreds of frames per second on one core."""


@dataclass(frozen=True)
class RenderedFrame:
    index: int
    viseme: str
    phoneme: str
    loudness: float
    shape: MouthShape
    image: np.ndarray


def render_sentence(text: str = SENTENCE, fps: float = FPS) -> tuple[list[RenderedFrame], MouthRenderer]:
    """Speak ``text`` with the default voice and render every frame of it on the default avatar."""
    from lipstream.models.vits import DEFAULT_VOICE, load_voice

    voice = load_voice(DEFAULT_VOICE)
    speech = voice.synthesize(text, noise_scale=0.0, noise_scale_w=0.0)  # deterministic sheet
    avatar = load_avatar()
    renderer = MouthRenderer(avatar.frame(0), avatar.box(0))
    track = MouthTrack(visemes_from_phonemes(speech.phonemes), speech.sample_rate)
    half = int(LOUDNESS_WINDOW_S * speech.sample_rate / 2)
    frames = []
    for i in range(int(len(speech.audio) * fps / speech.sample_rate)):
        sample = int(round((i + 0.5) * speech.sample_rate / fps))  # the middle of the frame's interval
        level = loudness(speech.audio[max(0, sample - half): sample + half])
        shape = track.shape_at(sample, level)
        span = next((v for v in track.visemes if v.start_sample <= sample < v.end_sample), None)
        frames.append(RenderedFrame(i, VISEMES[track.viseme_at(sample)], span.phoneme if span else "", level,
                                    shape, renderer.render(shape)))
    return frames, renderer


def contact_sheet(frames: list[RenderedFrame], renderer: MouthRenderer, columns: int = 10,
                  scale: float = 2.0) -> np.ndarray:
    """A grid of the mouth regions with "frame viseme phoneme" and the jaw opening / loudness under each."""
    rx1, ry1, rx2, ry2 = renderer.roi
    h, w = renderer.frame.shape[:2]
    margin = (rx2 - rx1) // 6
    x1, x2, y1, y2 = max(0, rx1 - margin), min(w, rx2 + margin), max(0, ry1 - 2 * margin), min(h, ry2)
    tile_w, tile_h = int((x2 - x1) * scale), int((y2 - y1) * scale)
    label_h = 34
    rows = (len(frames) + columns - 1) // columns
    sheet = np.full((rows * (tile_h + label_h), columns * tile_w, 3), 255, np.uint8)
    labels = []
    for k, f in enumerate(frames):
        r, c = divmod(k, columns)
        tile = cv2.resize(f.image[y1:y2, x1:x2], (tile_w, tile_h), interpolation=cv2.INTER_CUBIC)
        top, left = r * (tile_h + label_h), c * tile_w
        sheet[top:top + tile_h, left:left + tile_w] = tile
        labels.append(((left + 4, top + tile_h + 1), f"{f.index} {f.viseme} /{f.phoneme}/",
                       f"jaw {f.shape.jaw_open:.2f}  loud {f.loudness:.2f}"))
    return _draw_labels(sheet, labels)


def _draw_labels(sheet: np.ndarray, labels: list[tuple[tuple[int, int], str, str]]) -> np.ndarray:
    """Labels in a font with IPA glyphs when Pillow and DejaVu Sans are there; else ASCII with U+ codes."""
    font_path = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    try:
        from PIL import Image, ImageDraw, ImageFont

        font = ImageFont.truetype(str(font_path), 13)
        small = ImageFont.truetype(str(font_path), 11)
    except (ImportError, OSError):
        for (x, y), line1, line2 in labels:
            ascii1 = "".join(c if c.isascii() else f"U+{ord(c):04X}" for c in line1)
            font = cv2.FONT_HERSHEY_SIMPLEX
            cv2.putText(sheet, ascii1, (x, y + 13), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
            cv2.putText(sheet, line2, (x, y + 27), font, 0.36, (90, 90, 90), 1, cv2.LINE_AA)
        return sheet
    image = Image.fromarray(cv2.cvtColor(sheet, cv2.COLOR_BGR2RGB))
    draw = ImageDraw.Draw(image)
    for (x, y), line1, line2 in labels:
        draw.text((x, y), line1, fill=(0, 0, 0), font=font)
        draw.text((x, y + 17), line2, fill=(90, 90, 90), font=small)
    return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)


def _frames_per_second(fn, items: list, min_seconds: float = 1.0) -> float:  # type: ignore[no-untyped-def]
    count, start = 0, time.perf_counter()
    while True:
        for item in items:
            fn(item)
        count += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return count / elapsed


def main() -> None:
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    frames, renderer = render_sentence()
    OUT_DIR.mkdir(exist_ok=True)
    sheet_path = OUT_DIR / "viseme_contact_sheet.png"
    cv2.imwrite(str(sheet_path), contact_sheet(frames[::2], renderer))

    shapes = [f.shape for f in frames]
    open_shapes = [s for s in shapes if s != MouthShape.CLOSED]
    fps_all = _frames_per_second(renderer.render, shapes)
    fps_open = _frames_per_second(renderer.render, open_shapes)
    fps_roi = _frames_per_second(renderer.render_roi, open_shapes)
    h, w = renderer.frame.shape[:2]
    print(f"### Viseme mouth renderer, one core ({w}x{h} astronaut avatar, {len(frames)} frames at "
          f"{FPS:g} fps, {len(open_shapes)} with the mouth open)\n")
    print("| what | frames per second | target |")
    print("|---|---:|---:|")
    print(f"| render(), the sentence's frames (full frame copy + mouth) | {fps_all:.0f} | {TARGET_FPS:.0f} |")
    print(f"| render(), open-mouth frames only | {fps_open:.0f} | {TARGET_FPS:.0f} |")
    print(f"| render_roi(), open-mouth frames only (mouth region only) | {fps_roi:.0f} | {TARGET_FPS:.0f} |")
    print(f"\ncontact sheet: {sheet_path}")


if __name__ == "__main__":
    main()
