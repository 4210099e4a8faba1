"""Segmenter: cuts a stream of text chunks (e.g. LLM tokens) into clauses the TTS can speak.

A clause ends at sentence or clause punctuation (Latin `. ! ? ; : ,` followed by whitespace, CJK
`。！？；：，、` right away), at a length bound on a word boundary, or when the client flushes or ends its
input. The first clause of a reply is cut early so that the first audio comes fast, at a natural break
within a bound: punctuation within its first `first_clause_max_words` words, else before a word that opens
a phrase ("and", "which", "by", ...) once it has `first_clause_words`, else at `first_clause_max_words`
words; the session cuts it at its last word when the text stalls (`cut_waiting`). A cut with no punctuation
puts a clause's end and start silences mid-sentence (~150 ms with the default voice, bench/FIGURES.md), a
cut at punctuation only the pause the sentence has there anyway.

Every character is examined a bounded number of times, whatever the text and however it is chunked: a
push scans only what the previous pushes have not, cuts look only within the length bound, and the
abbreviation check looks back a few characters. A hostile text cannot make the event loop's work more than
linear in its length.
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
# A word before a dot longer than this is no abbreviation, so the look-behind stops there.
_LONGEST_ABBREVIATION = max(len(word) for word in ABBREVIATIONS)
# Words that open a phrase (conjunctions, relative words, prepositions): an early first cut goes before one.
PHRASE_OPENERS = frozenset(
    "and but or so because since although though while whereas unless until when where which who whom whose "
    "that if then after before as by with from for into onto about through during without within across "
    "around near under over at in on of to".split()
)
_LONGEST_OPENER = max(len(word) for word in PHRASE_OPENERS)
FIRST_CLAUSE_MAX_WORDS = 10
# The characters where a cut may be: the scan jumps from one to the next (one character class: each search
# is linear in what it passes over, and runs at C speed over long words).
_BOUNDARY = re.compile(f"[{CJK_PUNCTUATION}\\s]")
_NOT_SPACE = re.compile(r"\S")


def _is_word_char(char: str) -> bool:
    """What may precede the dot of an abbreviation or initial: letters, digits, "_" and inner dots."""
    return char.isalnum() or char in "._"


class Segmenter:
    """Accumulates text and returns the clauses that are complete. Not thread-safe (one per session)."""

    def __init__(
        self,
        first_clause_words: int = 4,
        max_clause_chars: int = 160,
        first_clause_max_words: int | None = None,
    ) -> None:
        """A first clause is cut at punctuation within `first_clause_max_words` words (None: 10, or
        first_clause_words if more), else before a phrase opener after at least `first_clause_words` words,
        else at `first_clause_max_words` words (equal values: always at that many words)."""
        if first_clause_max_words is None:
            first_clause_max_words = max(first_clause_words, FIRST_CLAUSE_MAX_WORDS)
        if first_clause_words < 1:
            raise ValueError(f"first_clause_words {first_clause_words} must be at least 1")
        if first_clause_max_words < first_clause_words:
            raise ValueError(
                f"first_clause_max_words {first_clause_max_words} must be at least first_clause_words "
                f"({first_clause_words})"
            )
        if max_clause_chars < 8:
            raise ValueError(f"max_clause_chars {max_clause_chars} must be at least 8")
        self.first_clause_words = first_clause_words
        self.first_clause_max_words = first_clause_max_words
        self.max_clause_chars = max_clause_chars
        self.examined = 0
        """Characters looked at so far (tests prove with it that the work is linear in the text)."""
        self._pending = ""  # never longer than max_clause_chars between pushes
        self._first = True  # the next clause is the first of a reply
        self._forget_scan()

    def _forget_scan(self) -> None:
        """What the scan of the pending text has found so far (offsets relative to its start)."""
        self._scanned = 0  # characters of the pending text scanned with no cut found
        self._words = 0  # words ended by whitespace
        self._in_word = False
        self._last_space = -1
        self._opener_cut = -1  # a first clause's cut before a phrase opener (offset), after enough words

    @property
    def pending(self) -> str:
        """Text received but not yet cut into a clause."""
        return self._pending

    def push(self, text: str) -> list[str]:
        """Adds a chunk of any size and returns the clauses it completed (stripped, non-empty)."""
        # One concatenation per push, of at most max_clause_chars pending characters; the cuts below only
        # move `start` through it, so a long chunk is never copied once per clause.
        buffer = self._pending + text
        start = 0
        clauses: list[str] = []
        while True:
            if self._scanned == 0:  # a clause begins here: leading whitespace belongs to no clause
                first = _NOT_SPACE.search(buffer, start)
                skipped_to = len(buffer) if first is None else first.start()
                self.examined += skipped_to - start
                start = skipped_to
            cut = self._find_cut(buffer, start)
            if cut is None:
                break
            clause = buffer[start:cut].strip()
            start = cut
            self._forget_scan()
            if clause:
                clauses.append(clause)
                self._first = False
        self._pending = buffer[start:]
        return clauses

    def waiting_first(self) -> bool:
        """A first clause has its minimum of words but waits for a natural break (see cut_waiting)."""
        return self._first and self._words >= self.first_clause_words

    def cut_waiting(self) -> list[str]:
        """The text stalled while a first clause waits for a natural break: cuts it after its last whole
        word (the word being typed stays pending)."""
        if not self.waiting_first() or self._last_space <= 0:
            return []
        cut = self._last_space + 1
        clause = self._pending[:cut].strip()
        rest = self._pending[cut:]
        self._pending = ""
        self._forget_scan()
        self._first = False
        clauses = [clause] if clause else []
        return clauses + self.push(rest)  # the rest is scanned again: at most one word

    def flush(self) -> list[str]:
        """Cuts whatever is pending (the client flushed or ended); the next clause is a first one again."""
        clause = self._pending.strip()
        self.reset()
        return [clause] if clause else []

    def reset(self) -> None:
        """Drops the pending text (interrupt); the next clause is the first of a new reply."""
        self._pending = ""
        self._first = True
        self._forget_scan()

    def _find_cut(self, text: str, start: int) -> int | None:
        """Where the clause beginning at `start` ends, or None while the text so far does not tell.

        Within the first max_clause_chars characters, the first punctuation that ends a clause wins; else,
        for a first clause, the end of its first words; else, once the bound is passed, the last
        whitespace within it (or the bound itself inside one long word). Resumes where the last call
        stopped, so each character is scanned once per clause it may belong to.
        """
        bound = self.max_clause_chars
        end = min(len(text), start + bound + 1)
        word_cut: int | None = None
        index = start + self._scanned
        while index < end:
            boundary = _BOUNDARY.search(text, index, end)
            found = end if boundary is None else boundary.start()
            if found > index:  # letters, digits, Latin punctuation: inside a word
                self.examined += found - index
                self._in_word = True
                index = found
                if index == end:
                    break
            self.examined += 1
            if text[index] in CJK_PUNCTUATION:
                return index + 1
            # Whitespace: it ends a clause after punctuation, and a word.
            before = text[index - 1]  # index > start: a clause starts with a non-space
            if before in LATIN_PUNCTUATION:
                ends = self._ends_clause(text, start, index - 1)
                if ends is None:  # the next character decides, and it has not come: resume here
                    self._scanned = index - start
                    return None
                if ends:
                    return index
            if self._in_word:
                self._words += 1
                if self._first:
                    if self._words > self.first_clause_words and self._opener_cut < 0 and self._opens_phrase(
                        text, start, index
                    ):
                        self._opener_cut = self._last_space + 1  # before this word
                    if self._words == self.first_clause_max_words:
                        word_cut = index + 1  # taken only if no punctuation ends a clause within the bound
            self._in_word = False
            self._last_space = index - start
            index += 1
        self._scanned = index - start
        if self._opener_cut > 0:
            return start + self._opener_cut
        if word_cut is not None:
            return word_cut
        if self._scanned > bound:
            return start + self._last_space + 1 if self._last_space > 0 else start + bound
        return None

    def _opens_phrase(self, text: str, start: int, index: int) -> bool:
        """Whether the word that the whitespace at `index` ends opens a phrase (bounded look-behind)."""
        word_start = start + self._last_space + 1
        if index - word_start > _LONGEST_OPENER:
            return False
        self.examined += index - word_start
        return text[word_start:index].lower() in PHRASE_OPENERS

    def _ends_clause(self, text: str, start: int, index: int) -> bool | None:
        """Whether the punctuation at `index`, followed by whitespace, ends a clause: not the dot of an
        abbreviation ("Dr.", "e.g.") or of an initial ("J. Smith"). A dotted initialism ("p.m.", "U.S.")
        ends one unless the next word starts in lower case or with a digit ("at 5 p.m. on Friday"); None
        while that character has not come. Numbers (3.14, 1,000) never get here: no whitespace follows
        their punctuation."""
        if text[index] != ".":
            return True
        length = 0  # of the word (letters, digits, inner dots) before the dot, up to one past the longest
        while (
            length <= _LONGEST_ABBREVIATION
            and index - length > start
            and _is_word_char(text[index - length - 1])
        ):
            self.examined += 1
            length += 1
        if length == 0 or length > _LONGEST_ABBREVIATION:
            return True
        token = text[index - length : index]
        if token.lower() in ABBREVIATIONS:
            return False
        if "." in token.strip("."):
            if index + 2 >= len(text):
                return None
            self.examined += 1
            following = text[index + 2]  # after the one whitespace character
            return not (following.islower() or following.isdigit())
        return not (length == 1 and token.isupper())  # an initial, as in "J. Smith"
