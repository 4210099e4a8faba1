"""Wav2Lip mel numerics, windows and the streaming mel (conformance README sections 4-5, 8)."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import soxr
from lipstream.models.wav2lip import (
    MEL_STEP,
    StreamingMel,
    mel_chunk_starts,
    mel_chunks,
    mel_window_start,
    melspectrogram,
)

from tests.wav2lip_fill import CONFORMANCE

MEL_ATOL = 1e-3  # conformance README section 8.4


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    with wave.open(str(CONFORMANCE / "speech_16k.wav")) as wav:
        assert wav.getframerate() == 16000
        return np.frombuffer(wav.readframes(wav.getnframes()), np.int16).astype(np.float32) / 32768


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(CONFORMANCE / "mel.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def mel(speech) -> np.ndarray:
    return melspectrogram(speech)


def test_mel_matches_official_zero_padded_mel(mel, reference) -> None:
    assert mel.shape == reference["mel"].shape == (80, 288)
    assert np.abs(mel - reference["mel"]).max() < MEL_ATOL
    # The interior columns match the librosa 0.7 (reflect-padded) mel as well; the edges differ by design.
    assert np.abs(mel[:, 2:-2] - reference["mel_reflect"][:, 2:-2]).max() < MEL_ATOL
    assert np.abs(mel[:, :2] - reference["mel_reflect"][:, :2]).max() > 0.1


def test_chunk_starts_and_chunks_for_25_fps(mel, reference) -> None:
    starts = mel_chunk_starts(mel.shape[1], 25)
    assert len(starts) == 87
    assert starts == reference["chunk_start"].tolist()
    assert starts[-2] == starts[-1] == 272  # the tail window repeats (README section 5)
    chunks = mel_chunks(mel, 25)
    assert chunks.shape == (87, 80, MEL_STEP)
    assert np.abs(chunks - reference["mel_chunks"]).max() < MEL_ATOL


def test_window_start_is_truncated_frame_time() -> None:
    assert [mel_window_start(i, 25) for i in range(6)] == [0, 3, 6, 9, 12, 16]
    for fps in (24, 25, 29.97, 30, 50, 60):
        assert all(mel_window_start(i, fps) == int(i * 80.0 / fps) for i in range(0, 5000, 7))
    assert all(mel_window_start(i, 25) == (16 * i) // 5 for i in range(5000))


def _stream(samples: np.ndarray, rate: int, chunk_sizes: list[int]) -> StreamingMel:
    stream = StreamingMel(rate)
    position, turn = 0, 0
    while position < len(samples):
        size = chunk_sizes[turn % len(chunk_sizes)]
        stream.push(samples[position: position + size])
        position += size
        turn += 1
    return stream


@pytest.mark.parametrize("chunk_sizes", [[1], [7], [333], [1, 2, 399, 5, 1001], [4096], [100_000]])
def test_streaming_mel_equals_whole_mel(speech, mel, chunk_sizes) -> None:
    stream = _stream(speech, 16000, chunk_sizes)
    before_finish = stream.num_columns
    final_so_far = stream.columns(0, before_finish)
    # Only the columns whose window reaches past the end of the audio wait for finish().
    assert before_finish == mel.shape[1] - 2
    stream.finish()
    assert stream.num_columns == mel.shape[1]
    assert np.abs(stream.columns(0, stream.num_columns) - mel).max() < MEL_ATOL
    assert np.array_equal(stream.columns(0, before_finish), final_so_far)  # final columns never change
    assert stream.num_frames(25) == 87


def test_streaming_columns_become_final_as_audio_arrives(speech, mel) -> None:
    stream = StreamingMel(16000)
    stream.push(speech[:399])
    assert stream.num_columns == 0
    stream.push(speech[399:400])
    assert stream.num_columns == 1  # column 0 needs samples up to 0*200 + 400
    stream.push(speech[400:16000])
    assert stream.num_columns == (16000 - 400) // 200 + 1
    assert np.abs(stream.columns(0, stream.num_columns) - mel[:, : stream.num_columns]).max() < MEL_ATOL
    assert stream.window(0, 25) is not None
    assert stream.window(30, 25) is None  # its audio is not in yet


def test_streaming_windows_follow_the_official_loop(speech, reference) -> None:
    stream = _stream(speech, 16000, [640])
    stream.finish()
    windows = [stream.window(i, 25) for i in range(stream.num_frames(25))]
    assert np.abs(np.stack(windows) - reference["mel_chunks"]).max() < MEL_ATOL
    with pytest.raises(IndexError):
        stream.window(87, 25)


@pytest.mark.parametrize("chunk_sizes", [[1], [441], [1001, 3]])
def test_streaming_resampler_equals_whole_signal_resampling(speech, chunk_sizes) -> None:
    voice = soxr.resample(speech, 16000, 22050).astype(np.float32)  # as a 22.05 kHz voice would give it
    whole = melspectrogram(soxr.resample(voice, 22050, 16000, quality="HQ"))
    stream = _stream(voice, 22050, chunk_sizes)
    stream.finish()
    assert stream.num_columns == whole.shape[1]
    assert np.abs(stream.columns(0, stream.num_columns) - whole).max() < MEL_ATOL


def test_discarding_old_columns_keeps_newer_ones(speech, mel) -> None:
    stream = _stream(speech, 16000, [1000])
    stream.discard_before(100)
    assert np.array_equal(stream.columns(100, 120), mel[:, 100:120])
    with pytest.raises(ValueError, match="outside the final columns"):
        stream.columns(50, 60)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="input_rate"):
        StreamingMel(0)
    with pytest.raises(ValueError, match="mono"):
        StreamingMel(16000).push(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="mono"):
        melspectrogram(np.zeros((10, 2), np.float32))
    stream = StreamingMel(16000)
    stream.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        stream.push(np.zeros(3, np.float32))
