"""Hardening figures (issue 14): how a hostile client affects everyone else, and what 1,000 sessions leave.

- Health-check latency (p50, p99) with the server idle, then while hostile clients send texts at the
  server's bound in the segmenter's worst shapes (each followed by an INTERRUPT, so that they cost the
  segmenter and the event loop, not minutes of speech); the ratio of the two, from one run. Beside it the
  same load made of ordinary prose of the same length: what any client sending that much text costs, so
  that what the worst shapes add shows apart from the speech the first clause of each text starts.
- The segmenter alone on those texts (the work the event loop does per text).
- A soak: 1,000 short sessions of every kind (spoken, cancelled, refused, corrupt, never configured, video),
  eight at a time, twice; the server's RSS, threads and open fds before and after each thousand.

The server runs as `python -m lipstream.server` in a subprocess (default voice and avatar); the attacking
clients each in a process of their own (`python -m bench.bench_hardening attack TARGET SHAPES`), so that
the health checks, from this process, share no interpreter with them.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lipstream.server.options import EngineSettings
from lipstream.server.segmenter import Segmenter
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

from bench.bench_server import _start_server

MAX_TEXT = EngineSettings().max_text_chars
HEALTH_CHECKS = 1_000
HOSTILE_CLIENTS = 2
SOAK_SESSIONS = 1_000
SOAK_CLIENTS = 8


PROSE = "The quick brown fox jumps over the lazy dog, and then it rests a while in the shade of an old tree. "


def texts(shapes: str, length: int = MAX_TEXT) -> list[str]:
    """The attack's texts: "worst" (every worst shape) or "prose", `length` characters each."""
    if shapes == "prose":
        return [(PROSE * (length // len(PROSE) + 1))[:length]]
    return list(worst_texts(length).values())


def worst_texts(length: int = MAX_TEXT) -> dict[str, str]:
    """The shapes that made the segmenter quadratic, at `length` characters."""
    tail = "Dr. " * (length // 10)
    return {
        "long word, then 'Dr. ' (the issue's)": "a" * (length - len(tail) - 1) + "-" + tail,
        "one word, no space": "a" * length,
        "'Dr. ' only": ("Dr. " * length)[:length],
        "CJK, no punctuation": "你" * length,
        "'. ' after every letter": ("a. " * length)[:length],
    }


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _health_latencies(target: str, count: int) -> list[float]:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)  # connected
        latencies = []
        for _ in range(count):
            began = time.perf_counter()
            stub.Check(health_pb2.HealthCheckRequest(), timeout=60)
            latencies.append(time.perf_counter() - began)
            time.sleep(0.002)
    return latencies


def _attack(target: str, shapes: str, stop: threading.Event, sent: list[int]) -> None:
    """Sessions that send the texts of `shapes` over and over, each followed by an INTERRUPT."""
    with grpc.insecure_channel(target) as channel:
        stub = lipstream_pb2_grpc.LipStreamStub(channel)
        while not stop.is_set():

            def requests() -> Iterator[pb.ConverseRequest]:
                yield pb.ConverseRequest(config=pb.SessionConfig())
                for text in texts(shapes) * 5:
                    if stop.is_set():
                        break
                    yield pb.ConverseRequest(text=pb.TextInput(text=text))
                    yield pb.ConverseRequest(control=pb.Control(action=pb.Control.INTERRUPT))
                    sent.append(len(text))
                yield pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT))

            try:
                for _ in stub.Converse(requests(), timeout=120):
                    pass
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise


def attack_process(target: str, shapes: str) -> int:
    """The attacker's process: attacks until its stdin closes, then prints the characters it sent."""
    stop = threading.Event()
    sent: list[int] = []
    attacker = threading.Thread(target=_attack, args=(target, shapes, stop, sent))
    attacker.start()
    sys.stdin.read()
    stop.set()
    attacker.join(120)
    print(len(sent), sum(sent), flush=True)
    return 0


def health_under_load(target: str, shapes: str) -> dict[str, float]:
    """Health-check latency while HOSTILE_CLIENTS processes send the texts of `shapes`."""
    command = [sys.executable, "-m", "bench.bench_hardening", "attack", target, shapes]
    attackers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(HOSTILE_CLIENTS)
    ]
    try:
        time.sleep(2.0)  # the attack is under way
        began = time.perf_counter()
        latencies = _percentiles(_health_latencies(target, HEALTH_CHECKS))
        seconds = time.perf_counter() - began
    finally:
        outputs = [attacker.communicate(timeout=120)[0] for attacker in attackers]
    counts = [tuple(int(n) for n in output.split()) for output in outputs]
    # The attackers' counts include the 2 s of warm-up and the end: a rate over the whole attack.
    total_s = seconds + 2.0
    return {
        "p50": latencies[0],
        "p99": latencies[1],
        "texts_per_s": sum(c[0] for c in counts) / total_s,
        "chars_per_s": sum(c[1] for c in counts) / total_s,
    }


def segmenter_alone() -> dict[str, float]:
    """Milliseconds to segment each worst-case text at the bound, in one push (the best of 3)."""
    times = {}
    for name, text in worst_texts().items():
        best = float("inf")
        for _ in range(3):
            segmenter = Segmenter()
            began = time.perf_counter()
            segmenter.push(text)
            segmenter.flush()
            best = min(best, time.perf_counter() - began)
        times[name] = best * 1000
    return times


# -- soak -----------------------------------------------------------------------------------------------
def _process_figures(pid: int) -> tuple[float, int, int]:
    """(RSS in MiB, threads, open fds) of a process, from /proc."""
    rss_kib = threads = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss_kib / 1024, threads, len(os.listdir(f"/proc/{pid}/fd"))


def _soak_session(channel: grpc.Channel, rng: random.Random) -> str:
    """One short session of a random kind; returns its status name."""
    stub = lipstream_pb2_grpc.LipStreamStub(channel)
    kind = rng.randrange(8)
    text = rng.choice(["Hi.", "Hello there, friend.", "One, two.", "Ok"])
    config = pb.SessionConfig(video=pb.VideoConfig(enabled=kind == 6))
    try:
        if kind in (0, 6):  # spoken to the end (audio, or audio and video)
            list(stub.Synthesize(pb.SynthesizeRequest(text=text, config=config), timeout=60))
        elif kind == 1:  # Converse to the end
            requests = [
                pb.ConverseRequest(config=config),
                pb.ConverseRequest(text=pb.TextInput(text=text, flush=True)),
                pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT)),
            ]
            list(stub.Converse(iter(requests), timeout=60))
        elif kind == 2:  # cancelled at its first audio
            call = stub.Synthesize(pb.SynthesizeRequest(text=text * 5, config=config), timeout=60)
            for response in call:
                if response.WhichOneof("response") == "audio":
                    call.cancel()
        elif kind == 3:  # a bad config with a huge name
            list(stub.Converse(iter([pb.ConverseRequest(config=pb.SessionConfig(voice="v" * 9000))])))
        elif kind == 4:  # a corrupt first message
            raw = channel.stream_stream(
                "/lipstream.v1.LipStream/Converse",
                request_serializer=lambda data: data,
                response_deserializer=lambda data: data,
            )
            list(raw(iter([b"\xff\xff\xff"]), timeout=60))
        elif kind == 5:  # never configured: closed at once
            list(stub.Converse(iter([]), timeout=60))
        else:  # text with control characters, interrupted, then ended
            requests = [
                pb.ConverseRequest(config=config),
                pb.ConverseRequest(text=pb.TextInput(text="a\x00b\x1b c. " + text)),
                pb.ConverseRequest(control=pb.Control(action=pb.Control.INTERRUPT)),
                pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT)),
            ]
            list(stub.Converse(iter(requests), timeout=60))
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name


def soak(target: str, pid: int) -> dict[str, object]:
    rng = random.Random(14)
    seeds = [rng.randrange(1 << 30) for _ in range(SOAK_SESSIONS)]
    figures = []
    statuses: list[str] = []
    seconds = 0.0
    with grpc.insecure_channel(target) as channel, ThreadPoolExecutor(SOAK_CLIENTS) as pool:
        # Warm-up, as many at a time: lazy loads done, the server's thread pools grown to their size.
        list(pool.map(lambda seed: _soak_session(channel, random.Random(seed)), range(80)))
        time.sleep(2.0)
        figures.append(_process_figures(pid))
        for _ in range(2):
            began = time.perf_counter()
            jobs: list[Callable[[], str]]
            jobs = [lambda s=s: _soak_session(channel, random.Random(s)) for s in seeds]
            statuses += pool.map(lambda job: job(), jobs)
            seconds += time.perf_counter() - began
            time.sleep(2.0)  # sessions close, workers end
            figures.append(_process_figures(pid))
        info = lipstream_pb2_grpc.LipStreamStub(channel).GetServerInfo(pb.GetServerInfoRequest())
    tally: dict[str, int] = {}
    for status in statuses:
        tally[status] = tally.get(status, 0) + 1
    return {"figures": figures, "seconds": seconds, "statuses": tally, "active": info.active_sessions}


def main() -> None:
    server, target = _start_server()
    try:
        idle = _percentiles(_health_latencies(target, HEALTH_CHECKS))
        worst = health_under_load(target, "worst")
        prose = health_under_load(target, "prose")
        soaked = soak(target, server.pid)
    finally:
        server.terminate()
        server.wait(30)
    alone = segmenter_alone()

    print(f"## Hardening (CPU, {os.cpu_count()} cores, default voice, one run)\n")
    print(
        f"Health checks ({HEALTH_CHECKS} each, one at a time) with the server idle, then while "
        f"{HOSTILE_CLIENTS} client processes send {MAX_TEXT:,}-character texts, each followed by an "
        f"INTERRUPT: in the segmenter's worst shapes ({worst['texts_per_s']:.0f} texts/s, "
        f"{worst['chars_per_s'] / 1000:.0f}k characters/s), then ordinary prose "
        f"({prose['texts_per_s']:.0f} texts/s):\n"
    )
    print("| health-check latency | idle | worst-case texts | ratio to idle | prose texts | ratio to idle |")
    print("|---|---|---|---|---|---|")
    for stat, index in (("p50", 0), ("p99", 1)):
        base = idle[index]
        print(
            f"| {stat} | {base * 1000:.2f} ms | {worst[stat] * 1000:.2f} ms | {worst[stat] / base:.1f}× "
            f"| {prose[stat] * 1000:.2f} ms | {prose[stat] / base:.1f}× |"
        )
    print()
    print(f"Segmenter alone, one push of {MAX_TEXT:,} characters (best of 3):\n")
    print("| text | time |")
    print("|---|---|")
    for name, ms in alone.items():
        print(f"| {name} | {ms:.1f} ms |")
    print()
    figures = soaked["figures"]
    assert isinstance(figures, list)
    print(
        f"Soak: {SOAK_SESSIONS:,} short sessions of 8 kinds, {SOAK_CLIENTS} at a time, twice, in "
        f"{soaked['seconds']:.0f} s; statuses {soaked['statuses']}; open sessions after: {soaked['active']}\n"
    )
    print(f"| server process | before | after {SOAK_SESSIONS:,} | after {2 * SOAK_SESSIONS:,} |")
    print("|---|---|---|---|")
    print("| RSS | " + " | ".join(f"{f[0]:.0f} MiB" for f in figures) + " |")
    print("| threads | " + " | ".join(str(f[1]) for f in figures) + " |")
    print("| open fds | " + " | ".join(str(f[2]) for f in figures) + " |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["attack"]:
        sys.exit(attack_process(sys.argv[2], sys.argv[3]))
    main()
