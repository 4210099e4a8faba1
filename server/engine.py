"""Engine (one per process: the models, the limits, the open sessions) and Session (one conversation).

The servicer and the web bridge use only this API; protos never reach it.

    engine = Engine(EngineSettings())
    session = await engine.open_session(SessionOptions(video=True))
    await session.send_text("Hello there, ")
    await session.end_input()
    async for event in session.events():   # SessionStartedEvent first, StatsEvent last
        ...
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from lipstream import __version__
from lipstream.server.audio import StreamResampler
from lipstream.server.events import SessionEvent, SessionStartedEvent, StatsEvent
from lipstream.server.lipsync import FrameBatcher, LipSyncStage
from lipstream.server.metrics import Metrics
from lipstream.server.mux import Multiplexer
from lipstream.server.options import (
    DeadlineExceeded,
    EngineSettings,
    InvalidArgument,
    ResourceExhausted,
    SessionOptions,
    Unavailable,
    listed,
    shown,
)
from lipstream.server.pipeline import AudioStage, Timeline, TtsStage, VoiceLike
from lipstream.server.ring import AudioRing
from lipstream.server.segmenter import Segmenter

log = logging.getLogger(__name__)

STOP_JOIN_TIMEOUT_S = 1.0  # a stopped session's workers end within this (at most one model call each)
# How long close() waits for them at most: a model call on a loaded machine may take longer than the target,
# and a worker left running at interpreter exit can abort the process inside torch.
STOP_JOIN_LIMIT_S = 5.0
# C0 and C1 control characters other than tab and newline, and lone surrogates (JSON can carry them): no voice
# reads them and some frontends fail on them ("embedded null character"), so they become spaces.
# A long text is cut into clauses this many characters at a time, the event loop free in between.
PUSH_CHARS = 2048
_UNREADABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def freeze_loaded_objects() -> None:
    """Puts every object alive now (call it once the models are loaded) out of the cyclic garbage
    collector's reach for good. They live as long as the process, and a full collection that walks them
    holds the interpreter, so every session's event loop and workers, for a tenth of a second or more."""
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    sample_rate: int
    speakers: tuple[str, ...]
    languages: tuple[str, ...]
    format: str
    is_default: bool


@dataclass(frozen=True)
class AvatarInfo:
    name: str
    width: int
    height: int
    num_frames: int
    is_default: bool


@dataclass(frozen=True)
class ServerInfo:
    version: str
    device: str
    engines: tuple[str, ...]  # "wav2lip", "viseme"
    default_voice: str
    default_avatar: str
    max_sessions: int
    active_sessions: int
    max_text_chars: int
    torch_version: str


class Engine:
    """The models and limits of one server process, shared by all its sessions."""

    def __init__(
        self,
        settings: EngineSettings | None = None,
        *,
        voices: Mapping[str, VoiceLike] | None = None,
        avatars: Mapping[str, Any] | None = None,
        wav2lip: Any | None = None,
    ) -> None:
        """Loads the models the settings name; `voices`, `avatars` and `wav2lip` replace them (tests)."""
        self.settings = (settings or EngineSettings()).validated()
        self._voices: dict[str, VoiceLike] = dict(voices) if voices is not None else self._load_voices()
        if not self._voices:
            raise InvalidArgument("the engine needs at least one voice")
        self.default_voice = next(iter(self._voices))
        self._avatars: dict[str, Any] = dict(avatars) if avatars is not None else self._load_default_avatar()
        self._avatar_lock = threading.Lock()
        self.default_avatar = next(iter(self._avatars), "")
        self._avatars_builtin = avatars is None
        self._wav2lip = wav2lip if wav2lip is not None else self._load_wav2lip()
        self._batcher: FrameBatcher | None = None
        if self._wav2lip is not None:
            self._batcher = FrameBatcher(self._wav2lip, self.settings.max_batch_frames)
            self._batcher.start()
        self._sessions: dict[str, Session] = {}
        self.metrics = Metrics(lambda: self.active_sessions, self.settings.max_sessions)
        if self._batcher is not None:
            self._batcher.on_batch = self.metrics.batch_frames.observe
        self.sessions_opened = 0  # since start; with active_sessions, what a replica has served
        self._accepting = True
        self._mouths: dict[str, Any] = {}  # avatar name -> its AvatarMouth (renderers per source frame)
        self._mouth_lock = threading.Lock()

    # -- loading -----------------------------------------------------------------------------------------
    def _load_voices(self) -> dict[str, VoiceLike]:
        from lipstream.models.vits import DEFAULT_VOICE, load_voice

        names = [self.settings.voice or DEFAULT_VOICE, *self.settings.extra_voices]
        loaded: dict[str, VoiceLike] = {}
        for name in names:
            voice = load_voice(name, device=self.settings.device or None)
            loaded[voice.name] = voice
            log.info("voice %s loaded (%s, %d Hz)", voice.name, voice.format, voice.sample_rate)
        return loaded

    def _load_default_avatar(self) -> dict[str, Any]:
        try:
            from lipstream.models.avatar import load_avatar
        except ImportError as exc:  # the avatar package is optional for audio-only use
            log.warning("no avatar support (%s): video sessions are refused", exc)
            return {}
        avatar = load_avatar(self.settings.avatar or None)
        return {avatar.name: avatar}

    def _load_wav2lip(self) -> Any | None:
        if not self.settings.wav2lip_checkpoint:
            return None
        from lipstream.models.wav2lip import Wav2LipEngine

        engine = Wav2LipEngine(self.settings.wav2lip_checkpoint, device=self.settings.device or None)
        log.info(
            "Wav2Lip loaded from %s (%s, %s)", self.settings.wav2lip_checkpoint, engine.device, engine.runtime
        )
        return engine

    def _avatar(self, name: str) -> Any:
        name = name or self.default_avatar
        with self._avatar_lock:
            if name in self._avatars:
                return self._avatars[name]
        known = self._avatar_names()
        if not self._avatars_builtin or name not in known:
            raise InvalidArgument(
                f"avatar {shown(name)} is unknown: use one of {listed(known)} or leave it empty"
            )
        from lipstream.models.avatar import load_avatar

        try:
            avatar = load_avatar(name)
        except ValueError as exc:  # AvatarError: the avatar cannot be used (no face found, unreadable)
            raise InvalidArgument(f"avatar {shown(name)} cannot be used: {exc}") from exc
        with self._avatar_lock:
            return self._avatars.setdefault(name, avatar)

    def _avatar_names(self) -> list[str]:
        names = list(self._avatars)
        if self._avatars_builtin:
            try:
                from lipstream.models.avatar import builtin_avatars

                names += [name for name in builtin_avatars() if name not in names]
            except ImportError:
                pass
        return names

    # -- public API --------------------------------------------------------------------------------------
    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(
                name,
                v.sample_rate,
                tuple(v.speakers),
                tuple(v.languages),
                v.format,
                name == self.default_voice,
            )
            for name, v in self._voices.items()
        ]

    def avatars(self) -> list[AvatarInfo]:
        infos = []
        for name in self._avatar_names():
            try:
                avatar = self._avatar(name)
            except InvalidArgument as exc:
                log.warning("avatar %s is not listed: %s", name, exc)
                continue
            infos.append(
                AvatarInfo(name, avatar.width, avatar.height, avatar.num_frames, name == self.default_avatar)
            )
        return infos

    def info(self) -> ServerInfo:
        try:
            import torch

            torch_version = torch.__version__
        except ImportError:
            torch_version = ""
        engines = (("wav2lip",) if self._wav2lip is not None else ()) + (("viseme",) if self._avatars else ())
        return ServerInfo(
            version=__version__,
            device=self.device,
            engines=engines,
            default_voice=self.default_voice,
            default_avatar=self.default_avatar,
            max_sessions=self.settings.max_sessions,
            active_sessions=self.active_sessions,
            max_text_chars=self.settings.max_text_chars,
            torch_version=torch_version,
        )

    @property
    def device(self) -> str:
        voice = self._voices[self.default_voice]
        device = getattr(voice, "device", None)
        name = str(device) if device is not None else (self.settings.device or "cpu")
        if name.startswith("cuda"):
            try:
                import torch

                name = f"{name} ({torch.cuda.get_device_name(torch.device(name))})"
            except Exception:  # the name is a nicety
                pass
        return name

    async def open_session(self, options: SessionOptions) -> Session:
        """A started session, options resolved; raises InvalidArgument, ResourceExhausted, Unavailable."""
        if not self._accepting:
            raise Unavailable("the server is shutting down: connect to another replica or retry later")
        if len(self._sessions) >= self.settings.max_sessions:
            raise ResourceExhausted(
                f"the server has {len(self._sessions)} open sessions, its limit (--max-sessions "
                f"{self.settings.max_sessions}): retry later"
            )
        resolved, voice = self._resolve_voice(options.validated())
        avatar = None
        if resolved.video:
            if not self._avatars:
                raise InvalidArgument("this server has no avatar support: set video.enabled to false")
            avatar = await asyncio.to_thread(self._avatar, resolved.avatar)
            resolved = replace(resolved, avatar=resolved.avatar or self.default_avatar)
            resolved = replace(resolved, engine=self._resolve_engine(resolved.engine))
        else:
            resolved = replace(resolved, avatar="", engine="")
        session_id = uuid.uuid4().hex[:12]
        session = Session(self, session_id, resolved, voice, avatar, asyncio.get_running_loop())
        self._sessions[session_id] = session
        self.sessions_opened += 1
        session._start()
        return session

    def _resolve_voice(self, options: SessionOptions) -> tuple[SessionOptions, VoiceLike]:
        name = options.voice or self.default_voice
        voice = self._voices.get(name)
        if voice is None:
            raise InvalidArgument(
                f"voice {shown(name)} is unknown: use one of {listed(sorted(self._voices))} or leave it empty"
            )
        speaker = options.speaker
        if speaker and speaker not in voice.speakers:
            if not voice.speakers:
                raise InvalidArgument(
                    f"voice {name!r} has a single speaker: leave speaker empty (got {shown(speaker)})"
                )
            raise InvalidArgument(
                f"speaker {shown(speaker)} is unknown to voice {name!r}: use one of {listed(voice.speakers)}"
            )
        speaker = speaker or (voice.speakers[0] if voice.speakers else "")
        sample_rate = options.sample_rate or voice.sample_rate
        return replace(options, voice=name, speaker=speaker, sample_rate=sample_rate), voice

    def _resolve_engine(self, requested: str) -> str:
        if requested == "wav2lip" and self._wav2lip is None:
            raise InvalidArgument(
                "lip-sync engine WAV2LIP needs a checkpoint: start the server with --wav2lip-checkpoint, "
                "or ask for AUTO or VISEME"
            )
        if requested == "auto":
            return "wav2lip" if self._wav2lip is not None else "viseme"
        return requested

    def _forget(self, session: Session) -> None:
        self._sessions.pop(session.session_id, None)

    def _avatar_mouth(self, avatar_name: str, avatar: Any) -> Any:
        """The viseme renderer of an avatar (its avatar.json mouth placement), shared by its sessions."""
        from lipstream.models.viseme import AvatarMouth

        with self._mouth_lock:
            mouth = self._mouths.get(avatar_name)
            if mouth is None or mouth.avatar is not avatar:
                mouth = self._mouths[avatar_name] = AvatarMouth(avatar)
            return mouth

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stops accepting sessions, lets running ones finish for `grace_s`, then cancels the rest."""
        self._accepting = False
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        while self._sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        remaining = list(self._sessions.values())
        if remaining:
            log.info("grace period over: cancelling %d sessions", len(remaining))
        for session in remaining:
            session.stopped_by_shutdown = True
        await asyncio.gather(*(session.close() for session in remaining))
        self.close()

    def close(self) -> None:
        """Stops the engine's own worker (the Wav2Lip batcher)."""
        if self._batcher is not None:
            self._batcher.stop()
            self._batcher = None


class Session:
    """One conversation: text in, events out in media-time order. Create with Engine.open_session."""

    def __init__(
        self,
        engine: Engine,
        session_id: str,
        options: SessionOptions,
        voice: VoiceLike,
        avatar: Any | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        settings = engine.settings
        self.session_id = session_id
        self.options = options
        self._engine = engine
        self._voice = voice
        self._avatar = avatar
        self._loop = loop
        self.sample_rate = options.sample_rate
        self.fps = options.fps if options.video else 0.0
        realtime = options.pacing == "realtime"
        lookahead_s = 0.25 if options.engine == "wav2lip" else 0.1
        sources = ("control", "audio", "video") if options.video else ("control", "audio")
        # REALTIME: the stages work only a little ahead of the wall clock, so that an interrupt is heard at
        # once (what was made ahead is dropped and the next utterance starts after it).
        ahead_s = 0.5 if realtime else 1.0
        self._mux = Multiplexer(loop, sources, realtime=realtime, realtime_lead_s=0.1, max_ahead_s=ahead_s)
        self._ring = AudioRing(int(settings.ring_seconds * voice.sample_rate))
        self._timeline = Timeline()
        resampler = self._resampler = StreamResampler(voice.sample_rate, options.sample_rate)
        audio_reader = self._ring.reader(0)
        video_reader = self._ring.reader(0) if options.video else None
        synthesis = {
            "speaker": options.speaker or None,
            "length_scale": options.length_scale,
            "noise_scale": options.noise_scale,
            "noise_scale_w": options.noise_scale_w,
        }
        self._tts = TtsStage(
            voice,
            synthesis,
            self._ring,
            self._timeline,
            self._mux,
            resampler.to_output,
            output_rate=options.sample_rate,
            send_visemes=options.visemes,
            realtime=realtime,
            realtime_lead_s=lookahead_s,
        )
        self._audio = AudioStage(
            audio_reader,
            self._timeline,
            self._mux,
            resampler,
            audio_format=options.audio_format,
            chunk_samples=max(1, voice.sample_rate * settings.audio_chunk_ms // 1000),
        )
        self._lipsync: LipSyncStage | None = None
        if options.video and video_reader is not None and avatar is not None:
            self._lipsync = LipSyncStage(
                video_reader,
                self._timeline,
                self._mux,
                avatar,
                sample_rate=voice.sample_rate,
                fps=options.fps,
                jpeg_quality=options.jpeg_quality,
                batcher=engine._batcher if options.engine == "wav2lip" else None,
                mouth=engine._avatar_mouth(options.avatar, avatar),
                tts_idle=self._tts.idle,
            )
        self._segmenter = Segmenter(settings.first_clause_words, settings.max_clause_chars)
        self.stopped_by_shutdown = False
        self._input_ended = False
        self._closing: asyncio.Future[None] | None = None
        self._closed = False
        self._finished = False
        self._opened_at = time.monotonic()
        self._events_taken = False
        self._last_activity = self._opened_at  # client input, or speech sent (REALTIME's idle frames are not)
        self._interrupts = 0
        self._watchdog: asyncio.Task[None] | None = None
        self.timed_out: DeadlineExceeded | None = None
        """Set when the idle timeout ended the session; its events end with the stats all the same."""

    @property
    def frame_size(self) -> tuple[int, int]:
        return (self._avatar.width, self._avatar.height) if self._avatar is not None else (0, 0)

    def _start(self) -> None:
        self._tts.start()
        self._audio.start()
        if self._lipsync is not None:
            self._lipsync.start()
        if self._engine.settings.idle_timeout_s > 0:
            self._watchdog = self._loop.create_task(self._watch_idle(self._engine.settings.idle_timeout_s))

    async def _watch_idle(self, limit_s: float) -> None:
        """Ends the session once neither the client nor the speech has done anything for `limit_s`."""
        while (idle_s := time.monotonic() - self._last_activity) < limit_s:
            await asyncio.sleep(limit_s - idle_s)
        self.timed_out = DeadlineExceeded(
            f"the session had no input from the client and nothing to say for {limit_s:g} s (the server's "
            "--idle-timeout, LIPSTREAM_IDLE_TIMEOUT): it ended; open a new session to go on"
        )
        log.info("session %s: idle for %g s, ending it", self.session_id, limit_s)
        await self.end_input()  # the events end with the stats
        # A client that reads nothing cannot take them: its session is freed all the same.
        deadline = time.monotonic() + STOP_JOIN_LIMIT_S
        while not self._closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.close()

    def _stages(self) -> list[Any]:
        return [stage for stage in (self._tts, self._audio, self._lipsync) if stage is not None]

    # -- input -------------------------------------------------------------------------------------------
    async def send_text(self, text: str, flush: bool = False) -> None:
        """Adds a chunk of the reply; `flush` speaks what has been sent without waiting for punctuation.

        Control characters (but tab and newline) are read as spaces. The work is linear in the text."""
        self._last_activity = time.monotonic()
        if self._input_ended or self._closed:
            raise InvalidArgument("text after END_OF_INPUT: open a new session for more text")
        limit = self._engine.settings.max_text_chars
        if len(text) > limit:
            raise InvalidArgument(
                f"a text input of {len(text)} characters is over the bound of {limit}: send it in parts"
            )
        pending = len(self._segmenter.pending) + self._tts.pending_chars() + len(text)
        if pending > limit:
            raise InvalidArgument(
                f"{pending} characters would be waiting to be spoken, over the bound of {limit}: "
                "send more text once the speech has caught up"
            )
        text = _UNREADABLE.sub(" ", text)
        interrupts = self._interrupts
        for offset in range(0, len(text), PUSH_CHARS):
            if offset:
                await asyncio.sleep(0)  # other sessions' messages and health checks go in between
                if self._interrupts != interrupts or self._closed or self._input_ended:
                    return  # interrupted, ended or closed meanwhile: the rest is not to be spoken
            self._submit(self._segmenter.push(text[offset : offset + PUSH_CHARS]))
        if flush:
            self._submit(self._segmenter.flush())

    def _submit(self, clauses: list[str]) -> None:
        for clause in clauses:
            self._tts.submit(clause)

    async def interrupt(self) -> None:
        """Stops the current utterance now and drops the text not yet spoken; the session goes on."""
        self._last_activity = time.monotonic()
        if self._closed:
            return
        self._interrupts += 1
        self._segmenter.reset()
        # The stages go on from what the client has received, so the next utterance follows its audio with
        # no gap and the frame indices go on; what was made past it is made again. No await below: the
        # multiplexer sends nothing meanwhile.
        audio_end, next_frame = self._mux.sent_position()
        rewind_to = min(self._resampler.to_input(audio_end), self._ring.write_position)
        cut_at = rewind_to
        self._audio.rewind(audio_end)
        if self._lipsync is not None:
            self._lipsync.rewind(next_frame)
            cut_at = min(cut_at, self._lipsync.frame_start(next_frame))  # the frames up to there are idle
        dead_below = self._tts.interrupt(rewind_to, cut_at)
        self._mux.interrupt(dead_below, self._ring.epoch)

    async def end_input(self) -> None:
        """No more text: the rest is spoken, then the events end with StatsEvent."""
        self._last_activity = time.monotonic()
        if self._input_ended or self._closed:
            return
        self._submit(self._segmenter.flush())
        self._input_ended = True
        self._tts.end_input()

    # -- output ------------------------------------------------------------------------------------------
    async def events(self) -> AsyncGenerator[SessionEvent, None]:
        """SessionStartedEvent, then the media events in media-time order, then StatsEvent (after end_input).

        Leaving the iteration early closes the session.
        """
        if self._events_taken:
            raise RuntimeError("Session.events() can be iterated once")
        self._events_taken = True
        width, height = self.frame_size
        yield SessionStartedEvent(
            self.session_id, self.options, self.sample_rate, self.fps, width, height, self.options.engine
        )
        try:
            while True:
                event = await self._mux.next_event()
                if event is None:
                    break
                if getattr(event, "utterance_id", 0):  # speech, not idle frames
                    self._last_activity = time.monotonic()
                yield event
            if self._closed:
                return
            await self._join_stages()
            stats = self.stats()
            self._finished = True
            self._record(stats, "finished")
            yield stats
        finally:
            await self.close()

    def stats(self) -> StatsEvent:
        figures = self._mux.figures
        start = self._tts.first_speech_submitted_at
        audio_seconds = figures.audio_samples / figures.audio_rate if figures.audio_rate else 0.0
        tts_seconds = self._tts.figures.media_samples / self._voice.sample_rate
        lipsync = self._lipsync.figures if self._lipsync is not None else None
        video_seconds = lipsync.media_samples / self._voice.sample_rate if lipsync else 0.0
        return StatsEvent(
            time_to_first_audio_s=_since(start, figures.first_audio_at),
            time_to_first_frame_s=_since(start, figures.first_frame_at),
            audio_seconds=audio_seconds,
            frames=figures.frames,
            wall_seconds=time.monotonic() - self._opened_at,
            tts_real_time_factor=self._tts.figures.compute_s / tts_seconds if tts_seconds else 0.0,
            lipsync_real_time_factor=lipsync.compute_s / video_seconds if lipsync and video_seconds else 0.0,
            utterances=figures.utterances,
            interrupted=figures.interrupted,
        )

    async def _join_stages(self, timeout_s: float = STOP_JOIN_TIMEOUT_S) -> None:
        stages = self._stages()
        deadline = time.monotonic() + timeout_s

        def join_all() -> None:
            for stage in stages:
                stage.join(max(0.0, deadline - time.monotonic()))

        await asyncio.to_thread(join_all)

    async def close(self) -> None:
        """Cancels all work of the session and frees it (the client went away). Idempotent: every caller
        returns once the workers have stopped; cancelling a caller does not cancel the closing."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._closed = True
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        try:
            for stage in self._stages():
                stage.stop()
            self._ring.abort()  # wakes every worker waiting on the ring
            self._mux.close()  # ... and on flow control
            began = time.monotonic()
            await self._join_stages(STOP_JOIN_LIMIT_S)
            took = time.monotonic() - began
            alive = [stage for stage in self._stages() if not stage.join(0)]
            if alive:
                log.warning("session %s: %d workers still running after stop", self.session_id, len(alive))
            elif took > STOP_JOIN_TIMEOUT_S:
                log.warning("session %s: its workers took %.2f s to stop", self.session_id, took)
        finally:
            self._engine._forget(self)
        if not self._finished:
            how = (
                "idle_timeout" if self.timed_out is not None
                else "shutdown" if self.stopped_by_shutdown
                else "cancelled"
            )
            self._record(self.stats(), how)

    @property
    def closed(self) -> bool:
        return self._closed

    def _record(self, stats: StatsEvent, how: str) -> None:
        self._engine.metrics.session_ended(how, stats)
        log.info(
            "session %s %s: voice=%s video=%s engine=%s audio=%.2fs frames=%d utterances=%d interrupted=%d "
            "first_audio=%.3fs first_frame=%.3fs tts_rtf=%.3f lipsync_rtf=%.3f wall=%.2fs",
            self.session_id,
            how,
            self.options.voice,
            self.options.video,
            self.options.engine or "-",
            stats.audio_seconds,
            stats.frames,
            stats.utterances,
            stats.interrupted,
            stats.time_to_first_audio_s,
            stats.time_to_first_frame_s,
            stats.tts_real_time_factor,
            stats.lipsync_real_time_factor,
            stats.wall_seconds,
        )


def _since(start: float | None, end: float | None) -> float:
    return max(0.0, end - start) if start is not None and end is not None else 0.0
