"""A client's own photo as the avatar (issue 19, point 3): VideoConfig.avatar_image, size-bounded, its face
found once per content on the server; no face or no image: INVALID_ARGUMENT; `lipstream say --avatar
PHOTO`; `serve --extra-avatar` (repeatable) loads more avatars by path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from lipstream.client import Client, SessionStarted, VideoConfig, VideoFrame
from lipstream.client.cli import main as cli_main
from lipstream.client.errors import InvalidArgumentError
from lipstream.server.engine import MAX_AVATAR_IMAGE_BYTES, MAX_AVATAR_IMAGE_SIDE, Engine
from lipstream.server.main import parse_args, settings_from_args
from lipstream.server.options import InvalidArgument

from tests.servers import TinyVoice, running_server, tiny_engine

ASTRONAUT = Path(__file__).parents[1] / "models" / "avatar" / "assets" / "astronaut.png"


def _photo(tmp_path: Path) -> bytes:
    """The default avatar's portrait, cropped and re-encoded as a JPEG: a photo the server has not seen."""
    portrait = cv2.imread(str(ASTRONAUT))
    assert portrait is not None
    image = portrait[20:400, 80:420]
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    (tmp_path / "visitor.jpg").write_bytes(data.tobytes())
    return data.tobytes()


def test_a_photo_becomes_the_sessions_avatar_once_per_content(tmp_path: Path) -> None:
    image = _photo(tmp_path)
    engine = tiny_engine()
    video = VideoConfig(avatar_image=image)
    with running_server(engine) as server, Client(server.target) as client:
        for _ in range(2):
            events = list(client.synthesize("Hello there.", video=video, timeout=60))
            started = next(e for e in events if isinstance(e, SessionStarted))
            frames = [e for e in events if isinstance(e, VideoFrame)]
            assert started.avatar.startswith("upload-") and frames
            assert (started.frame_width, started.frame_height) == (340, 380)
            assert (frames[0].width, frames[0].height) == (340, 380)
        assert len(engine._uploaded) == 1  # the second session found it by content


@pytest.mark.parametrize(
    ("image", "says"),
    [
        (cv2.imencode(".png", np.full((256, 256, 3), 128, np.uint8))[1].tobytes(),
         "no face found in the photo: send a photo of one face, front-on"),
        (b"not an image at all", "the photo is not a JPEG or PNG image"),
        (Path(__file__).read_bytes(), "the photo is not a JPEG or PNG image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "the photo is not a JPEG or PNG image"),  # a header, no image
        (b"\xff" * (MAX_AVATAR_IMAGE_BYTES + 1), "over the bound"),
        (cv2.imencode(".png", np.zeros((8000, 8000), np.uint8))[1].tobytes(),
         f"8000x8000 pixels, over the bound of {MAX_AVATAR_IMAGE_SIDE} pixels a side: downscale it"),
        (cv2.imencode(".jpg", np.zeros((8, 5000, 3), np.uint8))[1].tobytes(), "5000x8 pixels, over the"),
    ],
    ids=["no face", "not an image", "a text file", "a cut PNG", "too many bytes", "a huge PNG", "wide JPEG"],
)
def test_a_photo_that_cannot_be_an_avatar_is_invalid_argument(image: bytes, says: str) -> None:
    """The message speaks of the photo the client sent: no server path, no avatar.json, no video."""
    with running_server(tiny_engine()) as server, Client(server.target) as client:
        with pytest.raises(InvalidArgumentError, match=says) as refused:
            list(client.synthesize("Hello.", video=VideoConfig(avatar_image=image), timeout=60))
    for server_side in ("avatar.json", "lipstream-avatar-", "upload-", "video (", "frame 0"):
        assert server_side not in refused.value.details


def test_a_huge_photo_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before anything decodes it: a 206 KB PNG of 8000x8000 took 11 s of face detection."""
    import lipstream.models.avatar as avatar_package

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the photo was decoded")

    image = cv2.imencode(".png", np.zeros((4097, 16), np.uint8))[1].tobytes()
    engine = tiny_engine()
    monkeypatch.setattr(avatar_package, "load_avatar", never)
    try:
        with pytest.raises(InvalidArgument, match="16x4097 pixels"):
            engine._uploaded_avatar(image)
    finally:
        engine.close()


def test_say_sends_a_photo_given_as_avatar(tmp_path: Path) -> None:
    _photo(tmp_path)
    out = tmp_path / "visitor.mp4"
    with running_server(tiny_engine()) as server:
        photo = str(tmp_path / "visitor.jpg")
        code = cli_main(["--target", server.target, "say", "Hello.", "--avatar", photo, "-o", str(out), "-q"])
    assert code == 0 and out.stat().st_size > 0
    assert cli_main(["say", "Hi.", "--avatar", str(tmp_path / "missing.jpg"), "-o", str(out)]) != 0


def test_serve_extra_avatar_loads_more_avatars(tmp_path: Path) -> None:
    _photo(tmp_path)
    _, args = parse_args(["--extra-avatar", str(tmp_path / "visitor.jpg"), "--extra-avatar", str(ASTRONAUT)])
    settings = settings_from_args(args)
    assert settings.extra_avatars == (str(tmp_path / "visitor.jpg"), str(ASTRONAUT))
    voice = TinyVoice()
    engine = Engine(settings, voices={voice.name: voice})
    try:
        assert [a.name for a in engine.avatars()][:2] == ["astronaut", "visitor"]
    finally:
        engine.close()


def test_serve_refuses_two_extra_avatars_of_one_name(tmp_path: Path) -> None:
    """Clients pick an avatar by its file name: a second `bob` was dropped silently, now serve exits 2 naming
    both files."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "bob.png").write_bytes(ASTRONAUT.read_bytes())
    first, second = str(tmp_path / "a" / "bob.png"), str(tmp_path / "b" / "bob.png")
    _, args = parse_args(["--extra-avatar", first, "--extra-avatar", second])
    voice = TinyVoice()
    with pytest.raises(ValueError, match="two avatars are named 'bob'") as refused:
        Engine(settings_from_args(args), voices={voice.name: voice})
    assert first in str(refused.value) and second in str(refused.value) and "rename" in str(refused.value)
    _, args = parse_args(["--extra-avatar", first, "--extra-avatar", first])  # the same file twice: one bob
    engine = Engine(settings_from_args(args), voices={voice.name: voice})
    try:
        assert [a.name for a in engine.avatars()].count("bob") == 1
    finally:
        engine.close()
