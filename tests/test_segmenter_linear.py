"""The segmenter's work is linear in the text's length, for the texts that make a naive one quadratic.

No clock: each shape is segmented at n and 2n characters, counting the characters the segmenter examines
and the Python lines it runs (a rescan from the start of the pending text, or a look-behind over the
whole text, shows as 4x where linear work is 2x)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from lipstream.server import segmenter as segmenter_module
from lipstream.server.segmenter import Segmenter

N = 5_000  # and 2N = 10,000, the server's default bound on one text input


def _issue_shape(n: int) -> list[str]:
    """The text that froze the server for 6.9 s: one long word, a dash, then many abbreviations."""
    tail = "Dr. " * (n // 10)
    return ["a" * (n - len(tail) - 1) + "-" + tail]


SHAPES: dict[str, Callable[[int], list[str]]] = {
    "long word then abbreviations": _issue_shape,
    "one word with no space": lambda n: ["a" * n],
    "many '. '": lambda n: ["a. " * (n // 3)],
    "many abbreviations": lambda n: ["Dr. " * (n // 4)],
    "initials": lambda n: ["J. " * (n // 3)],
    "CJK with no punctuation": lambda n: ["你" * n],
    "CJK punctuation": lambda n: ["你。" * (n // 2)],
    "whitespace only": lambda n: [" " * n],
    "dots with no space": lambda n: ["." * n],
    "one character per push": lambda n: list("word Dr. x " * (n // 11)),
    "pushes of a long word": lambda n: ["ab" * 50] * (n // 100),
    "phrase openers, no punctuation": lambda n: [w + " " for w in ["which"] * (n // 6)],
}


def _work(chunks: list[str]) -> tuple[int, int]:
    """(characters examined, Python lines run in the segmenter module) to segment `chunks`."""
    segmenter = Segmenter()
    lines = 0
    code_file = segmenter_module.__file__

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal lines
        if frame.f_code.co_filename != code_file:
            return None
        if event == "line":
            lines += 1
        return trace

    clauses: list[str] = []
    sys.settrace(trace)
    try:
        for chunk in chunks:
            clauses += segmenter.push(chunk)
        clauses += segmenter.flush()
    finally:
        sys.settrace(None)
    assert all(len(clause) <= segmenter.max_clause_chars + 1 for clause in clauses)
    return segmenter.examined, lines


@pytest.mark.parametrize("shape", SHAPES)
def test_work_doubles_when_the_text_doubles(shape: str) -> None:
    examined_n, lines_n = _work(SHAPES[shape](N))
    examined_2n, lines_2n = _work(SHAPES[shape](2 * N))
    assert examined_n <= 3 * N  # a few looks per character at most
    assert examined_2n / examined_n < 2.2, (examined_n, examined_2n)
    assert lines_2n / lines_n < 2.2, (lines_n, lines_2n)


def test_pending_text_stays_within_the_clause_bound() -> None:
    segmenter = Segmenter(first_clause_words=4, max_clause_chars=20)
    for chunk in ["x" * 1000, "Dr. " * 100, "a" * 19, "b"]:
        segmenter.push(chunk)
        assert len(segmenter.pending) <= 20


def test_a_long_sentence_is_cut_at_the_bound_even_with_a_dot_after_it() -> None:
    segmenter = Segmenter(first_clause_words=50, max_clause_chars=20)
    clauses = segmenter.push("one two three four five six seven eight. nine")
    assert clauses == ["one two three four", "five six seven", "eight."]
    assert segmenter.flush() == ["nine"]
