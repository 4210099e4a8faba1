"""The Python clients and the CLI with words and blendshapes: typed events, keywords, `say --words`."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

from lipstream.client import (
    BlendshapeFrame,
    Client,
    SessionStarted,
    UtteranceEvent,
    WordEvent,
    session_config,
)
from lipstream.client.cli import main as cli_main
from lipstream.models.viseme import BLENDSHAPE_NAMES
from lipstream.models.vits import split_words

TEXT = "Words and weights for a game engine."


def test_keywords_set_the_proto_fields() -> None:
    config = session_config(words=True, blendshapes=True)
    assert config.words and config.blendshapes and not config.video.enabled
    assert not session_config().words and not session_config().blendshapes


def test_sync_client_gets_typed_words_and_blendshapes(grpc_target: str) -> None:
    with Client(grpc_target) as client:
        events = list(client.synthesize(TEXT, words=True, blendshapes=True, timeout=120))
    started = events[0]
    assert isinstance(started, SessionStarted) and started.blendshape_names == BLENDSHAPE_NAMES
    words = [e for e in events if isinstance(e, WordEvent)]
    assert [w.word for w in words] == [w for w, _, _ in split_words(TEXT)]
    frames = [e for e in events if isinstance(e, BlendshapeFrame)]
    assert frames and all(len(f.weights) == len(BLENDSHAPE_NAMES) for f in frames)
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    utterances = [e for e in events if isinstance(e, UtteranceEvent)]
    assert all(u.spoken_text == "" for u in utterances)  # nothing was interrupted


def test_say_words_writes_a_json_sidecar(grpc_target: str, tmp_path: Path) -> None:
    out = tmp_path / "line.wav"
    code = cli_main(["--target", grpc_target, "say", TEXT, "-o", str(out), "--words", "--blendshapes", "-q"])
    assert code == 0
    timings = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert [w["word"] for w in timings["words"]] == [w for w, _, _ in split_words(TEXT)]
    with wave.open(str(out)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
        assert timings["sample_rate"] == wav.getframerate()
    assert all(0 <= w["start"] < w["end"] <= seconds for w in timings["words"])
    assert timings["blendshape_names"] == list(BLENDSHAPE_NAMES)
    assert abs(len(timings["blendshapes"]) - seconds * 25) <= 1.5


def test_the_readme_agent_snippet(grpc_target: str, tmp_path: Path) -> None:
    """README "Words, the text actually spoken": run as written, on the test server's port."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    (code,) = [c for c in snippets if "event.spoken_text" in c]
    assert 'Client("127.0.0.1:50051")' in code
    code = code.replace("127.0.0.1:50051", grpc_target)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    history = ast.literal_eval(result.stdout)  # the snippet prints a list of dicts
    (turn,) = history
    reply = "Sure. The museum opens at nine, and the guided tour of the east wing starts at ten in the hall."
    assert turn["role"] == "assistant" and 0 < len(turn["content"]) < len(reply)
    assert reply.startswith(turn["content"])
