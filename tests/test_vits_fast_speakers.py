"""VITS-fast-fine-tuning voices of one and of three speakers against upstream's own model: the same config
and deterministically filled weights, the same ids (tests/data/conformance/vits_fast/speakers/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lipstream.models.vits import CheckpointError, load_voice
from lipstream.models.vits.frontend import Clause, Token

from tests.test_vits_support import (
    fill_,
    official_config,
    save_upstream_checkpoint,
    snr_db,
    tiny_model,
    write_official_voice,
)

DATA = np.load(
    Path(__file__).parent / "data" / "conformance" / "vits_fast" / "speakers" / "fft_speakers_io.npz"
)


def _write_voice(folder: Path, tag: str) -> tuple[Path, dict[str, Any]]:
    config: dict[str, Any] = json.loads(str(DATA[f"{tag}_config"]))
    model = tiny_model(config, len(config["symbols"]))
    # The fill gives entry i of the state dict its values: the same order is the same weights.
    assert list(model.state_dict()) == DATA[f"{tag}_state_dict_keys"].tolist()
    state = fill_(model)
    assert tuple(state["emb_g.weight"].shape) == tuple(DATA[f"{tag}_emb_g_shape"])
    folder.mkdir()
    (folder / "finetune_speaker.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    save_upstream_checkpoint(folder / "G_latest.pth", state)
    return folder / "G_latest.pth", config


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
@pytest.mark.parametrize("tag", ["single", "multi"])
def test_speaker_embedding_as_upstream(tmp_path: Path, tag: str, runtime: str) -> None:
    path, config = _write_voice(tmp_path / tag, tag)
    voice = load_voice(path, device="cpu", runtime=runtime)
    assert voice.format == "vits-fast-fine-tuning" and voice.speakers == list(config["speakers"])
    ids = DATA[f"{tag}_ids"].tolist()
    speaker = voice.speakers[int(DATA[f"{tag}_sid"])]
    # The recorded ids go in as the frontend's clause: the whole serving path from there.
    voice.frontend = lambda text: [Clause([Token("x", tuple(ids))], frozenset())]
    scales = {"length_scale": float(DATA[f"{tag}_length_scale"]), "noise_scale": 0.0, "noise_scale_w": 0.0}
    speech = voice.synthesize("x", speaker=speaker, **scales)
    expected = DATA[f"{tag}_audio"]
    assert len(speech.audio) == len(expected) == int(DATA[f"{tag}_durations"].sum()) * voice.hop_length
    assert snr_db(expected, speech.audio) >= 80.0
    _, durations = voice.model.infer(torch.tensor([ids]), int(DATA[f"{tag}_sid"]), **scales)
    assert durations.tolist() == DATA[f"{tag}_durations"].tolist()
    if tag == "single":  # no speaker named: the one speaker
        assert np.array_equal(voice.synthesize("x", **scales).audio, speech.audio)


def test_official_single_speaker_has_no_embedding(tmp_path: Path) -> None:
    # Official VITS builds the speaker embedding from two speakers on; `n_speakers: 1` is a plain voice.
    path, _ = write_official_voice(tmp_path / "ljs")
    config = official_config()
    config["data"]["n_speakers"] = 1
    (tmp_path / "ljs" / "config.json").write_text(json.dumps(config))
    voice = load_voice(path, device="cpu", runtime="torch")
    assert voice.speakers == [] and not hasattr(voice.model, "emb_g")


def test_fast_fine_tuning_single_speaker_without_table(tmp_path: Path) -> None:
    path, config = _write_voice(tmp_path / "v", "single")
    del config["speakers"]
    (tmp_path / "v" / "finetune_speaker.json").write_text(json.dumps(config, ensure_ascii=False))
    voice = load_voice(path, device="cpu", runtime="torch")
    assert voice.speakers == ["0"] and voice.model.emb_g.weight.shape[0] == 1
    voice.frontend = lambda text: [Clause([Token("x", (0, 5, 0, 9, 0))], frozenset())]
    assert len(voice.synthesize("x").audio) > 0
    state = fill_(tiny_model(config, len(config["symbols"])))
    del state["emb_g.weight"]
    save_upstream_checkpoint(path, state)
    with pytest.raises(CheckpointError, match=r"missing keys \(emb_g\.weight\)"):
        load_voice(path, device="cpu", runtime="torch")
