"""Words, the text actually spoken at an interrupt, and ARKit blendshapes over a real server (the default
voice and avatar): what a game engine or a voice agent gets from the stream."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from lipstream.models.viseme import BLENDSHAPE_NAMES, VISEMES
from lipstream.models.vits import split_words
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

from tests.servers import check_media_continues_across_the_interrupt, converse_with_an_interrupt

TEXT = "The quick brown fox jumps over the lazy dog. Maybe Bob can bring a bumpy map to the pub."


@pytest.fixture(scope="module")
def stub(grpc_target: str):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(grpc_target) as channel:
        yield lipstream_pb2_grpc.LipStreamStub(channel)


def _synthesize(stub, text: str, **options: object) -> list[pb.ConverseResponse]:  # type: ignore[no-untyped-def]
    config = pb.SessionConfig(noise_scale=0.0, noise_scale_w=0.0, **options)
    request = pb.SynthesizeRequest(config=config, text=text)
    return list(stub.Synthesize(request, timeout=120))


def _of(responses: list[pb.ConverseResponse], kind: str) -> list:  # type: ignore[type-arg]
    return [getattr(r, kind) for r in responses if r.WhichOneof("response") == kind]


def _pcm(responses: list[pb.ConverseResponse]) -> np.ndarray:
    audio = _of(responses, "audio")
    return np.concatenate([np.frombuffer(a.data, "<i2") for a in audio]).astype(np.float64) / 32768.0


def test_words_in_media_time_order_covering_each_utterance_with_video_off(stub) -> None:  # type: ignore[no-untyped-def]
    responses = _synthesize(stub, TEXT, words=True)
    assert responses[0].started.config.words and not responses[0].started.config.video.enabled
    words = _of(responses, "word")
    finished = [u for u in _of(responses, "utterance") if u.kind == pb.UtteranceEvent.FINISHED]
    assert len(finished) >= 2
    for utterance in finished:
        mine = [w for w in words if w.utterance_id == utterance.utterance_id]
        assert [w.word for w in mine] == [w for w, _, _ in split_words(utterance.text)]
        assert mine[0].start_sample >= utterance.start_sample and mine[-1].end_sample <= utterance.end_sample
        for a, b in zip(mine, mine[1:], strict=False):
            assert a.start_sample < a.end_sample <= b.start_sample
        # The words cover the utterance: what lies outside them is at most the pauses around it.
        spoken = sum(w.end_sample - w.start_sample for w in mine)
        assert spoken >= 0.7 * (utterance.end_sample - utterance.start_sample)
    # In media-time order with the audio: a word comes after the chunks that start before it.
    times = []
    for r in responses:
        kind = r.WhichOneof("response")
        if kind in ("audio", "word"):
            times.append(getattr(r, kind).start_sample)
    assert times == sorted(times)


def test_blendshapes_follow_the_audio_with_video_off(stub) -> None:  # type: ignore[no-untyped-def]
    responses = _synthesize(stub, TEXT, blendshapes=True, visemes=True, audio_format=pb.PCM16)
    started = responses[0].started
    assert tuple(started.blendshape_names) == BLENDSHAPE_NAMES and started.fps == 0.0
    frames = _of(responses, "blendshapes")
    rate, fps = started.sample_rate, 25.0
    pcm = _pcm(responses)
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    assert abs(len(frames) - len(pcm) * fps / rate) <= 1.5
    assert all(len(f.weights) == len(BLENDSHAPE_NAMES) for f in frames)
    assert all(abs(f.pts - f.frame_index / fps) < 1e-9 for f in frames)
    jaw = np.array([f.weights[BLENDSHAPE_NAMES.index("jawOpen")] for f in frames])
    windows = [pcm[round(i * rate / fps): round((i + 1) * rate / fps)] for i in range(len(frames))]
    envelope = np.array([np.sqrt(np.mean(np.square(w))) if len(w) else 0.0 for w in windows])
    r = np.corrcoef(jaw, envelope)[0, 1]
    assert r >= 0.6, f"jawOpen vs the received audio's envelope: r = {r:.3f}"
    # mouthClose is high while the viseme events say PP (frames whose middle lies in a PP span).
    pp = [v for v in _of(responses, "viseme") if VISEMES[v.viseme_id] == "PP"]
    close = BLENDSHAPE_NAMES.index("mouthClose")
    on_pp = [f.weights[close] for f in frames
             if any(v.start_sample <= (f.frame_index + 0.5) * rate / fps < v.end_sample for v in pp)]
    assert len(on_pp) >= 3 and min(on_pp) >= 0.7, on_pp


def test_blendshapes_come_with_every_video_frame(stub) -> None:  # type: ignore[no-untyped-def]
    responses = _synthesize(stub, "Hello there, video and weights.", blendshapes=True,
                            video=pb.VideoConfig(enabled=True, fps=20))
    frames, weights = _of(responses, "frame"), _of(responses, "blendshapes")
    assert [f.frame_index for f in frames] == [w.frame_index for w in weights]
    assert all(abs(w.pts - f.pts) < 1e-9 for f, w in zip(frames, weights, strict=True))
    # Idle frames (outside speech) rest; speaking ones move the jaw.
    jaw = BLENDSHAPE_NAMES.index("jawOpen")
    assert any(w.weights[jaw] > 0.2 for w in weights)


def test_spoken_text_on_an_interrupt_is_the_words_received(stub) -> None:  # type: ignore[no-untyped-def]
    long_text = ("This sentence is long enough that it is still being spoken when the interrupt arrives, "
                 "so only its first few words reach the listener before it stops")
    # REALTIME pacing: at fast pacing the server may send the whole first clause (5 s, video and all) while
    # the client holds off reading, and the interrupt then lands in the next clause before its first word.
    config = pb.SessionConfig(
        words=True, blendshapes=True, video=pb.VideoConfig(enabled=True), pacing=pb.REALTIME
    )
    responses = converse_with_an_interrupt(stub, config, long_text, "And now something else.", hold_s=1.5)
    stopped = check_media_continues_across_the_interrupt(responses)
    words = [w for w in _of(responses, "word") if w.utterance_id == stopped.utterance_id]
    heard = [w.word for w in words if w.end_sample <= stopped.end_sample]
    assert heard, "some words were heard before the interrupt"
    assert len(heard) < len(split_words(long_text))
    assert stopped.spoken_text == long_text[: len(stopped.spoken_text)]
    assert [w for w, _, _ in split_words(stopped.spoken_text)] == heard
    # No word of the interrupted utterance starts after what was received.
    assert all(w.start_sample < stopped.end_sample for w in words)
    # Blendshape frames go on with the video frames across the interrupt.
    frames, weights = _of(responses, "frame"), _of(responses, "blendshapes")
    assert [w.frame_index for w in weights] == list(range(len(weights)))
    assert abs(len(weights) - len(frames)) <= 1


def test_spoken_text_is_there_without_word_events(stub) -> None:  # type: ignore[no-untyped-def]
    long_text = "An agent that asks for no word events still learns what was heard when it cut in here"
    # REALTIME pacing: without video the audio would all be sent long before the interrupt.
    config = pb.SessionConfig(pacing=pb.REALTIME)
    responses = converse_with_an_interrupt(stub, config, long_text, "Fine.", hold_s=1.0)
    stopped = [u for u in _of(responses, "utterance") if u.kind == pb.UtteranceEvent.INTERRUPTED][0]
    assert not _of(responses, "word") and not _of(responses, "blendshapes")
    assert long_text.startswith(stopped.spoken_text) and len(stopped.spoken_text) < len(long_text)


def test_blendshapes_of_audio_in_follow_the_clients_speech(stub) -> None:  # type: ignore[no-untyped-def]
    """An audio-in session has no phoneme timings: the weights come from the audio-driven mouth."""
    spoken = _synthesize(stub, "Any text to speech can drive the face.", audio_format=pb.PCM16)
    rate = spoken[0].started.sample_rate
    pcm16 = b"".join(a.data for a in _of(spoken, "audio"))
    requests = [
        pb.ConverseRequest(config=pb.SessionConfig(
            input_audio=pb.InputAudio(sample_rate=rate), blendshapes=True, audio_format=pb.PCM16)),
        pb.ConverseRequest(audio=pb.AudioInput(pcm16=pcm16, end_of_utterance=True)),
        pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT)),
    ]
    responses = list(stub.Converse(iter(requests), timeout=120))
    frames = _of(responses, "blendshapes")
    fps = 25.0
    assert abs(len(frames) - len(pcm16) / 2 * fps / rate) <= 1.5
    jaw = np.array([f.weights[BLENDSHAPE_NAMES.index("jawOpen")] for f in frames])
    pcm = _pcm(responses)
    windows = [pcm[round(i * rate / fps): round((i + 1) * rate / fps)] for i in range(len(frames))]
    envelope = np.array([np.sqrt(np.mean(np.square(w))) if len(w) else 0.0 for w in windows])
    r = np.corrcoef(jaw, envelope)[0, 1]
    assert r >= 0.6, f"jawOpen vs the client's audio: r = {r:.3f}"
