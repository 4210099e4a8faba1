"""The state-dict layouts of conformance/vits: our module names and shapes equal upstream's, in order."""

from __future__ import annotations

import json

import pytest
import torch
from lipstream.models.vits import OFFICIAL_SYMBOLS, ModelConfig, SynthesizerTrn

from tests.test_vits_support import CONFORMANCE

LAYOUTS = [
    "official_ljs_state_dict.json",
    "official_vctk_state_dict.json",
    "fft_modified_finetune_speaker_state_dict.json",
    "fft_uma_trilingual_state_dict.json",
]


@pytest.mark.parametrize("layout_file", LAYOUTS)
def test_state_dict_layout_matches_upstream(layout_file: str) -> None:
    layout = json.loads((CONFORMANCE / layout_file).read_text(encoding="utf-8"))
    config = layout["config"]
    data = config["data"]
    n_vocab = len(config["symbols"]) if "symbols" in config else len(OFFICIAL_SYMBOLS)
    assert n_vocab == layout["n_vocab"]
    model_config = ModelConfig.from_dict(
        config["model"], n_vocab, data["filter_length"] // 2 + 1, data["n_speakers"]
    )
    with torch.device("meta"):  # names and shapes only
        model = SynthesizerTrn(model_config)
    ours = [
        (name, list(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in model.state_dict().items()
    ]
    theirs = [(e["name"], e["shape"], e["dtype"]) for e in layout["state_dict"]]
    assert ours == theirs
    if "num_params" in layout:
        assert sum(p.numel() for p in model.parameters()) == layout["num_params"]


def test_official_symbols_match_upstream() -> None:
    assert OFFICIAL_SYMBOLS == json.loads((CONFORMANCE / "official_symbols.json").read_text(encoding="utf-8"))


def test_folding_weight_norm_keeps_the_output() -> None:
    from tests.test_vits_support import fill_, official_config, tiny_model

    model = tiny_model(official_config(), len(OFFICIAL_SYMBOLS)).eval()
    fill_(model)
    z = torch.sin(torch.arange(8 * 40, dtype=torch.float32)).reshape(1, 8, 40)
    with torch.inference_mode():
        before = model.decode(z)
    model.prepare_for_inference()
    assert not any(k.endswith(("weight_g", "weight_v")) for k in model.state_dict())
    with torch.inference_mode():
        after = model.decode(z)
    assert before.shape == after.shape == (40 * 256,)
    assert torch.allclose(before, after, atol=1e-5)
