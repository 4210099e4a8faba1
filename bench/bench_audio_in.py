"""Audio in (issue 16): how close the audio-driven mouth is to the phoneme-driven one, and the lip-sync
latency of an audio-in session (first frame sent after the first audio received).

``python -m bench.bench_audio_in`` (or ``make bench``) prints two markdown tables:

- per-frame correlation (25 fps) of the audio-driven mouth (``lipstream.models.viseme.audio``) with the
  phoneme-driven ``MouthTrack`` on the default voice's speech of a few sentences, per mouth parameter, and
  of the loudness alone with the phoneme-driven jaw (the baseline the spectral cues improve on);
- ``SessionStats.time_to_first_frame_s`` of audio-in sessions on a loopback server, viseme and Wav2Lip
  (the test suite's synthetic official-layout weights: the timing of the real model's graph), fed in 20 ms
  pieces in real time and all at once; the medians of a few sessions each.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SENTENCES = (
    "The quick brown fox jumps over the lazy dog while the moon rises over the old town.",
    "Would you like to see how a talking head moves its lips, round and open, to each sound?",
    "Please call me back tomorrow at seven, and bring the blue umbrella with you.",
    "Ships sail south across the wide ocean; sheep graze calmly on the green hills.",
    "Who knew that you could do so much with only a voice and a picture?",
)
FPS = 25
RATE = 16000
PIECE_S = 0.02
SESSIONS = 5


def mouth_correlations() -> dict[str, float]:
    """Correlation per mouth parameter of the audio-driven with the phoneme-driven mouth, every frame."""
    from lipstream.models.viseme import MouthTrack, guess_alphabet, loudness, visemes_from_phonemes
    from lipstream.models.viseme.audio import audio_mouth_shape
    from lipstream.models.vits import DEFAULT_VOICE, load_voice

    voice = load_voice(DEFAULT_VOICE)
    phoneme_rows, audio_rows, levels = [], [], []
    for text in SENTENCES:
        speech = voice.synthesize(text)
        symbols = [str(p.phoneme) for p in speech.phonemes]
        visemes = visemes_from_phonemes(speech.phonemes, alphabet=guess_alphabet(symbols))
        track = MouthTrack(visemes, voice.sample_rate)
        rate = speech.sample_rate
        for i in range(len(speech.audio) * FPS // rate):
            start, stop = round(i * rate / FPS), round((i + 1) * rate / FPS)
            window = speech.audio[start:stop]
            p = track.shape_at(start, loudness(window))
            a = audio_mouth_shape(window, rate)
            phoneme_rows.append((p.jaw_open, p.lip_width, p.rounding))
            audio_rows.append((a.jaw_open, a.lip_width, a.rounding))
            levels.append(loudness(window))
    phoneme, audio = np.array(phoneme_rows), np.array(audio_rows)
    figures = {
        name: float(np.corrcoef(phoneme[:, k], audio[:, k])[0, 1])
        for k, name in enumerate(("jaw_open", "lip_width", "rounding"))
    }
    figures["jaw_open, loudness alone"] = float(np.corrcoef(phoneme[:, 0], levels)[0, 1])
    figures["frames"] = float(len(phoneme))
    return figures


def _speech(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 12))
    samples = 0.25 * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)) * voiced / 3
    return np.rint(samples * 32767).astype("<i2").tobytes()


def _first_frame_s(target: str, engine: str, realtime: bool) -> float:
    from lipstream.client import Client, VideoConfig

    speech, piece = _speech(1.0), 2 * int(PIECE_S * RATE)
    with Client(target) as client:
        conversation = client.converse_audio(
            input_sample_rate=RATE, audio_format="pcm16", video=VideoConfig(engine=engine)
        )

        def feed() -> None:
            for start in range(0, len(speech), piece):
                conversation.send_audio(speech[start : start + piece], start + piece >= len(speech))
                if realtime:
                    time.sleep(PIECE_S)
            conversation.end()

        feeder = threading.Thread(target=feed)
        feeder.start()
        for _ in conversation:
            pass
        feeder.join()
    assert conversation.stats is not None
    return conversation.stats.time_to_first_frame_s


def latencies() -> dict[tuple[str, str], float]:
    from lipstream.server.engine import Engine
    from lipstream.server.options import EngineSettings

    from tests.servers import TinyVoice, running_server
    from tests.wav2lip_fill import write_official_checkpoint

    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = write_official_checkpoint(Path(folder) / "wav2lip.pth")
        voice = TinyVoice()
        engine = Engine(EngineSettings(wav2lip_checkpoint=str(checkpoint)), voices={voice.name: voice})
        with running_server(engine) as server:
            for name in ("viseme", "wav2lip"):
                _first_frame_s(server.target, name, realtime=False)  # warm-up
                for realtime in (True, False):
                    runs = [_first_frame_s(server.target, name, realtime) for _ in range(SESSIONS)]
                    how = f"{PIECE_S * 1000:.0f} ms pieces in real time" if realtime else "all at once"
                    figures[(name, how)] = statistics.median(runs)
    return figures


def main() -> None:
    print("## Audio-driven mouth vs phoneme-driven mouth (default voice, 25 fps)\n")
    figures = mouth_correlations()
    print(f"| parameter | correlation per frame ({figures.pop('frames'):.0f} frames) |\n|---|---|")
    for name, value in figures.items():
        print(f"| {name} | {value:.2f} |")
    print("\n## Lip-sync latency of audio-in sessions (first frame after the first audio, loopback)\n")
    print("| engine | audio | median time to first frame |\n|---|---|---|")
    for (engine, how), seconds in latencies().items():
        print(f"| {engine} | {how} | {seconds * 1000:.0f} ms |")
    print()


if __name__ == "__main__":
    main()
