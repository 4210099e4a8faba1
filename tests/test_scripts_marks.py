"""VITS-fast-fine-tuning's language marks ([ZH], [JA], [EN], [KO]) are never spoken by a voice that does not
read them, also next to skipped text, and marks around unreadable text alone are refused like it (issue 19:
"[ZH]你好[ZH]" on the English voice said "Z H")."""

from __future__ import annotations

import pytest
from lipstream.client import Client, UtteranceEvent, WarningEvent, WordEvent
from lipstream.client.errors import InvalidArgumentError
from lipstream.server.scripts import readable_text, scripts_of_languages

ENGLISH = scripts_of_languages(["en-us"])
MANDARIN = scripts_of_languages(["zh"])
MIXED = scripts_of_languages(["zh", "ja", "en"])


@pytest.mark.parametrize(
    ("text", "kept", "skipped"),
    [
        ("[ZH]你好[ZH]", "", {"han": "你好"}),
        ("Hi 你好[ZH] there", "Hi there", {"han": "你好"}),
        ("[KO]안녕[KO]", "", {"hangul": "안녕"}),
        ("[ZH]你好，[ZH] Hi!", "Hi!", {"han": "你好，"}),
        ("[ZH]Hello[ZH] [EN]there[EN]", "Hello there", {}),
        ("A [note] stays.", "A [note] stays.", {}),
    ],
)
def test_marks_are_dropped_for_a_voice_that_would_spell_them(
    text: str, kept: str, skipped: dict[str, str]
) -> None:
    readable = readable_text(text, ENGLISH)
    assert (readable.text, readable.skipped) == (kept, skipped)


def test_marks_a_voice_reads_are_kept() -> None:
    assert readable_text("[ZH]你好[ZH]", MANDARIN).text == "[ZH]你好[ZH]"
    assert readable_text("[ZH]你好[ZH] Привет [EN]Hi[EN]", MIXED).text == "[ZH]你好[ZH] [EN]Hi[EN]"
    assert readable_text("[KO]안녕[KO] 你好", MANDARIN).text == "你好"  # Hangul skipped, its marks too


def _said(grpc_target: str, text: str) -> tuple[list[str], list[str]]:
    """The words spoken (also the utterances' texts: the word timer hides marks, the voice does not) and the
    warnings' messages."""
    with Client(grpc_target) as client:
        events = list(client.synthesize(text, words=True, timeout=60))
    texts = [e.text for e in events if isinstance(e, UtteranceEvent) and e.kind == "finished"]
    words = [e.word.strip(".,!") for e in events if isinstance(e, WordEvent)]
    assert " ".join(texts).split() == words, texts
    return words, [e.message for e in events if isinstance(e, WarningEvent)]


def test_the_english_voice_says_the_words_around_a_marked_skipped_span(grpc_target: str) -> None:
    words, warnings = _said(grpc_target, "Hi 你好[ZH] there")
    assert words == ["Hi", "there"]
    assert any("'你好'" in w for w in warnings), warnings  # not '你好['


def test_the_english_voice_says_no_mark_around_readable_text(grpc_target: str) -> None:
    words, warnings = _said(grpc_target, "[ZH]Hello[ZH]")
    assert words == ["Hello"] and not warnings


@pytest.mark.parametrize("text", ["[ZH]你好[ZH]", "[KO]안녕[KO]"])
def test_marks_and_unreadable_text_alone_are_invalid_argument(grpc_target: str, text: str) -> None:
    with Client(grpc_target) as client, pytest.raises(InvalidArgumentError, match="cannot read"):
        for event in client.synthesize(text, timeout=60):
            assert not isinstance(event, UtteranceEvent), event
