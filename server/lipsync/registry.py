"""The lip-sync engines a server can run, by the name a session asks for (SessionOptions.engine)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lipstream.server.lipsync import viseme, wav2lip
from lipstream.server.lipsync.renderer import RendererFactory
from lipstream.server.metrics import Metrics
from lipstream.server.options import EngineSettings
from lipstream.v1.enums import LipSyncEngine


@dataclass(frozen=True)
class EngineEntry:
    load: Callable[[EngineSettings, Any, Metrics], RendererFactory | None]
    """The engine's RendererFactory for these settings (the model given, or the one they name; its figures
    go to the metrics); None when the settings name none."""
    missing: str
    """Why a session cannot have it when it is not loaded, and the fix."""


ENGINES: dict[LipSyncEngine, EngineEntry] = {
    # In the order AUTO prefers them.
    wav2lip.NAME: EngineEntry(
        wav2lip.load,
        "lip-sync engine WAV2LIP needs a checkpoint: start the server with --wav2lip-checkpoint, "
        "or ask for AUTO or VISEME",
    ),
    viseme.NAME: EngineEntry(viseme.load, "lip-sync engine VISEME needs an avatar"),
}


def load_engines(
    settings: EngineSettings, models: Mapping[LipSyncEngine, Any], metrics: Metrics
) -> dict[LipSyncEngine, RendererFactory]:
    """Every engine these settings (or the `models` given by name, for tests) make available, in order."""
    loaded: dict[LipSyncEngine, RendererFactory] = {}
    for name, entry in ENGINES.items():
        factory = entry.load(settings, models.get(name), metrics)
        if factory is not None:
            loaded[name] = factory
    return loaded
