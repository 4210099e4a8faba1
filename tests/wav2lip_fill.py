"""The deterministic Wav2Lip weight-fill rule of tests/data/conformance/wav2lip/README.md, section 3.

Other tests use it to write a checkpoint in the official layout without the real (unshippable) weights.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

CONFORMANCE = Path(__file__).parent / "data" / "conformance" / "wav2lip"


def state_dict_entries() -> list[dict]:
    """The 352 entries of state_dict.json, in the official registration order."""
    return json.loads((CONFORMANCE / "state_dict.json").read_text())["entries"]


def fill_tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The synthetic tensor for key `name` (no `module.`): one seeded draw, float64 math, float32 cast."""
    if name.endswith("num_batches_tracked"):
        return np.zeros((), dtype=np.int64)
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    if name.endswith("running_mean"):
        value = rng.standard_normal(shape) * 0.1
    elif name.endswith("running_var"):
        value = 1.0 + 0.5 * rng.random(shape)
    elif len(shape) == 4:
        scale = 1.15 / math.sqrt(shape[1] * shape[2] * shape[3])
        value = rng.standard_normal(shape) * scale
    elif name.endswith("conv_block.1.weight"):
        value = 1.0 + rng.standard_normal(shape) * 0.1
    elif name.endswith("conv_block.1.bias"):
        value = rng.standard_normal(shape) * 0.1
    elif name.endswith(".bias"):
        value = rng.standard_normal(shape) * 0.01
    else:
        raise ValueError(f"no fill rule for {name!r} of shape {shape}")
    return value.astype(np.float32)


def fill_state_dict() -> dict[str, torch.Tensor]:
    """Every tensor of the generator filled by the rule, keyed as in the official state_dict (no prefix)."""
    return {
        e["name"]: torch.from_numpy(fill_tensor(e["name"], tuple(e["shape"]))) for e in state_dict_entries()
    }


def write_official_checkpoint(path: str | Path, *, with_optimizer: bool = True) -> Path:
    """Write `path` as the official training scripts do: a DataParallel (`module.`) state_dict, the Adam
    optimizer state, global_step and global_epoch."""
    state = {f"module.{k}": v for k, v in fill_state_dict().items()}
    optimizer = None
    if with_optimizer:
        params = [v for k, v in state.items() if v.dtype == torch.float32 and "running_" not in k]
        optimizer = {
            "state": {
                i: {
                    "step": torch.tensor(3.0),
                    "exp_avg": torch.zeros_like(p),
                    "exp_avg_sq": torch.zeros_like(p),
                }
                for i, p in enumerate(params[:4])
            },
            "param_groups": [
                {
                    "lr": 1e-4,
                    "betas": (0.9, 0.999),
                    "eps": 1e-8,
                    "weight_decay": 0,
                    "amsgrad": False,
                    "params": list(range(len(params))),
                }
            ],
        }
    torch.save({"state_dict": state, "optimizer": optimizer, "global_step": 3, "global_epoch": 1}, path)
    return Path(path)
