"""The committed generated code must be what `make proto` makes from lipstream.proto today."""

from pathlib import Path

from lipstream.v1 import generate


def test_generated_code_is_current(tmp_path: Path) -> None:
    committed_dir = Path(generate.__file__).resolve().parent
    for fresh in generate.generate(tmp_path):
        committed = committed_dir / fresh.name
        assert committed.exists(), f"{committed.name} is missing: run `make proto`"
        assert committed.read_bytes() == fresh.read_bytes(), f"{committed.name} is stale: run `make proto`"
