"""The WAV2LIP engine end to end: a server started with a Wav2Lip checkpoint (official layout, synthetic
weights from tests/wav2lip_fill.py) makes one frame per 1/fps of audio from the official mel windows."""

from __future__ import annotations

import asyncio
import threading
import types
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import cv2
import grpc
import numpy as np
from lipstream.server.engine import Engine
from lipstream.server.lipsync import encode_jpeg
from lipstream.server.options import EngineSettings
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

from tests.servers import (
    TinyVoice,
    check_media_continues_across_the_interrupt,
    converse_with_an_interrupt,
    running_server,
)
from tests.wav2lip_fill import write_official_checkpoint


def reply_then_wait(stub: lipstream_pb2_grpc.LipStreamStub, config: pb.SessionConfig) -> tuple[int, int, int]:
    """Sends one reply and no END_OF_INPUT; returns (audio samples, frames, FINISHED end) once all came."""
    release = threading.Event()

    def talk() -> Iterator[pb.ConverseRequest]:
        yield pb.ConverseRequest(config=config)
        yield pb.ConverseRequest(text=pb.TextInput(text="Short reply", flush=True))
        release.wait(120)

    call = stub.Converse(talk())
    audio = frames = 0
    finished_end = -1
    try:
        for response in call:
            kind = response.WhichOneof("response")
            if kind == "audio":
                audio += response.audio.num_samples
            elif kind == "frame":
                frames += 1
            elif kind == "utterance" and response.utterance.kind == pb.UtteranceEvent.FINISHED:
                finished_end = response.utterance.end_sample
            if finished_end == audio and frames >= audio / 16000 * 25 - 1:
                break
    finally:
        call.cancel()
        release.set()
    return audio, frames, finished_end


def test_wav2lip_sessions_get_lip_synced_frames(tmp_path: Path) -> None:
    checkpoint = write_official_checkpoint(tmp_path / "wav2lip.pth")
    voice = TinyVoice()
    engine = Engine(EngineSettings(wav2lip_checkpoint=str(checkpoint)), voices={voice.name: voice})
    with running_server(engine) as server, grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        info = stub.GetServerInfo(pb.GetServerInfoRequest())
        assert list(info.engines) == [pb.WAV2LIP, pb.VISEME]
        config = pb.SessionConfig(video=pb.VideoConfig(enabled=True, fps=25))  # AUTO picks WAV2LIP
        responses = list(stub.Synthesize(pb.SynthesizeRequest(config=config, text="Hello lips, move now.")))
        reply_without_end = reply_then_wait(stub, config)
    # all of a reply's audio and frames come although the input stays open (a kiosk between replies)
    audio_samples, frame_count, finished_end = reply_without_end
    assert audio_samples == finished_end and frame_count >= audio_samples / 16000 * 25 - 1
    started = responses[0].started
    assert started.engine == pb.WAV2LIP
    audio = [r.audio for r in responses if r.WhichOneof("response") == "audio"]
    frames = [r.frame for r in responses if r.WhichOneof("response") == "frame"]
    samples = sum(chunk.num_samples for chunk in audio)
    utterances = responses[-1].stats.utterances
    assert abs(len(frames) - samples / started.sample_rate * 25) <= utterances
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    images = [cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR) for f in frames if f.speaking]
    assert images and images[0].shape == (started.frame_height, started.frame_width, 3)
    avatar = engine._avatars[started.config.video.avatar]
    idle = cv2.imdecode(np.frombuffer(encode_jpeg(avatar.frame(0), 80), np.uint8), cv2.IMREAD_COLOR)
    # the model pasted a mouth: a speaking frame differs from the avatar inside the face box only
    box = avatar.box(0)
    difference = np.abs(images[len(images) // 2].astype(np.int16) - idle.astype(np.int16)).sum(axis=2)
    inside = difference[box.y1 : box.y2, box.x1 : box.x2].mean()
    outside = difference.copy()
    margin = 16  # the JPEG blocks (4:2:0) that straddle the box's edge
    outside[max(0, box.y1 - margin) : box.y2 + margin, max(0, box.x1 - margin) : box.x2 + margin] = 0
    assert outside.max() == 0
    assert inside > 2.0


def test_wav2lip_frames_and_audio_go_on_from_what_was_sent_after_an_interrupt(tmp_path: Path) -> None:
    checkpoint = write_official_checkpoint(tmp_path / "wav2lip.pth")
    voice = TinyVoice()
    engine = Engine(EngineSettings(wav2lip_checkpoint=str(checkpoint)), voices={voice.name: voice})
    config = pb.SessionConfig(video=pb.VideoConfig(enabled=True, fps=25, engine=pb.WAV2LIP))
    with running_server(engine) as server, grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        # The model is the slow stage: the audio runs ahead of the frames, and the mux holds it back. The
        # reply is long enough that a fast runtime cannot send all of it before the interrupt lands (with
        # nothing left to interrupt, no INTERRUPTED would come).
        responses = converse_with_an_interrupt(
            stub, config, "a long reply to interrupt, with much more to say after this part " * 8, "Go on."
        )
    assert responses[0].started.engine == pb.WAV2LIP
    stopped = check_media_continues_across_the_interrupt(responses)
    # A slow model can hold the stream at the next utterance's start (its first frames not made yet), so the
    # interrupt may land right there (CI saw 10000 to 10000); test_server_engine covers a cut mid-utterance.
    assert stopped.end_sample >= stopped.start_sample
    frames = [r.frame for r in responses if r.WhichOneof("response") == "frame"]
    go_on = max(f.utterance_id for f in frames)
    assert go_on > stopped.utterance_id and any(f.speaking for f in frames if f.utterance_id == go_on)


class _StillAvatar:
    """One 128x128 grey frame with its face box: what LipSyncStage reads of an avatar."""

    width = height = 128

    def __init__(self) -> None:
        self._frame = np.full((128, 128, 3), 100, np.uint8)
        self._box = types.SimpleNamespace(x1=16, y1=16, x2=112, y2=112)

    def source_index(self, i: int) -> int:
        return 0

    def frame(self, i: int) -> np.ndarray:
        return self._frame

    def box(self, i: int) -> types.SimpleNamespace:
        return self._box

    def face_crop(self, i: int) -> np.ndarray:
        return self._frame[16:112, 16:112]


def test_lipsync_stage_submits_the_next_batch_before_making_the_current_frames(monkeypatch) -> None:
    """The stage overlaps the model (the batcher's thread) with its own paste + JPEG: with all the audio
    there, batch k + 1 goes to the batcher before batch k's first frame is pasted, and every frame comes out
    once, in order."""
    import lipstream.models.wav2lip as wav2lip
    from lipstream.server.clock import Clock
    from lipstream.server.lipsync import LipSyncStage
    from lipstream.server.lipsync.wav2lip import Wav2LipRenderer
    from lipstream.server.mux import Multiplexer
    from lipstream.server.ring import AudioRing
    from lipstream.server.timeline import Timeline, UtteranceSpan

    log: list[str] = []

    class RecordingBatcher:
        def submit(self, mel: np.ndarray, face: np.ndarray) -> Future[np.ndarray]:
            log.append(f"submit {len(mel)}")
            future: Future[np.ndarray] = Future()
            future.set_result(np.full((len(mel), 3, 96, 96), 0.5, np.float32))
            return future

    paste = wav2lip.paste_mouth

    def recording_paste(*args: object, **kwargs: object) -> np.ndarray:
        log.append("paste")
        return paste(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(wav2lip, "paste_mouth", recording_paste)
    samples = 16000  # 1 s: 25 frames, batches of 8, 8, 8, 1
    ring = AudioRing(2 * samples)
    reader = ring.reader()
    ring.write(0.1 * np.sin(np.arange(samples, dtype=np.float32) * 0.05))
    ring.close()
    timeline = Timeline()
    timeline.add(UtteranceSpan(1, "la", 0, [], end=samples))
    loop = asyncio.new_event_loop()  # never run: the frames' events just queue on it
    try:
        mux = Multiplexer(loop, ("video",), realtime=False, max_ahead_s=1000.0)
        clock, avatar = Clock(16000, 16000, 25.0), _StillAvatar()
        stage = LipSyncStage(
            reader, timeline, mux, avatar, Wav2LipRenderer(RecordingBatcher(), avatar, clock),
            clock=clock, jpeg_quality=80, tts_idle=lambda: True,
        )
        stage.start()
        assert stage.join(60.0)
    finally:
        loop.close()
    assert log.count("paste") == 25
    assert [entry for entry in log if entry != "paste"] == ["submit 8", "submit 8", "submit 8", "submit 1"]
    # serial: submit 8, paste x 8, submit 8, ...; pipelined: the next submit comes before each batch's pastes
    assert log[:3] == ["submit 8", "submit 8", "paste"]
    assert log.index("submit 1") < len(log) - 9


def test_after_a_rewind_the_mel_restarts_where_the_reader_was_moved_and_the_windows_line_up() -> None:
    """An interrupt moved the ring back to 1 s with the stage's reader past it: the stage goes on from the
    frame it was told (idle up to the next utterance) and its mel windows are the official windows of the
    new audio alone (the mel starts there, with the official zero padding)."""
    from lipstream.models.wav2lip import mel_window_start, melspectrogram
    from lipstream.server.clock import Clock, Rewind
    from lipstream.server.lipsync import LipSyncStage
    from lipstream.server.lipsync.wav2lip import Wav2LipRenderer
    from lipstream.server.mux import Multiplexer
    from lipstream.server.ring import AudioRing
    from lipstream.server.timeline import Timeline, UtteranceSpan

    windows: list[np.ndarray] = []

    class RecordingBatcher:
        def submit(self, mel: np.ndarray, face: np.ndarray) -> Future[np.ndarray]:
            windows.extend(mel[:, 0])
            future: Future[np.ndarray] = Future()
            future.set_result(np.full((len(mel), 3, 96, 96), 0.5, np.float32))
            return future

    rate, fps, rewind_to = 16000, 25.0, 16000  # 1 s: mel column 80, frame 25
    ring = AudioRing(4 * rate)
    reader = ring.reader()
    ring.write(np.full(rate + rate // 2, 0.3, np.float32))  # the dead utterance, read past 1 s
    reader.advance(rate + rate // 2)
    new_audio = (0.2 * np.sin(np.arange(rate, dtype=np.float32) * 0.07)).astype(np.float32)
    timeline = Timeline()
    timeline.add(UtteranceSpan(2, "next", rewind_to, [], end=rewind_to + len(new_audio)))
    loop = asyncio.new_event_loop()
    try:
        mux = Multiplexer(loop, ("video",), realtime=False, max_ahead_s=1000.0)
        clock, avatar = Clock(rate, rate, fps), _StillAvatar()
        stage = LipSyncStage(
            reader, timeline, mux, avatar, Wav2LipRenderer(RecordingBatcher(), avatar, clock),
            clock=clock, jpeg_quality=80, tts_idle=lambda: True,
        )
        # The first frame the client has not received is 22: frames 22..24 are idle.
        stage.rewind(Rewind(rewind_to, 22, rewind_to, rewind_to, dead_below=2, epoch=1))
        ring.interrupt(rewind_to)
        ring.write(new_audio, epoch=ring.epoch)
        ring.close()
        stage.start()
        assert stage.join(60.0)
        loop.run_until_complete(asyncio.sleep(0))  # the frames' events land in the multiplexer's queue
        queued = [item.event for item in sorted(mux._heap)]
    finally:
        loop.close()
    assert [f.frame_index for f in queued] == list(range(22, 50))
    assert [f.frame_index for f in queued if f.speaking] == list(range(25, 50))
    official = melspectrogram(new_audio)
    speaking = range(25, 50)
    assert len(windows) == len(speaking)
    fitting = [
        (i, c) for i in speaking if (c := mel_window_start(i, fps) - 80) + 16 <= official.shape[1]
    ]
    assert len(fitting) >= 20
    for i, column in fitting:
        np.testing.assert_allclose(windows[i - 25], official[:, column : column + 16], atol=1e-4)
