"""Word timings and blendshape frames of a session as one JSON document (`lipstream say --words` writes it
beside the audio or video): what a game engine or a subtitle track needs, on the audio's clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .events import BlendshapeFrame, Event, SessionStarted, WordEvent

__all__ = ["Timings"]


class Timings:
    """Collects the WordEvents and BlendshapeFrames of a stream; `write(path)` saves them as JSON."""

    def __init__(self) -> None:
        self.sample_rate = 0
        self.blendshape_names: tuple[str, ...] = ()
        self.words: list[WordEvent] = []
        self.blendshapes: list[BlendshapeFrame] = []

    def add(self, event: Event) -> None:
        if isinstance(event, SessionStarted):
            self.sample_rate = event.sample_rate
            self.blendshape_names = event.blendshape_names
        elif isinstance(event, WordEvent):
            self.words.append(event)
        elif isinstance(event, BlendshapeFrame):
            self.blendshapes.append(event)

    def as_dict(self) -> dict[str, Any]:
        """Words with their samples and seconds; blendshape frames with pts and weights (names' order)."""
        rate = self.sample_rate or 1
        return {
            "sample_rate": self.sample_rate,
            "words": [
                {"word": w.word, "start": w.start_sample / rate, "end": w.end_sample / rate,
                 "start_sample": w.start_sample, "end_sample": w.end_sample, "utterance_id": w.utterance_id}
                for w in self.words
            ],
            "blendshape_names": list(self.blendshape_names),
            "blendshapes": [
                {"frame_index": b.frame_index, "pts": b.pts, "weights": [round(x, 4) for x in b.weights]}
                for b in self.blendshapes
            ],
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
