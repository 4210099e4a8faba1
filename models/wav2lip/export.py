"""The ONNX forms of the fused Wav2Lip: the cached-face graph exported for onnxruntime, and its int8 form
(statically quantised, calibrated on real speech and a real face), both cached on disk.

The int8 graph starts from the sub-pixel form (each transposed convolution as four exact phase
convolutions, skip sums and pixel shuffles channels-last: see fused.py), so onnxruntime quantises every
convolution; the zero Pads are then folded into the Convs. The cache key holds everything that decides a
file: the checkpoint's digest, `GRAPH_VERSION`, and for int8 the recipe, the calibration data and the
onnxruntime version.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fused import FusedWav2Lip
from .image import face_input

log = logging.getLogger(__name__)

GRAPH_VERSION = "4"  # 3: int8 pixel shuffles and skip sums channels-last, Pads folded; 4: exact phases
CONSTANT_NAMES = tuple(f"skip{i}" for i in range(7))
INT8_RECIPE: dict[str, object] = {
    "quant_format": "QDQ",
    "per_channel": True,
    "reduce_range": False,
    "weight_type": "QInt8",
    "activation_type": "QUInt8",
    "calibrate_method": "MinMax",
    "nodes_to_exclude": [],
}
"""onnxruntime `quantize_static` settings of the `onnx-int8` runtime (u8 activations x s8 per-channel
weights, MinMax, QDQ: the fastest recipe here and as accurate as the others compared, README "Wav2Lip").
Part of the cache key of the quantised model: a changed recipe is re-quantised, never served stale."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lipstream" / "wav2lip"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:24]


def calibration_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Real inputs for int8 calibration and error checks: (22, 1, 80, 16) speech mel windows and
    (3, 6, 96, 96) faces (the astronaut crop, mirrored, darkened). See assets/PROVENANCE.md."""
    with resources.files(__package__).joinpath("assets/calibration.npz").open("rb") as handle:
        data = np.load(handle)
        mel, crop = data["mel"].astype(np.float32), data["crop"]
    crops = [crop, np.ascontiguousarray(crop[:, ::-1]), (crop.astype(np.float32) * 0.75).astype(np.uint8)]
    return mel[:, None], np.stack([face_input(c) for c in crops])


def int8_recipe_key(onnxruntime_version: str) -> str:
    """Short digest of everything besides the checkpoint and graph that decides the quantised model."""
    with resources.files(__package__).joinpath("assets/calibration.npz").open("rb") as handle:
        calibration = hashlib.sha256(handle.read()).hexdigest()
    recipe = json.dumps({**INT8_RECIPE, "calibration": calibration, "onnxruntime": onnxruntime_version},
                        sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def onnx_model(
    reference: torch.nn.Module, fused: FusedWav2Lip, checkpoint_path: Path, cache_dir: Path, *, int8: bool
) -> Path:
    """The cached-face ONNX file of this checkpoint (fp32, or int8 with its constants channels-last),
    exported and quantised into `cache_dir` the first time. `fused`: the engine's FusedWav2Lip of
    `reference`. Raises ImportError without onnx / onnxruntime."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{file_digest(checkpoint_path)}_v{GRAPH_VERSION}"
    if not int8:
        path = cache_dir / f"{stem}_fp32.onnx"
        if not path.exists():
            export_onnx(reference, fused, path, subpixel=False)
        return path
    import onnxruntime as ort

    # The int8 graph starts from the sub-pixel form: ConvTranspose would stay fp32 (see fused.py).
    source = cache_dir / f"{stem}_fp32_subpixel.onnx"
    path = cache_dir / f"{stem}_int8_{int8_recipe_key(ort.__version__)}.onnx"
    if not path.exists():
        if not source.exists():
            export_onnx(reference, fused, source, subpixel=True)
        quantize(fused, source, path)
    return path


class CachedGraph(torch.nn.Module):
    """`forward_cached` (or, `channels_last`, `forward_cached_nhwc`) with the 7 constants as separate
    inputs (the form ONNX export wants)."""

    def __init__(self, fused: FusedWav2Lip, channels_last: bool = False) -> None:
        super().__init__()
        self.fused = fused
        self.channels_last = channels_last

    def forward(self, mel: torch.Tensor, *constants: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return self.fused.forward_cached_nhwc(mel, list(constants))
        return self.fused.forward_cached(mel, list(constants))


def export_onnx(reference: torch.nn.Module, fused: FusedWav2Lip, path: Path, subpixel: bool) -> None:
    """The cached-face graph; `subpixel` (the int8 source) also takes its constants channels-last."""
    mel, faces = calibration_inputs()
    with torch.inference_mode():
        constants = fused.face_constants(torch.from_numpy(faces[:1]))
    if subpixel:
        constants = [c.permute(0, 2, 3, 1).contiguous() for c in constants]
    # A fresh FusedWav2Lip: contiguous weights.
    graph = CachedGraph(FusedWav2Lip(reference, subpixel=subpixel), channels_last=subpixel)
    temporary = path.with_suffix(".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (torch.from_numpy(mel[:2]), *constants),
            str(temporary),
            input_names=["mel", *CONSTANT_NAMES],
            output_names=["out"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={
                "mel": {0: "n"},
                "out": {0: "n"},
                **{name: {0: "m"} for name in CONSTANT_NAMES},
            },
        )
    os.replace(temporary, path)
    log.info("exported the Wav2Lip cached-face graph to %s", path)


def calibration_feeds(fused: FusedWav2Lip, every: slice) -> list[dict[str, np.ndarray]]:
    """Feeds of the int8 source graph (constants channels-last)."""
    mel, faces = calibration_inputs()
    with torch.inference_mode():
        per_face = [fused.face_constants(torch.from_numpy(f[None])) for f in faces]
    constants = [[c.permute(0, 2, 3, 1).contiguous().numpy() for c in face] for face in per_face]
    return [
        {"mel": mel[i : i + 1], **dict(zip(CONSTANT_NAMES, constants[i % len(faces)], strict=True))}
        for i in range(len(mel))[every]
    ]


def quantize(fused: FusedWav2Lip, fp32_path: Path, path: Path) -> None:
    """`fp32_path` (the sub-pixel graph) statically quantised to int8 by `INT8_RECIPE` into `path`,
    calibrated on the even calibration items (the odd ones check the error)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    feeds = iter(calibration_feeds(fused, slice(0, None, 2)))

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    # The quantiser's pre-processing (ONNX shape inference, onnxruntime's basic optimisations such as
    # constant folding; its symbolic shape inference stops short on this graph and is not needed: every
    # shape but the batch is static), then the Pads are folded into the Convs.
    prepared = path.with_suffix(".prepared.tmp")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared))
    folded = fold_pads(model)
    onnx.save(model, str(prepared))
    temporary = path.with_suffix(".tmp")
    quantize_static(
        str(prepared),
        str(temporary),
        Reader(),
        quant_format=QuantFormat[str(INT8_RECIPE["quant_format"])],
        per_channel=bool(INT8_RECIPE["per_channel"]),
        reduce_range=bool(INT8_RECIPE["reduce_range"]),
        weight_type=QuantType[str(INT8_RECIPE["weight_type"])],
        activation_type=QuantType[str(INT8_RECIPE["activation_type"])],
        calibrate_method=CalibrationMethod[str(INT8_RECIPE["calibrate_method"])],
        nodes_to_exclude=list(INT8_RECIPE["nodes_to_exclude"]),  # type: ignore[call-overload]  # typed object
    )
    os.replace(temporary, path)
    prepared.unlink()
    log.info("quantised the Wav2Lip graph to int8 (%d Pads folded into Convs): %s", folded, path)


def fold_pads(model: Any) -> int:
    """Removes each zero Pad of H and W whose readers are all Convs, adding it to their `pads` instead
    (onnxruntime runs a Pad on float data, between a DequantizeLinear and a QuantizeLinear, in the int8
    graph). Needs the pad amounts as initializers (quant_pre_process's constant folding makes them so).
    Returns how many Pads it removed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    readers: dict[str, list[Any]] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)

    def zero_pad_of_h_and_w(node: Any) -> list[int] | None:
        """The Pad's amounts (N, C, H, W begins, then ends) when it pads H and W with zeros, else None."""
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        value = node.input[2] if len(node.input) > 2 else ""
        if mode != b"constant" or node.input[1] not in constants or (value and value not in constants):
            return None
        if value and numpy_helper.to_array(constants[value]).any():
            return None
        pads = numpy_helper.to_array(constants[node.input[1]]).tolist()
        return pads if len(pads) == 8 and not any(pads[i] for i in (0, 1, 4, 5)) else None

    folded = []
    for node in graph.node:
        users = readers[node.output[0]] if node.op_type == "Pad" else []
        pads = zero_pad_of_h_and_w(node) if users and all(u.op_type == "Conv" for u in users) else None
        if pads is None:
            continue
        for user in users:
            attribute = next((a for a in user.attribute if a.name == "pads"), None)
            old = list(attribute.ints) if attribute is not None else [0, 0, 0, 0]  # H, W begins, then ends
            if attribute is not None:
                user.attribute.remove(attribute)
            new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
            user.attribute.append(helper.make_attribute("pads", new))
            user.input[0] = node.input[0]
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    return len(folded)
