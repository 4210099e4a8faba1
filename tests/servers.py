"""Test support: a tiny deterministic voice, and real lipstream servers on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import numpy as np
from lipstream.models.synthesis import SynthesisOptions
from lipstream.server.engine import Engine
from lipstream.server.options import EngineSettings
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

# Letters -> espeak IPA symbols the viseme mapping knows; other characters are silence ("_" spans).
_LETTER_PHONEMES = {
    "a": "a",
    "e": "ɛ",
    "i": "i",
    "o": "o",
    "u": "u",
    "b": "b",
    "m": "m",
    "p": "p",
    "f": "f",
    "v": "v",
    "t": "t",
    "d": "d",
    "s": "s",
    "z": "z",
    "k": "k",
    "g": "ɡ",
    "n": "n",
    "l": "l",
    "r": "ɹ",
    "h": "h",
}


@dataclass(frozen=True)
class TinyPhonemeSpan:
    phoneme: str
    start_sample: int
    end_sample: int


class TinySpeechStream:
    def __init__(
        self, audio: np.ndarray, phonemes: list[TinyPhonemeSpan], sample_rate: int, chunk: int
    ) -> None:
        self.phonemes = phonemes
        self.num_samples = len(audio)
        self.sample_rate = sample_rate
        self._audio = audio
        self._chunk = chunk
        self.closed = False

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self._audio), self._chunk):
            if self.closed:
                return
            yield self._audio[start : start + self._chunk]

    def close(self) -> None:
        self.closed = True


class TinyVoice:
    """The Voice API with no model: each character is `samples_per_char` samples of a tone whose pitch is the
    character's code, scaled by length_scale; noise_scale > 0 adds noise. Deterministic at noise 0."""

    def __init__(
        self,
        name: str = "tiny",
        sample_rate: int = 16000,
        samples_per_char: int = 400,
        speakers: list[str] | None = None,
        chunk: int = 1000,
    ) -> None:
        self.name = name
        self.format = "vits"
        self.sample_rate = sample_rate
        self.speakers = speakers or []
        self.languages = ["en-us"]
        self.samples_per_char = samples_per_char
        self._chunk = chunk
        self.streams: list[TinySpeechStream] = []

    def synthesize_stream(self, text: str, options: SynthesisOptions | None = None) -> TinySpeechStream:
        length_scale = options.length_scale if options is not None else None
        noise_scale = options.noise_scale if options is not None else None
        spoken = text.strip(" .,!?;:")
        per_char = round(self.samples_per_char * (length_scale or 1.0))
        pieces, phonemes = [], []
        offset = 0
        for index, char in enumerate(spoken):
            t = np.arange(per_char) / self.sample_rate
            tone = 0.3 * np.sin(2 * np.pi * (200 + 3 * (ord(char) % 100)) * t) if char.isalnum() else 0.0 * t
            if noise_scale:
                tone = tone + np.random.default_rng(index).normal(0, 0.01 * noise_scale, per_char)
            pieces.append(tone.astype(np.float32))
            phonemes.append(
                TinyPhonemeSpan(_LETTER_PHONEMES.get(char.lower(), "_"), offset, offset + per_char)
            )
            offset += per_char
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        stream = TinySpeechStream(audio, phonemes, self.sample_rate, self._chunk)
        self.streams.append(stream)
        return stream


def tiny_engine(settings: EngineSettings | None = None, **voice_options: object) -> Engine:
    """An engine with the tiny voice and the real default avatar."""
    voice = TinyVoice(**voice_options)  # type: ignore[arg-type]
    return Engine(settings or EngineSettings(), voices={voice.name: voice})


class RunningServer:
    """A real lipstream server (gRPC, and the web page when asked) on 127.0.0.1 in its own event-loop thread.

    `stop()` shuts it down in the server's fixed order and then proves nothing of it is left running: no open
    session, no session worker thread, the port closed.
    """

    def __init__(self, engine: Engine, *, web: bool = False, **service_options: object) -> None:
        """`service_options`: Service's keywords (tls=, tokens=, allowed_origins=, ...)."""
        from lipstream.server.main import Service

        self.engine = engine
        self.service = Service(engine, "127.0.0.1", 0, 0 if web else None, **service_options)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-server-loop", daemon=True)
        self._thread.start()
        self.call(self.service.start())

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.service.port}"

    @property
    def web_url(self) -> str:
        return self.service.web_url

    def call(self, coroutine, timeout: float = 60.0):  # type: ignore[no-untyped-def]
        """Runs a coroutine on the server's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, grace_s: float = 1.0) -> None:
        if self.loop.is_closed():
            return
        self.call(self.service.stop(grace_s))
        self.call(_cancel_the_rest())  # e.g. the clients' health Watch handlers, as asyncio.run would
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the server's event loop did not stop"
        self.loop.close()
        assert self.engine.active_sessions == 0, f"{self.engine.active_sessions} sessions left open"
        workers = session_threads()
        assert not workers, f"session workers still running after shutdown: {workers}"


async def _cancel_the_rest() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def session_threads() -> list[str]:
    """Names of the live session worker threads (TTS, audio, lip-sync) of every engine in this process."""
    prefixes = ("lipstream-tts", "lipstream-audio", "lipstream-lipsync")
    return [t.name for t in threading.enumerate() if t.name.startswith(prefixes)]


@contextlib.contextmanager
def running_server(
    engine: Engine | None = None,
    settings: EngineSettings | None = None,
    web: bool = False,
    **service_options: object,
) -> Iterator[RunningServer]:
    """A server for one test with custom settings (session limit, a Wav2Lip checkpoint, TLS, tokens, ...)."""
    server = RunningServer(engine or Engine(settings or EngineSettings()), web=web, **service_options)
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def running_server_async(
    engine: Engine | None = None, settings: EngineSettings | None = None, web: bool = False
) -> AsyncIterator[RunningServer]:
    """The same for asyncio tests (the server runs on its own loop either way)."""
    server = await asyncio.to_thread(RunningServer, engine or Engine(settings or EngineSettings()), web=web)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def converse_with_an_interrupt(
    stub: lipstream_pb2_grpc.LipStreamStub,
    config: pb.SessionConfig,
    long_text: str,
    after_text: str,
    hold_s: float = 0.5,
) -> list[pb.ConverseResponse]:
    """A Converse call (fast pacing unless the config says otherwise): `long_text`, INTERRUPT once its first
    audio has arrived and the client has held off reading for `hold_s` (the stages run ahead of what was
    sent meanwhile), then `after_text` and END_OF_INPUT. Returns every response."""

    interrupt_now = threading.Event()
    resume = threading.Event()

    def talk() -> Iterator[pb.ConverseRequest]:
        yield pb.ConverseRequest(config=config)
        yield pb.ConverseRequest(text=pb.TextInput(text=long_text, flush=True))
        interrupt_now.wait(60)
        yield pb.ConverseRequest(control=pb.Control(action=pb.Control.INTERRUPT))
        resume.wait(60)
        yield pb.ConverseRequest(text=pb.TextInput(text=after_text, flush=True))
        yield pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT))

    responses = []
    try:
        for response in stub.Converse(talk()):
            responses.append(response)
            kind = response.WhichOneof("response")
            if kind == "audio" and response.audio.utterance_id and not interrupt_now.is_set():
                time.sleep(hold_s)
                interrupt_now.set()
            if kind == "utterance" and response.utterance.kind == pb.UtteranceEvent.INTERRUPTED:
                resume.set()
    finally:
        interrupt_now.set()
        resume.set()
    return responses


def check_media_continues_across_the_interrupt(responses: list[pb.ConverseResponse]) -> pb.UtteranceEvent:
    """Asserts that the next utterance's audio starts where the audio the client received before the
    INTERRUPT ends, that all audio is contiguous and the frame indices go on without a gap; returns the
    INTERRUPTED event."""

    kinds = [r.WhichOneof("response") for r in responses]
    utterances = [r.utterance for r, kind in zip(responses, kinds, strict=True) if kind == "utterance"]
    stopped = [u for u in utterances if u.kind == pb.UtteranceEvent.INTERRUPTED]
    assert len(stopped) == 1, "one INTERRUPTED event"
    later = stopped[0].utterance_id
    started_after = [u for u in utterances if u.kind == pb.UtteranceEvent.STARTED and u.utterance_id > later]
    assert started_after, "an utterance after the interrupt"
    audio = [r.audio for r, kind in zip(responses, kinds, strict=True) if kind == "audio"]
    first_after = next(a for a in audio if a.utterance_id == started_after[0].utterance_id)
    assert first_after.start_sample == stopped[0].end_sample  # no silent gap, no overlap
    ends = [a.start_sample + a.num_samples for a in audio]
    assert [a.start_sample for a in audio] == [0, *ends[:-1]]  # contiguous: nothing skipped, nothing twice
    frames = [r.frame for r, kind in zip(responses, kinds, strict=True) if kind == "frame"]
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    fps = responses[0].started.fps
    assert all(abs(f.pts - f.frame_index / fps) < 1e-6 for f in frames)
    return stopped[0]
