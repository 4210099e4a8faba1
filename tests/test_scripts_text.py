"""The text a voice is given and what the client is told of what it skips (issue 19, newcomer pass):
compatibility characters (full-width ＡＢＣ１２３, 𝒽𝑒𝓁𝓁𝑜, ℌ, Ⅻ) are spoken as the Latin letters and digits
they stand for, where espeak-ng spelled their code points or said nothing, except to a voice of a CJK script,
whose cleaners get the text as written; skipped spans are quoted in text order, words of a skipped script
apart by a space are one span, and the scripts no voice reads share one line of advice."""

from __future__ import annotations

import pytest
from lipstream.client import Client, UtteranceEvent, WarningEvent
from lipstream.server.engine import Engine, EngineSettings
from lipstream.server.scripts import readable_text, scripts_of_languages, skipped_message, unreadable_message

from tests.servers import TinyVoice, running_server
from tests.test_web_speech_scripts import WARNING, post

ENGLISH = scripts_of_languages(["en-us"])
GERMAN = scripts_of_languages(["de"])
MANDARIN = scripts_of_languages(["zh"])
JAPANESE = scripts_of_languages(["ja", "en"])
KOREAN = scripts_of_languages(["ko"])
ALONE = {"en_US-joe-medium": ["en-us"]}  # the default server's voices: no other reader
NO_READER = "no voice on this server reads"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("ＡＢＣ １２３", "ABC 123"),
        ("ＨＥＬＬＯ，ｗｏｒｌｄ！", "HELLO,world!"),
        ("𝒽𝑒𝓁𝓁𝑜 ℌ", "hello H"),
        ("Henry Ⅻ, chapter ①, ﬁsh", "Henry XII, chapter 1, fish"),
        ("¼ cup", "¼ cup"),  # espeak-ng says "a quarter"; NFKC's 1⁄4 would be "one four"
        ("ＡＢＣ 你好 ｄｅｆ", "ABC def"),  # normalised around a skipped span too
    ],
)
def test_compatibility_characters_are_latin_to_a_voice_of_no_cjk_script(text: str, said: str) -> None:
    assert readable_text(text, ENGLISH).text == said
    assert readable_text(text, GERMAN).text == said


def test_the_skipped_span_is_quoted_as_written() -> None:
    readable = readable_text("Ｈｉ 你好，ｶﾀｶﾅ！", ENGLISH)
    assert readable.text == "Hi"
    assert readable.skipped == {"han": "你好，", "kana": "ｶﾀｶﾅ！"} and readable.spans == ("你好，ｶﾀｶﾅ！",)


@pytest.mark.parametrize(
    ("scripts", "text"),
    [
        (MANDARIN, "你好，ＡＢＣ１２３！欢迎。"),
        (JAPANESE, "ｶﾀｶﾅ、Ａです！"),
        (KOREAN, "안녕하세요，ＡＢＣ！"),
    ],
)
def test_a_voice_of_a_cjk_script_gets_the_text_as_written(scripts: frozenset[str], text: str) -> None:
    """Their cleaners give upstream's symbol ids for the text as written (tests/test_vits_fast_text*.py)."""
    assert readable_text(text, scripts).text == text


def test_skipped_spans_are_quoted_in_text_order() -> None:
    readable = readable_text("今日は Tokyo に行きます。", ENGLISH)
    assert readable.text == "Tokyo" and readable.spans == ("今日は", "に行きます。")
    message = skipped_message("en_US-joe-medium", readable.skipped, ALONE, spans=readable.spans)
    assert message == (
        "voice 'en_US-joe-medium' cannot read Han (Chinese characters) and Japanese kana text: skipped "
        "'今日は … に行きます。' (no voice on this server reads Han (Chinese characters) or Japanese kana: "
        "load one that does (serve --extra-voice))"
    )


@pytest.mark.parametrize(
    ("text", "kept", "skipped", "spans"),
    [
        ("Привет мир", "", {"cyrillic": "Привет мир"}, ("Привет мир",)),
        ("Say Привет, мир! twice", "Say twice", {"cyrillic": "Привет, мир!"}, ("Привет, мир!",)),
        ("A Привет B мир", "A B", {"cyrillic": "Привет … мир"}, ("Привет", "мир")),  # B was said between
        ("Hi Привет 你好 there", "Hi there", {"cyrillic": "Привет", "han": "你好"}, ("Привет 你好",)),
        ("Привет 1990 год", "1990", {"cyrillic": "Привет … год"}, ("Привет", "год")),  # the digits are said
    ],
)
def test_words_of_a_skipped_script_apart_by_a_space_are_one_span(
    text: str, kept: str, skipped: dict[str, str], spans: tuple[str, ...]
) -> None:
    readable = readable_text(text, ENGLISH)
    assert (readable.text, readable.skipped, readable.spans) == (kept, skipped, spans)


def test_the_scripts_no_voice_reads_share_one_advice() -> None:
    skipped = {"kana": "は", "han": "今日", "cyrillic": "мир"}
    voices = {"en": ["en-us"], "russian": ["ru"]}
    message = unreadable_message("en", skipped, voices)
    assert message == (
        "nothing to say: voice 'en' cannot read the text's scripts: Japanese kana text such as 'は', "
        "Han (Chinese characters) text such as '今日', Cyrillic text such as 'мир' (no voice on this server "
        "reads Japanese kana or Han (Chinese characters): load one that does (serve --extra-voice); voices "
        "that read Cyrillic: russian)"
    )
    warning = skipped_message("en", skipped, voices, quote=False)
    assert warning.endswith(": skipped (no voice on this server reads Japanese kana or Han (Chinese "
                            "characters): load one that does (serve --extra-voice); voices that read "
                            "Cyrillic: russian)")
    assert warning.count(NO_READER) == 1
    # A script some voice reads is named with its readers, each on its own.
    voices = {"en": ["en-us"], "japanese": ["ja"], "mandarin": ["zh"]}
    assert unreadable_message("en", {"han": "今日", "kana": "は"}, voices).endswith(
        "(voices that read Han (Chinese characters): japanese, mandarin; voices that read Japanese kana: "
        "japanese)"
    )


def test_the_english_voice_says_compatibility_text_as_latin(grpc_target: str) -> None:
    """The default voice (Piper, espeak-ng): no warning, the utterance's text the Latin one."""
    with Client(grpc_target) as client:
        events = list(client.synthesize("𝒽𝑒𝓁𝓁𝑜 ＷＯＲＬＤ １２３", timeout=60))
    assert not [e.message for e in events if isinstance(e, WarningEvent)]
    said = [e.text for e in events if isinstance(e, UtteranceEvent) and e.kind == "finished"]
    assert said == ["hello WORLD 123"]


def test_the_english_voice_warns_of_skipped_spans_in_text_order(grpc_target: str) -> None:
    with Client(grpc_target) as client:
        events = list(client.synthesize("今日は Tokyo に行きます。", timeout=60))
    said = [e.text for e in events if isinstance(e, UtteranceEvent) and e.kind == "finished"]
    warnings = [e.message for e in events if isinstance(e, WarningEvent)]
    assert said == ["Tokyo"] and len(warnings) == 1
    assert "skipped '今日は … に行きます。'" in warnings[0] and warnings[0].count(NO_READER) == 1


def test_the_speech_api_reads_compatibility_text(web_url: str) -> None:
    """POST /v1/audio/speech judges the text as the TTS stage does: no warning, no 400 for ℌ."""
    for text in ("ℌ", "ＨＥＬＬＯ 𝒽𝑒𝓁𝓁𝑜"):
        status, headers, body = post(web_url, {"model": "tts-1", "voice": "alloy", "input": text,
                                               "response_format": "wav"})
        assert status == 200 and WARNING not in headers, (text, status, body[:300])


def test_a_mandarin_voice_is_given_the_text_as_written() -> None:
    mandarin = TinyVoice("mandarin")
    mandarin.languages = ["zh"]
    engine = Engine(EngineSettings(), voices={"tiny": TinyVoice("tiny"), "mandarin": mandarin})
    with running_server(engine) as server, Client(server.target) as client:
        for voice, text, expected in (("mandarin", "你好ＡＢＣ１２３", "你好ＡＢＣ１２３"),
                                      ("tiny", "ＡＢＣ１２３", "ABC123")):
            events = list(client.synthesize(text, voice=voice, timeout=60))
            said = "".join(e.text for e in events if isinstance(e, UtteranceEvent) and e.kind == "finished")
            assert said == expected and not any(isinstance(e, WarningEvent) for e in events), voice
