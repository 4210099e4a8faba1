"""The `lipstream` command line (the installed console script) against the real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import wave
from pathlib import Path

import av
import pytest
from lipstream.client.cli import ExitCode, TextPacer, _parser
from lipstream.client.cli import main as cli_main
from lipstream.server.options import EngineSettings

from tests.servers import running_server, tiny_engine

LIPSTREAM = Path(sys.executable).parent / "lipstream"
TEXT = "Hello there. This text is long enough, with a few clauses, to show the progress display working."


def lipstream(
    *args: str, stdin: str | None = None, target: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert LIPSTREAM.exists(), f"{LIPSTREAM} is missing: run `pip install -e .` (it installs the script)"
    env = dict(os.environ)
    env.pop("LIPSTREAM_TARGET", None)
    if target is not None:
        env["LIPSTREAM_TARGET"] = target
    return subprocess.run(
        [str(LIPSTREAM), *args], input=stdin, capture_output=True, text=True, timeout=300, env=env
    )


def probe_mp4(path: Path) -> dict[str, float]:
    """Decode both tracks: their durations in seconds and the frame count."""
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio))
        audio_rate = audio.rate
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video))
        fps = float(video.average_rate)
        video_seconds = float(frames[-1].pts * video.time_base) + 1 / fps
        width, height = frames[0].width, frames[0].height
    return {"audio": samples / audio_rate, "video": video_seconds, "frames": len(frames), "fps": fps,
            "width": width, "height": height}


def test_say_writes_an_mp4_with_audio_and_video_of_matching_duration(
    grpc_target: str, tmp_path: Path
) -> None:
    out = tmp_path / "hello.mp4"
    result = lipstream("--target", grpc_target, "say", TEXT, "-o", str(out))
    assert result.returncode == 0, result.stderr
    media = probe_mp4(out)
    assert media["fps"] == 25 and media["frames"] >= 25 * 2   # a few seconds of speech
    assert media["width"] > 0 and media["height"] > 0
    # Same length: within one frame plus AAC's padding to whole 1024-sample frames.
    assert abs(media["audio"] - media["video"]) <= 1 / media["fps"] + 2048 / 16000
    # The progress display: one line per utterance on stderr (not a terminal here), then the summary.
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 3 and all(line.startswith("lipstream say: ") for line in lines)
    assert "100%" in lines[-2] and f"wrote {out}" in lines[-1]


def test_say_wav_from_stdin_with_the_target_from_the_environment(grpc_target: str, tmp_path: Path) -> None:
    out = tmp_path / "stdin.wav"
    result = lipstream("say", "-", "-o", str(out), "--quiet", stdin="Read from standard input.",
                       target=grpc_target)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""   # --quiet
    with wave.open(str(out)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        assert w.getnframes() / w.getframerate() > 0.5


def test_voices_avatars_info(grpc_target: str) -> None:
    voices = lipstream("--target", grpc_target, "voices", "--json")
    avatars = lipstream("--target", grpc_target, "avatars")
    info = lipstream("--target", grpc_target, "info", "--json")
    assert voices.returncode == avatars.returncode == info.returncode == 0
    default_voice = json.loads(info.stdout)["default_voice"]
    assert default_voice in [v["name"] for v in json.loads(voices.stdout)]
    header, *rows = avatars.stdout.splitlines()
    assert header.split() == ["name", "width", "height", "num_frames", "is_default"]
    assert any(row.split()[0] == json.loads(info.stdout)["default_avatar"] for row in rows)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["say", "Hi.", "--voice", "nope", "-o", "{tmp}/x.wav"], ExitCode.INVALID_ARGUMENT, "'nope'"),
        (["say", "Hi.", "-o", "{tmp}/x.txt"], ExitCode.USAGE, "must end in .mp4"),
        (["say", "Hi.", "-o", "{tmp}/missing/x.wav"], ExitCode.OUTPUT, "is not a directory"),
        (["--timeout", "0.2", "say", TEXT * 3, "-o", "{tmp}/x.wav"], ExitCode.DEADLINE,
         "took longer than --timeout 0.2 s: raise it"),
        (["say", "   ", "-o", "{tmp}/x.wav"], ExitCode.USAGE, "the text is empty"),
        (["--metadata", "novalue", "voices"], ExitCode.USAGE, "KEY=VALUE"),
        (["bogus"], ExitCode.USAGE, "invalid choice"),
    ],
)
def test_exit_codes_tell_failure_kinds_apart(
    grpc_target: str, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    result = lipstream("--target", grpc_target, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    if code == ExitCode.DEADLINE:   # what was received by the deadline is kept, as on Ctrl-C
        assert "wrote what was received" in result.stderr or "nothing written" in result.stderr
    else:
        assert not list(tmp_path.glob("x.*")), "a failed say left a file behind"


def test_no_server_is_exit_code_3() -> None:
    result = lipstream("--target", "127.0.0.1:1", "info")
    assert result.returncode == ExitCode.UNAVAILABLE == 3
    assert "UNAVAILABLE" in result.stderr and "is the server running?" in result.stderr


def test_serve_dispatches_to_the_server() -> None:
    result = lipstream("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout


# -- issue 19: the first ten minutes -----------------------------------------------------------------------
def test_connection_flags_work_after_the_subcommand_too(grpc_target: str, tmp_path: Path) -> None:
    out = tmp_path / "after.wav"
    result = lipstream("say", "After the subcommand.", "-o", str(out), "--target", grpc_target, "-q",
                       "--timeout", "120")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and out.stat().st_size > 44
    info = lipstream("info", "--json", "--target", grpc_target)
    assert info.returncode == 0, info.stderr and "default_voice" in json.loads(info.stdout)
    # A flag only before the subcommand keeps its value (the subcommand's copy does not reset it).
    args = _parser().parse_args(["--target", "h:1", "--token", "t", "-q", "say", "x", "-o", "x.wav"])
    assert (args.target, args.token, args.quiet) == ("h:1", "t", True)
    args = _parser().parse_args(["--target", "h:1", "info", "--target", "h:2"])
    assert args.target == "h:2"   # the later one wins


def test_say_from_stdin_paces_a_text_longer_than_the_servers_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sentence = "This sentence is one of many in a long piped text, and it goes on a little. "
    text = sentence * 80   # 6,160 characters, three times the bound
    source = tmp_path / "long.txt"
    source.write_text(text)
    out = tmp_path / "long.wav"
    settings = EngineSettings(max_text_chars=2_000)
    with running_server(tiny_engine(settings, samples_per_char=40)) as server, source.open() as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        code = cli_main(["--target", server.target, "say", "-", "-o", str(out), "-q"])
    assert code == ExitCode.OK, capsys.readouterr().err
    with wave.open(str(out)) as w:
        seconds = w.getnframes() / w.getframerate()
    spoken_chars = len(sentence.strip(" .")) * 80   # the tiny voice: 40 samples (at 16 kHz) a character
    assert seconds >= 0.95 * spoken_chars * 40 / 16000, seconds


def test_text_pacer_sends_in_pieces_and_waits_for_the_server() -> None:
    pacer = TextPacer(["a  b\n\n\x07c" + "x" * 2_500], max_text_chars=4_000)
    pieces = iter(pacer)
    first = next(pieces)
    assert first.startswith("a b\ncx") and len(first) == 1_000   # runs squeezed, control chars spaced
    pacer.stop()
    assert list(pieces) == []   # held back (1,000 letters in flight), then stopped: nothing more


def test_empty_stdin_is_a_usage_error_and_writes_nothing(grpc_target: str, tmp_path: Path) -> None:
    out = tmp_path / "empty.mp4"
    result = lipstream("--target", grpc_target, "say", "-", "-o", str(out), stdin="  \n\t\n")
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "stdin had no text to say" in result.stderr and "wrote" not in result.stderr
    assert not out.exists()


def test_connection_errors_say_what_was_tried_and_why(grpc_target: str, web_url: str) -> None:
    host = grpc_target.rpartition(":")[0]
    web = web_url.split("//")[1].rstrip("/")
    result = lipstream("--target", web, "info")
    assert result.returncode == ExitCode.UNAVAILABLE
    assert f"tried {web} over plaintext gRPC" in result.stderr
    assert "answers HTTP" in result.stderr and "not the web port" in result.stderr
    result = lipstream("--tls", "--target", grpc_target, "info")
    assert result.returncode == ExitCode.UNAVAILABLE
    assert "speaks plaintext, not TLS" in result.stderr and "drop --tls" in result.stderr
    result = lipstream("--target", host, "info", "--timeout", "5")
    assert result.returncode in (ExitCode.UNAVAILABLE, ExitCode.DEADLINE)
    assert "no port given" in result.stderr and f"--target {host}:50051" in result.stderr


def test_ctrl_c_writes_what_was_received(grpc_target: str, tmp_path: Path) -> None:
    out = tmp_path / "cut.wav"
    env = {k: v for k, v in os.environ.items() if k != "LIPSTREAM_TARGET"}
    with subprocess.Popen(
        [str(LIPSTREAM), "--target", grpc_target, "say", "-", "-o", str(out)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    ) as process:
        assert process.stdin is not None and process.stderr is not None
        process.stdin.write("The first sentence arrives. ")
        process.stdin.flush()   # stdin stays open: the conversation waits for more text
        line = process.stderr.readline()   # a progress line once the first utterance is done
        assert line.startswith("lipstream say: "), line
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert f"interrupted; wrote what was received to {out}" in err
    assert err.count("interrupted") == 1, err   # not again from main()
    with wave.open(str(out)) as w:
        assert w.getnframes() / w.getframerate() > 0.5
