"""Lip sync: the stage that turns a session's audio into video frames, and the engines that draw the mouths.

    stage.py     LipSyncStage, one for all engines: reads the ring, flow control, idle frames, JPEG, rewinds
    renderer.py  FrameRenderer (one session's mouths) and RendererFactory (an engine in the process)
    viseme.py    the viseme renderer (no weights: phoneme timings + loudness)
    wav2lip.py   the Wav2Lip renderer and the FrameBatcher that runs the model for every session
    gpu.py       with CUDA: every session's Wav2Lip paste and JPEGs in batches on the device
    registry.py  ENGINES: the engine's name -> how to load it

A new engine (say MuseTalk) adds:

    1. models/musetalk/                     the model, torch/numpy only (as models/wav2lip/)
    2. server/lipsync/musetalk.py           NAME, a FrameRenderer, a RendererFactory and load()
    3. server/lipsync/registry.py           one ENGINES entry
    4. protos/lipstream/v1/lipstream.proto  one LipSyncEngine value (then `make proto`), the same member in
                                            protos/lipstream/v1/enums.py's LipSyncEngine

and, when it has weights to point at, their path in server/options.py's EngineSettings and its flag in
server/main.py. Nothing else names an engine: the session gets its renderer from the registry by name.
"""

from lipstream.server.lipsync.renderer import FrameJob, FrameRenderer, RendererFactory
from lipstream.server.lipsync.stage import LipSyncStage, encode_jpeg
from lipstream.server.lipsync.wav2lip import FrameBatcher

__all__ = ["FrameBatcher", "FrameJob", "FrameRenderer", "LipSyncStage", "RendererFactory", "encode_jpeg"]
