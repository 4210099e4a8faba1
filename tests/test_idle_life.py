"""Idle life with no weights (issue 19, point 4): the avatar blinks at natural intervals and breathes, on
idle frames and while speaking; the eyes come from OpenCV's shipped haarcascade_eye. EngineSettings
idle_life=False gives the avatar's frames as they are (for comparisons that need still frames)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import simplejpeg
from lipstream.models.avatar import load_avatar
from lipstream.models.avatar.life import (
    BLINK_CLOSURE,
    BLINK_INTERVAL_S,
    IdleLife,
    _ellipse_mask,
    find_eyes,
    life_for,
)
from lipstream.server.events import FrameEvent
from lipstream.server.lipsync.patches import PatchCoder
from lipstream.server.lipsync.stage import encode_jpeg
from lipstream.server.options import EngineSettings, SessionOptions
from lipstream.v1 import lipstream_pb2 as pb

from tests.servers import tiny_engine

FPS = 25.0
TEXT = "Hello there, welcome to the museum. This room holds paintings from the north. Enjoy them all. " * 3


def _default_face() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    avatar = load_avatar()
    box = avatar.box(0)
    return avatar.frame(0), (box.x1, box.y1, box.x2, box.y2)


def test_the_eye_cascade_finds_both_eyes_of_the_default_avatar() -> None:
    frame, face = _default_face()
    left, right = find_eyes(frame, face)
    for x1, y1, x2, y2 in (left, right):
        assert face[0] <= x1 < x2 <= face[2] and face[1] <= y1 < y2 <= (face[1] + face[3]) // 2 + 10
    assert left[2] <= right[0]  # two eyes side by side, left to right


def test_blinks_come_at_natural_intervals_and_breathing_moves_the_head() -> None:
    frame, face = _default_face()
    life = IdleLife(face, find_eyes(frame, face), FPS)
    keys = [life.key(i) for i in range(int(60 * FPS))]
    starts = [i for i, (_, stage) in enumerate(keys) if stage == 1]
    gaps = np.diff(starts) / FPS
    assert len(starts) >= 60 / BLINK_INTERVAL_S[1] and gaps.min() >= BLINK_INTERVAL_S[0] - 0.1
    assert gaps.max() <= BLINK_INTERVAL_S[1] + 0.1
    assert {stage for _, stage in keys} == set(range(len(BLINK_CLOSURE) + 1))
    breaths = {breath for breath, _ in keys}
    assert len(breaths) >= 2 and max(breaths) <= max(1, round((face[3] - face[1]) * 0.02))
    # Five seconds of idle frames are not all the same picture.
    pictures = {life.apply(frame, life.key(i)).tobytes() for i in range(int(5 * FPS))}
    assert len(pictures) >= 3


def test_idle_life_as_face_patches_stays_under_50_kbit_s() -> None:
    """Issue 20's idle target: a minute of the default avatar's idle frames (blinks, breathing) coded as the
    lip-sync stage codes them in FACE_PATCH mode, a repeat counted at its proto's size."""
    avatar = load_avatar()
    life = life_for(avatar, FPS)
    coder = PatchCoder(lambda picture: encode_jpeg(picture, 80))
    pictures: dict[tuple[int, int], np.ndarray] = {}
    frames = int(60 * FPS)
    sent = 0
    for index in range(frames):
        key = life.key(index)
        picture = pictures.setdefault(key, life.apply(avatar.frame(index), key))
        patch = coder.encode(index, picture, still=True)
        height, width = picture.shape[:2]
        message = pb.ConverseResponse(
            frame=pb.VideoFrame(
                jpeg=patch.jpeg, frame_index=index, pts=index / FPS, width=width, height=height,
                patch_x=patch.x, patch_y=patch.y, repeat_of=patch.repeat_of,
            )
        )
        if index:  # the first frame is the whole picture, sent once per session
            sent += message.ByteSize()
    assert len(pictures) >= 5  # it does move: breath offsets and blink stages
    assert sent * 8 * FPS / (frames - 1) <= 50_000


def test_a_blink_closes_the_eyes_and_leaves_the_rest() -> None:
    frame, _ = _default_face()
    life = life_for(load_avatar(), FPS)
    closed = life.apply(frame, (0, 3)).astype(np.int16)
    changed = np.abs(closed - frame).max(axis=2) > 8
    in_eyes = np.zeros(frame.shape[:2], bool)
    for x1, y1, x2, y2 in life.eyes:
        in_eyes[y1:y2, x1:x2] = True
        assert changed[y1:y2, x1:x2].sum() > 20
    assert not changed[~in_eyes].any()  # nothing outside the eyes changes


def test_the_cached_ellipse_masks_are_read_only_and_frames_repeat_exactly() -> None:
    # The masks are cached and shared by every session's frames: one written to would change them all.
    mask, inverse = _ellipse_mask(20, 30, 0.3)
    assert _ellipse_mask(20, 30, 0.3)[0] is mask
    assert mask.shape == inverse.shape == (20, 30, 3) and mask.dtype == inverse.dtype == np.float32
    assert mask[10, 15, 0] == 1.0 and mask[0, 0, 0] == 0.0 and np.array_equal(inverse, 1 - mask)
    for weights in (mask, inverse):
        with pytest.raises(ValueError, match="read-only"):
            weights[0, 0, 0] = 0.5
    frame, _ = _default_face()
    kept = frame.copy()
    life = life_for(load_avatar(), FPS)
    first = life.apply(frame, (2, 3))
    assert np.array_equal(life.apply(frame, (2, 3)), first) and np.array_equal(frame, kept)


def test_avatar_json_names_the_eyes_or_turns_blinks_off(tmp_path: Path) -> None:
    frame, face = _default_face()
    cv2.imwrite(str(tmp_path / "guide.png"), frame)
    eyes = [[190, 95, 214, 108], [236, 97, 260, 110]]
    (tmp_path / "avatar.json").write_text(json.dumps({"eyes": eyes}))
    avatar = load_avatar(tmp_path / "guide.png", cache_dir=tmp_path / "cache")
    assert life_for(avatar, FPS).eyes == [tuple(eye) for eye in eyes]
    (tmp_path / "avatar.json").write_text(json.dumps({"eyes": []}))
    life = life_for(load_avatar(tmp_path / "guide.png", cache_dir=tmp_path / "cache"), FPS)
    assert life.eyes == [] and {life.key(i)[1] for i in range(int(30 * FPS))} == {0}  # breathing only


def _eye_regions(settings: EngineSettings) -> list[tuple[bool, np.ndarray]]:
    """(speaking, the eyes' pixels) of every frame of a session."""
    engine = tiny_engine(settings)
    frame, face = _default_face()
    eyes = find_eyes(frame, face)
    top, bottom = min(e[1] for e in eyes), max(e[3] for e in eyes)
    left, right = min(e[0] for e in eyes), max(e[2] for e in eyes)

    async def run() -> list[FrameEvent]:
        session = await engine.open_session(SessionOptions(video=True, fps=FPS, noise_scale=0.0))
        await session.send_text(TEXT)
        await session.end_input()
        return [event async for event in session.events() if isinstance(event, FrameEvent)]

    try:
        frames = asyncio.run(run())
    finally:
        engine.close()
    decoded = [(f.speaking, simplejpeg.decode_jpeg(f.jpeg, "BGR")[top:bottom, left:right]) for f in frames]
    return decoded


def test_session_frames_blink_while_speaking_and_idle_life_can_be_turned_off() -> None:
    alive = _eye_regions(EngineSettings())
    assert len(alive) >= 5 * FPS
    reference = alive[0][1].astype(np.int16)
    blinking = [speaking for speaking, eyes in alive if np.abs(eyes - reference).mean() > 6]
    assert blinking and any(blinking)  # the eyes close at least once while the avatar speaks
    still = _eye_regions(EngineSettings(idle_life=False))
    reference = still[0][1].astype(np.int16)
    assert max(float(np.abs(eyes - reference).mean()) for _, eyes in still) < 2  # JPEG noise only
