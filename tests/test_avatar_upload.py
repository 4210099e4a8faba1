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
from lipstream.server.engine import MAX_AVATAR_IMAGE_BYTES, Engine
from lipstream.server.main import parse_args, settings_from_args

from tests.servers import TinyVoice, running_server, tiny_engine

ASTRONAUT = Path(__file__).parents[1] / "models" / "avatar" / "assets" / "astronaut.png"


def _photo(tmp_path: Path) -> bytes:
    """The default avatar's portrait, cropped and re-encoded as a JPEG: a photo the server has not seen."""
    image = cv2.imread(str(ASTRONAUT))[20:400, 80:420]
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
        (cv2.imencode(".png", np.full((256, 256, 3), 128, np.uint8))[1].tobytes(), "face"),
        (b"not an image at all", "cannot decode"),
        (b"\xff" * (MAX_AVATAR_IMAGE_BYTES + 1), "over the bound"),
    ],
    ids=["no face", "not an image", "too big"],
)
def test_a_photo_that_cannot_be_an_avatar_is_invalid_argument(image: bytes, says: str) -> None:
    with running_server(tiny_engine()) as server, Client(server.target) as client:
        with pytest.raises(InvalidArgumentError, match=says):
            list(client.synthesize("Hello.", video=VideoConfig(avatar_image=image), timeout=60))


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
