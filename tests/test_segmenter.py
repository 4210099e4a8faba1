"""Segmenter: clauses at Latin and CJK punctuation, not inside numbers, abbreviations or initialisms before
a lower-case word, a short first clause, a length bound on a word boundary, flush and reset."""

from __future__ import annotations

import pytest
from lipstream.server.segmenter import Segmenter


def feed(segmenter: Segmenter, chunks: list[str]) -> list[str]:
    clauses: list[str] = []
    for chunk in chunks:
        clauses += segmenter.push(chunk)
    return clauses + segmenter.flush()


def tokens(text: str) -> list[str]:
    """Splits like an LLM stream: words with their leading space, punctuation separate."""
    out: list[str] = []
    for word in text.split(" "):
        out.append(" " + word if out else word)
    return [piece for token in out for piece in (token[:-1], token[-1]) if piece]


def test_latin_punctuation_cuts_clauses() -> None:
    segmenter = Segmenter(first_clause_words=10)
    text = "Hi there! How are you? I am fine; thanks. Then: well, that was it."
    assert feed(segmenter, tokens(text)) == [
        "Hi there!",
        "How are you?",
        "I am fine;",
        "thanks.",
        "Then:",
        "well,",
        "that was it.",
    ]


def test_cjk_punctuation_cuts_at_once() -> None:
    segmenter = Segmenter(first_clause_words=10)
    assert segmenter.push("你好，世界") == ["你好，"]
    assert segmenter.push("。今天天气很好！明天呢？好、") == ["世界。", "今天天气很好！", "明天呢？", "好、"]
    assert segmenter.push("行；来：") == ["行；", "来："]


def test_numbers_and_abbreviations_do_not_cut() -> None:
    segmenter = Segmenter(first_clause_words=20)
    text = "Pi is 3.14 and e.g. Dr. Smith paid 1,000 dollars to J. Doe. Done."
    assert feed(segmenter, list(text)) == [
        "Pi is 3.14 and e.g. Dr. Smith paid 1,000 dollars to J. Doe.",
        "Done.",
    ]


@pytest.mark.parametrize("chunking", ["whole", "characters", "tokens"])
def test_a_dotted_initialism_ends_a_clause_only_before_a_capital(chunking: str) -> None:
    text = "We met at 9 a.m. on Monday and left at 5 p.m. tomorrow. The U.S. team won. "
    text += "I live in the U.S. It is big."
    chunks = {"whole": [text], "characters": list(text), "tokens": tokens(text)}[chunking]
    assert feed(Segmenter(first_clause_words=20), chunks) == [
        "We met at 9 a.m. on Monday and left at 5 p.m. tomorrow.",
        "The U.S. team won.",
        "I live in the U.S.",
        "It is big.",
    ]


def test_an_initialism_waits_for_the_next_word_to_begin() -> None:
    segmenter = Segmenter(first_clause_words=20)
    assert segmenter.push("It opens at 9 a.m. ") == []
    assert segmenter.push("Come early.") == ["It opens at 9 a.m."]
    assert segmenter.flush() == ["Come early."]


def test_a_dot_at_the_end_of_a_chunk_waits_for_the_next_chunk() -> None:
    segmenter = Segmenter(first_clause_words=20)
    assert segmenter.push("It costs 3.") == []
    assert segmenter.push("50 dollars. ") == ["It costs 3.50 dollars."]


def test_the_first_clause_is_cut_after_a_few_words() -> None:
    segmenter = Segmenter(first_clause_words=4, first_clause_max_words=4)
    clauses = feed(
        segmenter, tokens("Well I think that the weather today is quite nice for a walk in the park")
    )
    assert clauses[0] == "Well I think that"
    assert " ".join(clauses) == "Well I think that the weather today is quite nice for a walk in the park"
    assert len(clauses) == 2  # only the first clause is cut short


def test_the_first_clause_waits_for_a_natural_break_within_a_bound() -> None:
    """Issue 19: not 'The painting you see' | 'here was made by ...' (a pause mid-sentence)."""
    text = "The painting you see here was made by Johannes Vermeer around 1665, in the city of Delft."
    assert feed(Segmenter(), tokens(text))[0] == "The painting you see here was made"  # before "by"
    comma = "Welcome to our museum, where every room tells a story."
    assert feed(Segmenter(), tokens(comma))[0] == "Welcome to our museum,"  # "to": too early for a cut
    plain = "Lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"
    assert feed(Segmenter(), tokens(plain))[0] == " ".join(plain.split()[:10])  # the bound: 10 words


def test_a_stalled_first_clause_is_cut_at_its_last_word() -> None:
    segmenter = Segmenter()
    assert segmenter.push("The painting you") == [] and not segmenter.waiting_first()
    assert segmenter.push(" see here now beau") == [] and segmenter.waiting_first()
    assert segmenter.cut_waiting() == ["The painting you see here now"]
    assert segmenter.pending == "beau" and not segmenter.waiting_first()
    assert segmenter.cut_waiting() == []  # the next clauses wait for punctuation
    assert segmenter.push("tiful, isn't it? ") == ["beautiful,", "isn't it?"]


def test_the_first_word_cut_waits_for_the_word_to_end() -> None:
    segmenter = Segmenter(first_clause_words=2, first_clause_max_words=2)
    assert segmenter.push("Hello wor") == []
    assert segmenter.push("ld") == []
    assert segmenter.push(" and") == ["Hello world"]


def test_long_text_is_cut_on_a_word_boundary() -> None:
    segmenter = Segmenter(first_clause_words=1, max_clause_chars=20, first_clause_max_words=1)
    segmenter.push("Go ")  # the first clause
    clauses = segmenter.push("alpha beta gamma delta epsilon zeta eta theta")
    assert clauses == ["alpha beta gamma", "delta epsilon zeta"]
    assert all(len(clause) <= 20 for clause in clauses)
    assert segmenter.flush() == ["eta theta"]


def test_one_word_longer_than_the_bound_is_cut_at_the_bound() -> None:
    segmenter = Segmenter(first_clause_words=5, max_clause_chars=10)
    assert segmenter.push("abcdefghijklmnopqrstuvwxyz") == ["abcdefghij", "klmnopqrst"]


def test_flush_starts_a_new_reply_with_a_short_first_clause() -> None:
    segmenter = Segmenter(first_clause_words=2, first_clause_max_words=2)
    assert segmenter.push("One two three") == ["One two"]
    assert segmenter.push(" four five six") == []
    assert segmenter.flush() == ["three four five six"]
    assert segmenter.push("Seven eight nine ") == ["Seven eight"]


def test_reset_drops_pending_text() -> None:
    segmenter = Segmenter(first_clause_words=10)
    segmenter.push("this is never spoken")
    segmenter.reset()
    assert segmenter.pending == ""
    assert segmenter.flush() == []


def test_punctuation_only_and_whitespace_make_no_empty_clauses() -> None:
    segmenter = Segmenter(first_clause_words=3)
    assert feed(segmenter, ["  ", ", ", "... ", "\n"]) == [",", "..."]


@pytest.mark.parametrize("words, chars, most", [(0, 100, None), (3, 2, None), (5, 100, 4)])
def test_bad_settings_are_refused(words: int, chars: int, most: int | None) -> None:
    with pytest.raises(ValueError, match="must be at least"):
        Segmenter(first_clause_words=words, max_clause_chars=chars, first_clause_max_words=most)
