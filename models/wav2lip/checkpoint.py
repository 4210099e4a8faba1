"""Loading `wav2lip.pth` / `wav2lip_gan.pth`: the official training-script file or a bare state dict.

Anything else (the SyncNet expert, the quality discriminator, a VITS checkpoint, a truncated download,
a file that is not a torch file at all) is refused with a `Wav2LipCheckpointError` that says what the
file looks like and what was expected.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from .model import Wav2Lip

log = logging.getLogger(__name__)

EXPECTED = (
    "the Wav2Lip generator checkpoint (wav2lip.pth or wav2lip_gan.pth from Rudrabha/Wav2Lip: a dict "
    "with the generator weights under 'state_dict'), or a bare generator state dict"
)


class Wav2LipCheckpointError(ValueError):
    """The file is not a loadable Wav2Lip generator checkpoint; the message names the file and the fix."""


def _describe_bytes(path: Path) -> str:
    """What a file that torch cannot read looks like, from its first bytes."""
    size = path.stat().st_size
    head = path.read_bytes()[:64] if size else b""
    if size == 0:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path):
                pass
        except zipfile.BadZipFile:
            return f"a truncated or damaged zip/torch archive ({size:,} bytes: the download did not finish)"
        return f"a zip archive of {size:,} bytes that is not a torch checkpoint"
    if head.startswith(b"\x80") and size < 1024:
        return f"a pickle of only {size:,} bytes"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return f"a JSON/text file ({size:,} bytes), perhaps a model config rather than weights"
    if stripped[:1] == b"<":
        return f"an HTML/XML page ({size:,} bytes): the download probably saved an error or login page"
    if head.startswith(b"RIFF"):
        return f"a RIFF/WAV audio file ({size:,} bytes)"
    if b"onnx" in head.lower() or head[:2] == b"\x08\x07" or head[:2] == b"\x08\x08":
        return f"an ONNX model ({size:,} bytes)"
    return f"a {size:,}-byte file starting with {head[:16]!r}"


def _read(path: Path) -> object:
    if not path.is_file():
        raise Wav2LipCheckpointError(
            f"Wav2Lip checkpoint {str(path)!r} does not exist or is not a file; expected {EXPECTED}."
        )
    with path.open("rb") as handle:
        head = handle.read(4)
    # torch files are zip archives (torch >= 1.6) or a legacy pickle stream (protocol byte 0x80).
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise Wav2LipCheckpointError(
            f"{str(path)!r} is not a torch file: it looks like {_describe_bytes(path)}; expected {EXPECTED}."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Wav2LipCheckpointError(
            f"{str(path)!r} holds pickled Python objects other than tensors and plain containers "
            f"({first[:200]}); it is not {EXPECTED}. Refusing to execute them."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError):
        raise Wav2LipCheckpointError(
            f"{str(path)!r} cannot be read by torch.load: it looks like "
            f"{_describe_bytes(path)}; expected {EXPECTED}."
        ) from None


def _looks_like(keys: list[str]) -> str:
    """Names the model a state dict belongs to, from its key names."""
    names = {k.replace("module.", "") for k in keys}
    prefixes = {k.split(".")[0] for k in names}
    if {"face_encoder", "audio_encoder"} <= prefixes and "face_decoder_blocks" not in prefixes:
        return "the SyncNet lip-sync expert (lipsync_expert.pth), used only for training"
    if "binary_pred" in prefixes:
        return "the Wav2Lip visual-quality discriminator (disc_*.pth), used only for training"
    if {"enc_p", "dec"} & prefixes or any(k.startswith(("enc_q.", "flow.", "dp.")) for k in names):
        return "a VITS text-to-speech generator (G_*.pth)"
    shown = ", ".join(sorted(prefixes)[:8])
    return f"an unknown model whose keys start with: {shown}"


def _state_dict_of(path: Path, obj: object) -> dict[str, torch.Tensor]:
    """The generator's tensors from the official dict (`state_dict`, optimizer, step, epoch) or a bare one."""
    if not isinstance(obj, Mapping):
        raise Wav2LipCheckpointError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a dict of tensors; expected {EXPECTED}."
        )
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        state = obj["state_dict"]
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        top = ", ".join(repr(k) for k in list(obj)[:8])
        hint = ""
        if "model" in obj and isinstance(obj["model"], Mapping):
            hint = f" The weights under 'model' look like {_looks_like([str(k) for k in obj['model']])}."
        raise Wav2LipCheckpointError(
            f"{str(path)!r} is a dict with keys {top} and no 'state_dict' of tensors.{hint} "
            f"Expected {EXPECTED}."
        )
    keys = [str(k) for k in state]
    # DataParallel saves `module.<name>`; the official loaders delete that substring from every key.
    return {k.replace("module.", ""): v for k, v in zip(keys, state.values(), strict=True)}


def load_state_dict_checked(model: Wav2Lip, state: dict[str, torch.Tensor], path: Path) -> None:
    """`load_state_dict(strict=True)`, but every missing/unexpected key and shape mismatch is named."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if len(missing) > len(own) // 2:
        raise Wav2LipCheckpointError(
            f"{str(path)!r} looks like {_looks_like(list(state))}, not the Wav2Lip "
            f"generator ({len(missing)} of {len(own)} generator tensors are missing); "
            f"expected {EXPECTED}."
        )
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {', '.join(missing[:6])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {', '.join(unexpected[:6])}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches: {'; '.join(wrong[:4])}")
        raise Wav2LipCheckpointError(
            f"{str(path)!r} does not match the Wav2Lip generator: {' / '.join(parts)}. Expected {EXPECTED}."
        )
    model.load_state_dict(state, strict=True)


def load_wav2lip(path: str | os.PathLike[str], device: str | torch.device | None = None) -> Wav2Lip:
    """The generator with the weights of `path`, in eval mode, on `device` (CUDA when present, else CPU)."""
    path = Path(path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    state = _state_dict_of(path, _read(path))
    model = Wav2Lip()
    load_state_dict_checked(model, state, path)
    log.info("loaded Wav2Lip generator from %s onto %s", path, device)
    return model.to(device).eval()
