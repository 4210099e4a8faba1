"""Avatars: the conformance face box and crop, the cache, looping videos and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from lipstream.models import avatar as avatar_pkg
from lipstream.models.avatar import (
    DEFAULT_AVATAR,
    AvatarError,
    FaceBox,
    HaarFaceDetector,
    builtin_avatars,
    load_avatar,
    pad_box,
    smooth_boxes,
)
from lipstream.models.avatar import avatar as avatar_module

CONFORMANCE = Path(__file__).parent / "data" / "conformance" / "wav2lip"


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    frame = cv2.imread(str(avatar_module.ASSETS_DIR / "astronaut.png"))
    assert frame is not None
    return frame


class _DetectionForbidden:
    """Stands in for the detector when a test proves that detection does not run."""

    def __init__(self) -> None:
        raise AssertionError("face detection ran although the cache holds this avatar")


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    height, width = frames[0].shape[:2]
    # FFV1 is lossless, so the decoded frames are exactly the ones written.
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def _shifted(frame: np.ndarray, dx: int) -> np.ndarray:
    height, width = frame.shape[:2]
    shift = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(frame, shift, (width, height), borderMode=cv2.BORDER_REPLICATE)


def test_default_avatar_is_the_astronaut_and_matches_the_conformance_box(tmp_path: Path) -> None:
    expected = json.loads((CONFORMANCE / "face_box.json").read_text())
    assert DEFAULT_AVATAR in builtin_avatars()
    avatar = load_avatar(cache_dir=tmp_path)
    assert avatar.name == "astronaut"
    assert (avatar.height, avatar.width) == tuple(expected["frame_hw"])
    assert avatar.num_frames == 1
    assert HaarFaceDetector().detect(avatar.frame(0)) == tuple(expected["detected_x1y1x2y2"])
    box = avatar.box(0)
    assert (box.x1, box.y1, box.x2, box.y2) == tuple(expected["padded_x1y1x2y2"])
    y1, y2, x1, x2 = expected["crop_slice_y1y2x1x2"]
    assert (box.y1, box.y2, box.x1, box.x2) == (y1, y2, x1, x2)
    assert (box.height, box.width) == tuple(expected["crop_hw"])


def test_face_crop_equals_the_conformance_crop_exactly(tmp_path: Path) -> None:
    reference = cv2.imread(str(CONFORMANCE / "face_crop.png"))
    avatar = load_avatar(DEFAULT_AVATAR, cache_dir=tmp_path)
    crop = avatar.face_crop(0)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop, reference)
    # Frames loop: any session index of a still image is the same frame, and it is read-only.
    assert avatar.frame(12345) is avatar.frame(0)
    assert not avatar.frame(0).flags.writeable


def test_asset_is_the_scikit_image_astronaut_in_bgr(astronaut_bgr: np.ndarray) -> None:
    import skimage.data as skimage_data  # the test extra installs scikit-image
    assert np.array_equal(astronaut_bgr, cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    assert (avatar_module.ASSETS_DIR / "PROVENANCE.md").is_file()


def test_cache_is_written_and_reused_without_detection(tmp_path: Path, astronaut_bgr: np.ndarray,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "portrait.png"
    cv2.imwrite(str(image), astronaut_bgr)
    cache = tmp_path / "cache"
    first = load_avatar(image, cache_dir=cache)
    entries = list(cache.glob("portrait-*.npz"))
    assert len(entries) == 1

    monkeypatch.setattr(avatar_module, "HaarFaceDetector", _DetectionForbidden)
    second = load_avatar(str(image), cache_dir=cache)
    assert second.box(0) == first.box(0)
    assert np.array_equal(second.face_crop(0), first.face_crop(0))

    # New content is a new key: the cache is not reused, so detection runs (and here fails loudly).
    cv2.imwrite(str(image), _shifted(astronaut_bgr, 4))
    with pytest.raises(AssertionError, match="face detection ran"):
        load_avatar(image, cache_dir=cache)


def test_corrupt_cache_entry_is_recomputed(tmp_path: Path) -> None:
    first = load_avatar(cache_dir=tmp_path)
    (entry,) = tmp_path.glob("astronaut-*.npz")
    entry.write_bytes(b"not an npz")
    again = load_avatar(cache_dir=tmp_path)
    assert again.box(0) == first.box(0)
    assert np.array_equal(again.face_crop(0), first.face_crop(0))


def test_video_avatar_loops_forward_then_backward(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    sources = [_shifted(astronaut_bgr, 2 * k) for k in range(5)]  # 2 px: no false positive here
    video = tmp_path / "wave.avi"
    _write_video(video, sources)
    avatar = load_avatar(video, cache_dir=tmp_path / "cache")
    assert avatar.num_source_frames == 5
    assert avatar.num_frames == 8  # 0 1 2 3 4 3 2 1, then again from 0

    expected_order = [0, 1, 2, 3, 4, 3, 2, 1, 0, 1]
    for i, k in enumerate(expected_order):
        assert np.array_equal(avatar.frame(i), sources[k]), f"session frame {i} should show source frame {k}"
        assert avatar.box(i) == avatar.box(k)
        assert np.array_equal(avatar.face_crop(i), avatar.face_crop(k))

    # The boxes are the official pad-then-smooth of the per-frame detections, and they follow the shift.
    detector = HaarFaceDetector()
    detected = [detector.detect(f) for f in sources]
    assert detected[0] is not None and detected[4] is not None and detected[0][0] < detected[4][0]
    padded = [pad_box(d, (0, 10, 0, 0), 512, 512) for d in detected]  # type: ignore[arg-type]
    smoothed = smooth_boxes(np.array(padded))
    assert [avatar.box(k) for k in range(5)] == [FaceBox(*map(int, b)) for b in smoothed]


def test_smoothing_follows_the_official_in_place_integer_window() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [3, 0, 13, 10],
                      [4, 0, 14, 10], [5, 0, 15, 10], [9, 0, 19, 10]])
    out = smooth_boxes(boxes)
    # i=0: mean of x1 0..4 = 2; i=1: 1..5 -> 3; i=2: 2,3,4,5,9 -> 4.6 -> 4 (truncated);
    # i=3: window is the last five, already holding the smoothed entry 2: (4,3,4,5,9)/5 = 5.0;
    # i=4: (4,5,4,5,9) = 5.4 -> 5; i=5: (4,5,5,5,9) = 5.6 -> 5; i=6: (4,5,5,5,9) = 5.6 -> 5.
    assert out[:, 0].tolist() == [2, 3, 4, 5, 5, 5, 5]
    assert out[:, 2].tolist() == [12, 13, 14, 15, 15, 15, 15]
    assert boxes[0, 0] == 0  # the input is not modified
    single = np.array([[177, 66, 272, 171]])
    assert smooth_boxes(single).tolist() == single.tolist()


def test_box_in_avatar_json_overrides_detection(tmp_path: Path, astronaut_bgr: np.ndarray,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cv2.imwrite(str(tmp_path / "me.png"), astronaut_bgr)
    (tmp_path / "avatar.json").write_text(json.dumps({"box": [170, 60, 280, 180]}))
    monkeypatch.setattr(avatar_module, "HaarFaceDetector", _DetectionForbidden)
    avatar = load_avatar(tmp_path / "me.png", cache_dir=tmp_path / "cache")
    assert avatar.box(0) == FaceBox(170, 60, 280, 180)  # used as given: no padding, as the official --box
    expected = cv2.resize(astronaut_bgr[60:180, 170:280], (96, 96))
    assert np.array_equal(avatar.face_crop(0), expected)
    assert avatar.mouth == {}


def test_mouth_placement_in_avatar_json_reaches_the_avatar(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    cv2.imwrite(str(tmp_path / "me.png"), astronaut_bgr)
    config = {"file": "me.png", "mouth": {"lips_y": 0.8, "smile": 0}}
    (tmp_path / "avatar.json").write_text(json.dumps(config))
    avatar = load_avatar(tmp_path / "me.png", cache_dir=tmp_path / "cache")
    assert avatar.mouth == {"lips_y": 0.8, "smile": 0.0}
    assert avatar.box(0) == FaceBox(177, 66, 272, 171)  # detection still runs: no box was given


@pytest.mark.parametrize("config, fragment", [
    ({"box": [1, 2, 3]}, "'box' must be a list of four integers"),
    ({"box": [50, 50, 10, 10]}, "0 <= x1 < x2"),
    ({"box": [0, 0, 600, 100]}, "reaches outside the 512x512 frame"),
    ({"boxes": [0, 0, 1, 1]}, "unknown keys ['boxes']"),
    ({"mouth": {"lips_y": "low"}}, "'mouth' must map some of"),
    ({"mouth": {"chin": 0.9}}, "'mouth' must map some of"),
])
def test_bad_avatar_json_is_named(tmp_path: Path, astronaut_bgr: np.ndarray, config: dict[str, object],
                                  fragment: str) -> None:
    cv2.imwrite(str(tmp_path / "me.png"), astronaut_bgr)
    (tmp_path / "avatar.json").write_text(json.dumps(config))
    with pytest.raises(AvatarError) as excinfo:
        load_avatar(tmp_path / "me.png", cache_dir=tmp_path / "cache")
    assert fragment in str(excinfo.value)


def test_image_without_a_face_names_the_avatar_and_frame(tmp_path: Path) -> None:
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(AvatarError, match=r"avatar 'wall': no face found in frame 0"):
        load_avatar(blank, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npz"))  # a failure caches nothing


def test_video_frame_without_a_face_is_named(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    frames = [astronaut_bgr, astronaut_bgr, np.full_like(astronaut_bgr, 90)]
    video = tmp_path / "clip.avi"
    _write_video(video, frames)
    with pytest.raises(AvatarError, match=r"avatar 'clip': no face found in frame 2"):
        load_avatar(video, cache_dir=tmp_path / "cache")


def test_unreadable_files_and_unknown_names(tmp_path: Path) -> None:
    garbage = tmp_path / "broken.png"
    garbage.write_bytes(b"\x89PNG but not really")
    with pytest.raises(AvatarError, match=r"cannot decode .*broken\.png"):
        load_avatar(garbage, cache_dir=tmp_path)
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(b"\x00" * 64)
    with pytest.raises(AvatarError, match=r"cannot read any frame of .*broken\.mp4"):
        load_avatar(bad_video, cache_dir=tmp_path)
    with pytest.raises(AvatarError, match=r"unknown avatar 'nobody'.*'astronaut'"):
        load_avatar("nobody", cache_dir=tmp_path)
    with pytest.raises(AvatarError, match="unknown avatar"):
        load_avatar(tmp_path / "missing.png", cache_dir=tmp_path)
    assert issubclass(AvatarError, ValueError)
    assert avatar_pkg.load_avatar is load_avatar


def test_a_large_frame_is_searched_scaled_down(astronaut_bgr: np.ndarray) -> None:
    """A 4096-pixel photo is searched at HAAR_MAX_SIDE (the cascade took seconds on the full one, issue 19);
    the box comes back in the frame's own pixels."""
    detector = HaarFaceDetector()
    small = detector.detect(astronaut_bgr)
    assert small is not None
    large = cv2.resize(astronaut_bgr, (4096, 4096), interpolation=cv2.INTER_CUBIC)
    found = detector.detect(large)
    assert found is not None
    factor = 4096 / astronaut_bgr.shape[0]
    tolerance = 4096 // 40  # the scaled search lands on the same face, a few of its pixels apart
    assert all(abs(a - b * factor) <= tolerance for a, b in zip(found, small, strict=True)), (found, small)
    assert max(found) <= 4096
