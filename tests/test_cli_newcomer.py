"""The CLI's first ten minutes (issue 19): a failed or empty `say` never costs the user a file, and wrong
flags are told apart before any call."""

from __future__ import annotations

import argparse
import os
import pty
import select
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from lipstream.client import ChannelSaid, Client
from lipstream.client.cli import ExitCode, _parser
from lipstream.client.cli import main as cli_main
from lipstream.server.options import EngineSettings
from lipstream.server.security import TLSFiles

from tests.certs import _builder, _ca, _write_cert, _write_key, make_certificates
from tests.servers import running_server, tiny_engine


def test_a_refused_say_leaves_the_existing_output_untouched(
    grpc_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "keep.wav"
    keep.write_bytes(b"the user's file")
    code = cli_main(["--target", grpc_target, "say", "Hi", "--voice", "nosuch", "-o", str(keep), "-q"])
    assert code == ExitCode.INVALID_ARGUMENT
    assert keep.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]   # no temporary file left


@pytest.mark.parametrize("text", ["😀😀", "..."])
def test_text_with_nothing_speakable_is_exit_2_and_writes_nothing(
    grpc_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    out = tmp_path / "e.wav"
    assert cli_main(["--target", grpc_target, "say", text, "-o", str(out), "-q"]) == ExitCode.USAGE
    assert "nothing to say" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_successful_say_replaces_the_file(grpc_target: str, tmp_path: Path) -> None:
    out = tmp_path / "hi.wav"
    out.write_bytes(b"old")
    assert cli_main(["--target", grpc_target, "say", "Hello there.", "-o", str(out), "-q"]) == 0
    with wave.open(str(out)) as w:
        assert w.getnframes() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hi.wav"]


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_timeout_must_be_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["--timeout", value, "voices"])
    assert exit_.value.code == 2 and "--timeout must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize(("target", "says"), [
    ("51071", "a target is HOST:PORT, e.g. 127.0.0.1:51071"),
    ("http://127.0.0.1:51071", "drop the scheme: --target 127.0.0.1:51071"),
    ("grpc://127.0.0.1:51071", "drop the scheme: --target 127.0.0.1:51071"),
    ("127.0.0.1:51071/", "drop the slash: --target 127.0.0.1:51071"),
    (":51071", "the host is missing"),
    ("127.0.0.1:99999", "port 99999 is out of range"),
])
def test_malformed_targets_are_named_before_connecting(
    target: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["--target", target, "voices"]) == ExitCode.USAGE
    assert says in capsys.readouterr().err


def test_an_unresolvable_host_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--target", "nosuchhost.invalid:50051", "--timeout", "5", "voices"]) == 3
    assert "does not resolve" in capsys.readouterr().err


def test_a_ca_cert_that_is_not_pem_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# not a certificate\n")
    assert cli_main(["--target", "127.0.0.1:1", "--ca-cert", str(readme), "voices"]) == ExitCode.USAGE
    assert f"--ca-cert {readme}: not a PEM file" in capsys.readouterr().err


def test_an_unwritable_output_is_found_before_the_call(capsys: pytest.CaptureFixture[str]) -> None:
    # No server at the target: the output is checked first, so this is exit 8, not 3.
    assert cli_main(["--target", "127.0.0.1:1", "say", "Hi", "-o", "/proc/x.wav", "-q"]) == ExitCode.OUTPUT
    assert "cannot create a file there" in capsys.readouterr().err


def test_a_float_wav_names_the_conversion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "float.wav"
    data = np.zeros(1600, dtype="<f4").tobytes()
    header = (b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
              + (64000).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
              + b"data" + len(data).to_bytes(4, "little"))
    path.write_bytes(header + data)
    code = cli_main(["--target", "127.0.0.1:1", "say", "--audio", str(path), "-o", str(tmp_path / "o.wav")])
    assert code == ExitCode.USAGE
    assert "-c:a pcm_s16le" in capsys.readouterr().err


def _say_from_stdin(target: str, out: Path, stdin: int) -> subprocess.Popen[str]:
    """`lipstream say - -o OUT` (the console script) against `target`, its stderr piped."""
    script = Path(sys.executable).parent / "lipstream"
    return subprocess.Popen(
        [str(script), "--target", target, "say", "-", "-o", str(out)],
        stdin=stdin, stderr=subprocess.PIPE, text=True,
    )


def _stderr_until(process: subprocess.Popen[str], prefix: str) -> list[str]:
    """The lines the process writes to stderr up to the first that starts with `prefix`."""
    assert process.stderr is not None
    lines: list[str] = []
    while not any(line.startswith(prefix) for line in lines):
        ready, _, _ = select.select([process.stderr], [], [], 120)   # a guard against a hang only
        assert ready, f"no line {prefix!r} came: {lines}"
        line = process.stderr.readline()
        assert line, f"lipstream ended before {prefix!r}: {lines}"
        lines.append(line)
    return lines


def test_a_line_from_stdin_is_spoken_at_enter(grpc_target: str, tmp_path: Path) -> None:
    out = tmp_path / "lines.wav"
    process = _say_from_stdin(grpc_target, out, subprocess.PIPE)
    assert process.stdin is not None
    try:
        process.stdin.write("Hello there. This is the first line of a stream\n")
        process.stdin.flush()
        # Both clauses are spoken while stdin stays open: the unpunctuated one was flushed by its newline.
        _stderr_until(process, "lipstream say: 2 utterances")
        process.stdin.close()
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert out.exists()


def test_a_server_certificate_no_system_root_signed_asks_for_ca_cert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = make_certificates(tmp_path)
    with running_server(tiny_engine(), tls=TLSFiles(certs.server_cert, certs.server_key)) as server:
        assert cli_main(["--target", server.target, "--tls", "--timeout", "10", "voices"]) == 3
    err = capsys.readouterr().err
    assert "pass --ca-cert CA.pem" in err and "client certificates" not in err


def test_progress_reaches_100_percent_when_text_is_skipped(
    grpc_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "Hello there. こんにちは世界、元気ですか。 Goodbye now."   # the tiny voice reads no Japanese
    assert cli_main(["--target", grpc_target, "say", text, "-o", str(tmp_path / "p.wav")]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert any("warning:" in line for line in lines)
    assert "100%" in lines[-2] and "wrote" in lines[-1]


def test_progress_counts_one_utterance_and_no_frames_for_a_wav(
    grpc_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["--target", grpc_target, "say", "Hello there.", "-o", str(tmp_path / "one.wav")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert "lipstream say: 100% | 1 utterance | " in lines[-2]
    assert not any("frames" in line for line in lines)   # a .wav has no video to count


@pytest.mark.parametrize("text", ["こんにちは世界", "Привет, мир."])
def test_a_text_with_nothing_readable_shows_the_refusal_alone(
    grpc_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    # The English voice reads neither: the refusal names the scripts, so the per-clause warnings that came
    # before it would only say the same thing again.
    code = cli_main(["--target", grpc_target, "say", text, "-o", str(tmp_path / "x.wav")])
    assert code == ExitCode.INVALID_ARGUMENT
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "cannot read" in err
    assert "warning:" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_audio_file_is_not_a_conversion_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "speech.wav"
    out = tmp_path / "o.mp4"
    code = cli_main(["--target", "127.0.0.1:1", "say", "--audio", str(missing), "-o", str(out)])
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert f"--audio {missing}: No such file or directory" in err and "ffmpeg" not in err


def test_a_token_with_its_bearer_prefix_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--target", "127.0.0.1:1", "--token", "Bearer abc123", "voices"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "without 'Bearer '" in err and "abc123" not in err


def test_keys_and_certificates_swapped_or_mismatched_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = make_certificates(tmp_path)
    offline = ["--target", "127.0.0.1:1"]
    assert cli_main([*offline, "--ca-cert", str(certs.server_key), "voices"]) == ExitCode.USAGE
    assert f"--ca-cert {certs.server_key}: no certificate in it" in capsys.readouterr().err
    swapped = ["--client-cert", str(certs.client_key), "--client-key", str(certs.client_cert)]
    assert cli_main([*offline, "--ca-cert", str(certs.ca), *swapped, "voices"]) == ExitCode.USAGE
    assert f"--client-cert {certs.client_key}: no certificate in it" in capsys.readouterr().err
    mismatched = ["--client-cert", str(certs.client_cert), "--client-key", str(certs.stranger_key)]
    assert cli_main([*offline, "--ca-cert", str(certs.ca), *mismatched, "voices"]) == ExitCode.USAGE
    assert f"--client-key {certs.stranger_key} is not the key of --client-cert" in capsys.readouterr().err


def test_a_ca_cert_that_did_not_sign_the_server_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = make_certificates(tmp_path)
    with running_server(tiny_engine(), tls=TLSFiles(certs.server_cert, certs.server_key)) as server:
        wrong_ca = ["--ca-cert", str(certs.other_ca)]
        code = cli_main(["--target", server.target, *wrong_ca, "--timeout", "10", "voices"])
    assert code == ExitCode.UNAVAILABLE
    err = capsys.readouterr().err
    assert f"its certificate is not signed by --ca-cert {certs.other_ca}" in err
    assert "client certificates" not in err


def test_a_certificate_for_another_name_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A server certificate signed by the CA given, for a name other than the one connected to.
    ca, ca_key = _ca("the CA")
    key = ec.generate_private_key(ec.SECP256R1())
    elsewhere = (
        _builder("elsewhere", ca.subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("elsewhere.example")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert, key_file = _write_cert(elsewhere, tmp_path / "s.pem"), _write_key(key, tmp_path / "s.key")
    ca_file = _write_cert(ca, tmp_path / "ca.pem")
    with running_server(tiny_engine(), tls=TLSFiles(cert, key_file)) as server:
        code = cli_main(["--target", server.target, "--ca-cert", str(ca_file), "--timeout", "10", "voices"])
    assert code == ExitCode.UNAVAILABLE
    assert "its certificate does not name 127.0.0.1" in capsys.readouterr().err


def test_a_client_certificate_required_or_refused_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = make_certificates(tmp_path)
    tls = TLSFiles(certs.server_cert, certs.server_key, client_ca=certs.ca)
    with running_server(tiny_engine(), tls=tls) as server:
        call = ["--target", server.target, "--ca-cert", str(certs.ca), "--timeout", "10"]
        assert cli_main([*call, "voices"]) == ExitCode.UNAVAILABLE
        assert "it requires a client certificate" in capsys.readouterr().err
        stranger = ["--client-cert", str(certs.stranger_cert), "--client-key", str(certs.stranger_key)]
        assert cli_main([*call, *stranger, "voices"]) == ExitCode.UNAVAILABLE
        err = capsys.readouterr().err
        assert f"it does not accept --client-cert {certs.stranger_cert}" in err
        assert "is the server running" not in err
        mine = ["--client-cert", str(certs.client_cert), "--client-key", str(certs.client_key)]
        assert cli_main([*call, *mine, "voices"]) == ExitCode.OK


def test_a_channel_warning_is_a_lipstream_line_like_say_s(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def said(self: Client, channel: str, text: str, interrupt: bool = False, **_: object) -> ChannelSaid:
        return ChannelSaid(displays=2, warning="voice 'v' cannot read Han (Chinese characters) text: skipped")

    monkeypatch.setattr(Client, "say_on_channel", said)
    assert cli_main(["--target", "127.0.0.1:1", "channel", "lobby", "say", "Hi 你好"]) == ExitCode.OK
    out, err = capsys.readouterr()
    assert out == "2 displays on channel lobby speaking\n"
    assert err == "lipstream channel: warning: voice 'v' cannot read Han (Chinese characters) text: skipped\n"


def test_an_output_that_is_a_folder_is_named_before_the_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "clips.mp4"
    folder.mkdir()
    # No server at the target: the output is checked first, so this is exit 8, not 3.
    assert cli_main(["--target", "127.0.0.1:1", "say", "Hi", "-o", str(folder), "-q"]) == ExitCode.OUTPUT
    err = capsys.readouterr().err
    assert f"-o {folder} is a folder: name a file, e.g. -o {folder / 'out.mp4'}" in err and ".part" not in err
    assert list(folder.iterdir()) == []


def test_a_busy_server_is_exit_5_with_its_limit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with running_server(tiny_engine(EngineSettings(max_sessions=1))) as server:
        with Client(server.target) as client, client.converse() as holding:
            events = iter(holding)   # kept: an iterator let go of ends the conversation's input
            next(events)             # SessionStarted: the one slot is taken
            out = tmp_path / "busy.wav"
            assert cli_main(["--target", server.target, "say", "Hi", "-o", str(out), "-q"]) == ExitCode.BUSY
            holding.end()
    err = capsys.readouterr().err
    assert "the server is at its limit of 1 open session (--max-sessions 1): retry later" in err
    assert not out.exists()


def test_say_dash_at_a_terminal_says_how_to_type(grpc_target: str, tmp_path: Path) -> None:
    main_fd, terminal = pty.openpty()
    out = tmp_path / "typed.wav"
    process = _say_from_stdin(grpc_target, out, terminal)
    os.close(terminal)
    try:
        assert process.stderr is not None
        ready, _, _ = select.select([process.stderr], [], [], 120)   # a guard against a hang only
        assert ready and "each line is spoken at Enter, Ctrl-D ends" in process.stderr.readline()
        os.write(main_fd, b"Hello there.\n\x04")   # a typed line, then Ctrl-D on the empty next one
        assert process.wait(timeout=120) == 0
    finally:
        os.close(main_fd)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert out.exists()


def test_every_option_of_every_command_says_what_it_does() -> None:
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("lipstream", parser), *commands.choices.items()]:
        silent = [a.dest for a in sub._actions if not a.help and a.dest != "command"]
        assert not silent, f"{name}: options with no help text: {silent}"


def test_a_server_gone_mid_reply_keeps_what_was_received(tmp_path: Path) -> None:
    out = tmp_path / "cut.wav"
    with running_server(tiny_engine()) as server:
        process = _say_from_stdin(server.target, out, subprocess.PIPE)
        assert process.stdin is not None and process.stderr is not None
        try:
            process.stdin.write("Hello there, this is the first line.\n")
            process.stdin.flush()
            _stderr_until(process, "lipstream say: 1 utterance")
            server.stop(grace_s=0.2)   # stdin stays open: the session is ended by the shutdown
            assert process.wait(timeout=120) == ExitCode.UNAVAILABLE
            err = process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert f"the stream broke off; wrote what was received to {out}" in err and "UNAVAILABLE" in err
    with wave.open(str(out)) as kept:
        assert kept.getnframes() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.wav"]


def test_the_command_prints_no_grpc_core_lines_for_a_failed_handshake(tmp_path: Path) -> None:
    """`lipstream` (the console script) sets GRPC_VERBOSITY=ERROR before grpc is imported: a TLS handshake
    with an untrusted server is the CLI's one diagnosis, not also C-core's 'I... ssl_transport_security.cc'
    line; with GRPC_VERBOSITY set, the user's choice stands."""
    certs = make_certificates(tmp_path)
    script = Path(sys.executable).parent / "lipstream"
    with running_server(tiny_engine(), tls=TLSFiles(certs.server_cert, certs.server_key)) as server:
        command = [str(script), "--target", server.target, "--tls", "--timeout", "10", "voices"]
        environment = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
        quiet = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment)
        verbose = {**environment, "GRPC_VERBOSITY": "INFO"}
        chosen = subprocess.run(command, capture_output=True, text=True, timeout=120, env=verbose)
    assert quiet.returncode == 3 and "pass --ca-cert CA.pem" in quiet.stderr
    assert "ssl_transport_security" not in quiet.stderr, quiet.stderr
    assert chosen.returncode == 3 and "ssl_transport_security" in chosen.stderr  # the same failure, unhidden
