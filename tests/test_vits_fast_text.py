"""VITS-fast-fine-tuning text: our frontend gives, id for id, what upstream's `text_to_sequence` (then the
blanks) gives, for its three base models' cleaners and symbols (conformance/vits_fast, made by upstream).

`pytest -s tests/test_vits_fast_text.py -k rate` prints the match table, dev and held-out per config.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from lipstream.models.viseme.mapping import phoneme_to_viseme, visemes_from_phonemes
from lipstream.models.vits import load_voice
from lipstream.models.vits.frontend import SymbolFrontend
from lipstream.models.vits.text import cleaners as text_cleaners
from lipstream.models.vits.text.cleaners import add_language_marks, balance_language_marks
from lipstream.models.vits.text.mandarin import number_to_chinese
from lipstream.server.segmenter import Segmenter

from tests.test_vits_support import TINY_MODEL, fill_, save_upstream_checkpoint, tiny_model

VITS_FAST = Path(__file__).parent / "data" / "conformance" / "vits_fast"
CONFIGS = ("uma_trilingual.json", "cj_zh_ja_mixture.json", "c_chinese.json")
CASES: list[dict[str, Any]] = json.loads((VITS_FAST / "cases.json").read_text(encoding="utf-8"))

# Sentences where we knowingly differ from upstream, and why. Empty: every sentence matches.
KNOWN_DIFFERENCES: dict[tuple[str, str], str] = {}


def _config(name: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((VITS_FAST / name).read_text(encoding="utf-8"))
    return config


_FRONTENDS: dict[str, SymbolFrontend] = {}


def frontend(name: str) -> SymbolFrontend:
    if name not in _FRONTENDS:
        config = _config(name)
        data = config["data"]
        _FRONTENDS[name] = SymbolFrontend(config["symbols"], data["text_cleaners"], data["add_blank"])
    return _FRONTENDS[name]


def our_ids(name: str, text: str) -> list[int]:
    clauses = frontend(name)(text)
    assert len(clauses) <= 1
    return clauses[0].ids if clauses else []


PAIRS = [
    pytest.param(name, i, id=f"{name.removesuffix('.json')}-{case['split']}-{i:03d}")
    for i, case in enumerate(CASES)
    for name in CONFIGS
    if name in case["expected"]
]


@pytest.mark.parametrize(("config_name", "index"), PAIRS)
def test_ids_equal_upstream(config_name: str, index: int) -> None:
    case = CASES[index]
    expected = case["expected"][config_name]
    why = KNOWN_DIFFERENCES.get((config_name, case["text"]))
    ours = our_ids(config_name, case["text"])
    ours_cleaned = frontend(config_name).clean(case["text"])
    why_not = f"{case['text']!r}\n upstream {expected['cleaned']!r}\n ours     {ours_cleaned!r}"
    if why:
        assert ours != expected["ids"], f"now identical: remove it from KNOWN_DIFFERENCES: {why_not}"
        pytest.xfail(why)
    assert ours == expected["ids"], why_not


def test_match_rate_per_config_and_split() -> None:
    """The report: identical sentences per config on dev and held-out; held-out must reach 98%."""
    total: Counter[tuple[str, str]] = Counter()
    same: Counter[tuple[str, str]] = Counter()
    for case in CASES:
        for name, expected in case["expected"].items():
            total[name, case["split"]] += 1
            same[name, case["split"]] += our_ids(name, case["text"]) == expected["ids"]
    splits = ("dev", "heldout")
    print("\nconfig                  dev          held-out")
    for name in CONFIGS:
        cells = [f"{same[name, s]}/{total[name, s]} ({same[name, s] / total[name, s]:.1%})" for s in splits]
        print(f"{name:<23} {cells[0]:<12} {cells[1]}")
    for name in CONFIGS:
        assert total[name, "heldout"] >= 50
        assert same[name, "heldout"] / total[name, "heldout"] >= 0.98, name


def test_cjke_and_cje_cleaners_strings_equal_upstream() -> None:
    # cjke_cleaners has no symbol list in this upstream: its cleaned string is the fact compared.
    for case in CASES:
        expected = case["cleaned"]["cjke_cleaners"]
        assert text_cleaners.cjke_cleaners(case["text"]) == expected, case["text"]
        assert text_cleaners.cje_cleaners(case["text"]) == expected, case["text"]


# --- text without marks -------------------------------------------------------------------------------


def test_plain_text_is_marked_by_script() -> None:
    cje = ("zh", "ja", "en")
    assert add_language_marks("我用iPhone拍了照片。", cje) == "[ZH]我用[ZH][EN]iPhone[EN][ZH]拍了照片。[ZH]"
    # Without English, Latin letters stay in the Mandarin run, where they are spelled letter by letter.
    assert add_language_marks("我用iPhone拍照", ("zh", "ja")) == "[ZH]我用iPhone拍照[ZH]"
    # A CJK run with kana is Japanese; digits and spaces join the run before them (the first, at the start).
    assert add_language_marks("2024年、東京に行きます。Hello world!", cje) == (
        "[JA]2024年、東京に行きます。[JA][EN]Hello world![EN]"
    )
    assert add_language_marks("Good morning, 早上好！", cje) == "[EN]Good morning, [EN][ZH]早上好！[ZH]"
    # Each CJK sentence is Chinese or Japanese by itself.
    assert add_language_marks("你好。こんにちは。", cje) == "[ZH]你好。[ZH][JA]こんにちは。[JA]"
    # Marked text is the writer's choice and stays as it is.
    assert add_language_marks("[ZH]你好[ZH] hi", cje) == "[ZH]你好[ZH] hi"


def test_clauses_cut_inside_marks_keep_their_language() -> None:
    # The server's segmenter cuts at punctuation, also inside a mark's part.
    text = "[ZH]你好，世界。[ZH][EN]Hello, how are you?[EN][ZH]我很好[ZH]"
    segmenter = Segmenter()
    clauses = segmenter.push(text) + segmenter.flush()
    assert clauses == ["[ZH]你好，", "世界。", "[ZH][EN]Hello,", "how are you?[EN][ZH]我很好[ZH]"]
    assert [balance_language_marks(c) for c in clauses] == [
        "[ZH]你好，[ZH]", "世界。", "[EN]Hello,[EN]", "[EN]how are you?[EN][ZH]我很好[ZH]"]
    for clause in clauses:
        (spoken,) = frontend("uma_trilingual.json")(clause)
        assert not spoken.skipped, clause  # no mark or Han character left raw
    # Marks that pair up are the writer's, as upstream reads them.
    assert balance_language_marks("hi [ZH]你好[ZH]") == "hi [ZH]你好[ZH]"


@pytest.mark.parametrize("name", CONFIGS)
def test_plain_mandarin_equals_marked_mandarin(name: str) -> None:
    for text in ("我今年25岁，在北京工作了3年。", "你吃饭了吗？"):
        assert our_ids(name, text) == our_ids(name, f"[ZH]{text}[ZH]")
    # A Latin word is English where the voice speaks English, else spelled in Mandarin.
    text = "请把PPT发给我。"
    marked = "[ZH]请把[ZH][EN]PPT[EN][ZH]发给我。[ZH]" if name == "uma_trilingual.json" else f"[ZH]{text}[ZH]"
    assert our_ids(name, text) == our_ids(name, marked)


def test_a_mandarin_only_voice_reads_every_mark_as_mandarin() -> None:
    c_voice = frontend("c_chinese.json")
    expected = "ㄋㄧˇㄏㄠˇ ㄕˋㄐㄧㄝˋ。"
    assert c_voice.clean("[EN]你好[EN][JA]世界[JA]") == c_voice.clean("[ZH]你好世界[ZH]") == expected


def test_numbers_cn2an_refuses_are_read_digit_by_digit() -> None:
    assert number_to_chinese("12345678901234567890") == "一二三四五六七八九零一二三四五六七八九零"
    assert number_to_chinese("第1名，3.5分") == "第一名，三点五分"


def test_threads_get_the_same_ids() -> None:
    texts = [case["text"] for case in CASES if "[JA]" not in case["text"]][:40]
    expected = {t: our_ids("uma_trilingual.json", t) for t in texts}
    results: list[bool] = []

    def work() -> None:
        results.append(all(our_ids("uma_trilingual.json", t) == expected[t] for t in texts))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 4


# --- voices of the three base models ----------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_every_template_symbol_has_a_viseme(name: str) -> None:
    for symbol in _config(name)["symbols"]:
        phoneme_to_viseme(symbol)  # raises on a symbol no table knows


@pytest.mark.parametrize("name", CONFIGS)
def test_fine_tuned_voice_speaks_and_its_spans_are_symbols(name: str, tmp_path: Path) -> None:
    config = _config(name)
    config["model"] = dict(TINY_MODEL, gin_channels=8)
    config["data"]["n_speakers"] = 2
    config["speakers"] = {"taffy": 0, "dingzhen": 1}
    model = tiny_model(config, len(config["symbols"]))
    state = fill_(model)
    (tmp_path / "finetune_speaker.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    save_upstream_checkpoint(tmp_path / "G_latest.pth", state)
    voice = load_voice(tmp_path / "G_latest.pth", device="cpu")
    assert voice.format == "vits-fast-fine-tuning" and voice.languages[0] == "zh"

    text = "中国有14亿人口。"
    ids = voice.frontend(text)[0].ids
    assert ids == our_ids(name, f"[ZH]{text}[ZH]")
    with torch.inference_mode():
        speech = voice.synthesize(text, speaker="dingzhen", noise_scale=0.0, noise_scale_w=0.0)
    assert len(speech.audio) > 0
    cleaned = voice.frontend.clean(text)
    assert {span.phoneme for span in speech.phonemes} <= set(cleaned)
    assert visemes_from_phonemes(speech.phonemes)  # every span has its viseme
