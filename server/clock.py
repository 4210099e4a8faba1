"""The session's media clock: sample indices at the voice's rate (the ring's) and at the output rate, frames.

Sample 0 is the session's first sample. The ring, the timeline and the lip-sync stage count in voice-rate
samples; audio chunks, visemes and utterance events go out in output-rate samples; frame i shows media time
i / fps. A Clock converts between them and holds no state: any thread may use it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Clock:
    voice_rate: int
    """Of the ring, the timeline and the lip-sync stage's audio."""
    output_rate: int
    """Of the audio sent to the client (its events' sample indices)."""
    fps: float = 0.0
    """Of the video (0: none)."""

    def to_output(self, sample: int) -> int:
        """A sample index of the voice's clock on the output clock."""
        if self.voice_rate == self.output_rate:
            return sample
        return round(sample * self.output_rate / self.voice_rate)

    def to_voice(self, sample: int) -> int:
        """A sample index of the output clock on the voice's clock."""
        if self.voice_rate == self.output_rate:
            return sample
        return round(sample * self.voice_rate / self.output_rate)

    def output_seconds(self, sample: int) -> float:
        """The media time of an output-clock sample."""
        return sample / self.output_rate

    def frame_start(self, frame_index: int) -> int:
        """The first sample (voice rate) of frame `frame_index`."""
        return round(frame_index * self.voice_rate / self.fps)


@dataclass(frozen=True)
class Rewind:
    """One interrupt: where each part of the session goes on from. Session.interrupt builds it once (and
    states the order in which the parts get it); the source stage, the audio and lip-sync stages and the
    multiplexer each take what is theirs."""

    audio_end: int
    """Output samples: where the audio the client has received ends; the audio stage goes on from there."""
    next_frame: int
    """The first frame the client has not received; the lip-sync stage goes on from it."""
    ring_end: int
    """Voice samples: the ring's stream ends here now (the samples past it are dropped); the next utterance
    starts here."""
    cut_at: int
    """Voice samples: no utterance reaches past this on the timeline; at most ring_end, and at most where
    next_frame starts, so the frames the lip-sync stage makes again up to the next utterance are idle."""
    dead_below: int
    """Every utterance id below this is interrupted: what is queued of them is dropped, no more is made."""
    epoch: int
    """The ring's epoch from now on: what was made before it (pushes, watermarks) is stale."""
    next_blendshapes: int = 0
    """The first blendshape frame the client has not received; the blendshape stage goes on from it."""
