"""Wav2Lip face input and paste-back against the conformance fixture (README sections 6, 8.6-8.7)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from lipstream.models.wav2lip import face_input, output_to_patch, paste_mouth
from skimage import data as skdata

from tests.wav2lip_fill import CONFORMANCE


@dataclass(frozen=True)
class Box:
    x1: int
    y1: int
    x2: int
    y2: int


@pytest.fixture(scope="module")
def model_io() -> dict[str, np.ndarray]:
    with np.load(CONFORMANCE / "model_io.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    return cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def box() -> Box:
    y1, y2, x1, x2 = json.loads((CONFORMANCE / "face_box.json").read_text())["crop_slice_y1y2x1x2"]
    return Box(x1, y1, x2, y2)


def test_crop_and_face_input_match_the_fixture_exactly(astronaut_bgr, box, model_io) -> None:
    crop = cv2.resize(astronaut_bgr[box.y1: box.y2, box.x1: box.x2], (96, 96))
    assert np.array_equal(crop, cv2.imread(str(CONFORMANCE / "face_crop.png")))
    face = face_input(crop)
    assert face.dtype == np.float32 and face.shape == (6, 96, 96)
    assert np.array_equal(face, model_io["face"][0])
    assert not face[:3, 48:].any()  # the lower half of the first three channels is masked


def test_face_input_refuses_wrong_crops() -> None:
    with pytest.raises(ValueError, match="96, 96, 3"):
        face_input(np.zeros((96, 96, 3), np.float32))
    with pytest.raises(ValueError, match="96, 96, 3"):
        face_input(np.zeros((105, 95, 3), np.uint8))


def test_official_paste_reproduces_patch_exactly(astronaut_bgr, box, model_io) -> None:
    assert model_io["paste_box_y1y2x1x2"].tolist() == [box.y1, box.y2, box.x1, box.x2]
    patch = output_to_patch(model_io["out"][0], box.x2 - box.x1, box.y2 - box.y1)
    assert np.array_equal(patch, model_io["paste_patch_0"])
    frame = paste_mouth(astronaut_bgr, box, model_io["out"][0], feather=False)
    assert np.array_equal(frame[box.y1: box.y2, box.x1: box.x2], model_io["paste_patch_0"])
    outside = np.ones(frame.shape[:2], bool)
    outside[box.y1: box.y2, box.x1: box.x2] = False
    assert np.array_equal(frame[outside], astronaut_bgr[outside])
    assert not np.shares_memory(frame, astronaut_bgr)


def test_feathered_paste_blends_the_seam(astronaut_bgr, box, model_io) -> None:
    hard = paste_mouth(astronaut_bgr, box, model_io["out"][0], feather=False)
    soft = paste_mouth(astronaut_bgr, box, model_io["out"][0], feather=True)
    region = (slice(box.y1, box.y2), slice(box.x1, box.x2))
    # The box edge keeps the frame; the middle is the model's patch.
    assert np.array_equal(soft[region][0], astronaut_bgr[region][0])
    assert np.array_equal(soft[region][:, 0], astronaut_bgr[region][:, 0])
    cy, cx = (box.y2 - box.y1) // 2, (box.x2 - box.x1) // 2
    middle = (slice(cy - 5, cy + 5), slice(cx - 5, cx + 5))
    assert np.array_equal(soft[region][middle], hard[region][middle])
    # The step across the box border is smaller than the hard paste's.
    def seam_step(frame: np.ndarray) -> float:
        inside = frame[box.y1: box.y2, box.x1].astype(float)
        outside = frame[box.y1: box.y2, box.x1 - 1].astype(float)
        return float(np.abs(inside - outside).mean())
    assert seam_step(soft) < seam_step(hard)


def test_paste_refuses_boxes_outside_the_frame(astronaut_bgr, model_io) -> None:
    with pytest.raises(ValueError, match="not inside"):
        paste_mouth(astronaut_bgr, Box(400, 400, 600, 520), model_io["out"][0])
