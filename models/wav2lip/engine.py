"""`Wav2LipEngine`: one lip-sync model per process, shared by all sessions, on the fastest runtime whose
output stays within its stated tolerance of the official fp32 forward.

Runtimes (`runtime=`):

- `eager`: the official module as loaded (the reference; tolerance 0).
- `torch`: BatchNorm folded, channels-last, face constants cached (see `fused.py`); 1e-4.
- `compile`: `torch` under `torch.compile` (inductor; needs a C++ compiler); 1e-4.
- `onnx`: the cached-face graph exported to ONNX, run by onnxruntime in fp32; 1e-4.
- `onnx-int8`: that graph, with each transposed convolution as four exact phase convolutions (sub-pixel
  form) and the skip sums and pixel shuffles channels-last (the layout onnxruntime's int8 convolutions
  use, so no layout changes are left between them), the zero Pads folded into the Convs, statically
  quantised to int8 (per-channel s8 weights, u8 activations, QDQ), calibrated on real speech and a real
  face; `INT8_TOLERANCE`.
- `cuda-fp16`: `torch` in half precision on the GPU; `FP16_TOLERANCE`.

`auto` picks `cuda-fp16` when CUDA is present, else `onnx-int8` (the only CPU runtime that reaches
25 fps on two cores: the bench measures them all), falling back to `onnx` when onnxruntime's int8 error
on the held-out calibration items exceeds its tolerance.

Face constants: a still avatar feeds the same face every frame, so the face encoder and the encoder
half of each decoder skip convolution are computed once per crop and kept in a small LRU cache keyed
by the crop's bytes; `infer` finds them by content, `infer_cached` by a key the caller chooses.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Hashable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_wav2lip
from .fused import FusedWav2Lip
from .image import face_input

log = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4
INT8_TOLERANCE = 0.08
"""Max abs error of `onnx-int8` against fp32 on sigmoid outputs in [0, 1] (20/255). Measured on the
conformance fixture (fill-rule weights): max 0.049, mean 0.0067 (1.7/255) with the exact-phase graph (v4;
0.051 and 0.0064 with the 2x2 sub-pixel form); 0.08 is 1.6x that max. Not
tighter: twelve quantiser recipes (per-channel or not, reduce_range, u8u8, s8s8, MinMax/Entropy/Percentile,
QDQ/QOperator, first/last conv in fp32, no sub-pixel rewrite, no cached-face split) all land at 0.04-0.07,
and another ORT release or int8 kernel (VNNI, AVX-512) moves the figure by about that spread. On the
channels-last graph (v3): MinMax with a moving average 0.044 max on the fixture / 0.049 held out,
Percentile 99.99 0.067 / 0.078, Percentile 99.999 0.040 / 0.046, against MinMax's 0.051 / 0.043; all
0.0060-0.0064 mean."""
INT8_MEAN_TOLERANCE = 0.0128
"""Mean abs error of `onnx-int8` against fp32 on the fixture: 1.9x the measured 0.0067 (the max error is
set by a few pixels; the mean catches a systematic drift such as a wrong calibration range)."""
FP16_TOLERANCE = 1e-2
RUNTIMES = ("eager", "torch", "compile", "onnx", "onnx-int8", "cuda-fp16")
_TOLERANCE = {
    "eager": 0.0,
    "torch": FP32_TOLERANCE,
    "compile": FP32_TOLERANCE,
    "onnx": FP32_TOLERANCE,
    "onnx-int8": INT8_TOLERANCE,
    "cuda-fp16": FP16_TOLERANCE,
}
_GRAPH_VERSION = "4"  # 3: int8 pixel shuffles and skip sums channels-last, Pads folded; 4: exact phases
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
weights, MinMax, QDQ: the fastest here and as accurate as any other recipe measured; see
`INT8_TOLERANCE`). Part of the cache key of the quantised model, with the calibration data's digest and
the onnxruntime version: a changed recipe is re-quantised, never served stale from the cache."""
_CONSTANT_NAMES = tuple(f"skip{i}" for i in range(7))


class Wav2LipRuntimeError(RuntimeError):
    """A runtime that was asked for by name cannot run here (names the runtime and the fix)."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lipstream" / "wav2lip"


def _file_digest(path: Path) -> str:
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


def _int8_recipe_key(onnxruntime_version: str) -> str:
    """Short digest of everything besides the checkpoint and graph that decides the quantised model."""
    with resources.files(__package__).joinpath("assets/calibration.npz").open("rb") as handle:
        calibration = hashlib.sha256(handle.read()).hexdigest()
    recipe = json.dumps({**INT8_RECIPE, "calibration": calibration, "onnxruntime": onnxruntime_version},
                        sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


class _CachedGraph(torch.nn.Module):
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


def _fold_pads(model: Any) -> int:
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


class Wav2LipEngine:
    """The process's lip-sync model. Thread-safe: sessions call `infer` from their worker threads; model
    runs are serialised (they already use every core), the face-constant cache has its own lock."""

    def __init__(
        self,
        checkpoint_path: str | os.PathLike[str],
        device: str | torch.device | None = None,
        runtime: str = "auto",
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        face_cache_size: int = 32,
        threads: int | None = None,
    ) -> None:
        if runtime != "auto" and runtime not in RUNTIMES:
            raise ValueError(
                f"unknown Wav2Lip runtime {runtime!r}; choose 'auto' or one of {', '.join(RUNTIMES)}"
            )
        self.checkpoint_path = Path(checkpoint_path)
        self.device = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        if runtime == "cuda-fp16" and not self.device.startswith("cuda"):
            raise Wav2LipRuntimeError(
                "runtime 'cuda-fp16' needs device='cuda' and a CUDA build of torch; "
                "use runtime='auto' on a CPU"
            )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.threads = threads or torch.get_num_threads()
        self.reference = load_wav2lip(self.checkpoint_path, "cpu")  # the fp32 eager reference
        self.fused = FusedWav2Lip(self.reference).to(memory_format=torch.channels_last)
        self._run_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._face_cache: collections.OrderedDict[Hashable, list] = collections.OrderedDict()
        self.face_cache_size = face_cache_size
        self.runtime = "eager"
        self._session = None
        self._compiled: torch.nn.Module | None = None
        self._gpu_model: FusedWav2Lip | None = None

        if runtime == "auto":
            runtime = "cuda-fp16" if self.device.startswith("cuda") else "onnx-int8"
            try:
                self._build(runtime)
            except Wav2LipRuntimeError as exc:
                log.warning("Wav2Lip runtime %s unavailable (%s); using torch", runtime, exc)
                runtime = "torch"
                self._build(runtime)
            error = self._measure_error(runtime)
            # The same bounds as the fixture test, on the held-out calibration items (measured there:
            # max 0.050, mean 0.0067), so a checkpoint that int8 serves badly falls back to fp32.
            too_far = error > INT8_TOLERANCE or self.mean_abs_error > INT8_MEAN_TOLERANCE
            if runtime == "onnx-int8" and too_far:
                log.warning(
                    "Wav2Lip int8 error (max %.4f, mean %.4f) exceeds (%.4f, %.4f) on the calibration check; "
                    "using onnx fp32",
                    error,
                    self.mean_abs_error,
                    INT8_TOLERANCE,
                    INT8_MEAN_TOLERANCE,
                )
                runtime = "onnx"
                self._build(runtime)
                error = self._measure_error(runtime)
        else:
            self._build(runtime)
            try:
                error = self._measure_error(runtime)
            except Exception as exc:  # torch.compile compiles on the first call and fails in many ways
                if runtime != "compile":
                    raise
                raise Wav2LipRuntimeError(f"torch.compile failed on the first call ({exc}); use "
                                          f"runtime='torch'") from exc
        self.runtime = runtime
        self.tolerance = _TOLERANCE[runtime]
        self.max_abs_error = error
        """Max abs difference from the fp32 eager reference on the held-out calibration inputs (the mean
        is in `mean_abs_error`)."""
        log.info(
            "Wav2Lip engine: runtime %s on %s, max abs error vs fp32 %.2e (tolerance %.0e)",
            runtime,
            self.device,
            error,
            self.tolerance,
        )

    @property
    def preferred_batch_size(self) -> int:
        """Frames per `infer` call that use the hardware well: 8 on a CPU, 64 on a GPU."""
        return 64 if self.device.startswith("cuda") else 8

    # ---- building the runtimes -------------------------------------------------------------------------

    def _build(self, runtime: str) -> None:
        self.runtime = runtime
        self._session, self._compiled, self._gpu_model = None, None, None
        if runtime == "compile":
            try:
                self._compiled = torch.compile(_CachedGraph(self.fused), dynamic=True)
            except Exception as exc:  # torch.compile failures come in many types; report them as one
                raise Wav2LipRuntimeError(f"torch.compile failed ({exc}); use runtime='torch'") from exc
        elif runtime in ("onnx", "onnx-int8"):
            self._session = self._onnx_session(runtime)
        elif runtime == "cuda-fp16":
            self._gpu_model = (
                FusedWav2Lip(self.reference).to(self.device).half().to(memory_format=torch.channels_last)
            )
        self._face_cache.clear()

    def _onnx_session(self, runtime: str):  # -> onnxruntime.InferenceSession
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise Wav2LipRuntimeError("onnxruntime is not installed (pip install onnxruntime)") from exc
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{_file_digest(self.checkpoint_path)}_v{_GRAPH_VERSION}"
        if runtime == "onnx":
            path = self.cache_dir / f"{stem}_fp32.onnx"
            if not path.exists():
                self._export_onnx(path, subpixel=False)
        else:
            # The int8 graph starts from the sub-pixel form: ConvTranspose would stay fp32 (see fused.py).
            source = self.cache_dir / f"{stem}_fp32_subpixel.onnx"
            path = self.cache_dir / f"{stem}_int8_{_int8_recipe_key(ort.__version__)}.onnx"
            if not path.exists():
                if not source.exists():
                    self._export_onnx(source, subpixel=True)
                self._quantize(source, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        # Other stages (TTS, JPEG) share the cores: do not busy-wait between ops.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _export_onnx(self, path: Path, subpixel: bool) -> None:
        """The cached-face graph; `subpixel` (the int8 source) also takes its constants channels-last."""
        mel, faces = calibration_inputs()
        with torch.inference_mode():
            constants = self.fused.face_constants(torch.from_numpy(faces[:1]))
        if subpixel:
            constants = [c.permute(0, 2, 3, 1).contiguous() for c in constants]
        # A fresh FusedWav2Lip: contiguous weights.
        graph = _CachedGraph(FusedWav2Lip(self.reference, subpixel=subpixel), channels_last=subpixel)
        temporary = path.with_suffix(".tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                (torch.from_numpy(mel[:2]), *constants),
                str(temporary),
                input_names=["mel", *_CONSTANT_NAMES],
                output_names=["out"],
                opset_version=17,
                dynamo=False,
                dynamic_axes={
                    "mel": {0: "n"},
                    "out": {0: "n"},
                    **{name: {0: "m"} for name in _CONSTANT_NAMES},
                },
            )
        os.replace(temporary, path)
        log.info("exported the Wav2Lip cached-face graph to %s", path)

    def _calibration_feeds(self, every: slice) -> list[dict[str, np.ndarray]]:
        """Feeds of the int8 source graph (constants channels-last)."""
        mel, faces = calibration_inputs()
        with torch.inference_mode():
            per_face = [self.fused.face_constants(torch.from_numpy(f[None])) for f in faces]
        constants = [[c.permute(0, 2, 3, 1).contiguous().numpy() for c in face] for face in per_face]
        return [
            {"mel": mel[i : i + 1], **dict(zip(_CONSTANT_NAMES, constants[i % len(faces)], strict=True))}
            for i in range(len(mel))[every]
        ]

    def _quantize(self, fp32_path: Path, path: Path) -> None:
        try:
            import onnx
            from onnxruntime.quantization import (
                CalibrationDataReader,
                CalibrationMethod,
                QuantFormat,
                QuantType,
                quant_pre_process,
                quantize_static,
            )
        except ImportError as exc:
            raise Wav2LipRuntimeError(f"int8 quantisation needs onnx and onnxruntime ({exc}): "
                                      f"pip install onnx onnxruntime") from exc

        feeds = iter(self._calibration_feeds(slice(0, None, 2)))  # even items; odd ones check the error

        class Reader(CalibrationDataReader):
            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(feeds, None)

        # The quantiser's pre-processing (ONNX shape inference, onnxruntime's basic optimisations such as
        # constant folding; its symbolic shape inference stops short on this graph and is not needed: every
        # shape but the batch is static), then the Pads are folded into the Convs.
        prepared = path.with_suffix(".prepared.tmp")
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        folded = _fold_pads(model)
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
            nodes_to_exclude=list(INT8_RECIPE["nodes_to_exclude"]),  # type: ignore[call-overload]
        )
        os.replace(temporary, path)
        prepared.unlink()
        log.info("quantised the Wav2Lip graph to int8 (%d Pads folded into Convs): %s", folded, path)

    def _measure_error(self, runtime: str) -> float:
        mel, faces = calibration_inputs()
        held_out = np.arange(1, len(mel), 4)  # 6 of the odd items (the even ones calibrate int8)
        face = faces[held_out % len(faces)]
        with torch.inference_mode():
            # Channels-last inputs: the layout the official conversion yields, and the fast one for mkldnn.
            reference = self.reference(
                torch.from_numpy(mel[held_out]).contiguous(memory_format=torch.channels_last),
                torch.from_numpy(face).contiguous(memory_format=torch.channels_last),
            ).numpy()
        difference = np.abs(self.infer(mel[held_out], face) - reference)
        self.mean_abs_error = float(difference.mean())
        return float(difference.max())

    # ---- inference ---------------------------------------------------------------------------------------

    def infer(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        """(N, 1, 80, 16), (N, 6, 96, 96) float32 -> (N, 3, 96, 96) float32 in [0, 1], BGR.

        Items may come from different sessions and avatars; faces seen before reuse their cached
        encoder work (looked up by content).
        """
        mel, face = self._check(mel, face)
        if self.runtime == "eager":
            with self._run_lock, torch.inference_mode():
                # Channels-last: the strides of the official NHWC->NCHW conversion (mkldnn's fast path).
                mel_t = torch.from_numpy(mel).contiguous(memory_format=torch.channels_last)
                face_t = torch.from_numpy(face).contiguous(memory_format=torch.channels_last)
                return self.reference(mel_t, face_t).numpy()
        keys: list[Hashable] = []
        for index, item in enumerate(face):
            if index and np.array_equal(item, face[index - 1]):  # a still avatar's run: compared, 25x cheaper
                keys.append(keys[-1])
            else:
                keys.append(hashlib.blake2b(item.tobytes(), digest_size=16).digest())
        constants = self._constants_for(keys, face)
        return self._run_cached(mel, constants)

    def infer_cached(self, mel: np.ndarray, key: Hashable, face: np.ndarray | None = None) -> np.ndarray:
        """(N, 1, 80, 16) frames that all use the one face crop named by `key` (e.g. (avatar, frame)):
        its (6, 96, 96) `face` is needed only the first time (or after the cache evicted it)."""
        if self.runtime == "eager":
            raise Wav2LipRuntimeError("the eager runtime has no cached-face path; use infer(mel, face)")
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        with self._cache_lock:
            cached = self._face_cache.get(key)
        if cached is None:
            if face is None:
                raise KeyError(f"no face constants cached for key {key!r}; pass the (6, 96, 96) face as well")
            face = np.ascontiguousarray(face, dtype=np.float32).reshape(1, 6, 96, 96)
            cached = self._constants_for([key], face)
        else:
            self._touch(key)
        return self._run_cached(mel, cached)

    def _check(self, mel: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        face = np.ascontiguousarray(face, dtype=np.float32)
        if mel.ndim != 4 or mel.shape[1:] != (1, 80, 16):
            raise ValueError(f"mel must be (N, 1, 80, 16), got {mel.shape}; add the axis with mel[:, None]")
        if face.ndim != 4 or face.shape[1:] != (6, 96, 96) or len(face) != len(mel):
            raise ValueError(
                f"face must be (N, 6, 96, 96) with N = {len(mel)} (from face_input), got {face.shape}"
            )
        return mel, face

    def _touch(self, key: Hashable) -> None:
        with self._cache_lock:
            if key in self._face_cache:
                self._face_cache.move_to_end(key)

    def _constants_for(self, keys: list[Hashable], face: np.ndarray) -> list:
        """The 7 constants for a batch: batch 1 when every item has the same crop, else stacked per item."""
        per_key: dict[Hashable, list] = {}
        for index, key in enumerate(keys):
            if key in per_key:
                continue
            with self._cache_lock:
                hit = self._face_cache.get(key)
                if hit is not None:
                    self._face_cache.move_to_end(key)
            if hit is None:
                hit = self._compute_constants(face[index : index + 1])
                with self._cache_lock:
                    self._face_cache[key] = hit
                    while len(self._face_cache) > self.face_cache_size:
                        self._face_cache.popitem(last=False)
            per_key[key] = hit
        if len(per_key) == 1:
            return next(iter(per_key.values()))
        columns = zip(*(per_key[key] for key in keys), strict=True)
        if self.runtime in ("onnx", "onnx-int8"):
            return [np.concatenate(parts) for parts in columns]
        return [torch.cat(parts) for parts in columns]

    def _compute_constants(self, face: np.ndarray) -> list:
        with self._run_lock, torch.inference_mode():
            if self.runtime == "cuda-fp16" and self._gpu_model is not None:
                tensor = (
                    torch.from_numpy(face)
                    .to(self.device)
                    .half()
                    .contiguous(memory_format=torch.channels_last)
                )
                return self._gpu_model.face_constants(tensor)
            constants = self.fused.face_constants(
                torch.from_numpy(face).contiguous(memory_format=torch.channels_last)
            )
        if self.runtime == "onnx-int8":  # its graph takes them channels-last (see forward_cached_nhwc)
            return [np.ascontiguousarray(c.permute(0, 2, 3, 1).numpy()) for c in constants]
        if self.runtime == "onnx":
            return [np.ascontiguousarray(c.numpy()) for c in constants]
        return [c.contiguous(memory_format=torch.channels_last) for c in constants]

    def _run_cached(self, mel: np.ndarray, constants: list) -> np.ndarray:
        with self._run_lock:
            if self._session is not None:
                feed = {"mel": mel, **dict(zip(_CONSTANT_NAMES, constants, strict=True))}
                return self._session.run(None, feed)[0]
            with torch.inference_mode():
                if self.runtime == "cuda-fp16" and self._gpu_model is not None:
                    tensor = torch.from_numpy(mel).to(self.device).half()
                    return self._gpu_model.forward_cached(tensor, constants).float().cpu().numpy()
                model = self._compiled if self._compiled is not None else None
                tensor = torch.from_numpy(mel)
                if model is not None:
                    return model(tensor, *constants).numpy()
                return self.fused.forward_cached(tensor, constants).numpy()
