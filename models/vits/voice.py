"""Voices: a loaded VITS model with its text frontend; text in, float32 samples and phoneme timings out."""

from __future__ import annotations

import logging
import math
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..synthesis import SynthesisDefaults, SynthesisOptions
from .bf16 import Bf16Decoder, check_precision
from .errors import UnknownSpeakerError, VoiceError
from .frontend import Clause
from .onnx_runtime import OnnxVoiceRuntime
from .runtimes import resolve_runtime
from .synthesizer import Prior, SynthesizerTrn, TextStats
from .words import WordSpan, word_spans

_LOGGER = logging.getLogger(__name__)

# Decode the first window small so the first samples come early (4 frames, ~46 ms at 22 kHz: the flow gets
# 47 frames and the decoder 15, and both cut their later layers down towards the 4 kept), later windows
# growing fast: every window recomputes its neighbours' context, so fewer windows is less work (the
# schedules compared: bench/FIGURES.md).
FIRST_CHUNK_FRAMES = 4
CHUNK_GROWTH = 8
CHUNK_FRAMES = 256
FLOW_SEGMENT_FRAMES = 384


@dataclass(frozen=True)
class PhonemeSpan:
    phoneme: str
    """The voice's symbol (espeak IPA for Piper / official voices; a pinyin initial or final for Mandarin)."""
    start_sample: int
    """Relative to the start of the clause's audio, at the voice's sample rate."""
    end_sample: int
    """Exclusive; spans are contiguous and cover [0, num_samples)."""


@dataclass(frozen=True)
class Speech:
    audio: np.ndarray
    """float32 mono samples in [-1, 1]."""
    phonemes: list[PhonemeSpan]
    sample_rate: int


class SpeechStream:
    """One clause being synthesized: phonemes and length known up front, audio decoded window by window."""

    def __init__(
        self,
        voice: Voice,
        priors: list[Prior],
        phonemes: list[PhonemeSpan],
        num_samples: int,
        chunked: bool = True,
    ) -> None:
        self._voice = voice
        self._chunked = chunked
        self._priors: list[Prior] | None = priors
        self.phonemes = phonemes
        self.num_samples = num_samples
        self.sample_rate = voice.sample_rate

    def __iter__(self) -> Iterator[np.ndarray]:
        priors = self._priors
        if priors is None:
            return
        for prior in priors:
            for chunk in self._voice._decode(prior, self._chunked):
                if self._priors is None:  # closed meanwhile
                    return
                yield chunk

    def close(self) -> None:
        """Stop early: later iteration yields nothing and the latents are freed."""
        self._priors = None


class Voice:
    """A VITS voice shared by all sessions; every method may be called from several threads at once."""

    def __init__(
        self,
        *,
        name: str,
        format: str,
        model: SynthesizerTrn,
        frontend: Callable[[str], list[Clause]],
        sample_rate: int,
        speakers: Mapping[str, int],
        languages: Sequence[str],
        defaults: SynthesisDefaults,
        device: torch.device,
        runtime: str = "torch",
        threads: int | None = None,
        precision: str = "fp32",
    ) -> None:
        self.name = name
        self.format = format
        self.model = model
        self.frontend = frontend
        self.sample_rate = sample_rate
        self.speaker_ids = dict(speakers)
        self.speakers = list(speakers)
        self.languages = list(languages)
        self.defaults = defaults
        self.device = device
        self.hop_length = model.hop_length
        self.context_frames = model.decoder_context_frames
        self._reported: set[str] = set()
        self._report_lock = threading.Lock()
        self.runtime = resolve_runtime(runtime, device)
        self._onnx = OnnxVoiceRuntime(model, threads) if self.runtime == "onnxruntime" else None
        check_precision(precision, device)
        self.precision = precision
        self._bf16 = None
        if precision == "bf16":
            g = model.speaker_embedding(next(iter(self.speaker_ids.values()), None))
            self._bf16 = Bf16Decoder(model.dec, conditioned=g is not None, threads=threads)
            # oneDNN builds its kernels at a shape's first call: the stream's first windows' before a listener
            # waits for them.
            silence = torch.zeros(1, model.config.inter_channels, 2 * CHUNK_FRAMES, device=device)
            with torch.inference_mode():
                for _ in self._decode(Prior(silence, torch.zeros(0, dtype=torch.long), g), chunked=True):
                    pass

    def __repr__(self) -> str:
        return (
            f"Voice(name={self.name!r}, format={self.format!r}, sample_rate={self.sample_rate}, "
            f"runtime={self.runtime!r}, precision={self.precision!r})"
        )

    # --- public API ------------------------------------------------------------------------------

    def synthesize(
        self,
        text: str,
        options: SynthesisOptions | None = None,
        *,
        speaker: str | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_scale_w: float | None = None,
    ) -> Speech:
        """The whole speech of `text`. `options`, or its fields as keywords; None = the voice's own value."""
        chosen = _options(options, speaker, length_scale, noise_scale, noise_scale_w)
        # One flow and decoder call per sentence: the fastest way to the whole clause.
        stream = self._stream(text, chosen, chunked=False)
        chunks = list(stream)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return Speech(audio=audio, phonemes=stream.phonemes, sample_rate=self.sample_rate)

    def synthesize_stream(
        self,
        text: str,
        options: SynthesisOptions | None = None,
        *,
        speaker: str | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_scale_w: float | None = None,
    ) -> SpeechStream:
        """Phonemes and length at once (the text side runs here); audio decoded as the stream is iterated.
        `options`, or its fields as keywords."""
        chosen = _options(options, speaker, length_scale, noise_scale, noise_scale_w)
        return self._stream(text, chosen, chunked=True)

    def words(self, text: str, phonemes: Sequence[PhonemeSpan]) -> list[WordSpan]:
        """The words of ``text`` (what was given to ``synthesize``) timed by its phoneme spans: its words for
        alphabetic scripts, its characters for CJK (``lipstream.models.vits.words``)."""
        return word_spans(text, phonemes, self._word_symbols)

    # --- internals -------------------------------------------------------------------------------

    def _word_symbols(self, word: str) -> list[str]:
        return [t.label for c in self.frontend(word) for t in c.tokens if t.label is not None]

    def _stream(self, text: str, options: SynthesisOptions, chunked: bool) -> SpeechStream:
        speaker_id = self._speaker_id(options.speaker)
        scales = self._scales(options)
        clauses = self._clauses(text)
        priors: list[Prior] = []
        phonemes: list[PhonemeSpan] = []
        offset = 0
        with torch.inference_mode():
            for clause in clauses:
                ids = torch.tensor([clause.ids], dtype=torch.long, device=self.device)
                prior = self.model.prior(
                    ids,
                    speaker_id,
                    noise_scale=scales.noise_scale,
                    length_scale=scales.length_scale,
                    noise_scale_w=scales.noise_scale_w,
                    text_stats=self._text_stats(),
                )
                priors.append(prior)
                frames = int(prior.z_p.size(2))
                phonemes.extend(_spans(clause, prior.durations.tolist(), self.hop_length, offset, frames))
                offset += frames * self.hop_length
        return SpeechStream(self, priors, phonemes, offset, chunked)

    def _speaker_id(self, speaker: str | None) -> int | None:
        if not self.speaker_ids:
            if speaker:
                raise UnknownSpeakerError(
                    f"voice {self.name!r} has a single speaker; leave the speaker empty (got {speaker!r})"
                )
            return None
        if speaker is None or speaker == "":
            return next(iter(self.speaker_ids.values()))
        if speaker in self.speaker_ids:
            return self.speaker_ids[speaker]
        names = self.speakers
        listed = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
        raise UnknownSpeakerError(f"voice {self.name!r} has no speaker {speaker!r}; its speakers: {listed}")

    def _scales(self, options: SynthesisOptions) -> SynthesisDefaults:
        """The scales to use, checked: raises VoiceError naming a value out of range."""
        def pick(value: float | None, default: float) -> float:
            return default if value is None else float(value)

        d = self.defaults
        resolved = SynthesisDefaults(
            length_scale=pick(options.length_scale, d.length_scale),
            noise_scale=pick(options.noise_scale, d.noise_scale),
            noise_scale_w=pick(options.noise_scale_w, d.noise_scale_w),
        )
        if not (0.05 <= resolved.length_scale <= 20.0) or not math.isfinite(resolved.length_scale):
            raise VoiceError(
                f"length_scale {options.length_scale!r} is out of range: use 0.05..20 (1 is normal speed)"
            )
        for label in ("noise_scale", "noise_scale_w"):
            value = getattr(resolved, label)
            if not (0.0 <= value <= 10.0) or not math.isfinite(value):
                raise VoiceError(f"{label} {value!r} is out of range: use 0..10 (0 is deterministic)")
        return resolved

    def _clauses(self, text: str) -> list[Clause]:
        if not any(unicodedata.category(c)[0] in "LN" for c in text):
            return []  # empty or punctuation only: nothing to say
        clauses = [c for c in self.frontend(text) if any(t.label is not None for t in c.tokens)]
        skipped = set().union(*(c.skipped for c in clauses)) if clauses else set()
        with self._report_lock:
            new = sorted(skipped - self._reported)
            self._reported.update(new)
        if new:
            _LOGGER.warning(
                "voice %s: skipping symbols it cannot say: %s", self.name, " ".join(repr(c) for c in new)
            )
        return clauses

    def _text_stats(self) -> TextStats | None:
        return self._onnx.text_stats if self._onnx is not None else None

    def _flow_and_decoder(
        self, g: torch.Tensor | None
    ) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
        """latent(z_p, g, keep) and decode(z, g, keep) of the runtime that serves this conditioning."""
        onnx = self._onnx
        latent, decode = self.model.latent, self.model.decode
        if onnx is not None and (g is not None or not onnx.conditioned):
            latent, decode = onnx.latent, onnx.decode
        return latent, self._bf16.decode if self._bf16 is not None else decode

    def _decode(self, prior: Prior, chunked: bool) -> Iterator[np.ndarray]:
        """Flow and decoder, one piece or in growing windows.

        Both networks are convolutional: a window computed with enough real neighbours each side
        (`context_frames` for the decoder, `flow_context_frames` for the flow) equals the same frames of
        a one-piece run, so the pieces join without a seam; each network is told which frames are kept, and
        computes its later layers only as far as they reach. The first window is small so that the first
        samples come early; later ones grow (fewer calls, and each arrives before the previous has played).
        """
        z_p, g = prior.z_p, prior.g
        latent, decode = self._flow_and_decoder(g)
        frames = z_p.size(2)
        if not chunked:
            with torch.inference_mode():
                yield decode(latent(z_p, g), g).float().cpu().numpy()
            return
        dec_ctx, flow_ctx = self.context_frames, self.model.flow_context_frames
        multiple = self._bf16.frames_multiple if self._bf16 is not None else 1
        z = z_p[:, :, :0]
        z_lo = z_hi = 0  # z holds the latent of frames [z_lo, z_hi)
        start, size, previous = 0, FIRST_CHUNK_FRAMES, 0
        while start < frames:
            stop = min(frames, start + size)
            if frames - stop < size // 2:  # no tiny last window
                stop = frames
            # The last window may begin earlier, its length a multiple of `multiple` (a decoder that builds
            # kernels per shape then sees few shapes), as far back as the window before it (z still holds
            # that); the frames decoded again are dropped.
            begin = start
            if stop == frames and start > 0:
                begin = max(previous, stop - -(-(stop - start) // multiple) * multiple)  # rounded up
            lo, hi = max(0, begin - dec_ctx), min(frames, stop + dec_ctx)
            with torch.inference_mode():
                if hi > z_hi:
                    # Run the flow over a segment ahead (first window: just what it needs), from where the
                    # latent so far ends: windows move forward, so what they still need of it is kept.
                    # Segments grow with the windows, so no window waits for a long flow run.
                    ahead = min(FLOW_SEGMENT_FRAMES, 4 * size) if start else 0
                    first, end = max(z_hi, lo), min(frames, max(hi, lo + ahead))
                    a, b = max(0, first - flow_ctx), min(frames, end + flow_ctx)
                    fresh = latent(z_p[:, :, a:b], g, torch.tensor([first - a, end - a]))
                    z = torch.cat([z[:, :, lo - z_lo :], fresh], dim=2)
                    z_lo, z_hi = lo, end
                audio = decode(z[:, :, lo - z_lo : hi - z_lo], g, torch.tensor([begin - lo, stop - lo]))
            yield audio[(start - begin) * self.hop_length :].float().cpu().numpy()
            start, previous = stop, start
            size = min(CHUNK_GROWTH * size, CHUNK_FRAMES)


def _options(
    options: SynthesisOptions | None,
    speaker: str | None,
    length_scale: float | None,
    noise_scale: float | None,
    noise_scale_w: float | None,
) -> SynthesisOptions:
    keywords = SynthesisOptions(speaker, length_scale, noise_scale, noise_scale_w)
    if options is None:
        return keywords
    if keywords != SynthesisOptions():
        raise TypeError("give options=SynthesisOptions(...) or the keywords, not both")
    return options


def _spans(clause: Clause, durations: list[int], hop: int, offset: int, frames: int) -> list[PhonemeSpan]:
    """Per-token sample spans; padding tokens join the phoneme before them (the first one, the one after)."""
    labelled: list[list[Any]] = []  # [label, frames]
    pending = 0
    i = 0
    for token in clause.tokens:
        n = sum(durations[i : i + len(token.ids)])
        i += len(token.ids)
        if token.label is None:
            if labelled:
                labelled[-1][1] += n
            else:
                pending += n
        else:
            labelled.append([token.label, n + pending])
            pending = 0
    if not labelled:
        return []
    labelled[-1][1] += pending
    # The model keeps at least one frame even when every duration rounds to zero.
    labelled[-1][1] += frames - sum(n for _, n in labelled)
    spans: list[PhonemeSpan] = []
    position = offset
    for label, n in labelled:
        if n <= 0:
            continue
        spans.append(PhonemeSpan(label, position, position + n * hop))
        position += n * hop
    return spans
