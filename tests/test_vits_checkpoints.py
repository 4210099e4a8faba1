"""Official VITS and VITS-fast-fine-tuning checkpoints: written the way upstream writes them (tiny sizes,
deterministic fill), loaded by path, synthesized; and every way a checkpoint or config can be wrong."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from lipstream.models.vits import (
    OFFICIAL_SYMBOLS,
    CheckpointError,
    UnknownSpeakerError,
    Voice,
    VoiceNotFoundError,
    load_voice,
)

from tests.test_vits_support import (
    official_config,
    save_upstream_checkpoint,
    snr_db,
    tiny_model,
    write_fast_fine_tuning_voice,
    write_official_voice,
)


def assert_contiguous(speech_len: int, spans: list) -> None:
    assert spans and spans[0].start_sample == 0 and spans[-1].end_sample == speech_len
    assert all(a.end_sample == b.start_sample for a, b in zip(spans, spans[1:], strict=False))


def test_official_round_trip(tmp_path: Path) -> None:
    path, state = write_official_voice(tmp_path / "ljs")
    voice = load_voice(path, device="cpu")
    assert (voice.format, voice.sample_rate, voice.speakers, voice.languages) == ("vits", 22050, [], ["en"])

    clauses = voice.frontend("Hello world.")
    ids = clauses[0].ids
    assert len(ids) % 2 == 1 and ids[0::2] == [0] * ((len(ids) + 1) // 2)  # blanks around every symbol
    symbols = "".join(OFFICIAL_SYMBOLS[i] for i in ids[1::2])
    assert symbols == "həlˈoʊ wˈɜːld."

    # The same weights in a fresh model give the same audio as the loaded voice.
    reference = tiny_model(official_config(), len(OFFICIAL_SYMBOLS)).eval()
    reference.load_state_dict(state)
    with torch.inference_mode():
        expected, durations = reference.infer(torch.tensor([ids]), None, 0.0, 1.0, 0.0)
    speech = voice.synthesize("Hello world.", noise_scale=0.0, noise_scale_w=0.0)
    assert speech.audio.shape == tuple(expected.shape) and len(speech.audio) == int(durations.sum()) * 256
    assert snr_db(expected.numpy(), speech.audio) >= 60.0
    assert_contiguous(len(speech.audio), speech.phonemes)
    assert [s.phoneme for s in speech.phonemes if s.phoneme.strip()] == [c for c in symbols if c.strip()][
        : len([s for s in speech.phonemes if s.phoneme.strip()])
    ]


def test_official_inference_only_file_loads(tmp_path: Path) -> None:
    # Files stripped of the posterior encoder still load (upstream keeps the initialised values).
    path, state = write_official_voice(tmp_path / "ljs")
    save_upstream_checkpoint(path, {k: v for k, v in state.items() if not k.startswith("enc_q.")})
    voice = load_voice(path, device="cpu")
    assert len(voice.synthesize("Yes.").audio) > 0


def test_multi_speaker_official(tmp_path: Path) -> None:
    path, _ = write_official_voice(tmp_path / "vctk", n_speakers=4)
    voice = load_voice(tmp_path / "vctk", device="cpu")  # the folder works too
    assert voice.speakers == ["0", "1", "2", "3"]
    a = voice.synthesize("Good morning.", speaker="1", noise_scale=0.0, noise_scale_w=0.0).audio
    b = voice.synthesize("Good morning.", speaker="3", noise_scale=0.0, noise_scale_w=0.0).audio
    assert len(a) > 0 and len(b) > 0
    assert len(a) != len(b) or not np.allclose(a, b)
    with pytest.raises(UnknownSpeakerError, match=r"'7'.*0, 1, 2, 3"):
        voice.synthesize("Good morning.", speaker="7")


def test_fast_fine_tuning_trilingual_round_trip(tmp_path: Path) -> None:
    speakers = {"ayaka": 0, "nahida": 1, "zhongli": 2}
    path, _ = write_fast_fine_tuning_voice(tmp_path / "uma", "fft_uma_trilingual_state_dict.json", speakers)
    voice = load_voice(path, device="cpu")
    assert voice.format == "vits-fast-fine-tuning"
    assert voice.speakers == ["ayaka", "nahida", "zhongli"]
    assert {"zh", "en"} <= set(voice.languages)

    english = voice.synthesize("[EN]Hello there.[EN]", speaker="nahida")
    assert len(english.audio) > 0
    assert_contiguous(len(english.audio), english.phonemes)
    mandarin = voice.synthesize("你好，世界。", speaker="zhongli")
    assert_contiguous(len(mandarin.audio), mandarin.phonemes)
    # Each span is one symbol of upstream's cleaned text (cjke_cleaners2: IPA with tone arrows).
    assert voice.frontend.clean("你好，世界。") == "ni↓↑xɑʊ↓↑, s`ɹ`↓tʃ⁼iɛ↓."
    assert {s.phoneme for s in mandarin.phonemes} <= set("ni↓↑xɑʊ↓↑, s`ɹ`↓tʃ⁼iɛ↓.")
    with pytest.raises(UnknownSpeakerError, match="ayaka, nahida, zhongli"):
        voice.synthesize("你好", speaker="paimon")
    assert len(voice.synthesize("[JA]こんにちは[JA]").audio) > 0


def test_unknown_characters_are_skipped_and_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = write_official_voice(tmp_path / "v")
    config = json.loads((tmp_path / "v" / "config.json").read_text())
    config["data"]["text_cleaners"] = ["basic_cleaners"]  # characters go to symbols unchanged
    (tmp_path / "v" / "config.json").write_text(json.dumps(config))
    voice: Voice = load_voice(path, device="cpu")
    caplog.set_level(logging.WARNING, logger="lipstream.models.vits.voice")
    first = voice.synthesize("Ok \u263a fine \u263a.")
    second = voice.synthesize("Ok \u263a again.")
    assert len(first.audio) > 0 and len(second.audio) > 0
    assert "".join(s.phoneme for s in first.phonemes) == "ok  fine ."
    reports = [r.getMessage() for r in caplog.records if "cannot say" in r.getMessage()]
    assert len(reports) == 1 and "\u263a" in reports[0]


# --- what can be wrong with a file ---------------------------------------------------------------------


def test_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    path, _ = write_official_voice(tmp_path / "v")
    path.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match=r"G_100\.pth.*corrupt or truncated"):
        load_voice(path)


def test_truncated_checkpoint_names_the_file(tmp_path: Path) -> None:
    path, _ = write_official_voice(tmp_path / "v")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"G_100\.pth.*corrupt or truncated"):
        load_voice(path)


def test_mismatched_config_lists_the_shapes(tmp_path: Path) -> None:
    path, _ = write_official_voice(tmp_path / "v")
    config = json.loads((tmp_path / "v" / "config.json").read_text())
    config["model"]["hidden_channels"] = 24
    (tmp_path / "v" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"G_100\.pth.*shape mismatches \(enc_p\.emb\.weight: file \(178, 16\)"
    ):
        load_voice(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    path, state = write_official_voice(tmp_path / "v")
    del state["dec.conv_pre.weight"]
    state["dec.extra.weight"] = torch.zeros(1)
    save_upstream_checkpoint(path, state)
    with pytest.raises(CheckpointError) as info:
        load_voice(path)
    message = str(info.value)
    assert "G_100.pth" in message and "missing keys (dec.conv_pre.weight)" in message
    assert "unexpected keys (dec.extra.weight)" in message


def test_not_a_state_dict(tmp_path: Path) -> None:
    path, _ = write_official_voice(tmp_path / "v")
    torch.save({"model": "nothing here", "iteration": 1}, path)
    with pytest.raises(CheckpointError, match=r"G_100\.pth holds no state dict"):
        load_voice(path)


def test_config_problems_name_the_config(tmp_path: Path) -> None:
    path, _ = write_official_voice(tmp_path / "v")
    config_path = tmp_path / "v" / "config.json"
    config_path.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        load_voice(path)
    config = official_config()
    del config["model"]["inter_channels"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json lacks or mistypes 'inter_channels'"):
        load_voice(path)
    config = official_config()
    config["data"]["text_cleaners"] = ["klingon_cleaners"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json.*klingon_cleaners"):
        load_voice(path)
    config_path.unlink()
    with pytest.raises(CheckpointError, match=r"G_100\.pth needs its config"):
        load_voice(path)


def test_unknown_voice_name_or_file(tmp_path: Path) -> None:
    with pytest.raises(VoiceNotFoundError, match="en_US-nobody-medium.*en_US-joe-medium"):
        load_voice("en_US-nobody-medium")
    other = tmp_path / "voice.txt"
    other.write_text("hello")
    with pytest.raises(VoiceNotFoundError, match="not a voice"):
        load_voice(other)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VoiceNotFoundError, match="holds no voice"):
        load_voice(tmp_path / "empty")
