"""Wav2LipEngine: every CPU runtime within its stated tolerance of the fp32 reference on the fixture."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from lipstream.models.wav2lip import (
    FP32_TOLERANCE,
    INT8_MEAN_TOLERANCE,
    INT8_TOLERANCE,
    Wav2LipEngine,
    Wav2LipRuntimeError,
    face_input,
)

from tests.wav2lip_fill import CONFORMANCE, write_official_checkpoint


@pytest.fixture(scope="module")
def model_io() -> dict[str, np.ndarray]:
    with np.load(CONFORMANCE / "model_io.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    return write_official_checkpoint(tmp_path_factory.mktemp("w2l_engine") / "wav2lip.pth")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("w2l_onnx")


@pytest.fixture(scope="module", params=["torch", "onnx", "auto"])
def engine(request, checkpoint, cache_dir) -> Wav2LipEngine:
    return Wav2LipEngine(checkpoint, device="cpu", runtime=request.param, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def other_face(model_io) -> np.ndarray:
    crop = (model_io["face"][0, 3:].transpose(1, 2, 0) * 255).round().astype(np.uint8)
    return face_input(np.ascontiguousarray(crop[:, ::-1]))  # the mirrored crop: another avatar


def test_runtime_is_within_its_tolerance_on_the_fixture(engine, model_io) -> None:
    expected_tolerance = {"torch": FP32_TOLERANCE, "onnx": FP32_TOLERANCE, "onnx-int8": INT8_TOLERANCE}
    if not torch.cuda.is_available():
        assert engine.runtime in expected_tolerance  # auto on a CPU is onnx-int8 (or onnx as its fallback)
    assert engine.tolerance == expected_tolerance[engine.runtime]
    out = engine.infer(model_io["mel"], model_io["face"])
    assert out.shape == (4, 3, 96, 96) and out.dtype == np.float32
    assert np.abs(out - model_io["out"]).max() < engine.tolerance
    assert engine.max_abs_error < engine.tolerance
    if engine.runtime == "onnx-int8":
        assert np.abs(out - model_io["out"]).mean() < INT8_MEAN_TOLERANCE


def test_auto_picks_int8_on_a_cpu(engine, request) -> None:
    requested = request.node.callspec.params["engine"]
    if requested != "auto":
        assert engine.runtime == requested
    elif not torch.cuda.is_available():
        assert engine.runtime == "onnx-int8"
        assert 1e-4 < engine.max_abs_error < INT8_TOLERANCE  # really quantised, and within its tolerance
        assert engine.mean_abs_error < INT8_MEAN_TOLERANCE  # the fallback's second bound


def test_cached_path_equals_infer(engine, model_io) -> None:
    direct = engine.infer(model_io["mel"], model_io["face"])
    cached = engine.infer_cached(model_io["mel"], ("astronaut", 0), model_io["face"][0])
    again = engine.infer_cached(model_io["mel"], ("astronaut", 0))  # no face needed once cached
    assert np.abs(cached - direct).max() < 1e-5
    assert np.array_equal(again, cached)
    with pytest.raises(KeyError, match="pass the"):
        engine.infer_cached(model_io["mel"], ("never", "seen"))


def test_mixed_avatars_in_one_batch_equal_separate_calls(engine, model_io, other_face) -> None:
    faces = np.stack([model_io["face"][0], other_face, model_io["face"][0], other_face])
    together = engine.infer(model_io["mel"], faces)
    for i in range(4):
        alone = engine.infer(model_io["mel"][i: i + 1], faces[i: i + 1])
        assert np.abs(together[i] - alone[0]).max() < 1e-5
    assert np.abs(together[1] - together[0]).max() > 0.01  # the two faces do give different outputs


def test_concurrent_calls_from_several_threads(engine, model_io, other_face) -> None:
    expected = engine.infer(model_io["mel"][:2], model_io["face"][:2])
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(engine.infer(model_io["mel"][:2], model_io["face"][:2]))
            engine.infer(model_io["mel"][:1], other_face[None])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 3
    for result in results:
        assert np.abs(result - expected).max() < 1e-5


def test_face_cache_is_bounded(engine, model_io, other_face) -> None:
    size = engine.face_cache_size
    engine.face_cache_size = 2
    try:
        for shift in range(4):
            engine.infer_cached(model_io["mel"][:1], ("loop", shift), other_face)
        assert list(engine._face_cache)[-2:] == [("loop", 2), ("loop", 3)]
        assert len(engine._face_cache) == 2
    finally:
        engine.face_cache_size = size


def test_bad_inputs_and_runtimes_are_refused(engine, checkpoint, model_io) -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, 80, 16\)"):
        engine.infer(model_io["mel"][:, 0], model_io["face"])
    with pytest.raises(ValueError, match=r"\(N, 6, 96, 96\)"):
        engine.infer(model_io["mel"], model_io["face"][:2])
    with pytest.raises(ValueError, match="unknown Wav2Lip runtime"):
        Wav2LipEngine(checkpoint, runtime="tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(Wav2LipRuntimeError, match="cuda"):
            Wav2LipEngine(checkpoint, device="cpu", runtime="cuda-fp16")


def test_int8_cache_is_keyed_by_the_quantisation_recipe(checkpoint, cache_dir, model_io, monkeypatch) -> None:
    from lipstream.models.wav2lip import engine as engine_module

    default = Wav2LipEngine(checkpoint, device="cpu", runtime="onnx-int8", cache_dir=cache_dir)
    monkeypatch.setitem(engine_module.INT8_RECIPE, "reduce_range", True)
    changed = Wav2LipEngine(checkpoint, device="cpu", runtime="onnx-int8", cache_dir=cache_dir)
    assert len(list(cache_dir.glob("*_int8_*.onnx"))) == 2  # re-quantised, not served from the cache
    assert np.abs(changed.infer(model_io["mel"], model_io["face"])
                  - default.infer(model_io["mel"], model_io["face"])).max() > 1e-3


def test_int8_graph_keeps_layout_changes_out_of_the_decoder(checkpoint, cache_dir, tmp_path) -> None:
    """The graph onnxruntime runs, after its own optimisations: no Pad and no DepthToSpace, Transposes only
    at the input, at the 5 channels-last pixel shuffles and at the output (38 before, see fused.py), and
    each of the 5 sub-pixel convolutions as 4 exact phase convolutions (33 + 15 int8 convolutions)."""
    import onnx
    import onnxruntime as ort
    from lipstream.models.wav2lip.export import int8_recipe_key

    Wav2LipEngine(checkpoint, device="cpu", runtime="onnx-int8", cache_dir=cache_dir)
    (quantised,) = cache_dir.glob(f"*_int8_{int8_recipe_key(ort.__version__)}.onnx")
    assert not {"Pad", "DepthToSpace"} & {node.op_type for node in onnx.load(str(quantised)).graph.node}
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(quantised), options, providers=["CPUExecutionProvider"])
    optimised = onnx.load(options.optimized_model_filepath, load_external_data=False)
    ops = [node.op_type for node in optimised.graph.node]
    assert ops.count("QLinearConv") == 48
    assert "Pad" not in ops and "DepthToSpace" not in ops
    assert ops.count("Transpose") <= 7


def test_auto_falls_back_to_fp32_when_int8_is_too_far(checkpoint, cache_dir, monkeypatch) -> None:
    from lipstream.models.wav2lip import engine as engine_module

    if torch.cuda.is_available():
        return  # auto picks cuda-fp16 there; the int8 fallback is a CPU path
    monkeypatch.setattr(engine_module, "INT8_MEAN_TOLERANCE", 1e-5)  # the measured mean is ~6e-3
    engine = Wav2LipEngine(checkpoint, device="cpu", runtime="auto", cache_dir=cache_dir)
    assert engine.runtime == "onnx"
    assert engine.max_abs_error < FP32_TOLERANCE
