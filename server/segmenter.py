"""Segmenter: cuts a stream of text chunks (e.g. LLM tokens) into clauses the TTS can speak.

A clause ends at sentence or clause punctuation (Latin `. ! ? ; : ,` followed by a space, CJK `。！？；：，、`
right away), at a length bound on a word boundary, or when the client flushes or ends its input. The first
clause of a reply is cut early, after a few words, so that the first audio comes fast.
"""

from __future__ import annotations

import re

CJK_PUNCTUATION = "。！？；：，、"
LATIN_PUNCTUATION = ".!?;:,"
# Abbreviations whose dot does not end a clause (lower-cased, without the dot).
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st sr jr vs etc e.g i.e approx dept est fig inc ltd no vol jan feb mar apr jun jul "
    "aug sep sept oct nov dec".split()
)
_WORD_BEFORE = re.compile(r"([\w.]+)$")


class Segmenter:
    """Accumulates text and returns the clauses that are complete. Not thread-safe (one per session)."""

    def __init__(self, first_clause_words: int = 4, max_clause_chars: int = 160) -> None:
        if first_clause_words < 1:
            raise ValueError(f"first_clause_words {first_clause_words} must be at least 1")
        if max_clause_chars < 8:
            raise ValueError(f"max_clause_chars {max_clause_chars} must be at least 8")
        self.first_clause_words = first_clause_words
        self.max_clause_chars = max_clause_chars
        self._pending = ""
        self._first = True  # the next clause is the first of a reply

    @property
    def pending(self) -> str:
        """Text received but not yet cut into a clause."""
        return self._pending

    def push(self, text: str) -> list[str]:
        """Adds a chunk of any size and returns the clauses it completed (stripped, non-empty)."""
        self._pending += text
        clauses: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            clause, self._pending = self._pending[:cut].strip(), self._pending[cut:].lstrip()
            if clause:
                clauses.append(clause)
                self._first = False
        return clauses

    def flush(self) -> list[str]:
        """Cuts whatever is pending (the client flushed or ended); the next clause is a first one again."""
        clause, self._pending = self._pending.strip(), ""
        self._first = True
        return [clause] if clause else []

    def reset(self) -> None:
        """Drops the pending text (interrupt); the next clause is the first of a new reply."""
        self._pending = ""
        self._first = True

    def _find_cut(self) -> int | None:
        text = self._pending
        for index, char in enumerate(text):
            if char in CJK_PUNCTUATION:
                return index + 1
            if char in LATIN_PUNCTUATION and self._ends_clause(text, index):
                return index + 1
        if self._first:
            cut = self._word_cut(text, self.first_clause_words)
            if cut is not None:
                return cut
        if len(text) > self.max_clause_chars:
            return self._length_cut(text)
        return None

    @staticmethod
    def _ends_clause(text: str, index: int) -> bool:
        """Latin punctuation ends a clause only when whitespace follows (so 3.14, 1,000 and e.g. wait)."""
        if index + 1 >= len(text):
            return False  # the next chunk decides: "3." may become "3.14"
        if not text[index + 1].isspace():
            return False
        if text[index] == ".":
            word = _WORD_BEFORE.search(text[:index])
            if word is not None:
                token = word.group(1)
                if token.lower() in ABBREVIATIONS:
                    return False
                if len(token) == 1 and token.isupper():
                    return False  # an initial, as in "J. Smith"
        return True

    @staticmethod
    def _word_cut(text: str, words: int) -> int | None:
        """Index after the `words`-th word when a space follows it (the word is complete)."""
        count = 0
        for match in re.finditer(r"\S+\s", text):
            count += 1
            if count == words:
                return match.end()
        return None

    def _length_cut(self, text: str) -> int:
        """Cuts at the last space within the bound, or at the bound when one word is longer than that."""
        space = text.rfind(" ", 0, self.max_clause_chars + 1)
        return space + 1 if space > 0 else self.max_clause_chars
