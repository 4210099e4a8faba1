"""Regenerates the Python code of lipstream.proto (`make proto`); a test checks the committed copy."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2]  # protos/
PROTO_FILE = "lipstream/v1/lipstream.proto"
GENERATED = ("lipstream_pb2.py", "lipstream_pb2_grpc.py", "lipstream_pb2.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc (grpcio-tools) into out_dir and returns the generated files."""
    from grpc_tools import protoc

    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_ROOT / PROTO_FILE),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO_FILE}")
    return [out_dir / "lipstream" / "v1" / name for name in GENERATED]


def main() -> None:
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            (here / path.name).write_bytes(path.read_bytes())
            print(f"wrote {here / path.name}")


if __name__ == "__main__":
    sys.exit(main())
