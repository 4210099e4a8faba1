"""The Node.js example (examples/node, @grpc/grpc-js + @grpc/proto-loader from npm) against the real
server: the proof that the .proto serves clients in other languages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "examples" / "node"
NODE = shutil.which("node")


@pytest.fixture(scope="module")
def node_example() -> Path:
    if NODE is None:
        pytest.skip("node is not installed: the Node.js example client cannot run (install Node.js >= 18)")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not: install npm to fetch @grpc/grpc-js"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True, timeout=300
        )
    return NODE_DIR / "client.js"


def test_node_client_gets_wav_chunks_and_jpeg_frames(node_example: Path, grpc_target: str) -> None:
    sentence = "Hello from Node. This sentence streams in word by word."
    result = subprocess.run(
        [NODE, str(node_example), grpc_target, sentence], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["audio_chunks"] > 0 and counts["wav_chunks"] == counts["audio_chunks"]
    assert counts["frames"] > 0 and counts["jpeg_frames"] == counts["frames"]
    assert counts["audio_seconds"] > 1.0   # a whole sentence, not a blip
    assert counts["stats"]["utterances"] >= 2   # two sentences
    assert counts["words"] == sentence.replace(".", "").split()  # word events, in order
    assert counts["blendshape_names"] == 28 and counts["blendshape_frames"] == counts["frames"]


def test_node_client_face_patch_frames_are_patches_and_a_fraction_of_the_bytes(
    node_example: Path, grpc_target: str
) -> None:
    def counts(*flags: str) -> dict[str, Any]:
        assert NODE is not None  # node_example skips the test without it
        command = [NODE, str(node_example), *flags, grpc_target, "Hello from Node, with patches."]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
        parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return parsed

    full, patched = counts(), counts("--face-patch")
    assert full["patch_frames"] == 0 and full["repeat_frames"] == 0
    assert patched["patch_frames"] > 0
    assert patched["video_bytes"] * 5 < full["video_bytes"]


def test_node_client_fails_visibly_without_a_server(node_example: Path) -> None:
    result = subprocess.run(
        [NODE, str(node_example), "127.0.0.1:1"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "UNAVAILABLE" in result.stderr


def test_node_client_with_tls_and_a_token(node_example: Path, tmp_path: Path) -> None:
    from lipstream.server.security import TLSFiles, TokenSet

    from tests.certs import make_certificates
    from tests.servers import running_server, tiny_engine

    certs = make_certificates(tmp_path)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("node-token-7a7a\n")
    tls = TLSFiles(certs.server_cert, certs.server_key, certs.ca)
    with running_server(tiny_engine(), tls=tls, tokens=TokenSet(tokens)) as server:
        flags = ["--ca-cert", str(certs.ca), "--client-cert", str(certs.client_cert)]
        flags += ["--client-key", str(certs.client_key)]
        env = {**os.environ, "LIPSTREAM_TOKEN": "node-token-7a7a"}
        result = subprocess.run(
            [NODE, str(node_example), *flags, server.target, "Over TLS."],
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
        counts = json.loads(result.stdout.strip().splitlines()[-1])
        assert counts["wav_chunks"] > 0 and counts["jpeg_frames"] > 0
        env.pop("LIPSTREAM_TOKEN")
        result = subprocess.run(
            [NODE, str(node_example), *flags, server.target],
            capture_output=True, text=True, timeout=120, env=env,
        )
        assert result.returncode == 2
        assert "UNAUTHENTICATED" in result.stderr and "authorization: Bearer <token>" in result.stderr
