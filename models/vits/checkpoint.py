"""Reading weights: official / fast-fine-tuning `.pth` checkpoints and Piper `.onnx` exports.

Every failure raises `CheckpointError` naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .synthesizer import ModelConfig, SynthesizerTrn

_LOGGER = logging.getLogger(__name__)

# Keys only training uses; a file without them (an inference export) still loads.
TRAINING_ONLY_PREFIXES = ("enc_q.", "dp.post_")


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as exc:
        raise CheckpointError(f"config {path} does not exist; put the voice's config JSON beside it") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"config {path} is not valid JSON ({exc}); restore it from the voice") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"config {path} must hold a JSON object, not {type(data).__name__}")
    return data


def read_torch_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The generator's state dict of a `{'model': ..., 'iteration', ...}` file (or a bare state dict)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist") from exc
    except Exception as exc:  # torch raises many types for truncated / corrupt zip or pickle data
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
            "the file is corrupt or truncated: download or copy it again"
        ) from exc
    if isinstance(data, Mapping) and "model" in data and isinstance(data["model"], Mapping):
        data = data["model"]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(
            f"checkpoint {path} holds no state dict: expected {{'model': state_dict, ...}} as VITS saves it"
        )
    # A DataParallel-wrapped model saved as it was.
    return {re.sub(r"^module\.", "", k): v for k, v in data.items()}


def load_state_dict_checked(
    model: SynthesizerTrn,
    state_dict: Mapping[str, torch.Tensor],
    path: Path,
    allow_missing: tuple[str, ...] = TRAINING_ONLY_PREFIXES,
) -> None:
    """Copy `state_dict` into `model`, listing missing / unexpected keys and shape mismatches by name."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    fatal_missing = [k for k in missing if not k.startswith(allow_missing)]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if fatal_missing:
        problems.append(f"{len(fatal_missing)} missing keys ({_some(fatal_missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_some(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({_some(mismatched)})")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model its config describes: "
            + "; ".join(problems)
            + ". Check that the config JSON is the one the checkpoint was trained with."
        )
    if missing:
        # Expected of every voice file (speaking never uses them): at INFO it read as an error.
        _LOGGER.debug(
            "%s: %d training-only tensors not in the file (not used to speak): %s",
            path, len(missing), _some(missing),
        )
    # The model may be built on the meta device (fast): absent training-only tensors become zeros.
    merged = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in expected.items() if k not in state_dict}
    merged.update({k: v.to(expected[k].dtype) for k, v in state_dict.items()})
    model.load_state_dict(merged, strict=True, assign=True)


def _some(items: list[str], limit: int = 6) -> str:
    head = ", ".join(items[:limit])
    return head + (f", ... {len(items) - limit} more" if len(items) > limit else "")


# --- Piper ONNX ----------------------------------------------------------------------------------


def cache_dir() -> Path:
    base = os.environ.get("LIPSTREAM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lipstream"
    )
    return Path(base) / "vits"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weight_norm_keys(model: SynthesizerTrn) -> set[str]:
    return {k[: -len("_g")] for k in model.state_dict() if k.endswith(".weight_g")}


def plain_to_weight_norm(
    state_dict: Mapping[str, torch.Tensor], model: SynthesizerTrn
) -> dict[str, torch.Tensor]:
    """Export-style plain `weight` tensors -> the `weight_g` / `weight_v` pair the model holds."""
    normed = _weight_norm_keys(model)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in normed:
            out[key + "_g"] = value.flatten(1).norm(dim=1).view(-1, *([1] * (value.dim() - 1)))
            out[key + "_v"] = value
        else:
            out[key] = value
    return out


def _onnx_config(
    initializers: Mapping[str, torch.Tensor], nodes: Mapping[str, Any], path: Path
) -> ModelConfig:
    """The hyperparameters, read back from the weight shapes and the Conv nodes' attributes."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in initializers:
            raise CheckpointError(f"Piper model {path} lacks the weight {key!r}: not a VITS export")
        return tuple(initializers[key].shape)

    def attribute(node_name: str, attr: str) -> list[int]:
        node = nodes.get(node_name)
        if node is None:
            raise CheckpointError(f"Piper model {path} has no node {node_name!r}: not a Piper VITS export")
        for a in node.attribute:
            if a.name == attr:
                return list(a.ints)
        raise CheckpointError(f"Piper model {path}: node {node_name!r} has no {attr!r}")

    n_vocab, hidden = shape("sid")
    k_channels = shape("enc_p.encoder.attn_layers.0.emb_rel_k")[2]
    filter_channels, _, kernel_size = shape("enc_p.encoder.ffn_layers.0.conv_1.weight")
    n_layers = len(
        {m.group(1) for k in initializers if (m := re.match(r"enc_p\.encoder\.attn_layers\.(\d+)\.", k))}
    )
    inter = shape("enc_p.proj.weight")[0] // 2
    resblock = "2" if "dec.resblocks.0.convs.0.weight" in initializers else "1"
    n_ups = len({m.group(1) for k in initializers if (m := re.match(r"dec\.ups\.(\d+)\.", k))})
    upsample_kernels = tuple(shape(f"dec.ups.{i}.weight")[2] for i in range(n_ups))
    upsample_rates = tuple(attribute(f"/dec/ups.{i}/ConvTranspose", "strides")[0] for i in range(n_ups))
    n_blocks = len({m.group(1) for k in initializers if (m := re.match(r"dec\.resblocks\.(\d+)\.", k))})
    num_kernels = n_blocks // n_ups
    conv_name = "convs" if resblock == "2" else "convs1"
    kernels, dilations = [], []
    for j in range(num_kernels):
        kernels.append(shape(f"dec.resblocks.{j}.{conv_name}.0.weight")[2])
        count = len(
            {
                m.group(1)
                for k in initializers
                if (m := re.match(rf"dec\.resblocks\.{j}\.{conv_name}\.(\d+)\.", k))
            }
        )
        dilations.append(
            tuple(attribute(f"/dec/resblocks.{j}/{conv_name}.{i}/Conv", "dilations")[0] for i in range(count))
        )
    n_flows = len({m.group(1) for k in initializers if (m := re.match(r"flow\.flows\.(\d+)\.pre\.", k))})
    flow_layers = len(
        {m.group(1) for k in initializers if (m := re.match(r"flow\.flows\.0\.enc\.in_layers\.(\d+)\.", k))}
    )
    n_speakers, gin = shape("emb_g.weight") if "emb_g.weight" in initializers else (0, 0)
    return ModelConfig(
        n_vocab=n_vocab,
        inter_channels=inter,
        hidden_channels=hidden,
        filter_channels=filter_channels,
        n_heads=hidden // k_channels,
        n_layers=n_layers,
        kernel_size=kernel_size,
        p_dropout=0.0,
        resblock=resblock,
        resblock_kernel_sizes=tuple(kernels),
        resblock_dilation_sizes=tuple(dilations),
        upsample_rates=upsample_rates,
        upsample_initial_channel=shape("dec.conv_pre.weight")[0],
        upsample_kernel_sizes=upsample_kernels,
        n_speakers=n_speakers,
        gin_channels=gin,
        use_sdp="dp.flows.0.m" in initializers,
        n_flows=n_flows,
        flow_n_layers=flow_layers,
    )


def _import_onnx(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise CheckpointError(f"importing the Piper model {path} needs onnx: pip install onnx") from exc
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:
        raise CheckpointError(
            f"Piper model {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
            "the file is corrupt or truncated: download it again"
        ) from exc
    initializers = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    config = _onnx_config(initializers, nodes, path)

    state: dict[str, torch.Tensor] = {}
    for key, value in initializers.items():
        if key.startswith(("enc_p.", "dp.", "flow.", "dec.", "emb_g.")):
            state[key] = value
    state["enc_p.emb.weight"] = initializers["sid"]
    # The flow's WaveNet weights lost their names in the export: the Conv node that consumes each names it.
    for node in graph.node:
        match = re.fullmatch(r"/(flow/flows\.\d+/enc/(?:in_layers|res_skip_layers)\.\d+)/Conv", node.name)
        if match and node.op_type == "Conv" and node.input[1] in initializers:
            state[match.group(1).replace("/", ".") + ".weight"] = initializers[node.input[1]]
    # The first affine flow of the duration predictor is folded to exp(-logs).
    folded = initializers.get("/dp/flows.0/Exp_output_0")
    if folded is not None and "dp.flows.0.logs" not in state:
        state["dp.flows.0.logs"] = -torch.log(folded).reshape(2, 1)
    return config, state


def load_piper_weights(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The imported (config, state dict) of a Piper `.onnx`, cached by content hash."""
    digest = file_sha256(path)
    cached = cache_dir() / f"piper-{digest[:32]}.pt"
    if cached.exists():
        try:
            data = torch.load(cached, map_location="cpu", weights_only=True)
            config = ModelConfig(**{k: _tuples(v) for k, v in data["config"].items()})
            return config, data["state_dict"]
        except Exception as exc:  # a broken cache entry is rebuilt, never fatal
            _LOGGER.warning("ignoring unreadable cache %s (%s)", cached, exc)
    config, state = _import_onnx(path)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        torch.save({"config": asdict(config), "state_dict": state}, tmp)
        os.replace(tmp, cached)
    except OSError as exc:
        _LOGGER.warning("cannot cache the imported weights of %s at %s: %s", path, cached, exc)
    return config, state


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def piper_allowed_missing(config: ModelConfig) -> tuple[str, ...]:
    # The export drops the training-only parts and the first ConvFlow of the duration predictor
    # (skipped at inference).
    return (*TRAINING_ONLY_PREFIXES, "dp.flows.1.")
