"""What an operator reads at startup and at INFO says what helps, once (issue 19's newcomer pass)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lipstream.client import Client
from lipstream.server.engine import Engine
from lipstream.server.events import AudioEvent
from lipstream.server.main import _connect_hints
from lipstream.server.metrics import Metrics
from lipstream.server.options import EngineSettings
from lipstream.server.security import TokenSet
from lipstream.server.web.app import _send_events

from tests.servers import TinyVoice, running_server

HAN = "你好，欢迎来到博物馆。"
CYRILLIC = "Привет, добро пожаловать."


def _unreadable_warnings(caplog: pytest.LogCaptureFixture, voice: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.levelno == logging.WARNING and f"voice {voice} cannot read" in r.getMessage()
    ]


def test_an_unreadable_script_is_a_warning_once_per_voice_and_script(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A voice name of its own: the once-per-process record must not have seen it in another test.
    voice = TinyVoice("once-per-voice")
    engine = Engine(EngineSettings(), voices={voice.name: voice})
    with running_server(engine) as server, Client(server.target) as client:
        with caplog.at_level(logging.DEBUG, logger="lipstream.server.tts_stage"):
            for _ in range(3):
                list(client.synthesize(f"Hello there. {HAN} Goodbye.", timeout=60))
            assert len(_unreadable_warnings(caplog, voice.name)) == 1
            list(client.synthesize(f"Hello there. {CYRILLIC} Goodbye.", timeout=60))
    warnings = _unreadable_warnings(caplog, voice.name)
    assert len(warnings) == 2 and "Han" in warnings[0] and "Cyrillic" in warnings[1], warnings
    repeats = [r for r in caplog.records if r.levelno == logging.DEBUG and "cannot read" in r.getMessage()]
    assert len(repeats) == 2  # the repeats are still there for whoever turns DEBUG on


def test_the_startup_hint_passes_the_token_in_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("secret-token-1234\n")
    client_env, client_flags, grpcurl_flags = _connect_hints(None, TokenSet(str(token_file)))
    assert client_env == "LIPSTREAM_TOKEN=$TOKEN "  # a --token flag would show in the process list
    assert "--token" not in client_flags and "secret" not in client_env + client_flags + grpcurl_flags
    assert _connect_hints(None, None)[0] == ""


def _session_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("session ")]


def test_an_audio_only_session_logs_no_video_figures(caplog: pytest.LogCaptureFixture) -> None:
    voice = TinyVoice()
    engine = Engine(EngineSettings(), voices={voice.name: voice})
    with running_server(engine) as server, Client(server.target) as client:
        with caplog.at_level(logging.INFO, logger="lipstream.server.session"):
            list(client.synthesize("Hello there.", video=False, timeout=60))
            list(client.synthesize("Hello there.", video=True, timeout=60))
    audio_only, with_video = _session_lines(caplog)
    assert "video=False" in audio_only and "audio=" in audio_only and "tts_rtf=" in audio_only
    for figure in ("first_frame=", "lipsync_rtf=", "frames=", "engine="):
        assert figure not in audio_only, audio_only
        assert figure in with_video, with_video


class _ClosingSocket:
    """A WebSocket whose peer has gone: aiohttp's send fails with its transport's words."""

    closed = False

    async def send_bytes(self, data: bytes) -> None:
        raise ConnectionResetError("Cannot write to closing transport")

    async def send_str(self, data: str) -> None:
        raise ConnectionResetError("Cannot write to closing transport")


class _OneChunkSession:
    async def events(self) -> Any:
        samples = np.zeros(160, dtype=np.float32)
        yield AudioEvent(b"RIFF....WAVE", samples, 0, 160, 16000, 1)


async def test_a_page_gone_while_sending_is_said_plainly(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(lambda: 0, 1)
    with caplog.at_level(logging.INFO, logger="lipstream.server.web.app"):
        await _send_events(_ClosingSocket(), _OneChunkSession(), metrics)  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["kiosk page went away while frames were being sent; its session stops"], lines
