"""Fleet figures: what Envoy in front of the replicas costs. Two replicas (deploy/fleet.py, default voice,
audio only) are reached in one run both through Envoy and directly (the client's own round-robin over the
same two), alternating round by round so that the machine's load hits both alike; the figures are the ratios.

- time to first audio: a Converse call, the first clause sent once the session started, to its first chunk;
- sessions per second: short Synthesize calls, CONCURRENCY at once, whole sessions per wall second.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import grpc
from lipstream.client.config import channel_options
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

FIRST_CLAUSE = "Hello there, "
SHORT_TEXT = "Hi."
ROUNDS = 5
FIRSTS_PER_ROUND = 4
SESSIONS_PER_ROUND = 24
CONCURRENCY = 4


def _load_fleet() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "deploy" / "fleet.py"
    spec = importlib.util.spec_from_file_location("lipstream_deploy_fleet", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _first_audio(stub: lipstream_pb2_grpc.LipStreamStub) -> float:
    """Seconds from sending the first clause (after SessionStarted) to the first AudioChunk."""
    outgoing: queue.Queue[pb.ConverseRequest | None] = queue.Queue()
    outgoing.put(pb.ConverseRequest(config=pb.SessionConfig(audio_format=pb.PCM16)))

    def requests() -> Iterator[pb.ConverseRequest]:
        while (request := outgoing.get()) is not None:
            yield request

    sent_at = first = 0.0
    for response in stub.Converse(requests(), timeout=60):
        kind = response.WhichOneof("response")
        if kind == "started":
            sent_at = time.perf_counter()
            outgoing.put(pb.ConverseRequest(text=pb.TextInput(text=FIRST_CLAUSE, flush=True)))
        elif kind == "audio" and not first:
            first = time.perf_counter() - sent_at
            outgoing.put(pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT)))
            outgoing.put(None)
    return first


def _sessions_per_second(stub: lipstream_pb2_grpc.LipStreamStub) -> float:
    request = pb.SynthesizeRequest(config=pb.SessionConfig(audio_format=pb.PCM16), text=SHORT_TEXT)

    def one(_: int) -> None:
        for _response in stub.Synthesize(request, timeout=60):
            pass

    began = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(SESSIONS_PER_ROUND)))
    return SESSIONS_PER_ROUND / (time.perf_counter() - began)


def _measure(ways: dict[str, lipstream_pb2_grpc.LipStreamStub]) -> dict[str, tuple[list[float], list[float]]]:
    """way -> (first-audio seconds, sessions per second per round), the ways taking turns each round."""
    results: dict[str, tuple[list[float], list[float]]] = {way: ([], []) for way in ways}
    for stub in ways.values():  # warm-up: connections, the voices' first calls
        _first_audio(stub)
        _sessions_per_second(stub)
    for round_index in range(ROUNDS):
        order = list(ways.items())
        if round_index % 2:
            order.reverse()
        for way, stub in order:
            results[way][0].extend(_first_audio(stub) for _ in range(FIRSTS_PER_ROUND))
            results[way][1].append(_sessions_per_second(stub))
    return results


def main() -> None:
    fleet_module = _load_fleet()
    ports = fleet_module.free_ports(7)
    fleet = fleet_module.Fleet(
        replicas=2,
        grpc_port=ports[0],
        web_port=ports[1],
        admin_port=ports[2],
        replica_ports=ports[3:5],
        replica_web_ports=ports[5:7],
        grace_s=2.0,
        output=subprocess.DEVNULL,
    )
    fleet.start()
    try:
        direct_target = "ipv4:" + ",".join(r.target for r in fleet.members)
        opened: list[grpc.Channel] = []

        def stub(target: str, options: list[tuple[str, str]]) -> lipstream_pb2_grpc.LipStreamStub:
            channel = grpc.insecure_channel(target, options=options)
            opened.append(channel)
            return lipstream_pb2_grpc.LipStreamStub(channel)

        ways = {
            "through Envoy": stub(f"127.0.0.1:{fleet.grpc_port}", []),
            "direct (client round-robin)": stub(direct_target, channel_options(direct_target)),
        }
        results = _measure(ways)
        for channel in opened:
            channel.close()
    finally:
        fleet.stop()

    (firsts_envoy, rates_envoy), (firsts_direct, rates_direct) = results.values()
    first_envoy, first_direct = statistics.median(firsts_envoy), statistics.median(firsts_direct)
    rate_envoy, rate_direct = statistics.median(rates_envoy), statistics.median(rates_direct)
    print(
        f"## Fleet: Envoy vs direct (CPU, {os.cpu_count()} cores, 2 replicas, default voice, audio only; "
        f"medians of {ROUNDS * FIRSTS_PER_ROUND} first-audio calls and {ROUNDS} rounds of "
        f"{SESSIONS_PER_ROUND} sessions, {CONCURRENCY} at a time)\n"
    )
    print("| measure | through Envoy | direct (client round-robin) | Envoy / direct |")
    print("|---|---|---|---|")
    print(
        f"| time to first audio ({FIRST_CLAUSE.strip()!r}) | {first_envoy * 1000:.0f} ms "
        f"| {first_direct * 1000:.0f} ms | {first_envoy / first_direct:.2f} |"
    )
    print(
        f"| sessions per second ({SHORT_TEXT!r}) | {rate_envoy:.1f} | {rate_direct:.1f} "
        f"| {rate_envoy / rate_direct:.2f} |"
    )


if __name__ == "__main__":
    main()
