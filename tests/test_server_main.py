"""`lipstream serve` (`python -m lipstream.server`): flags, environment variables, and a real process that
answers and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import subprocess
import sys

import grpc
import pytest
from lipstream.server.main import build_parser, settings_from_args
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc


def test_defaults_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LIPSTREAM_HOST", "LIPSTREAM_PORT", "LIPSTREAM_MAX_SESSIONS", "LIPSTREAM_WEB_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.web_port, args.max_sessions) == ("127.0.0.1", 50051, 8080, 16)
    monkeypatch.setenv("LIPSTREAM_HOST", "0.0.0.0")
    monkeypatch.setenv("LIPSTREAM_PORT", "6000")
    monkeypatch.setenv("LIPSTREAM_MAX_SESSIONS", "3")
    args = build_parser().parse_args(["--port", "7000", "--wav2lip-checkpoint", "w.pth", "--device", "cpu"])
    assert (args.host, args.port, args.max_sessions) == ("0.0.0.0", 7000, 3)
    settings = settings_from_args(args)
    assert (settings.max_sessions, settings.wav2lip_checkpoint, settings.device) == (3, "w.pth", "cpu")


def test_a_bad_limit_is_refused_with_the_value() -> None:
    args = build_parser().parse_args(["--max-sessions", "0"])
    with pytest.raises(ValueError, match="max_sessions 0 must be at least 1"):
        settings_from_args(args)


def test_voice_precision_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIPSTREAM_VOICE_PRECISION", raising=False)
    assert settings_from_args(build_parser().parse_args([])).voice_precision == "fp32"
    args = build_parser().parse_args(["--voice-precision", "bf16"])
    assert settings_from_args(args).voice_precision == "bf16"
    monkeypatch.setenv("LIPSTREAM_VOICE_PRECISION", "fp16")  # argparse checks choices of flags, not defaults
    with pytest.raises(ValueError, match="voice_precision 'fp16' is not one of fp32, bf16"):
        settings_from_args(build_parser().parse_args([]))


def test_a_bad_setting_exits_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    from lipstream.server.main import main

    assert main(["--max-sessions", "0", "--web-port", "0"]) == 2
    assert "lipstream serve: max_sessions 0 must be at least 1" in capsys.readouterr().err


def test_serve_answers_then_stops_on_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "lipstream.server",
        "--port",
        "0",
        "--web-port",
        "0",
        "--max-sessions",
        "2",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        target = None
        lines = []
        for line in process.stdout:  # bounded by the process: it prints this line or exits
            lines.append(line)
            match = re.search(r"serving on (\S+)", line)
            if match:
                target = match.group(1)
                break
        assert target is not None, "".join(lines)
        with grpc.insecure_channel(target) as channel:
            info = lipstream_pb2_grpc.LipStreamStub(channel).GetServerInfo(pb.GetServerInfoRequest())
        assert info.max_sessions == 2 and info.default_voice == "en_US-joe-medium"
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        assert "stopped" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_create_server_on_a_taken_port_names_it_and_the_fix() -> None:
    from lipstream.server.servicer import PortUnavailable, create_server

    from tests.servers import tiny_engine

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        taken_message = rf"cannot listen on 127\.0\.0\.1:{port}: the port is taken"
        with pytest.raises(PortUnavailable, match=taken_message):
            asyncio.run(create_server(tiny_engine(), "127.0.0.1", port))


def test_serve_on_a_port_another_server_holds_exits_with_a_message(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from lipstream.server.main import main

    from tests.servers import running_server, tiny_engine

    # gRPC servers bind with SO_REUSEPORT by default: a second one on the same port would succeed silently
    with running_server(tiny_engine()) as other:
        port = other.service.port
        with caplog.at_level(logging.INFO):
            assert main(["--port", str(port), "--web-port", "0"]) == 2
        assert "loading models" not in caplog.text  # said before a minute of loading, not after
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            web_port = taken.getsockname()[1]
            assert main(["--port", "0", "--web-port", str(web_port)]) == 2
        with grpc.insecure_channel(other.target) as channel:  # the first server is untouched
            info = lipstream_pb2_grpc.LipStreamStub(channel).GetServerInfo(pb.GetServerInfoRequest())
        assert info.default_voice == "tiny"
    err = capsys.readouterr().err
    assert f"lipstream serve: cannot listen on 127.0.0.1:{port}: the port is taken" in err
    assert f"cannot listen on 127.0.0.1:{web_port}: the port is taken" in err and "--web-port" in err
    assert "--port" in err and "Traceback" not in err
