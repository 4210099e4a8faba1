"""Errors of the VITS voices; each message says what is wrong and how to fix it."""

from __future__ import annotations


class VoiceError(ValueError):
    """Base of every voice error."""


class VoiceNotFoundError(VoiceError):
    """No voice file or installed voice by that name."""


class UnknownSpeakerError(VoiceError):
    """The speaker is not one of the voice's speakers (the message lists them)."""


class CheckpointError(VoiceError):
    """A checkpoint or config that cannot be read or does not fit the model (the message names the file)."""
