"""Runs every benchmark of the project in turn and prints their tables (`make bench`)."""

from __future__ import annotations

import importlib
import sys
import time

BENCHES = (
    "bench_vits", "bench_server", "bench_wav2lip", "bench_viseme", "bench_audio_in", "bench_fleet",
    "bench_hardening", "bench_sessions", "bench_first_cut",
)


def main(argv: list[str]) -> int:
    selected = [name for name in BENCHES if not argv or any(arg in name for arg in argv)]
    for name in selected:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            print(f"## {name}: not available ({exc})\n")
            continue
        started = time.perf_counter()
        module.main()
        print(f"({name} took {time.perf_counter() - started:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
