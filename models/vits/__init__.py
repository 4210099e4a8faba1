"""VITS voices in torch: official VITS, VITS-fast-fine-tuning and Piper checkpoints, one model."""

from .errors import CheckpointError, UnknownSpeakerError, VoiceError, VoiceNotFoundError
from .synthesizer import ModelConfig, SynthesizerTrn
from .voice import (
    DEFAULT_VOICE,
    OFFICIAL_SYMBOLS,
    PhonemeSpan,
    Speech,
    SpeechStream,
    Voice,
    installed_voices,
    load_voice,
)

__all__ = [
    "DEFAULT_VOICE",
    "OFFICIAL_SYMBOLS",
    "CheckpointError",
    "ModelConfig",
    "PhonemeSpan",
    "Speech",
    "SpeechStream",
    "SynthesizerTrn",
    "UnknownSpeakerError",
    "Voice",
    "VoiceError",
    "VoiceNotFoundError",
    "installed_voices",
    "load_voice",
]
