"""Session: one conversation, text in, events out in media-time order. Create it with Engine.open_session.

It owns its stages (one worker thread each) and what they share: the ring (the audio), the timeline (which
utterance covers which samples) and the multiplexer (the events out).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from lipstream.models.synthesis import SynthesisOptions
from lipstream.server.audio import AudioEncoding, StreamResampler
from lipstream.server.audio_stage import AudioStage
from lipstream.server.blendshape_stage import BlendshapeStage, blendshape_names
from lipstream.server.clock import Clock, Rewind
from lipstream.server.events import AudioEvent, SessionEvent, SessionStartedEvent, StatsEvent
from lipstream.server.input_stage import AudioInputStage
from lipstream.server.lipsync import LipSyncStage
from lipstream.server.models_api import AvatarLike, IdleLifeLike, VoiceLike
from lipstream.server.mux import Multiplexer, StageFailed
from lipstream.server.options import DeadlineExceeded, InvalidArgument, SessionOptions
from lipstream.server.ring import AudioRing
from lipstream.server.segmenter import Segmenter
from lipstream.server.stage import Worker
from lipstream.server.timeline import Timeline
from lipstream.server.tts_stage import TtsStage, VoiceCannotSpeak

if TYPE_CHECKING:
    from lipstream.server.engine import Engine

log = logging.getLogger(__name__)

STOP_JOIN_TIMEOUT_S = 1.0  # a stopped session's workers end within this (at most one model call each)
# How long close() waits for them at most: a model call on a loaded machine may take longer than the target,
# and a worker left running at interpreter exit can abort the process inside torch.
STOP_JOIN_LIMIT_S = 5.0
# A long text is cut into clauses this many characters at a time, the event loop free in between.
PUSH_CHARS = 2048
# C0 and C1 control characters other than tab and newline, and lone surrogates (JSON can carry them): no voice
# reads them and some frontends fail on them ("embedded null character"), so they become spaces.
_UNREADABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class TextRefused(InvalidArgument):
    """A text input the session does not take, for its size; the session goes on (a page's WebSocket tells
    the page and keeps it; gRPC ends the call with INVALID_ARGUMENT, its one way to tell)."""


class TextTooLong(TextRefused):
    """One text input over --max-text-chars: no waiting makes it fit (unlike text waiting at the bound)."""


class Session:
    """One conversation: text in, events out in media-time order. Create with Engine.open_session."""

    def __init__(
        self,
        engine: Engine,
        session_id: str,
        options: SessionOptions,
        voice: VoiceLike | None,
        avatar: AvatarLike | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """`voice` None: an audio-in session (options.input_sample_rate), the client's speech in the ring."""
        settings = engine.settings
        self.session_id = session_id
        self.options = options
        self._engine = engine
        self._voice = voice
        self._avatar = avatar
        self._loop = loop
        # The ring's clock: the voice's rate, or the client's input rate in an audio-in session.
        rate = self._rate = voice.sample_rate if voice is not None else options.input_sample_rate
        self.sample_rate = options.sample_rate
        self.fps = options.fps if options.video else 0.0
        realtime = options.pacing == "realtime"
        lipsync = engine.lipsync_engine(options.engine) if options.video and avatar is not None else None
        # REALTIME: how far ahead of the wall clock the TTS keeps the clock while silent.
        lookahead_s = lipsync.realtime_lead_s if lipsync is not None else 0.1
        sources: tuple[str, ...] = ("control", "audio", "video") if options.video else ("control", "audio")
        sources += ("blendshapes",) if options.blendshapes else ()
        # REALTIME: the stages work only a little ahead of the wall clock, so that an interrupt is heard at
        # once (what was made ahead is dropped and the next utterance starts after it).
        ahead_s = 0.5 if realtime else 1.0
        self._mux = Multiplexer(loop, sources, realtime=realtime, realtime_lead_s=0.1, max_ahead_s=ahead_s)
        self._ring = AudioRing(int(settings.ring_seconds * rate))
        self._timeline = Timeline()
        # The frames' rate is the session's fps with video on or off (blendshape frames go at it too).
        self._clock = Clock(rate, options.sample_rate, options.fps)
        resampler = StreamResampler(rate, options.sample_rate)
        audio_reader = self._ring.reader(0)
        video_reader = self._ring.reader(0) if lipsync is not None else None
        synthesis = SynthesisOptions(
            speaker=options.speaker or None,
            length_scale=options.length_scale,
            noise_scale=options.noise_scale,
            noise_scale_w=options.noise_scale_w,
        )
        self._tts: TtsStage | AudioInputStage
        if voice is None:
            self._tts = AudioInputStage(
                self._ring,
                self._timeline,
                self._mux,
                self._clock.to_output,
                input_rate=rate,
                output_rate=options.sample_rate,
                realtime=realtime,
                realtime_lead_s=lookahead_s,
            )
        else:
            self._tts = TtsStage(
                voice,
                synthesis,
                self._ring,
                self._timeline,
                self._mux,
                self._clock.to_output,
                output_rate=options.sample_rate,
                send_visemes=options.visemes,
                send_words=options.words,
                realtime=realtime,
                realtime_lead_s=lookahead_s,
                voices={info.name: info.languages for info in engine.voices()},
            )
        self._encoding = AudioEncoding(options.audio_format, options.sample_rate)
        self._audio = AudioStage(
            audio_reader,
            self._timeline,
            self._mux,
            resampler,
            self._clock,
            chunk_samples=max(1, rate * settings.audio_chunk_ms // 1000),
        )
        self._lipsync: LipSyncStage | None = None
        if lipsync is not None and video_reader is not None and avatar is not None:
            self._lipsync = LipSyncStage(
                video_reader,
                self._timeline,
                self._mux,
                avatar,
                lipsync.renderer(options.avatar, avatar, self._clock),
                clock=self._clock,
                jpeg_quality=options.jpeg_quality,
                tts_idle=self._tts.idle,
                frame_mode=options.frame_mode,
                life=_idle_life(avatar, self._clock.fps) if settings.idle_life else None,
            )
        self._blendshapes: BlendshapeStage | None = None
        if options.blendshapes:  # at the session's fps, video on or off
            self._blendshapes = BlendshapeStage(
                self._ring.reader(0),
                self._timeline,
                self._mux,
                clock=self._clock,
                tts_idle=self._tts.idle,
            )
        self._segmenter = Segmenter(
            settings.first_clause_words, settings.max_clause_chars, settings.first_clause_max_words
        )
        self._stall_timer: asyncio.TimerHandle | None = None  # cuts a first clause when the text stalls
        self.stopped_by_shutdown = False
        self._input_ended = False
        self._closing: asyncio.Future[None] | None = None
        self._closed = False
        self._finished = False
        self._ended_by: StageFailed | None = None  # the stage failure that ended the events, if one did
        self._waits_for_channel = False
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
        if self._blendshapes is not None:
            self._blendshapes.start()
        if self._engine.settings.idle_timeout_s > 0:
            self._watchdog = self._loop.create_task(self._watch_idle(self._engine.settings.idle_timeout_s))

    def wait_for_channel(self) -> None:
        """The session is on a display channel: it waits for a say by design, so the idle timeout leaves it (a
        page gone is found by its WebSocket's heartbeat, a gRPC client gone by its stream's end)."""
        self._waits_for_channel = True

    async def _watch_idle(self, limit_s: float) -> None:
        """Ends the session once neither the client nor the speech has done anything for `limit_s`."""
        while (idle_s := time.monotonic() - self._last_activity) < limit_s or self._waits_for_channel:
            await asyncio.sleep(limit_s - idle_s if idle_s < limit_s else limit_s)
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

    def _stages(self) -> list[Worker]:
        stages = (self._tts, self._audio, self._lipsync, self._blendshapes)
        return [stage for stage in stages if stage is not None]

    # -- input -------------------------------------------------------------------------------------------
    def judge(self, text: str) -> tuple[str, str]:
        """(what this session's voice would skip of `text`, why it would say no word of it), "" each when
        nothing (TtsStage.judge); ("", "") for a session that takes audio: it refuses text on its own."""
        return self._tts.judge(text) if isinstance(self._tts, TtsStage) else ("", "")

    async def send_text(self, text: str, flush: bool = False) -> None:
        """Adds a chunk of the reply; `flush` speaks what has been sent without waiting for punctuation.

        Control characters (but tab and newline) are read as spaces. The work is linear in the text."""
        self._last_activity = time.monotonic()
        if isinstance(self._tts, AudioInputStage):
            raise InvalidArgument(
                "this session takes audio (its SessionConfig has input_audio): send AudioInput, not text, "
                "or open a session without input_audio for text"
            )
        if self._input_ended or self._closed:
            raise InvalidArgument("text after END_OF_INPUT: open a new session for more text")
        limit = self._engine.settings.max_text_chars
        if len(text) > limit:
            raise TextTooLong(
                f"a text input of {len(text)} characters is over the bound of {limit}: send it in parts"
            )
        pending = len(self._segmenter.pending) + self._tts.pending_chars() + len(text)
        if pending > limit:
            raise TextRefused(
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
        self._watch_stall()

    def _watch_stall(self) -> None:
        """A first clause waiting for a natural break is cut at its last word if no text comes meanwhile."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        wait = self._engine.settings.first_clause_wait_s
        if wait > 0 and self._segmenter.waiting_first():
            self._stall_timer = self._loop.call_later(wait, self._cut_stalled)

    def _cut_stalled(self) -> None:
        self._stall_timer = None
        if not self._closed and not self._input_ended:
            self._submit(self._segmenter.cut_waiting())

    async def send_audio(self, pcm16: bytes, end_of_utterance: bool = False) -> None:
        """Adds a piece of the client's speech (PCM16 little-endian mono at the input rate) to an audio-in
        session; `end_of_utterance` ends the utterance after it."""
        self._last_activity = time.monotonic()
        if not isinstance(self._tts, AudioInputStage):
            raise InvalidArgument(
                "this session takes text: send TextInput, or set SessionConfig.input_audio to send audio"
            )
        if self._input_ended or self._closed:
            raise InvalidArgument("audio after END_OF_INPUT: open a new session for more audio")
        self._tts.submit(pcm16, end_of_utterance)

    def _submit(self, clauses: list[str]) -> None:
        if isinstance(self._tts, TtsStage):  # an audio-in session has no text to speak
            for clause in clauses:
                self._tts.submit(clause)

    async def interrupt(self) -> None:
        """Stops the current utterance now and drops the text not yet spoken; the session goes on.

        The session goes on from what the client has received: the next utterance follows its audio with no
        gap and the frame indices go on; what was made past it is dropped and made again. One Rewind says
        where each part goes on from; the order in which they get it keeps them consistent:

        1. No await from reading what was sent to the multiplexer's interrupt: the workers' pushes land on
           this loop, so the multiplexer sends and takes nothing in between.
        2. The source stage is held while the Rewind is built and handed out: no utterance starts meanwhile,
           so every utterance that has started is below rewind.dead_below.
        3. The stages that read the ring get it before the ring rewinds: a worker reads its Rewind when the
           ring tells it (ReaderRewound), after taking the ring's new epoch.
        4. The source stage moves the ring back (the writer's next write in the old epoch fails) and cuts the
           timeline under its lock, so an utterance's span and its samples are both before or both after.
        5. The multiplexer last: it drops what is queued of the old epoch and of the dead utterances, and
           sends INTERRUPTED for the one that was being sent.
        """
        self._last_activity = time.monotonic()
        if self._closed:
            return
        self._interrupts += 1
        self._segmenter.reset()
        audio_end, next_frame = self._mux.sent_position()
        next_blendshapes = self._mux.next_blendshape_frame()
        with self._tts.holding() as next_utterance:
            ring_end = min(self._clock.to_voice(audio_end), self._ring.write_position)
            cut_at = ring_end
            if self._lipsync is not None:
                cut_at = min(cut_at, self._clock.frame_start(next_frame))
            if self._blendshapes is not None:
                cut_at = min(cut_at, self._clock.frame_start(next_blendshapes))
            epoch = self._ring.epoch + 1
            rewind = Rewind(audio_end, next_frame, ring_end, cut_at, next_utterance, epoch, next_blendshapes)
            for stage in (self._audio, self._lipsync, self._blendshapes):
                if stage is not None:
                    stage.rewind(rewind)
            self._tts.rewind(rewind)
        self._mux.interrupt(rewind)

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
            self.session_id, self.options, self.sample_rate, self.fps, width, height, self.options.engine,
            blendshape_names() if self.options.blendshapes else (),
        )
        try:
            while True:
                try:
                    event = await self._mux.next_event()
                except StageFailed as error:
                    self._ended_by = error
                    raise
                if event is None:
                    break
                if getattr(event, "utterance_id", 0):  # speech, not idle frames
                    self._last_activity = time.monotonic()
                yield self._encoding.encode(event) if isinstance(event, AudioEvent) else event
            if self._closed:
                return
            if (tail := self._encoding.finish()) is not None:
                yield tail
            await self._join_stages()
            stats = self.stats()
            self._finished = True
            self._record(stats, "finished" if self.timed_out is None else "idle_timeout")
            yield stats
        finally:
            await self.close()

    def stats(self) -> StatsEvent:
        figures = self._mux.figures
        start = self._tts.first_speech_submitted_at
        audio_seconds = figures.audio_samples / figures.audio_rate if figures.audio_rate else 0.0
        tts_seconds = self._tts.figures.media_samples / self._rate
        lipsync = self._lipsync.figures if self._lipsync is not None else None
        video_seconds = lipsync.media_samples / self._rate if lipsync else 0.0
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
                else "refused" if isinstance(self._ended_by, VoiceCannotSpeak)  # the client's text
                else "failed" if self._ended_by is not None
                else "cancelled"
            )
            self._record(self.stats(), how)

    @property
    def closed(self) -> bool:
        return self._closed

    def _record(self, stats: StatsEvent, how: str) -> None:
        self._engine.metrics.session_ended(how, stats)
        video = self.options.video
        figures = [f"voice={self.options.voice}", f"video={video}"]
        if video:
            figures += [f"engine={self.options.engine or '-'}", f"frames={stats.frames}"]
        figures += [
            f"audio={stats.audio_seconds:.2f}s", f"utterances={stats.utterances}",
            f"interrupted={stats.interrupted}",
        ]
        # A figure not measured (no speech: only silence or idle frames went out) is left out: a zero there
        # would read as a measurement.
        if stats.time_to_first_audio_s > 0:
            figures.append(f"first_audio={stats.time_to_first_audio_s:.3f}s")
        if video and stats.time_to_first_frame_s > 0:
            figures.append(f"first_frame={stats.time_to_first_frame_s:.3f}s")
        if stats.utterances:
            figures.append(f"tts_rtf={stats.tts_real_time_factor:.3f}")
        if video and stats.frames:
            figures.append(f"lipsync_rtf={stats.lipsync_real_time_factor:.3f}")
        figures.append(f"wall={stats.wall_seconds:.2f}s")
        log.info("session %s %s: %s", self.session_id, how, " ".join(figures))


def _since(start: float | None, end: float | None) -> float:
    return max(0.0, end - start) if start is not None and end is not None else 0.0


def _idle_life(avatar: AvatarLike, fps: float) -> IdleLifeLike:
    from lipstream.models.avatar.life import life_for

    return life_for(avatar, fps)
