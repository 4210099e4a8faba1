"""Wav2Lip's mel spectrogram (official `audio.py` numerics), whole-signal and streaming, and its windows.

Numerics (hparams of the official repo): 16 kHz, pre-emphasis 0.97, STFT n_fft = win = 800 with a
periodic Hann window and hop 200 (80 columns per second), centred frames, magnitude, Slaney mel basis
(80 bands, 55..7600 Hz), 20*log10(max(1e-5, mel)) - 20, then mapped to [-4, 4] and clipped.

Padding: the centred STFT pads 400 samples on each side with **zeros**, which is what the unmodified
official code computes under librosa >= 0.10 (librosa 0.7 padded by reflection). Zero padding is also
what makes an exact streaming mel possible: the padding before the signal is silence, and the padding
after it is the same silence a stream sees when its audio ends. Only the first two and the last two
columns of a signal depend on the choice (conformance README section 4).
"""

from __future__ import annotations

import functools

import librosa
import numpy as np
import soxr

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
NUM_MELS = 80
MEL_STEP = 16  # columns per model window (200 ms)
MEL_COLUMNS_PER_SECOND = SAMPLE_RATE / HOP  # 80.0
PREEMPHASIS = 0.97
_MIN_LEVEL = 1e-5  # 10 ** (min_level_db / 20), min_level_db = -100
_REF_LEVEL_DB = 20.0
_MAX_ABS = 4.0


@functools.cache
def _mel_basis() -> np.ndarray:
    # Keyword call: librosa >= 0.10 made these keyword-only; `norm` stays at its Slaney default.
    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS, fmin=55, fmax=7600)
    return basis.astype(np.float64)  # (80, 401)


@functools.cache
def _window() -> np.ndarray:
    n = np.arange(N_FFT, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic Hann, as librosa's get_window("hann")


def _columns_from_padded(padded: np.ndarray, count: int) -> np.ndarray:
    """Mel columns 0..count-1 of a pre-emphasised, already padded signal (float64); column t reads
    padded[t*HOP : t*HOP + N_FFT]. Returns (80, count) float32."""
    if count <= 0:
        return np.zeros((NUM_MELS, 0), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded[: (count - 1) * HOP + N_FFT], N_FFT)[::HOP]
    magnitude = np.abs(np.fft.rfft(frames * _window(), axis=1))  # (count, 401)
    mel = _mel_basis() @ magnitude.T  # (80, count)
    db = 20.0 * np.log10(np.maximum(_MIN_LEVEL, mel)) - _REF_LEVEL_DB
    return np.clip(2 * _MAX_ABS * (db + 100.0) / 100.0 - _MAX_ABS, -_MAX_ABS, _MAX_ABS).astype(np.float32)


def _preemphasis(x: np.ndarray, previous: float) -> np.ndarray:
    """y[n] = x[n] - 0.97 x[n-1], with x[-1] = `previous` (0 at the start of a signal), float64."""
    x = x.astype(np.float64)
    y = x.copy()
    y[1:] -= PREEMPHASIS * x[:-1]
    if len(y):
        y[0] -= PREEMPHASIS * previous
    return y


def num_mel_columns(num_samples_16k: int) -> int:
    """Columns of a signal of this many 16 kHz samples: 1 + floor(n / 200) (centred STFT)."""
    return 1 + num_samples_16k // HOP


def melspectrogram(wav_16k: np.ndarray) -> np.ndarray:
    """The official mel spectrogram of a mono 16 kHz waveform: (80, 1 + len // 200) float32 in [-4, 4]."""
    wav = np.asarray(wav_16k)
    if wav.ndim != 1:
        raise ValueError(
            f"melspectrogram needs a mono 1-D waveform, got shape {wav.shape}; pass wav[:, 0] or a downmix"
        )
    pad = np.zeros(N_FFT // 2)
    padded = np.concatenate([pad, _preemphasis(wav, 0.0), pad])
    return _columns_from_padded(padded, num_mel_columns(len(wav)))


def mel_window_start(frame_index: int, fps: float) -> int:
    """First mel column of video frame `frame_index`'s window: int(i * 80. / fps), as the official loop."""
    return int(frame_index * MEL_COLUMNS_PER_SECOND / fps)


def mel_chunk_starts(num_columns: int, fps: float) -> list[int]:
    """Window starts of every frame the official inference makes from a mel of `num_columns` columns.

    Frames run while their window fits; the first frame whose window would overrun takes the last 16
    columns and ends the list (so that tail window can repeat the previous one).
    """
    if num_columns < MEL_STEP:
        raise ValueError(
            f"a mel of {num_columns} columns is shorter than one window ({MEL_STEP}); "
            f"the audio must be at least {(MEL_STEP - 1) * HOP} samples at 16 kHz"
        )
    starts = []
    i = 0
    while True:
        start = mel_window_start(i, fps)
        if start + MEL_STEP > num_columns:
            starts.append(num_columns - MEL_STEP)
            return starts
        starts.append(start)
        i += 1


def mel_chunks(mel: np.ndarray, fps: float) -> np.ndarray:
    """The official per-frame windows of a whole mel: (frames, 80, 16) float32."""
    return np.stack([mel[:, s : s + MEL_STEP] for s in mel_chunk_starts(mel.shape[1], fps)]).astype(
        np.float32
    )


class StreamingMel:
    """The mel of one session's audio, computed as the audio arrives.

    `push` takes float32 samples at `input_rate` in chunks of any size; a soxr streaming resampler brings
    them to 16 kHz, then pre-emphasis, STFT and mel run incrementally. Column t is final as soon as the
    16 kHz samples up to t*200 + 400 exist; `finish` (end of audio) flushes the resampler and computes
    the last columns, whose frames reach past the end (zero padding, as the whole-signal mel). Columns
    never change once final, and equal `melspectrogram` of the whole (resampled) signal.
    Not thread-safe: one writer per session.
    """

    def __init__(self, input_rate: int) -> None:
        if input_rate <= 0:
            raise ValueError(f"input_rate must be a positive sample rate in Hz, got {input_rate}")
        self.input_rate = int(input_rate)
        self._resampler = (
            None
            if self.input_rate == SAMPLE_RATE
            else soxr.ResampleStream(self.input_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )
        # Pre-emphasised 16 kHz samples not yet consumed, in padded coordinates from `_buffer_start`.
        self._buffer = np.zeros(N_FFT // 2, dtype=np.float64)  # the 400 zeros of the left padding
        self._buffer_start = 0
        self._previous = 0.0
        self.num_samples_16k = 0
        self._mel = np.zeros((NUM_MELS, 256), dtype=np.float32)
        self._first_kept = 0  # columns before this were discarded
        self.num_columns = 0  # columns final so far
        self.finished = False

    def push(self, samples: np.ndarray) -> None:
        """Append mono float32 samples at `input_rate` (any length, including 0 and 1)."""
        if self.finished:
            raise RuntimeError("StreamingMel.push after finish(): start a new StreamingMel for new audio")
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"push needs mono 1-D samples, got shape {samples.shape}")
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=False)
        self._append_16k(samples)

    def finish(self) -> None:
        """End of audio: flush the resampler and make the tail columns final. Idempotent."""
        if self.finished:
            return
        if self._resampler is not None:
            self._append_16k(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        self.finished = True
        total = num_mel_columns(self.num_samples_16k)
        self._buffer = np.concatenate([self._buffer, np.zeros(N_FFT // 2)])  # the right padding
        self._compute_until(total)

    def _append_16k(self, samples: np.ndarray) -> None:
        if len(samples) == 0:
            return
        emphasised = _preemphasis(samples, self._previous)
        self._previous = float(samples[-1])
        self.num_samples_16k += len(samples)
        self._buffer = np.concatenate([self._buffer, emphasised])
        # Column t reads padded samples [t*HOP, t*HOP + N_FFT): padded length is num_samples + 400.
        ready = (self.num_samples_16k + N_FFT // 2 - N_FFT) // HOP + 1
        self._compute_until(ready)

    def _compute_until(self, stop: int) -> None:
        count = stop - self.num_columns
        if count <= 0:
            return
        offset = self.num_columns * HOP - self._buffer_start
        new = _columns_from_padded(self._buffer[offset:], count)
        self._store(new)
        self.num_columns = stop
        drop = self.num_columns * HOP - self._buffer_start  # the next column starts here
        self._buffer = self._buffer[drop:].copy() if drop > 0 else self._buffer
        self._buffer_start += max(drop, 0)

    def _store(self, new: np.ndarray) -> None:
        used = self.num_columns - self._first_kept
        if used + new.shape[1] > self._mel.shape[1]:
            grown = np.zeros((NUM_MELS, max(2 * self._mel.shape[1], used + new.shape[1])), dtype=np.float32)
            grown[:, :used] = self._mel[:, :used]
            self._mel = grown
        self._mel[:, used : used + new.shape[1]] = new

    def columns(self, start: int, stop: int) -> np.ndarray:
        """Final columns start..stop-1 as a new (80, stop - start) float32 array."""
        if not self._first_kept <= start <= stop <= self.num_columns:
            raise ValueError(
                f"columns({start}, {stop}) is outside the final columns "
                f"[{self._first_kept}, {self.num_columns}); wait for more audio or call finish()"
            )
        return self._mel[:, start - self._first_kept : stop - self._first_kept].copy()

    def discard_before(self, column: int) -> None:
        """Free the columns before `column` (a long session keeps memory bounded)."""
        column = min(column, self.num_columns)
        if column <= self._first_kept:
            return
        used = self.num_columns - self._first_kept
        shift = column - self._first_kept
        self._mel[:, : used - shift] = self._mel[:, shift:used]
        self._first_kept = column

    def window(self, frame_index: int, fps: float) -> np.ndarray | None:
        """Video frame `frame_index`'s (80, 16) window by the official rule, or None while its audio is
        not in yet. After `finish`, a frame whose window overruns the end gets the last 16 columns; frames
        past the official frame count raise IndexError."""
        start = mel_window_start(frame_index, fps)
        if start + MEL_STEP <= self.num_columns:
            return self.columns(start, start + MEL_STEP)
        if not self.finished:
            return None
        if frame_index >= self.num_frames(fps):
            raise IndexError(
                f"frame {frame_index} is past the last frame ({self.num_frames(fps) - 1}) of this "
                f"audio at {fps} fps"
            )
        return self.columns(self.num_columns - MEL_STEP, self.num_columns)

    def num_frames(self, fps: float) -> int:
        """Video frames of the whole audio, as the official inference counts them (after `finish`)."""
        if not self.finished:
            raise RuntimeError("num_frames is known only after finish()")
        return len(mel_chunk_starts(self.num_columns, fps))
