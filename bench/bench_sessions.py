"""Sessions per box: N REALTIME viseme video sessions at 25 fps speaking a paragraph at once, the clients
(one asyncio loop of grpc.aio streams) on the same machine as the server. Per N: the frame rate each
session held, its final lag behind the wall clock, its video bit rate, and where the server's CPU went per
second of speech, in core-milliseconds by part.

The parts are per-thread CPU time, not wall time: the stages' own ledger (lipstream.server.cpu, read from
`/metrics`: VITS, the lip-sync renderer with its paste, JPEG, the audio stage, the TTS thread's waiting)
and the server process's threads from /proc (the main thread runs the event loop: the multiplexer, the
servicer, the audio encoder and grpc's Python side; `grpc` the C core's threads). "other" is the process's
CPU less all of those (torch's worker threads, the Python threads' start and end). "Server switches per
frame" are its threads' context switches (/proc) per frame received: threads handing the GIL to each other
sleep and wake at every hand-off, a cost that shows in every part and in none alone.

`python -m bench sessions -- [N ...] [--mode face_patch] [--engine wav2lip] [--seconds S] [--anchor PYTHON]
[--voice-precision bf16] [--replicas R]`. With `--replicas R` the box runs R server processes (as `make fleet`
does) and the sessions go to each in turn, as a balancer sends new sessions; CPU and parts are their sums.
With `--engine wav2lip` the server loads a Wav2Lip checkpoint of the conformance fill (the real weights
cannot be shipped; speed does not depend on the values) on its automatic runtime (int8 on a CPU), and every
session's frames go through the one cross-session batcher. `--anchor PYTHON` first runs the same sessions
against the server of another checkout (an interpreter whose `lipstream` is that checkout, e.g. issue 20's
main 11e4726), in this one run on this machine, and prints the two side by side as ratios: machines differ
between sessions, so a figure is compared only with one measured beside it. A server older than the CPU
ledger (no /metrics) shows its process CPU alone, and one older than frame_mode sends whole frames.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

SESSIONS = (1, 4, 8, 16, 24)
IDLE_SECONDS = 4.0
FPS = 25.0
SENTENCES = (
    "Streaming speech starts with the first words of a reply.",
    "The server cuts the text into clauses, speaks each one as soon as it is complete, and sends the audio "
    "in small chunks.",
    "At the same time the avatar's mouth follows the phonemes, so the picture and the sound stay together "
    "on one clock.",
    "A kiosk page shows the frames as they come, and a game engine reads the visemes instead.",
    "Every session has its own ring of samples, read by the audio stage and the lip-sync stage alike.",
)
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class SessionResult:
    frames: int = 0
    fps: float = 0.0
    lag_s: float = 0.0
    speech_s: float = 0.0
    video_bytes: int = 0
    speaking_bytes: int = 0
    speaking_frames: int = 0
    idle_bytes: int = 0
    idle_frames: int = 0


@dataclass
class Run:
    sessions: list[SessionResult]
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float
    parts_s: dict[str, float] = field(default_factory=dict)
    switches: int = 0  # the server's threads' context switches over the run


class SwitchCounter:
    """The context switches of a process's threads while it runs: threads that hand the GIL to each other
    sleep and wake at every hand-off, which costs CPU no part's own time shows. Threads come and go with the
    sessions, so /proc is read every `period` s and each thread counts from its first reading to its last
    (a thread's switches after its last reading are not counted)."""

    def __init__(self, pids: Sequence[int], period: float = 0.25) -> None:
        self._pids = list(pids)
        self._period = period
        self._first: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="switch-counter", daemon=True)

    def __enter__(self) -> SwitchCounter:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    @property
    def switches(self) -> int:
        return sum(self._last[tid] - first for tid, first in self._first.items())

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._read()

    def _read(self) -> None:
        for pid in self._pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except FileNotFoundError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/status") as f:
                        status = f.read()
                except (FileNotFoundError, ProcessLookupError):
                    continue  # a thread that just ended
                count = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)
                self._first.setdefault(tid, count)
                self._last[tid] = count


def text_for(seconds: float) -> str:
    """About `seconds` of continuous speech at the default voice's pace (about 14 characters a second)."""
    chars = int(seconds * 14)
    out: list[str] = []
    while sum(len(s) + 1 for s in out) < chars:
        out.append(SENTENCES[len(out) % len(SENTENCES)])
    return " ".join(out)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Replica:
    """One server process of the box: its gRPC target and its web root (/metrics)."""

    process: subprocess.Popen[str]
    target: str
    web: str


def _start_server(
    max_sessions: int, extra: Sequence[str] = (), python: str = sys.executable
) -> Replica:
    command = [
        python, "-m", "lipstream.server", "--port", "0", "--web-port", str(_free_port()),
        "--max-sessions", str(max_sessions), *extra,
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    target = web = ""
    for line in server.stdout:
        if match := re.search(r"serving on (\S+)", line):
            target = match.group(1)
        if match := re.search(r"kiosk page:\s+(http\S+)", line):
            web = match.group(1).rstrip("/")
        if target and web:
            threading.Thread(target=server.stdout.read, daemon=True).start()  # keep the pipe drained
            return Replica(server, target, web)
    raise RuntimeError(f"the server did not start (exit code {server.wait()})")


def _ledgers(replicas: Sequence[Replica]) -> dict[str, float]:
    total: dict[str, float] = {}
    for replica in replicas:
        for part, seconds in _ledger(replica.web).items():
            total[part] = total.get(part, 0.0) + seconds
    return total


def _ledger(web: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"{web}/metrics", timeout=10) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:  # an anchor older than /metrics: its process CPU alone
        if error.code != 404:
            raise
        return {}
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^lipstream_cpu_seconds_total\{part="(\w+)"\} (\S+)$', text, re.M)
    }


def _threads_cpu(pids: Sequence[int]) -> dict[str, float]:
    """CPU seconds of the processes ("process"), their main threads ("event loop") and grpc's threads
    ("grpc")."""
    out = {"process": 0.0, "event loop": 0.0, "grpc": 0.0}
    for pid in pids:
        for key, seconds in _process_cpu(pid).items():
            out[key] += seconds
    return out


def _process_cpu(pid: int) -> dict[str, float]:
    out = {"process": 0.0, "event loop": 0.0, "grpc": 0.0}
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["process"] = (int(fields[11]) + int(fields[12])) / _TICKS
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except FileNotFoundError:
            continue  # a thread that just ended
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / _TICKS
        if int(tid) == pid:
            out["event loop"] += seconds
        elif name.startswith("grpc") or name.startswith("default-executo") or name.startswith("resolver"):
            out["grpc"] += seconds
    return out


async def _one(target: str, text: str, mode: int, engine: int = pb.VISEME) -> SessionResult:
    result = SessionResult()
    config = pb.SessionConfig(
        pacing=pb.REALTIME,
        video=pb.VideoConfig(enabled=True, fps=FPS, engine=engine),  # type: ignore[arg-type]
    )
    config.video.frame_mode = mode  # type: ignore[assignment]  # FULL_FRAME or FACE_PATCH's number
    requests = [
        pb.ConverseRequest(config=config),
        pb.ConverseRequest(text=pb.TextInput(text=text)),
        pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT)),
    ]
    first: tuple[float, float] | None = None  # (arrival, pts) of the first frame
    last: tuple[float, float] = (0.0, 0.0)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        async for response in stub.Converse(iter(requests)):
            kind = response.WhichOneof("response")
            if kind == "started" and response.started.engine != engine:
                raise RuntimeError(f"the server gave engine {response.started.engine}, not {engine}")
            if kind == "audio" and response.audio.utterance_id:
                result.speech_s += response.audio.num_samples / response.audio.sample_rate
            elif kind == "frame":
                frame = response.frame
                now = time.perf_counter()
                first = first or (now, frame.pts)
                last = (now, frame.pts)
                result.frames += 1
                size = response.ByteSize()  # the message on the wire: the JPEG and its fields
                result.video_bytes += size
                if frame.speaking:
                    result.speaking_bytes += size
                    result.speaking_frames += 1
                elif frame.frame_index > 0:  # the first frame is whole in either mode: not an idle cost
                    result.idle_bytes += size
                    result.idle_frames += 1
    if first is not None and result.frames > 1:
        span = last[0] - first[0]
        result.fps = (result.frames - 1) / span if span > 0 else 0.0
        result.lag_s = max(0.0, (last[0] - first[0]) - (last[1] - first[1]))
    return result


async def _idle(target: str, mode: int, seconds: float) -> tuple[float, int]:
    """(bit/s, frames) of an idle REALTIME session's frames after its first (the whole picture), over
    `seconds` with no text."""
    config = pb.SessionConfig(
        pacing=pb.REALTIME, video=pb.VideoConfig(enabled=True, fps=FPS, engine=pb.VISEME)
    )
    config.video.frame_mode = mode  # type: ignore[assignment]

    async def requests() -> AsyncIterator[pb.ConverseRequest]:
        yield pb.ConverseRequest(config=config)
        await asyncio.sleep(seconds)
        yield pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT))

    sizes: list[int] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        async for response in stub.Converse(requests()):
            if response.WhichOneof("response") == "frame":
                sizes.append(response.ByteSize())
    after_first = sizes[1:]
    return sum(after_first) * 8 * FPS / max(1, len(after_first)), len(after_first)


def run(
    replicas: Sequence[Replica], sessions: int, seconds: float, mode: int = 0, engine: int = pb.VISEME
) -> Run:
    """N sessions at once, spread over the replicas in turn (as a balancer spreads new sessions); the
    servers' CPU by part over the run, summed over the replicas."""
    text = text_for(seconds)
    pids = [r.process.pid for r in replicas]
    ledger0, threads0, client0 = _ledgers(replicas), _threads_cpu(pids), time.process_time()
    began = time.perf_counter()

    async def all_sessions() -> list[SessionResult]:
        return list(await asyncio.gather(
            *(_one(replicas[i % len(replicas)].target, text, mode, engine) for i in range(sessions))
        ))

    with SwitchCounter(pids) as counter:
        results = asyncio.run(all_sessions())
    wall = time.perf_counter() - began
    time.sleep(0.3)  # the stage threads add their CPU to the ledger as they end, just after the stream
    ledger1, threads1 = _ledgers(replicas), _threads_cpu(pids)
    parts = {k: ledger1[k] - ledger0.get(k, 0.0) for k in ledger1}
    parts["event loop"] = threads1["event loop"] - threads0["event loop"]
    parts["grpc"] = threads1["grpc"] - threads0["grpc"]
    server_cpu = threads1["process"] - threads0["process"]
    parts["other"] = server_cpu - sum(parts.values())
    return Run(results, wall, server_cpu, time.process_time() - client0, parts, counter.switches)


def _print_table(rows: list[tuple[int, Run]], mode_name: str, engine_name: str = "viseme") -> None:
    print(f"## Sessions per box: REALTIME {engine_name} video at {FPS:.0f} fps, {mode_name}, clients on this "
          f"machine ({os.cpu_count()} cores)\n")
    print("| sessions | fps (min / median) | final lag s (max / median) | speech s | Mbit/s speaking | "
          "kbit/s not speaking | server cores | client cores | server switches per frame | load 1 min |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, r in rows:
        fps = [s.fps for s in r.sessions]
        lag = [s.lag_s for s in r.sessions]
        speech = statistics.median(s.speech_s for s in r.sessions)
        speaking_frames = max(1, sum(s.speaking_frames for s in r.sessions))
        speaking = sum(s.speaking_bytes for s in r.sessions) * 8 * FPS / speaking_frames  # bit/s
        idle_frames = max(1, sum(s.idle_frames for s in r.sessions))
        idle = sum(s.idle_bytes for s in r.sessions) * 8 * FPS / idle_frames
        print(f"| {n} | {min(fps):.1f} / {statistics.median(fps):.1f} | {max(lag):.2f} / "
              f"{statistics.median(lag):.2f} | {speech:.1f} | {speaking / 1e6:.2f} | {idle / 1e3:.0f} | "
              f"{r.server_cpu_s / r.wall_s:.2f} | {r.client_cpu_s / r.wall_s:.2f} | "
              f"{_switches_per_frame(r):.0f} | {os.getloadavg()[0]:.1f} |")
    parts = list(rows[0][1].parts_s)
    print("\nServer CPU per second of speech, core-milliseconds by part:\n")
    print("| sessions | " + " | ".join(parts) + " | total |")
    print("|---|" + "---|" * (len(parts) + 1))
    for n, r in rows:
        speech = sum(s.speech_s for s in r.sessions) or 1.0
        cells = [f"{r.parts_s[p] * 1000 / speech:.0f}" for p in parts]
        print(f"| {n} | " + " | ".join(cells) + f" | {r.server_cpu_s * 1000 / speech:.0f} |")
    print()


def _switches_per_frame(run: Run) -> float:
    return run.switches / max(1, sum(s.frames for s in run.sessions))


def _print_beside(anchor: list[tuple[int, Run]], rows: list[tuple[int, Run]], mode_name: str) -> None:
    print(f"## The same sessions on the anchor's server and on this one ({mode_name} asked), one run\n")
    print("| sessions | fps min: anchor / this | final lag s max: anchor / this | server core-ms per s of "
          "speech: anchor / this (ratio) | Mbit/s speaking: anchor / this (ratio) | switches per frame: "
          "anchor / this |")
    print("|---|---|---|---|---|---|")
    for (n, a), (_, r) in zip(anchor, rows, strict=True):
        cost = [x.server_cpu_s * 1000 / (sum(s.speech_s for s in x.sessions) or 1.0) for x in (a, r)]
        bits = [sum(s.speaking_bytes for s in x.sessions) * 8 * FPS / max(1, sum(s.speaking_frames
                for s in x.sessions)) / 1e6 for x in (a, r)]
        print(f"| {n} | {min(s.fps for s in a.sessions):.1f} / {min(s.fps for s in r.sessions):.1f} | "
              f"{max(s.lag_s for s in a.sessions):.2f} / {max(s.lag_s for s in r.sessions):.2f} | "
              f"{cost[0]:.0f} / {cost[1]:.0f} ({cost[0] / cost[1]:.2f}x) | "
              f"{bits[0]:.2f} / {bits[1]:.2f} ({bits[0] / max(bits[1], 1e-9):.1f}x) | "
              f"{_switches_per_frame(a):.0f} / {_switches_per_frame(r):.0f} |")
    print()


@dataclass
class Measured:
    rows: list[tuple[int, Run]]
    idle: tuple[float, int]  # the not-speaking bit rate and its frames


def _measure(python: str, args: argparse.Namespace, mode: int, engine: int, extra: Sequence[str]) -> Measured:
    """The sessions of `args` on the server of `python`'s lipstream."""
    replicas: list[Replica] = []
    try:
        for _ in range(args.replicas):
            replicas.append(_start_server(max(args.sessions) + 1, extra, python))
        for replica in replicas:
            run([replica], 1, 2.0, mode, engine)  # warm-up: the voice, the avatar's mouth
        rows = [(n, run(replicas, n, args.seconds, mode, engine)) for n in args.sessions]
        return Measured(rows, asyncio.run(_idle(replicas[0].target, mode, IDLE_SECONDS)))
    finally:
        for replica in replicas:
            replica.process.terminate()
            replica.process.wait(30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench sessions --")
    parser.add_argument("sessions", nargs="*", type=int, default=list(SESSIONS))
    parser.add_argument("--seconds", type=float, default=15.0, help="speech per session (about)")
    parser.add_argument("--mode", choices=("full_frame", "face_patch"), default="full_frame")
    parser.add_argument("--engine", choices=("viseme", "wav2lip"), default="viseme")
    parser.add_argument("--anchor", metavar="PYTHON", help="an interpreter whose lipstream is the anchor")
    parser.add_argument(
        "--replicas", type=int, default=1, help="server processes on this box; sessions go to each in turn"
    )
    parser.add_argument(
        "--voice-precision",
        choices=("fp32", "bf16"),
        help="this checkout's server's (the anchor's: its default)",
    )
    args = parser.parse_args(argv if argv is not None else [])
    if args.replicas < 1:
        parser.error(f"--replicas {args.replicas}: give 1 or more")
    mode = pb.VideoConfig.FrameMode.Value(args.mode.upper())
    engine = pb.LipSyncEngine.Value(args.engine.upper())
    with tempfile.TemporaryDirectory() as tmp:
        extra: list[str] = []
        if args.engine == "wav2lip":
            from tests.wav2lip_fill import write_official_checkpoint

            extra = ["--wav2lip-checkpoint", str(write_official_checkpoint(Path(tmp) / "wav2lip.pth"))]
        anchor = _measure(args.anchor, args, mode, engine, extra) if args.anchor else None
        own = ["--voice-precision", args.voice_precision] if args.voice_precision else []
        this = _measure(sys.executable, args, mode, engine, [*extra, *own])
    name = args.mode.upper() + (f", {args.replicas} replicas" if args.replicas > 1 else "")
    if anchor is not None:
        _print_table(anchor.rows, f"{name} asked, the anchor's server ({args.anchor})", args.engine)
    _print_table(this.rows, name, args.engine)
    for who, measured in (("the anchor", anchor), ("this checkout", this)):
        if measured is not None:
            print(f"Idle, {who} ({name}, one REALTIME session, {IDLE_SECONDS:.0f} s with no text, frames "
                  f"after the first): {measured.idle[0] / 1e3:.1f} kbit/s over {measured.idle[1]} frames\n")
    if anchor is not None:
        _print_beside(anchor.rows, this.rows, name)

if __name__ == "__main__":
    main(sys.argv[1:])
