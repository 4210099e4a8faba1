"""VITS voices in torch: official VITS, VITS-fast-fine-tuning and Piper checkpoints, one model."""

import os

# torch's OpenMP workers spin while they wait for work by default. When the cores are shared (the server
# runs TTS, lip-sync and encoding at once) spinning threads steal them from the others (bench/FIGURES.md).
# Read when torch loads, so this only helps if nothing imported torch before; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import CheckpointError, UnknownSpeakerError, VoiceError, VoiceNotFoundError  # noqa: E402
from .loaders import DEFAULT_VOICE, OFFICIAL_SYMBOLS, installed_voices, load_voice  # noqa: E402
from .synthesizer import ModelConfig, SynthesizerTrn  # noqa: E402
from .voice import PhonemeSpan, Speech, SpeechStream, SynthesisDefaults, SynthesisOptions, Voice  # noqa: E402
from .words import WordSpan, split_words, word_spans  # noqa: E402

__all__ = [
    "DEFAULT_VOICE",
    "OFFICIAL_SYMBOLS",
    "CheckpointError",
    "ModelConfig",
    "PhonemeSpan",
    "Speech",
    "SpeechStream",
    "SynthesisDefaults",
    "SynthesisOptions",
    "SynthesizerTrn",
    "UnknownSpeakerError",
    "Voice",
    "VoiceError",
    "VoiceNotFoundError",
    "WordSpan",
    "installed_voices",
    "load_voice",
    "split_words",
    "word_spans",
]
