"""The onnxruntime runtime of a voice (flow and decoder exported from our torch model) against the torch
runtime and the stored onnxruntime reference, whole and streamed; the export cache; runtime selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lipstream.models.vits import DEFAULT_VOICE, Voice, VoiceError, load_voice
from lipstream.models.vits import onnx_runtime as onnx_runtime_module

from tests.test_vits_support import CONFORMANCE, snr_db

JOE_IO = np.load(CONFORMANCE / "piper_joe_io.npz")
SENTENCES = range(3)


@pytest.fixture(scope="module")
def joe_ort() -> Voice:
    return load_voice(DEFAULT_VOICE, device="cpu", runtime="onnxruntime")


@pytest.fixture(scope="module")
def joe_torch() -> Voice:
    return load_voice(DEFAULT_VOICE, device="cpu", runtime="torch")


def _audio(voice: Voice, ids: np.ndarray) -> np.ndarray:
    """The voice's audio for phoneme ids at noise 0, through its own runtime's flow and decoder."""
    with torch.inference_mode():
        prior = voice.model.prior(torch.tensor(ids)[None], None, 0.0, 1.0, 0.0)
    return np.concatenate(list(voice._decode(prior, chunked=False)))


def test_runtime_is_the_one_asked_for(joe_ort: Voice, joe_torch: Voice) -> None:
    assert (joe_ort.runtime, joe_torch.runtime) == ("onnxruntime", "torch")
    assert joe_ort._onnx is not None and joe_torch._onnx is None
    assert load_voice(DEFAULT_VOICE, device="cpu").runtime == "onnxruntime"  # auto, on CPU
    assert "runtime='onnxruntime'" in repr(joe_ort)


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(VoiceError, match="'tensorrt'.*auto, torch, onnxruntime"):
        load_voice(DEFAULT_VOICE, device="cpu", runtime="tensorrt")
    with pytest.raises(VoiceError, match="CPU only; got device cuda:0"):
        load_voice(DEFAULT_VOICE, device="cuda:0", runtime="onnxruntime")


@pytest.mark.parametrize("i", SENTENCES)
def test_onnxruntime_equals_torch_and_the_reference(joe_ort: Voice, joe_torch: Voice, i: int) -> None:
    ids = JOE_IO[f"ids_{i}"]
    ours_ort, ours_torch = _audio(joe_ort, ids), _audio(joe_torch, ids)
    reference = JOE_IO[f"audio_{i}"]
    assert ours_ort.shape == ours_torch.shape == reference.shape
    assert ours_ort.dtype == np.float32
    assert snr_db(ours_torch, ours_ort) >= 60.0
    assert snr_db(reference, ours_ort) >= 60.0


def test_onnxruntime_stream_equals_one_piece_and_torch(joe_ort: Voice, joe_torch: Voice) -> None:
    text = "Streaming decodes the latent in windows; the joins must not be audible at all, not even a little."
    whole = joe_ort.synthesize(text, noise_scale=0.0, noise_scale_w=0.0)
    chunks = list(joe_ort.synthesize_stream(text, noise_scale=0.0, noise_scale_w=0.0))
    assert len(chunks) >= 3
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.audio.shape
    assert snr_db(whole.audio, streamed) >= 60.0
    assert float(np.max(np.abs(streamed - whole.audio))) < 1e-3
    in_torch = joe_torch.synthesize(text, noise_scale=0.0, noise_scale_w=0.0)
    assert in_torch.audio.shape == whole.audio.shape
    assert snr_db(in_torch.audio, whole.audio) >= 60.0


def test_export_is_cached_by_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPSTREAM_CACHE_DIR", str(tmp_path))
    first = load_voice(DEFAULT_VOICE, device="cpu", runtime="onnxruntime")
    exported = sorted(p.name for p in (tmp_path / "vits").glob("*.onnx"))
    assert [n.split("-")[0] for n in exported] == ["dec", "flow"]

    export = onnx_runtime_module._export

    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_runtime_module, "_export", no_export)
    again = load_voice(DEFAULT_VOICE, device="cpu", runtime="onnxruntime")
    assert sorted(p.name for p in (tmp_path / "vits").glob("*.onnx")) == exported
    ids = JOE_IO["ids_1"]
    assert np.array_equal(_audio(first, ids), _audio(again, ids))

    # Other weights, another export: the key is the weights, not the voice's name.
    monkeypatch.setattr(onnx_runtime_module, "_export", export)
    with torch.no_grad():
        again.model.dec.conv_post.weight.mul_(0.5)
    changed = onnx_runtime_module.OnnxFlowDecoder(again.model)
    assert len(list((tmp_path / "vits").glob("*.onnx"))) == 4
    assert changed.paths[1].name not in exported


def test_torch_stream_still_equals_one_piece(joe_torch: Voice) -> None:
    # test_vits_piper's streaming test runs the default runtime; this keeps the torch fallback covered.
    text = "The torch runtime streams in windows too, and its joins must be as clean as ever."
    whole = joe_torch.synthesize(text, noise_scale=0.0, noise_scale_w=0.0)
    chunks = list(joe_torch.synthesize_stream(text, noise_scale=0.0, noise_scale_w=0.0))
    assert len(chunks) >= 3
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.audio.shape
    assert snr_db(whole.audio, streamed) >= 60.0
