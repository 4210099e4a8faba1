"""`lipstream.client` imports and works with torch (and the server's other packages) blocked from import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = ("torch", "torchaudio", "librosa", "cv2", "onnxruntime", "piper", "lipstream.server",
               "lipstream.models")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"{name} is blocked: the client must not import it")
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_the_blocker_really_blocks_torch() -> None:
    result = run_blocked("import torch")
    assert result.returncode != 0 and "torch is blocked" in result.stderr


def test_client_imports_without_torch() -> None:
    result = run_blocked(
        """
        import lipstream.client, lipstream.client.cli, lipstream.client.media
        from lipstream.client import Client, session_config, decode_audio, wav_bytes, AudioClip
        import numpy as np
        assert session_config(voice="v", video=True).video.enabled
        clip = AudioClip(np.zeros(10, np.float32), 16000)
        assert decode_audio(wav_bytes(clip)).shape == (10,)
        banned = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "cv2", "librosa", "av"))
        assert not banned, banned
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_client_talks_to_the_real_server_without_torch(grpc_target: str) -> None:
    result = run_blocked(
        f"""
        from lipstream.client import Client, AudioChunk, collect_audio
        with Client({grpc_target!r}) as client:
            assert client.voices(), "no voices"
            clip = collect_audio(client.synthesize("Torch stays on the server."))
        assert clip.duration > 0.5, clip.duration
        assert "torch" not in sys.modules
        print("ok", round(clip.duration, 2))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
