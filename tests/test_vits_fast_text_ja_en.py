"""VITS-fast-fine-tuning's Japanese and English text functions against upstream's own outputs (reference
data in tests/data/conformance/vits_fast/ja_en/, its README says how it was made)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from lipstream.models.vits import VoiceError
from lipstream.models.vits.text import english, japanese

DATA = Path(__file__).parent / "data" / "conformance" / "vits_fast" / "ja_en"


def _reference(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _mismatches(module: Any, reference: dict[str, Any]) -> list[str]:
    out = []
    for case in reference["cases"]:
        for function in reference["functions"]:
            actual = getattr(module, function)(case["text"])
            if actual != case[function]:
                out.append(f"{function}({case['text']!r}) = {actual!r}, upstream {case[function]!r}")
    return out


@pytest.mark.parametrize(("module", "name"), [(japanese, "ja"), (english, "en")])
def test_identical_to_upstream(module: Any, name: str) -> None:
    reference = _reference(name)
    assert len(reference["cases"]) >= 50
    assert _mismatches(module, reference) == []


@pytest.mark.parametrize(
    ("module", "name", "function"), [(japanese, "ja", "japanese_to_ipa2"), (english, "en", "english_to_ipa2")]
)
def test_several_threads_at_once(module: Any, name: str, function: str) -> None:
    cases = _reference(name)["cases"][:20]
    failures: list[str] = []

    def work() -> None:
        for case in cases:
            if getattr(module, function)(case["text"]) != case[function]:
                failures.append(case["text"])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_openjtalk_failure_is_a_voice_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyopenjtalk

    def broken(text: str) -> list[str]:
        raise RuntimeError("bad input")

    monkeypatch.setattr(pyopenjtalk, "extract_fullcontext", broken)
    with pytest.raises(VoiceError, match="OpenJTalk cannot read"):
        japanese.japanese_to_ipa("テスト")
