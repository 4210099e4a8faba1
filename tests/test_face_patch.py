"""FACE_PATCH frames (VideoConfig.frame_mode): composited in order, they are FULL_FRAME's pictures, for far
fewer bytes; an unchanged frame is a repeat with no picture."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import simplejpeg
from lipstream.server.events import FrameEvent
from lipstream.server.lipsync.patches import BLOCK, PatchCoder, changed_box
from lipstream.server.options import SessionOptions
from lipstream.v1.enums import FrameMode

from tests.servers import tiny_engine

TEXT = "Hello there, how are you today? I am fine, thank you very much."
MIN_PSNR_DB = 45.0  # the patches sit on the whole frame's JPEG blocks: only edge chroma smoothing differs


def _session_frames(mode: FrameMode) -> list[FrameEvent]:
    engine = tiny_engine()

    async def run() -> list[FrameEvent]:
        session = await engine.open_session(SessionOptions(video=True, frame_mode=mode, noise_scale=0.0))
        await session.send_text(TEXT)
        await session.end_input()
        return [event async for event in session.events() if isinstance(event, FrameEvent)]

    try:
        return asyncio.run(run())
    finally:
        engine.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_composited_patches_are_the_full_frames_for_far_fewer_bytes() -> None:
    full, patched = _session_frames(FrameMode.FULL_FRAME), _session_frames(FrameMode.FACE_PATCH)
    assert [f.frame_index for f in full] == [f.frame_index for f in patched]
    assert patched[0].repeat_of is None and (patched[0].patch_x, patched[0].patch_y) == (0, 0)
    canvas: np.ndarray | None = None
    for whole, frame in zip(full, patched, strict=True):
        if frame.repeat_of is None:
            picture = simplejpeg.decode_jpeg(frame.jpeg, "BGR")
            if canvas is None:
                assert picture.shape[:2] == (frame.height, frame.width)
                canvas = picture.copy()
            else:
                assert frame.patch_x % BLOCK == 0 and frame.patch_y % BLOCK == 0
                h, w = picture.shape[:2]
                canvas[frame.patch_y : frame.patch_y + h, frame.patch_x : frame.patch_x + w] = picture
        else:
            assert frame.jpeg == b"" and frame.repeat_of < frame.frame_index
        assert canvas is not None
        assert whole.utterance_id == frame.utterance_id, whole.frame_index  # the same clock, the same marks
        assert psnr(canvas, simplejpeg.decode_jpeg(whole.jpeg, "BGR")) >= MIN_PSNR_DB, whole.frame_index
    assert sum(len(f.jpeg) for f in patched) * 5 < sum(len(f.jpeg) for f in full)


def test_an_unchanged_picture_is_a_repeat_of_the_last_frame_sent() -> None:
    encoded: list[tuple[int, ...]] = []

    def encode(picture: np.ndarray) -> bytes:
        encoded.append(picture.shape)
        return b"jpeg"

    avatar = np.full((64, 64, 3), 100, np.uint8)
    coder = PatchCoder(encode)
    assert coder.encode(0, avatar, still=True).repeat_of is None
    assert coder.encode(1, avatar, still=True).repeat_of == 0  # the same shared frame: not even compared
    mouth = avatar.copy()
    mouth[40:44, 20:30] = 0
    patch = coder.encode(2, mouth, still=False)
    assert (patch.x, patch.y, patch.repeat_of) == (16, 32, None) and encoded[-1] == (16, 16, 3)
    assert coder.encode(3, mouth.copy(), still=False).repeat_of == 2  # equal pixels, another array
    coder.reset()
    assert coder.encode(4, avatar, still=True).repeat_of is None and encoded[-1] == (64, 64, 3)


def test_a_renderer_drawing_into_one_buffer_is_compared_with_the_picture_sent() -> None:
    # The coder keeps its own copy of a picture that is not still (its one array, rewritten each frame).
    coder = PatchCoder(lambda picture: b"jpeg")
    buffer = np.full((64, 64, 3), 100, np.uint8)
    assert coder.encode(0, buffer, still=False).repeat_of is None
    buffer[40:44, 20:30] = 0  # the renderer draws the next frame into the same array
    drawn = coder.encode(1, buffer, still=False)
    assert (drawn.x, drawn.y, drawn.repeat_of) == (16, 32, None)
    buffer[40:44, 20:30] = 100  # and back: a change against frame 1 as kept, not against frame 0
    undone = coder.encode(2, buffer, still=False)
    assert (undone.x, undone.y, undone.repeat_of) == (16, 32, None)
    assert coder.encode(3, buffer.copy(), still=False).repeat_of == 2
    assert coder.encode(4, np.zeros((32, 32, 3), np.uint8), still=False).repeat_of is None  # another size


def test_changed_box_spans_the_differing_pixels() -> None:
    a = np.zeros((32, 40, 3), np.uint8)
    b = a.copy()
    assert changed_box(a, b) is None
    b[5, 7, 2] = 1
    b[9, 30, 0] = 1
    x0, y0, x1, y1 = changed_box(a, b) or (0, 0, 0, 0)
    assert (y0, y1) == (5, 10) and x0 <= 7 and x1 >= 31


def test_face_patch_over_grpc_sets_the_frame_fields() -> None:
    import grpc
    from lipstream.v1 import lipstream_pb2 as pb
    from lipstream.v1 import lipstream_pb2_grpc

    from tests.servers import running_server

    config = pb.SessionConfig(
        video=pb.VideoConfig(enabled=True, frame_mode=pb.VideoConfig.FACE_PATCH), noise_scale=0.0
    )
    with running_server(tiny_engine()) as server, grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        responses = list(stub.Synthesize(pb.SynthesizeRequest(config=config, text=TEXT), timeout=60))
    started = responses[0].started
    assert started.config.video.frame_mode == pb.VideoConfig.FACE_PATCH
    frames = [r.frame for r in responses if r.WhichOneof("response") == "frame"]
    assert not frames[0].HasField("repeat_of") and frames[0].jpeg
    patches = [f for f in frames[1:] if f.jpeg]
    assert patches and all(len(f.jpeg) < len(frames[0].jpeg) // 4 for f in patches)
    assert any(f.patch_x or f.patch_y for f in patches)


def _client_events(mode: str) -> list[object]:
    from lipstream.client import Client, VideoConfig

    from tests.servers import running_server

    with running_server(tiny_engine()) as server, Client(server.target) as client:
        return list(client.synthesize(TEXT, video=VideoConfig(frame_mode=mode), noise_scale=0.0))


def test_the_client_composites_patches_and_writes_them_to_mp4(tmp_path: Path) -> None:
    import av
    from lipstream.client import FrameCompositor, VideoFrame, write_mp4

    full, patched = _client_events("full_frame"), _client_events("face_patch")
    full_frames = [e for e in full if isinstance(e, VideoFrame)]
    patch_frames = [e for e in patched if isinstance(e, VideoFrame)]
    assert any(f.patch_x or f.patch_y for f in patch_frames)
    compositor = FrameCompositor(lambda jpeg: simplejpeg.decode_jpeg(jpeg, "BGR"))
    for whole, frame in zip(full_frames, patch_frames, strict=True):
        picture = compositor.add(frame)
        if whole.utterance_id == frame.utterance_id:  # see the test above
            assert psnr(picture, simplejpeg.decode_jpeg(whole.jpeg, "BGR")) >= MIN_PSNR_DB
    path = tmp_path / "patched.mp4"
    writer = write_mp4(path, patched)  # type: ignore[arg-type]
    assert writer.frames_written == len(patch_frames)
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == len(patch_frames)


def test_after_an_interrupt_the_next_frame_is_whole() -> None:
    import grpc
    from lipstream.client import FrameCompositor
    from lipstream.client.events import VideoFrame, event_from_proto
    from lipstream.v1 import lipstream_pb2 as pb
    from lipstream.v1 import lipstream_pb2_grpc

    from tests.servers import (
        converse_with_an_interrupt,
        running_server,
    )

    # Real-time pacing, so that the interrupt lands mid-utterance (the tiny voice is fast).
    config = pb.SessionConfig(
        video=pb.VideoConfig(enabled=True, frame_mode=pb.VideoConfig.FACE_PATCH), pacing=pb.REALTIME
    )
    long_text = "a long reply to interrupt with much more to say after this part " * 2
    with running_server(tiny_engine()) as server, grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        responses = converse_with_an_interrupt(stub, config, long_text, "Go on.")
    frames = [r.frame for r in responses if r.WhichOneof("response") == "frame"]
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    cut = next(
        i for i, r in enumerate(responses)
        if r.WhichOneof("response") == "utterance" and r.utterance.kind == pb.UtteranceEvent.INTERRUPTED
    )
    after = [r.frame for r in responses[cut:] if r.WhichOneof("response") == "frame"]
    whole = [f for f in after if f.jpeg and not (f.patch_x or f.patch_y) and not f.HasField("repeat_of")]
    assert whole, "no whole frame after the interrupt: a client could not composite the frames after it"
    compositor = FrameCompositor(lambda jpeg: simplejpeg.decode_jpeg(jpeg, "BGR"))
    for response in responses:
        if response.WhichOneof("response") == "frame":
            frame = event_from_proto(response)
            assert isinstance(frame, VideoFrame)
            compositor.add(frame)  # raises on a patch with no whole frame before it
