"""Audio formats: the encoder registry covers the contract's formats, WAV and PCM bytes are the documented
layouts, and an Ogg/Opus session's chunks concatenate to one stream that decodes to the session's audio
(through an interrupt too: the encoder sees only what the client gets)."""

from __future__ import annotations

import io
import struct
import wave

import av
import grpc
import numpy as np
import pytest
from lipstream.server.encoders import FORMATS, encoder_for, unavailable_reason
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc
from lipstream.v1.enums import AudioFormat, from_proto, to_proto

from tests.servers import (
    converse_with_an_interrupt,
    running_server,
    tiny_engine,
)

RATE = 16000


def tone(seconds: float, rate: int = RATE, hz: float = 330.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def decode_ogg_opus(data: bytes) -> tuple[np.ndarray, int]:
    """The mono samples of a whole Ogg/Opus stream and their rate (Opus decodes at 48 kHz)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return np.concatenate(frames).astype(np.float32), stream.rate


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def test_every_format_of_the_contract_has_an_encoder() -> None:
    numbers = [v.number for v in pb.AudioFormat.DESCRIPTOR.values if v.number != 0]
    assert sorted(to_proto(f) for f in AudioFormat) == numbers
    assert set(AudioFormat) <= set(FORMATS)
    assert from_proto(AudioFormat, pb.OGG_OPUS) is AudioFormat.OGG_OPUS
    assert all(unavailable_reason(f) is None for f in AudioFormat)  # the test extra has PyAV
    with pytest.raises(ValueError, match="99 is not a known AudioFormat"):
        from_proto(AudioFormat, 99)


def test_wav_and_pcm_chunks_are_the_documented_bytes() -> None:
    samples = np.array([0.0, 0.5, -0.5, 1.5, -1.5], dtype=np.float32)
    pcm = struct.pack("<5h", 0, 16384, -16384, 32767, -32767)  # round(x * 32767), clipped to [-1, 1]
    assert encoder_for("pcm16", RATE).encode(samples) == pcm
    wav = encoder_for("wav_pcm16", RATE).encode(samples)
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, RATE * 2, 2, 16)
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    assert wav == header + b"data" + struct.pack("<I", len(pcm)) + pcm
    with wave.open(io.BytesIO(wav)) as parsed:
        assert (parsed.getframerate(), parsed.getnframes()) == (RATE, 5)
    floats = encoder_for("wav_float32", RATE).encode(samples)
    assert floats[20:22] == struct.pack("<H", 3) and floats[-20:] == samples.astype("<f4").tobytes()
    for name in ("pcm16", "wav_pcm16", "wav_float32"):
        assert FORMATS[AudioFormat(name)].self_contained
        assert encoder_for(name, RATE).flush() == b""


@pytest.mark.parametrize("rate", [16000, 22050])
def test_ogg_opus_chunks_concatenate_to_one_stream_of_the_same_audio(rate: int) -> None:
    audio = tone(1.0, rate)
    encoder = encoder_for("ogg_opus", rate)
    chunks = [encoder.encode(audio[i : i + rate // 10]) for i in range(0, len(audio), rate // 10)]
    chunks.append(encoder.flush())
    assert chunks[0].startswith(b"OggS") and b"OpusHead" in chunks[0]  # the first chunk holds the headers
    assert sum(1 for chunk in chunks if chunk) >= 5  # pages go out with the chunks, not all at the end
    decoded, decoded_rate = decode_ogg_opus(b"".join(chunks))
    assert decoded_rate == 48000
    assert abs(len(decoded) / decoded_rate - 1.0) < 0.005  # the pre-skip and the end trimmed by the granules
    assert rms(decoded) == pytest.approx(rms(audio), rel=0.05)
    assert not FORMATS[AudioFormat.OGG_OPUS].self_contained


@pytest.mark.parametrize("name", ["wav", "pcm", "mp3", "opus", "aac", "flac"])
def test_the_http_formats_stream_one_file_of_the_same_audio(name: str) -> None:
    """The registry outside a session: an HTTP handler's whole-response formats, chunk by chunk."""
    rate = 22050
    audio = tone(1.0, rate)
    encoder = encoder_for(name, rate)
    data = b"".join(encoder.encode(audio[i : i + rate // 10]) for i in range(0, len(audio), rate // 10))
    data += encoder.flush()
    if name == "pcm":
        decoded, decoded_rate = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0, rate
    else:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
            decoded_rate = stream.rate
        if decoded.dtype.kind == "i":  # wav and flac decode to integers
            decoded = decoded.astype(np.float32) / -np.iinfo(decoded.dtype).min
    assert abs(len(decoded) / decoded_rate - 1.0) < 0.1  # mp3 and aac add their encoder delay
    assert rms(decoded) == pytest.approx(rms(audio), rel=0.1)
    assert FORMATS[name].mime_type.startswith("audio/")


def test_ogg_opus_session_decodes_to_what_was_sent_through_an_interrupt() -> None:
    with running_server(tiny_engine()) as server, grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        # Real-time pacing, so that the interrupt lands mid-utterance (the tiny voice is fast).
        config = pb.SessionConfig(audio_format=pb.OGG_OPUS, pacing=pb.REALTIME)
        long_text = "a long reply to interrupt with much more to say after this part " * 2
        responses = converse_with_an_interrupt(stub, config, long_text, "Go on.")
        kinds = [r.utterance.kind for r in responses if r.WhichOneof("response") == "utterance"]
        assert pb.UtteranceEvent.INTERRUPTED in kinds
        started = responses[0].started
        assert started.config.audio_format == pb.OGG_OPUS
        audio = [r.audio for r in responses if r.WhichOneof("response") == "audio"]
        sent = sum(chunk.num_samples for chunk in audio)
        decoded, decoded_rate = decode_ogg_opus(b"".join(chunk.data for chunk in audio))
        assert abs(len(decoded) / decoded_rate - sent / started.sample_rate) < 0.005
        assert audio[-1].num_samples == 0 and audio[-1].data  # the stream's end, after the last samples

        # The same text as PCM16: the Opus stream carries the same loudness.
        pcm, opus = (
            b"".join(
                r.audio.data
                for r in stub.Synthesize(
                    pb.SynthesizeRequest(config=pb.SessionConfig(audio_format=audio_format), text="a b c.")
                )
                if r.WhichOneof("response") == "audio"
            )
            for audio_format in (pb.PCM16, pb.OGG_OPUS)
        )
        reference = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        decoded, decoded_rate = decode_ogg_opus(opus)
        assert abs(len(decoded) / decoded_rate - len(reference) / started.sample_rate) < 0.005
        assert rms(decoded) == pytest.approx(rms(reference), rel=0.1)


def test_a_server_without_pyav_refuses_ogg_opus_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    without_av = lambda name, *a: None if name == "av" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", without_av)
    with running_server(tiny_engine()) as server, grpc.insecure_channel(server.target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        request = pb.SynthesizeRequest(config=pb.SessionConfig(audio_format=pb.OGG_OPUS), text="hi.")
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Synthesize(request))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "lipstream[mp4]" in caught.value.details()


def test_the_client_names_each_enum_by_value_name_or_number() -> None:
    from lipstream.client import SessionKeywords, decode_audio, session_config
    from lipstream.client.events import AudioChunk, event_from_proto

    for spelling in ("ogg_opus", "OGG_OPUS", " Ogg_Opus ", pb.OGG_OPUS, AudioFormat.OGG_OPUS):
        assert session_config(audio_format=spelling).audio_format == pb.OGG_OPUS
    for spelling in ("fast", "as_fast_as_possible", pb.AS_FAST_AS_POSSIBLE):
        assert session_config(pacing=spelling).pacing == pb.AS_FAST_AS_POSSIBLE
    with pytest.raises(ValueError, match="audio_format 0 is not a valid enum value"):
        session_config(audio_format=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'speed'"):
        session_config(speed=1.2)  # type: ignore[call-arg]
    assert set(SessionKeywords.__optional_keys__) <= set(pb.SessionConfig.DESCRIPTOR.fields_by_name)

    chunk = pb.ConverseResponse(audio=pb.AudioChunk(data=b"OggS...", num_samples=160, sample_rate=RATE))
    event = event_from_proto(chunk, "ogg_opus")
    assert isinstance(event, AudioChunk) and event.data == b"OggS..." and len(event.samples) == 0
    with pytest.raises(ValueError, match="concatenate"):
        decode_audio(b"OggS...", "ogg_opus")
