"""Runs every benchmark of the project in turn and prints their tables (`make bench`).

`python -m bench NAME ...` runs the benchmarks whose names contain each NAME; `python -m bench NAME -- ARGS`
passes ARGS to the one benchmark NAME selects (e.g. `python -m bench sessions -- 1 4 --mode face_patch`)."""

from __future__ import annotations

import importlib
import sys
import time

BENCHES = (
    "bench_vits", "bench_server", "bench_wav2lip", "bench_viseme", "bench_audio_in", "bench_fleet",
    "bench_hardening", "bench_sessions", "bench_first_cut", "bench_gpu",
)


def main(argv: list[str]) -> int:
    names, passed = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    selected = [name for name in BENCHES if not names or any(arg in name for arg in names)]
    if passed and len(selected) != 1:
        print(f"arguments after -- go to one benchmark; {names} selects {len(selected)}: name one of "
              f"{', '.join(BENCHES)}", file=sys.stderr)
        return 2
    for name in selected:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            print(f"## {name}: not available ({exc})\n")
            continue
        started = time.perf_counter()
        if passed:
            module.main(passed)
        else:
            module.main()
        print(f"({name} took {time.perf_counter() - started:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
