"""The README's quick start and Python client guide, run as written: `make run` (the command it runs, on a
free port), then every shell line and every Python snippet of the client sections against that server."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from lipstream.client import Client, LipStreamError

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
VENV_BIN = Path(sys.executable).parent


def section(start_marker: str, end_heading: str) -> str:
    start = README.index(start_marker)
    return README[start : README.index(end_heading, start)]


QUICK_START = section("## Quick start", "## Python client")
CLIENT_QUICK_START = section("<!-- quick-start: client -->", "## Python client")
PYTHON_CLIENT = section("<!-- python-client -->", "\n## ")


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def shell_lines(text: str) -> list[str]:
    lines = []
    for block in blocks(text, "sh"):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_run_command(port: int) -> list[str]:
    """The serve command `make run` runs (its setup step is the Makefile's business), on `port`, web off."""
    dry_run = subprocess.run(
        ["make", "-n", "run", f"PORT={port}", "WEB_PORT=0"], cwd=ROOT, capture_output=True, text=True,
        check=True,
    )
    serve = [line for line in dry_run.stdout.splitlines() if "lipstream serve" in line]
    assert len(serve) == 1, dry_run.stdout
    assert f"--port {port}" in serve[0]
    return shlex.split(serve[0])


def start_until_ready(command: list[str], target: str, log: Path) -> subprocess.Popen[bytes] | None:
    """Start the server and wait until it answers; None when it exited because its port was taken."""
    with log.open("wb") as out:   # a file, not a pipe: a full pipe would block the server's logging
        server = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    with Client(target) as client:
        for _ in range(240):   # the voice loads first: up to about two minutes on a busy machine
            if server.poll() is not None:
                output = log.read_text(errors="replace")
                if "in use" in output.lower() or "failed to bind" in output.lower():
                    return None
                pytest.fail(f"`make run`'s server exited with {server.returncode}:\n{output[-3000:]}")
            try:
                client.info(timeout=1)
                return server
            except LipStreamError:
                time.sleep(0.5)
    server.kill()
    pytest.fail(f"`make run`'s server did not answer:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def make_run_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server started with the command `make run` runs, on a free port with the web page off; yields its
    target and checks it shuts down cleanly on Ctrl-C."""
    assert any(line.startswith("make run") for line in shell_lines(QUICK_START)), "no `make run` left"
    log = tmp_path_factory.mktemp("make-run") / "server.log"
    for _ in range(3):   # another process may take the free port before the server binds it
        port = free_port()
        target = f"127.0.0.1:{port}"
        server = start_until_ready(make_run_command(port), target, log)
        if server is not None:
            break
    else:
        pytest.fail("three free ports were taken before the server could bind them")
    try:
        yield target
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    output = log.read_text(errors="replace")
    assert server.returncode == 0, f"the server did not stop cleanly on Ctrl-C:\n{output[-3000:]}"


@pytest.fixture
def user_dir(tmp_path: Path, make_run_target: str) -> tuple[Path, dict[str, str]]:
    """A fresh working directory and the environment of a user who activated the venv."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)   # the user works in the repository folder
    path = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"
    env = dict(os.environ, LIPSTREAM_TARGET=make_run_target, PATH=path)
    return tmp_path, env


def run_shell(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def run_python(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def tracks(path: Path) -> tuple[float, float]:
    with av.open(str(path)) as container:
        audio, video = container.streams.audio[0], container.streams.video[0]
        return float(audio.duration * audio.time_base), float(video.duration * video.time_base)


def test_quick_start_say_hello(user_dir: tuple[Path, dict[str, str]]) -> None:
    cwd, env = user_dir
    (script,) = blocks(CLIENT_QUICK_START, "sh")
    assert 'lipstream say "Hello" -o hello.mp4' in script
    env = dict(env, PATH=os.environ["PATH"])   # the script's `source .venv/bin/activate` does that
    result = run_shell("set -e\n" + script, cwd, env)
    assert result.returncode == 0, result.stderr
    audio_s, video_s = tracks(cwd / "hello.mp4")
    assert audio_s > 0.2 and abs(audio_s - video_s) < 0.2


def test_quick_start_python_streams_llm_tokens(user_dir: tuple[Path, dict[str, str]]) -> None:
    cwd, env = user_dir
    (snippet,) = blocks(CLIENT_QUICK_START, "python")
    code_lines = [line for line in snippet.splitlines() if line.strip()]
    assert len(code_lines) <= 10, f"the quick start promises ten lines of Python, it has {len(code_lines)}"
    assert "converse(llm_tokens()" in snippet
    result = run_python(snippet, cwd, env)
    assert result.returncode == 0, result.stderr
    audio = [line for line in result.stdout.splitlines() if "audio," in line]
    frames = [line for line in result.stdout.splitlines() if "bytes of JPEG" in line]
    assert audio and frames
    assert float(frames[-1].split()[0]) > 1.0   # several words of speech, not a blip


def test_python_client_guide_snippets(user_dir: tuple[Path, dict[str, str]]) -> None:
    cwd, env = user_dir
    snippets = blocks(PYTHON_CLIENT, "python")
    assert len(snippets) >= 5
    outputs = {}
    for snippet in snippets:
        result = run_python(snippet, cwd, env)
        assert result.returncode == 0, f"{snippet}\n---\n{result.stderr}"
        outputs[snippet] = result.stdout
    by_content = {key: next(out for code, out in outputs.items() if key in code) for key in
                  ("weather", "lighthouse", "VisemeEvent", "play(", "no-such-voice")}
    assert (cwd / "weather.wav").stat().st_size > 1000 and min(tracks(cwd / "weather.mp4")) > 1.0
    assert "finished 'go ahead.'" in by_content["lighthouse"]   # the new text was spoken
    assert "finished 'Let me" not in by_content["lighthouse"]   # the story was cut off
    assert "SessionStats(" in by_content["VisemeEvent"]
    assert "play " in by_content["play("] and "show frame" in by_content["play("]
    assert by_content["no-such-voice"].startswith("INVALID_ARGUMENT ")


def test_command_line_and_node_lines(user_dir: tuple[Path, dict[str, str]]) -> None:
    cwd, env = user_dir
    lines = shell_lines(PYTHON_CLIENT)
    ran = []
    for line in lines:
        if line == "make node":   # `npm install` in examples/node, done here the way the Node test does it
            if shutil.which("npm") and not (ROOT / "examples/node/node_modules/@grpc/grpc-js").is_dir():
                subprocess.run(
                    ["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT / "examples/node", check=True,
                    capture_output=True, timeout=300,
                )
            continue
        if line.startswith("node ") and shutil.which("node") is None:
            continue   # only the Node.js example needs node (its own test says so visibly)
        result = run_shell(line, cwd, env)
        assert result.returncode == 0, f"{line}\n{result.stderr}"
        ran.append((line, result.stdout))
    outputs = dict(ran)
    assert json.loads(outputs["lipstream info --json"])["default_voice"] in outputs["lipstream voices"]
    assert (cwd / "audio-only.wav").stat().st_size > 1000
    assert min(tracks(cwd / "piped.mp4")) > 1.0


# The README's other Python snippets: each is run here, or named below with the test that makes its calls.
NOT_RUN_HERE = {
    "tls_credentials(ca_cert=": "needs a TLS server at its address: tests/test_security.py makes its calls",
    "from openai import OpenAI": "the openai package against the kiosk port: tests/test_web_speech.py",
    "converse_audio(": "needs a speech.wav: tests/test_audio_in.py makes its calls",
    "LipStreamVideoService(": "a Pipecat pipeline with a transport: tests/test_integration_pipecat.py",
    "LipStreamAvatarSession(": "needs a LiveKit room; its generator: tests/test_integration_livekit.py",
    "event.spoken_text": "run on the test server by tests/test_client_words.py",
}
ENGINE_SNIPPET = "engine.open_session("
VOICE_SNIPPET = "load_voice("
WEBSOCKET_SNIPPET = "ws_connect("


def other_snippets() -> list[str]:
    run_elsewhere = blocks(CLIENT_QUICK_START, "python") + blocks(PYTHON_CLIENT, "python")
    return [code for code in blocks(README, "python") if code not in run_elsewhere]


def snippet(key: str) -> str:
    (code,) = [code for code in other_snippets() if key in code]
    return code


def test_every_python_snippet_is_run_somewhere() -> None:
    keys = [ENGINE_SNIPPET, VOICE_SNIPPET, WEBSOCKET_SNIPPET, *NOT_RUN_HERE]
    for code in other_snippets():
        assert [key for key in keys if key in code], f"a README snippet no test runs:\n{code}"


def test_the_in_process_engine_snippet(tmp_path: Path) -> None:
    result = run_python(snippet(ENGINE_SNIPPET), tmp_path, dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "SessionStartedEvent" in result.stdout and "StatsEvent" in result.stdout


def test_the_voice_snippet(tmp_path: Path) -> None:
    result = run_python(snippet(VOICE_SNIPPET), tmp_path, dict(os.environ))
    assert result.returncode == 0, result.stderr
    # Lines of "phoneme start end" (the phoneme of a word break is a space: split() drops it).
    timings = [line.split()[-2:] for line in result.stdout.splitlines()]
    assert len(timings) > 5 and all(start.isdigit() and end.isdigit() for start, end in timings)


def test_the_websocket_snippet(tmp_path: Path, web_url: str) -> None:
    """Run as written, on the test server's web port instead of the documented default 8080."""
    code = snippet(WEBSOCKET_SNIPPET)
    assert "ws://127.0.0.1:8080/ws" in code
    address = web_url.removeprefix("http://").rstrip("/")
    result = run_python(code.replace("127.0.0.1:8080", address), tmp_path, dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "'type': 'audio'" in result.stdout and "'type': 'frame'" in result.stdout
    assert '"type": "stats"' in result.stdout
