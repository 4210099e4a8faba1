"""Official VITS `english_cleaners2` / `english_cleaners` against phonemizer's espeak backend run by the
official code itself (reference data: tests/data/conformance/vits/english_cleaners/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lipstream.models.vits.text import official

DATA = Path(__file__).parent / "data" / "conformance" / "vits" / "english_cleaners"


@pytest.mark.parametrize("cleaner", ["english_cleaners2", "english_cleaners"])
def test_identical_to_phonemizer(cleaner: str) -> None:
    reference: dict[str, Any] = json.loads((DATA / "phonemizer_espeak_1.52.json").read_text(encoding="utf-8"))
    function = getattr(official, cleaner)
    mismatches = [
        f"{case['text']!r}: {function(case['text'])!r}, phonemizer {case[cleaner]!r}"
        for case in reference["cases"]
        if function(case["text"]) != case[cleaner]
    ]
    assert len(reference["cases"]) >= 100 and mismatches == []


def test_empty_and_marks_only() -> None:
    assert official.english_cleaners2("") == ""
    assert official.english_cleaners2("?!") == "?!"
    assert official.english_cleaners("?!") == ""
