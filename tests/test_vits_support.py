"""Shared helpers of the VITS tests: tiny configs, a deterministic weight fill, checkpoints written the way
each upstream project writes them. (No tests here.)"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
from lipstream.models.vits import OFFICIAL_SYMBOLS, ModelConfig, SynthesizerTrn

CONFORMANCE = Path(__file__).parent / "data" / "conformance" / "vits"

# A VITS config.json as upstream writes it, with tiny hidden sizes so tests run fast (hop stays 256).
TINY_MODEL: dict[str, Any] = {
    "inter_channels": 8,
    "hidden_channels": 16,
    "filter_channels": 32,
    "n_heads": 2,
    "n_layers": 2,
    "kernel_size": 3,
    "p_dropout": 0.1,
    "resblock": "1",
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "upsample_rates": [8, 8, 4],
    "upsample_initial_channel": 32,
    "upsample_kernel_sizes": [16, 16, 8],
    "n_layers_q": 3,
    "use_spectral_norm": False,
}
TINY_DATA: dict[str, Any] = {
    "training_files": "filelists/train.txt",
    "validation_files": "filelists/val.txt",
    "text_cleaners": ["english_cleaners2"],
    "max_wav_value": 32768.0,
    "sampling_rate": 22050,
    "filter_length": 1024,
    "hop_length": 256,
    "win_length": 1024,
    "n_mel_channels": 80,
    "mel_fmin": 0.0,
    "mel_fmax": None,
    "add_blank": True,
    "n_speakers": 0,
    "cleaned_text": True,
}
TRAIN: dict[str, Any] = {
    "log_interval": 200,
    "eval_interval": 1000,
    "seed": 1234,
    "epochs": 20000,
    "learning_rate": 0.0002,
    "betas": [0.8, 0.99],
    "eps": 1e-09,
    "batch_size": 64,
    "fp16_run": True,
    "lr_decay": 0.999875,
    "segment_size": 8192,
}


def official_config(n_speakers: int = 0) -> dict[str, Any]:
    data = dict(TINY_DATA, n_speakers=n_speakers)
    model = dict(TINY_MODEL, gin_channels=8) if n_speakers else dict(TINY_MODEL)
    return {"train": TRAIN, "data": data, "model": model}


def fast_fine_tuning_config(conformance_file: str, speakers: dict[str, int]) -> dict[str, Any]:
    """A shipped fast-fine-tuning config (symbols, cleaners) with tiny sizes and a small speaker table."""
    shipped = json.loads((CONFORMANCE / conformance_file).read_text(encoding="utf-8"))["config"]
    config = copy.deepcopy(shipped)
    config["model"] = dict(TINY_MODEL, gin_channels=8)
    config["data"]["n_speakers"] = len(speakers)
    config["speakers"] = speakers
    return config


def fill_(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Deterministic weights: entry i of the state dict gets 0.1 * sin(0.37 * k + i) over its elements k,
    divided by sqrt(fan-in) for weights; norms' gamma and weight-norm gains sit near 1 and 0.5."""
    state = {}
    for i, (name, tensor) in enumerate(model.state_dict().items()):
        k = torch.arange(tensor.numel(), dtype=torch.float64)
        wave = torch.sin(0.37 * k + i).reshape(tensor.shape)
        if name.endswith("gamma"):
            value = 1.0 + 0.1 * wave
        elif name.endswith("weight_g"):
            value = 0.5 + 0.1 * wave
        elif tensor.dim() >= 2:
            fan_in = tensor[0].numel()
            value = 0.5 * wave / math.sqrt(fan_in)
        else:
            value = 0.1 * wave
        state[name] = value.to(tensor.dtype)
    model.load_state_dict(state)
    return state


def tiny_model(config: dict[str, Any], n_vocab: int) -> SynthesizerTrn:
    data = config["data"]
    model_config = ModelConfig.from_dict(
        config["model"], n_vocab, data["filter_length"] // 2 + 1, data["n_speakers"]
    )
    return SynthesizerTrn(model_config)


def save_upstream_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> None:
    """As VITS's utils.save_checkpoint writes it."""
    torch.save(
        {
            "model": state,
            "iteration": 100,
            "optimizer": {"state": {}, "param_groups": []},
            "learning_rate": 0.0002,
        },
        path,
    )


def write_official_voice(folder: Path, n_speakers: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    config = official_config(n_speakers)
    model = tiny_model(config, len(OFFICIAL_SYMBOLS))
    state = fill_(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    path = folder / "G_100.pth"
    save_upstream_checkpoint(path, state)
    return path, state


def write_fast_fine_tuning_voice(
    folder: Path, conformance_file: str, speakers: dict[str, int]
) -> tuple[Path, dict[str, torch.Tensor]]:
    config = fast_fine_tuning_config(conformance_file, speakers)
    model = tiny_model(config, len(config["symbols"]))
    state = fill_(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "finetune_speaker.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    path = folder / "G_latest.pth"
    save_upstream_checkpoint(path, state)
    return path, state


def snr_db(reference: Any, actual: Any) -> float:
    import numpy as np

    reference = np.asarray(reference, dtype=np.float64)
    error = np.asarray(actual, dtype=np.float64) - reference
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum(error**2), 1e-30)))
