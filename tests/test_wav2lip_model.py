"""Wav2Lip generator and checkpoint loading vs tests/data/conformance/wav2lip (README sections 1-3, 7-8)."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch
from lipstream.models.wav2lip import Wav2Lip, Wav2LipCheckpointError, load_wav2lip
from lipstream.models.wav2lip.fused import FusedWav2Lip

from tests.wav2lip_fill import (
    CONFORMANCE,
    fill_state_dict,
    fill_tensor,
    state_dict_entries,
    write_official_checkpoint,
)

OUT_ATOL = 1e-4  # conformance README section 7


@pytest.fixture(scope="module")
def model_io() -> dict[str, np.ndarray]:
    with np.load(CONFORMANCE / "model_io.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    return write_official_checkpoint(tmp_path_factory.mktemp("w2l") / "checkpoint_step000000003.pth")


@pytest.fixture(scope="module")
def model(checkpoint) -> Wav2Lip:
    return load_wav2lip(checkpoint, device="cpu")


def test_state_dict_layout_matches_official_names_shapes_dtypes_and_order() -> None:
    entries = state_dict_entries()
    state = Wav2Lip().state_dict()
    assert len(entries) == 352
    assert list(state) == [e["name"] for e in entries]
    for e in entries:
        tensor = state[e["name"]]
        assert list(tensor.shape) == e["shape"], e["name"]
        assert str(tensor.dtype).removeprefix("torch.") == e["dtype"], e["name"]
    params = sum(p.numel() for p in Wav2Lip().parameters())
    meta = json.loads((CONFORMANCE / "state_dict.json").read_text())
    assert params == meta["total_parameters"] == 36_298_035
    assert sum(t.numel() for t in state.values()) == meta["total_elements_including_buffers"]


def test_fill_rule_reproduces_every_sha256() -> None:
    for e in state_dict_entries():
        tensor = fill_tensor(e["name"], tuple(e["shape"]))
        digest = hashlib.sha256(tensor.astype(tensor.dtype.newbyteorder("<")).tobytes()).hexdigest()
        assert digest == e["fill_sha256"], e["name"]


def test_official_checkpoint_loads_in_eval_mode(model: Wav2Lip) -> None:
    assert isinstance(model, Wav2Lip)
    assert not model.training
    reference = fill_state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


def test_outputs_and_debug_taps_match_model_io(model: Wav2Lip, model_io) -> None:
    mel, face = torch.from_numpy(model_io["mel"]), torch.from_numpy(model_io["face"])
    with torch.inference_mode():
        audio_embedding = model.audio_encoder(mel)
        face_feat = model.encode_face(face)[-1]
        out = model(mel, face)
    assert audio_embedding.shape == (4, 512, 1, 1)
    assert np.abs(audio_embedding.numpy() - model_io["audio_embedding"]).max() < OUT_ATOL
    assert np.abs(face_feat.numpy() - model_io["face_feat_1x1"]).max() < OUT_ATOL
    assert out.shape == (4, 3, 96, 96)
    assert np.abs(out.numpy() - model_io["out"]).max() < OUT_ATOL
    assert np.abs(out.numpy() - model_io["out_float64"]).max() < OUT_ATOL


def test_five_d_inputs_fold_time_into_the_batch(model: Wav2Lip, model_io) -> None:
    # (B=2, T=2): item b, time t is fixture row 2*b + t.
    mel = torch.from_numpy(model_io["mel"]).reshape(2, 2, 1, 80, 16)
    face = torch.from_numpy(model_io["face"]).reshape(2, 2, 6, 96, 96).permute(0, 2, 1, 3, 4)
    with torch.inference_mode():
        out = model(mel, face)
    assert out.shape == (2, 3, 2, 96, 96)
    expected = model_io["out"].reshape(2, 2, 3, 96, 96).transpose(0, 2, 1, 3, 4)
    assert np.abs(out.numpy() - expected).max() < OUT_ATOL


def test_bare_state_dict_loads(tmp_path, model_io) -> None:
    path = tmp_path / "bare.pth"
    torch.save(fill_state_dict(), path)
    model = load_wav2lip(path, device="cpu")
    with torch.inference_mode():
        out = model(torch.from_numpy(model_io["mel"][:1]), torch.from_numpy(model_io["face"][:1]))
    assert np.abs(out.numpy() - model_io["out"][:1]).max() < OUT_ATOL


def _tensor_dict(names: list[str]) -> dict[str, torch.Tensor]:
    return {name: torch.zeros(2, 2) for name in names}


def _expect(path, *fragments: str) -> str:
    with pytest.raises(Wav2LipCheckpointError) as info:
        load_wav2lip(path, device="cpu")
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_syncnet_expert_is_refused(tmp_path) -> None:
    names = [f"{part}.{i}.conv_block.{j}.weight" for part in ("face_encoder", "audio_encoder")
             for i in range(3) for j in (0, 1)]
    path = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": _tensor_dict(names), "optimizer": None, "global_step": 1}, path)
    _expect(path, "SyncNet", "wav2lip.pth")


def test_quality_discriminator_is_refused(tmp_path) -> None:
    path = tmp_path / "disc_checkpoint.pth"
    names = ["face_encoder_blocks.0.0.conv_block.0.weight", "binary_pred.0.weight", "binary_pred.0.bias"]
    torch.save({"state_dict": _tensor_dict(names), "optimizer": None, "global_step": 1}, path)
    _expect(path, "discriminator")


def test_vits_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / "G_1000.pth"
    model = _tensor_dict(["enc_p.emb.weight", "dec.conv_pre.weight", "flow.flows.0.enc.in_layers.0.bias"])
    torch.save({"model": model, "iteration": 1000, "optimizer": None, "learning_rate": 2e-4}, path)
    _expect(path, "VITS", "'model'")


def test_truncated_download_is_refused(tmp_path, checkpoint) -> None:
    path = tmp_path / "wav2lip.pth"
    data = checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    _expect(path, "truncated")


def test_files_that_are_not_torch_files_are_refused(tmp_path) -> None:
    html = tmp_path / "wav2lip.pth"
    html.write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    _expect(html, "HTML")
    wav = CONFORMANCE / "speech_16k.wav"
    _expect(wav, "RIFF")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    _expect(empty, "empty")
    _expect(tmp_path / "missing.pth", "does not exist")


def test_pickled_objects_are_not_executed(tmp_path) -> None:
    path = tmp_path / "objects.pth"
    with path.open("wb") as handle:
        pickle.dump({"state_dict": {"x": torch.nn.Linear(1, 1)}}, handle)
    message = _expect(path)
    assert "Wav2Lip" in message


def test_wrong_shapes_and_missing_keys_are_named(tmp_path) -> None:
    state = fill_state_dict()
    del state["output_block.1.bias"]
    state["audio_encoder.0.conv_block.0.weight"] = torch.zeros(32, 1, 5, 5)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "edited.pth"
    torch.save({"state_dict": state}, path)
    _expect(path, "output_block.1.bias", "extra.weight", "audio_encoder.0.conv_block.0.weight", "(32, 1, 5,")


@pytest.mark.parametrize("subpixel", [False, True])
def test_fused_and_cached_forms_match_the_official_forward(model: Wav2Lip, model_io, subpixel: bool) -> None:
    fused = FusedWav2Lip(model, subpixel=subpixel)
    mel, face = torch.from_numpy(model_io["mel"]), torch.from_numpy(model_io["face"])
    with torch.inference_mode():
        out = fused(mel, face)
        constants = fused.face_constants(face[:1])  # one still face for all 4 items
        cached = fused.forward_cached(mel, constants)
        channels_last = fused.forward_cached_nhwc(mel, [c.permute(0, 2, 3, 1) for c in constants])
    assert np.abs(out.numpy() - model_io["out"]).max() < OUT_ATOL
    assert np.abs(cached.numpy() - model_io["out"]).max() < OUT_ATOL
    assert np.abs(channels_last.numpy() - model_io["out"]).max() < OUT_ATOL
    assert [tuple(c.shape) for c in constants] == [
        (1, 512, 3, 3), (1, 512, 6, 6), (1, 384, 12, 12), (1, 256, 24, 24), (1, 128, 48, 48),
        (1, 64, 96, 96), (1, 32, 96, 96),
    ]
