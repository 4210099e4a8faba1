"""The first clause's early cut: time to first audio, where the cut fell, and the silence it adds there.

A reply streamed as LLM tokens (a word or punctuation each, at a token interval) into an in-process
session of the default voice (noise 0: the same audio each run). The first cut is the end of the first
utterance; the silence there (the first clause's trailing and the second's leading quiet, 10 ms frames
under -40 dB of the loudest) is compared with the quiet at the same word boundary when the whole sentence
is spoken at once: the difference is the silence the cut adds. Two policies: the old one (cut after four
words) and the segmenter's (a natural break within ten words, or the last word after
first_clause_wait_s with no new text).

`python -m bench first_cut`
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import numpy as np
from lipstream.server.engine import Engine
from lipstream.server.events import AudioEvent, UtteranceOut
from lipstream.server.options import EngineSettings, SessionOptions

REPLIES = (
    "The painting you see here was made by Johannes Vermeer around 1665, in the city of Delft.",
    "Welcome to our museum, where every room tells a story about the people who lived here.",
    "This small statue was found in a field near the river by two farmers in the spring of 1921.",
    "Our guided tour starts in ten minutes at the main entrance of the east wing.",
)
TOKEN_INTERVALS_S = (0.0, 0.03)  # all at once; ~33 tokens per second, an LLM streaming its reply
QUIET_DB = -40.0
FRAME_S = 0.01


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for word in text.split(" "):
        token = " " + word if out else word
        out += [token[:-1], token[-1]] if token[-1] in ",.;:!?" else [token]
    return out


def _quiet_around(audio: np.ndarray, rate: int, point: int) -> float:
    """Seconds of contiguous quiet 10 ms frames around sample `point` (0 when that frame is loud)."""
    frame = int(FRAME_S * rate)
    n = len(audio) // frame
    rms = np.sqrt((audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(1)) + 1e-12
    quiet = 20 * np.log10(rms / rms.max()) < QUIET_DB
    at = min(n - 1, point // frame)
    if not quiet[at]:
        return 0.0
    lo = hi = at
    while lo > 0 and quiet[lo - 1]:
        lo -= 1
    while hi < n - 1 and quiet[hi + 1]:
        hi += 1
    return (hi - lo + 1) * FRAME_S


@dataclasses.dataclass
class Run:
    first_audio_s: float
    first_clause: str
    cut_quiet_s: float
    audio: np.ndarray


async def _speak(engine: Engine, reply: str, interval: float) -> Run:
    options = SessionOptions(noise_scale=0.0, noise_scale_w=0.0)
    session = await engine.open_session(options)
    chunks: list[np.ndarray] = []
    first_audio = 0.0
    first_end = -1
    first_clause = ""
    started = time.perf_counter()

    async def feed() -> None:
        for token in _tokens(reply):
            await session.send_text(token)
            if interval:
                await asyncio.sleep(interval)
        await session.end_input()

    feeder = asyncio.create_task(feed())
    try:
        async for event in session.events():
            if isinstance(event, AudioEvent) and event.num_samples:
                chunks.append(event.samples)
                if event.utterance_id and not first_audio:
                    first_audio = time.perf_counter() - started
            elif isinstance(event, UtteranceOut) and event.kind == "finished" and first_end < 0:
                first_end, first_clause = event.end_sample, event.text
        await feeder
    finally:
        await session.close()
    audio = np.concatenate(chunks)
    return Run(first_audio, first_clause, _quiet_around(audio, session.sample_rate, first_end), audio)


def _whole_quiet(engine: Engine, reply: str, clause: str) -> float:
    """The quiet at the end of `clause`'s words when the whole reply is spoken at once."""
    voice = engine._voices[engine.default_voice]  # the bench reads the loaded voice directly
    speech = voice.synthesize(reply, noise_scale=0.0, noise_scale_w=0.0)
    words = voice.words(reply, speech.phonemes)
    count = len(clause.split())
    if count >= len(words):
        return 0.0
    point = (words[count - 1].end_sample + words[count].start_sample) // 2
    return _quiet_around(speech.audio, speech.sample_rate, point)


async def _run(settings: EngineSettings, interval: float) -> list[tuple[Run, float]]:
    engine = Engine(settings)
    await _speak(engine, "Warm up.", 0.0)
    runs = []
    for reply in REPLIES:
        run = await _speak(engine, reply, interval)
        runs.append((run, run.cut_quiet_s - _whole_quiet(engine, reply, run.first_clause)))
    return runs


def main() -> None:
    policies = {
        "after 4 words (old)": EngineSettings(first_clause_words=4, first_clause_max_words=4),
        "natural break (segmenter)": EngineSettings(),
    }
    print(f"## First cut (CPU, {os.cpu_count()} cores, default voice, {len(REPLIES)} replies)\n")
    print("| policy | token interval | time to first audio (median) | added silence at the cut (median, max) "
          "| target |")
    print("|---|---|---|---|---|")
    detail: list[str] = []
    for name, settings in policies.items():
        for interval in TOKEN_INTERVALS_S:
            runs = asyncio.run(_run(settings, interval))
            first = float(np.median([r.first_audio_s for r, _ in runs]))
            added = [a for _, a in runs]
            print(f"| {name} | {interval * 1000:.0f} ms | {first * 1000:.0f} ms | "
                  f"{np.median(added) * 1000:.0f} ms, {max(added) * 1000:.0f} ms | ≤ 120 ms added |")
            detail += [f"- {name}, {interval * 1000:.0f} ms: {r.first_clause!r} ({a * 1000:+.0f} ms)"
                       for r, a in runs]
    print()
    print("\n".join(detail))


if __name__ == "__main__":
    main()
