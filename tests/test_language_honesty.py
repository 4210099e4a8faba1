"""Text a voice cannot read is skipped, never spelled out as letter names ("Chinese letter"): the client gets
a warning event naming the script and the voices that read it, the log one line; a session where nothing
readable is left ends with INVALID_ARGUMENT (issue 19, point 2)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from lipstream.client import Client, UtteranceEvent, WarningEvent
from lipstream.client.errors import InvalidArgumentError
from lipstream.models.vits import load_voice
from lipstream.models.vits.loaders import OFFICIAL_SYMBOLS
from lipstream.models.vits.voice import Voice
from lipstream.server.engine import Engine, EngineSettings
from lipstream.server.events import WarningOut
from lipstream.server.scripts import readable_text, script_of, scripts_of_languages
from lipstream.server.web.protocol import encode_event

from tests.servers import running_server
from tests.test_vits_support import TINY_MODEL, fill_, save_upstream_checkpoint, tiny_model

VITS_FAST = Path(__file__).parent / "data" / "conformance" / "vits_fast"
ENGLISH = scripts_of_languages(["en-us"])  # the default voice's (en_US-joe-medium's espeak voice)
HAN = "你好，欢迎来到博物馆。"
JAPANESE = "こんにちは、博物館へようこそ。"
CYRILLIC = "Добро пожаловать в музей."


def _is_foreign(char: str) -> bool:
    return script_of(char) not in ("", "latin")


def test_scripts_are_named_by_unicode() -> None:
    assert [script_of(c) for c in "a你こカд한αé1,"] == [
        "latin", "han", "kana", "kana", "cyrillic", "hangul", "greek", "latin", "", "",
    ]
    assert scripts_of_languages(["ja"]) >= {"han", "kana", "latin"}
    assert "han" not in scripts_of_languages(["en"]) and "cyrillic" in scripts_of_languages(["ru-RU"])


@pytest.mark.parametrize(("text", "scripts"), [(HAN, {"han"}), (JAPANESE, {"han", "kana"}),
                                               (CYRILLIC, {"cyrillic"})])
def test_unreadable_text_leaves_nothing_on_an_english_voice(text: str, scripts: set[str]) -> None:
    readable = readable_text(text, ENGLISH)
    assert readable.text == "" and set(readable.skipped) == scripts


def test_readable_words_around_a_skipped_span_are_kept() -> None:
    readable = readable_text("The museum 博物馆 opens at 9. Привет! See you.", ENGLISH)
    assert readable.text == "The museum opens at 9. See you."
    assert readable.skipped == {"han": "博物馆", "cyrillic": "Привет!"}
    assert readable_text("Plain English, 1990.", ENGLISH).skipped == {}


@pytest.mark.parametrize(("text", "script"), [(HAN, "Han"), (JAPANESE, "Japanese kana"),
                                              (CYRILLIC, "Cyrillic")])
def test_nothing_readable_is_invalid_argument(grpc_target: str, text: str, script: str) -> None:
    """The refusal names the script (a warning pushed before it may not reach the client: a failed
    session's stream ends at once)."""
    with Client(grpc_target) as client, pytest.raises(InvalidArgumentError) as refused:
        for event in client.synthesize(text, timeout=60):
            assert not isinstance(event, UtteranceEvent), event
    details = refused.value.details
    assert "cannot read" in details and "en_US-joe-medium" in details and script in details


def test_mixed_text_speaks_the_readable_part_and_warns(
    grpc_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    text = f"Welcome to the museum. {HAN} {JAPANESE} {CYRILLIC} Enjoy your visit."
    # DEBUG too: a script already logged at WARNING in this process (by another test) repeats at DEBUG.
    with caplog.at_level(logging.DEBUG, logger="lipstream.server.tts_stage"), Client(grpc_target) as client:
        events = list(client.synthesize(text, timeout=60))
    said = [e.text for e in events if isinstance(e, UtteranceEvent) and e.kind == "finished"]
    assert said and not any(_is_foreign(c) for line in said for c in line)
    assert "Welcome to the museum." in said[0] and "Enjoy your visit." in said[-1]
    warnings = [e for e in events if isinstance(e, WarningEvent)]
    message = " ".join(w.message for w in warnings)
    for script in ("Han", "Japanese kana", "Cyrillic"):
        assert script in message
    assert "no voice on this server reads" in message  # the session server has the English voice only
    logged = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
    assert len([line for line in logged if "Han" in line]) == 1, logged  # one line per script and session


def test_the_web_message_of_a_warning() -> None:
    message = encode_event(WarningOut("unreadable_script", "skipped", 3))
    assert json.loads(message) == {"type": "warning", "code": "unreadable_script", "message": "skipped",
                                   "utterance_id": 3}


def _fast_voice(tmp_path: Path, name: str, *, symbols: list[str], cleaners: list[str]) -> Voice:
    """A tiny VITS-fast-fine-tuning voice (a speakers table: its format) with the given cleaners."""
    config = json.loads((VITS_FAST / "uma_trilingual.json").read_text(encoding="utf-8"))
    config["model"] = dict(TINY_MODEL, gin_channels=8)
    config["data"].update(n_speakers=1, text_cleaners=cleaners)
    config["symbols"], config["speakers"] = symbols, {"guide": 0}
    folder = tmp_path / name
    folder.mkdir()
    (folder / "finetune_speaker.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    save_upstream_checkpoint(folder / "G_latest.pth", fill_(tiny_model(config, len(symbols))))
    voice = load_voice(folder / "G_latest.pth", device="cpu")
    assert voice.format == "vits-fast-fine-tuning"
    return voice


def test_han_on_fast_fine_tuning_voices(tmp_path: Path) -> None:
    """A C-base voice reads Han; an English-only fast fine-tune skips it and names the C-base voice."""
    c_base = json.loads((VITS_FAST / "c_chinese.json").read_text(encoding="utf-8"))
    mandarin = _fast_voice(tmp_path, "guide_zh", symbols=c_base["symbols"], cleaners=["chinese_cleaners"])
    english = _fast_voice(
        tmp_path, "guide_en", symbols=list(OFFICIAL_SYMBOLS), cleaners=["english_cleaners2"]
    )
    assert english.languages == ["en"] and mandarin.languages == ["zh"]
    engine = Engine(EngineSettings(), voices={"guide_en": english, "guide_zh": mandarin})
    with running_server(engine) as server, Client(server.target) as client:
        events = list(client.synthesize(HAN, voice="guide_zh", timeout=60))
        assert not any(isinstance(e, WarningEvent) for e in events)
        said = "".join(e.text for e in events if isinstance(e, UtteranceEvent) and e.kind == "finished")
        assert said == HAN

        events = list(client.synthesize(f"Hello. {HAN}", voice="guide_en", timeout=60))
        warnings = [e for e in events if isinstance(e, WarningEvent)]
        assert warnings and all("voices that read Han (Chinese characters): guide_zh" in w.message
                                for w in warnings)  # one per clause with skipped text
        said = [e.text for e in events if isinstance(e, UtteranceEvent)]
        assert said and not any(_is_foreign(c) for line in said for c in line)

        with pytest.raises(InvalidArgumentError, match="guide_zh"):
            list(client.synthesize(HAN, voice="guide_en", timeout=60))


def test_the_cli_prints_the_warning_even_when_quiet(
    grpc_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lipstream.client.cli import main as cli_main

    out = tmp_path / "welcome.wav"
    assert cli_main(["--target", grpc_target, "say", f"Welcome. {HAN}", "-o", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert "lipstream say: warning: voice 'en_US-joe-medium' cannot read Han" in err and out.exists()
