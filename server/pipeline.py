"""One session's stages: text clauses -> TTS -> AudioRing -> WAV packetizer (and the lip-sync stage).

Each stage is one worker thread owned by the Session: it starts it, stops it (stop flag, ring abort) and
joins it. Stages talk through the ring (audio), the Timeline (which utterance covers which samples) and
the Multiplexer (events out).
"""

from __future__ import annotations

import bisect
import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from lipstream.server.audio import StreamResampler, wav_bytes
from lipstream.server.events import AudioEvent, UtteranceOut, VisemeOut
from lipstream.server.mux import Multiplexer, SessionStopped, StageFailed
from lipstream.server.ring import (
    AudioRing,
    ReaderRewound,
    RingAborted,
    RingClosed,
    RingInterrupted,
    RingReader,
)

log = logging.getLogger(__name__)


class SpeechStreamLike(Protocol):
    phonemes: Sequence[Any]
    num_samples: int
    sample_rate: int

    def __iter__(self) -> Any: ...
    def close(self) -> None: ...


class VoiceLike(Protocol):
    name: str
    format: str
    sample_rate: int
    speakers: list[str]
    languages: list[str]

    def synthesize_stream(self, text: str, **options: Any) -> SpeechStreamLike: ...


@dataclass
class UtteranceSpan:
    """An utterance on the session clock (voice-rate samples); `end` is None while it is being written."""

    utterance_id: int
    text: str
    start: int
    phonemes: Sequence[Any]
    end: int | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # per-stage derived data (e.g. the mouth track)
    voice: str = ""  # the voice's name, for what is logged about its symbols

    def visemes(self) -> list[Any]:
        """The utterance's VisemeSpans on the session clock (computed once; the stages share them)."""
        found = self.cache.get("visemes")
        if found is None:
            found = self.cache["visemes"] = session_visemes(self.phonemes, self.start, self.voice)
        return found


@dataclass(frozen=True)
class _Symbol:
    phoneme: str
    start_sample: int
    end_sample: int


# The pad symbol, a modifier that makes no mouth shape: its time extends the viseme before it.
_CARRY_OVER_SYMBOL = "_"
_reported_symbols: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def session_visemes(phonemes: Sequence[Any], offset: int, voice: str) -> list[Any]:
    """`visemes_from_phonemes`, except that a symbol no viseme table knows (a new voice's) does not end the
    session: it is logged once per voice and counts as a modifier (its time extends the viseme before it,
    or is silence when nothing sounds before it)."""
    from lipstream.models.viseme import (
        UnknownPhonemeError,
        guess_alphabet,
        phoneme_to_viseme,
        visemes_from_phonemes,
    )

    symbols = [str(p.phoneme) for p in phonemes]
    alphabet = guess_alphabet(symbols)
    unknown = set()
    for symbol in set(symbols):
        try:
            phoneme_to_viseme(symbol, alphabet)
        except UnknownPhonemeError:
            unknown.add(symbol)
    if not unknown:
        return visemes_from_phonemes(phonemes, offset=offset, alphabet=alphabet)
    with _reported_lock:
        new = sorted(symbol for symbol in unknown if (voice, symbol) not in _reported_symbols)
        _reported_symbols.update((voice, symbol) for symbol in new)
    if new:
        log.warning(
            "voice %s: no viseme for the symbols %s; their time extends the viseme before them "
            "(add them to lipstream.models.viseme.mapping)",
            voice,
            " ".join(repr(symbol) for symbol in new),
        )
    mapped = [
        _Symbol(_CARRY_OVER_SYMBOL, p.start_sample, p.end_sample) if str(p.phoneme) in unknown else p
        for p in phonemes
    ]
    return visemes_from_phonemes(mapped, offset=offset, alphabet=alphabet)


class Timeline:
    """Which utterance covers which samples of the session clock. Thread-safe; spans are in clock order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[UtteranceSpan] = []
        self._starts: list[int] = []

    def add(self, span: UtteranceSpan) -> None:
        with self._lock:
            self._spans.append(span)
            self._starts.append(span.start)

    def finish(self, span: UtteranceSpan, end: int) -> None:
        with self._lock:
            span.end = end if span.end is None else min(span.end, end)  # an interrupt may have cut it already

    def cut(self, at: int) -> None:
        """An interrupt moved the write position back to `at` or later: spans that start at `at` or later are
        gone and none reaches past it, so the next utterance (from the new write position) keeps the spans in
        clock order; the samples between `at` and it are silence."""
        with self._lock:
            keep = bisect.bisect_left(self._starts, at)
            del self._spans[keep:]
            del self._starts[keep:]
            for span in self._spans:
                if span.end is None or span.end > at:
                    span.end = at

    def at(self, sample: int) -> tuple[UtteranceSpan | None, int | None]:
        """The span covering `sample` (None in silence) and where that answer stops holding (None: open)."""
        with self._lock:
            index = bisect.bisect_right(self._starts, sample) - 1
            following = self._starts[index + 1] if index + 1 < len(self._starts) else None
            if index >= 0:
                span = self._spans[index]
                if span.end is None or sample < span.end:
                    return span, span.end
            return None, following

    def prune(self, before: int) -> None:
        """Forgets spans that ended before `before` (every reader is past them)."""
        with self._lock:
            keep = 0
            while keep < len(self._spans):
                end = self._spans[keep].end
                if end is None or end > before:
                    break
                keep += 1
            del self._spans[:keep]
            del self._starts[:keep]


@dataclass
class StageFigures:
    compute_s: float = 0.0
    media_samples: int = 0


class VoiceCannotSpeak(StageFailed):
    """The voice cannot read the client's text (its frontend lacks a language or a package); the message
    names what is missing. The servicer: FAILED_PRECONDITION."""


def _is_voice_error(exc: Exception) -> bool:
    try:
        from lipstream.models.vits.errors import VoiceError
    except ImportError:  # no VITS voices in this process (torch absent): no voice raises them
        return False
    return isinstance(exc, VoiceError)


class TtsStage:
    """Speaks queued clauses one after the other into the ring; each clause is one utterance."""

    def __init__(
        self,
        voice: VoiceLike,
        synthesis_options: dict[str, Any],
        ring: AudioRing,
        timeline: Timeline,
        mux: Multiplexer,
        to_output: Callable[[int], int],
        *,
        output_rate: int,
        send_visemes: bool,
        realtime: bool,
        realtime_lead_s: float,
    ) -> None:
        self._voice = voice
        self._options = synthesis_options
        self._ring = ring
        self._timeline = timeline
        self._mux = mux
        self._to_output = to_output
        self._output_rate = output_rate
        self._send_visemes = send_visemes
        self._realtime = realtime
        self._realtime_lead = int(realtime_lead_s * voice.sample_rate)
        self._cond = threading.Condition()
        self._clauses: collections.deque[tuple[str, float]] = collections.deque()  # (clause, submitted at)
        self._queued_chars = 0  # of the clauses queued: the servicer asks on every text input
        self._input_ended = False
        self._stopped = False
        self._next_id = 1
        self._dead_below = 1
        self._speaking = False
        self._clock_start = time.monotonic()
        self.figures = StageFigures()
        # When the first clause that produced speech was submitted (time.monotonic): where the session's
        # time to first audio / frame is measured from.
        self.first_speech_submitted_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="lipstream-tts", daemon=True)

    # -- owner's side ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._clock_start = time.monotonic()
        self._thread.start()

    def submit(self, clause: str) -> None:
        with self._cond:
            self._clauses.append((clause, time.monotonic()))
            self._queued_chars += len(clause)
            self._cond.notify_all()

    def idle(self) -> bool:
        """True while there is nothing to speak: every clause so far is in the ring."""
        with self._cond:
            return not self._clauses and not self._speaking

    def pending_chars(self) -> int:
        with self._cond:
            return self._queued_chars

    def end_input(self) -> None:
        with self._cond:
            self._input_ended = True
            self._cond.notify_all()

    def interrupt(self, rewind_to: int, cut_at: int) -> int:
        """Drops queued clauses, stops the utterance being spoken and moves the ring's end back to
        `rewind_to` (where the next utterance starts); utterances end at `cut_at` (<= rewind_to) on the
        timeline. Returns the first utterance id that survives (every id below it is dead)."""
        with self._cond:
            self._clauses.clear()
            self._queued_chars = 0
            self._dead_below = self._next_id
            self._ring.interrupt(rewind_to)  # the writer's epoch changes: its next write fails
            self._timeline.cut(cut_at)
            self._cond.notify_all()
        self._publish_watermark()  # the multiplexer sets it back to what was sent; the clock is here now
        return self._dead_below

    def stop(self) -> None:
        """Ends the worker after the chunk it is computing: queued clauses are dropped, none is started."""
        with self._cond:
            self._stopped = True
            self._clauses.clear()
            self._queued_chars = 0
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- worker ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                queued = self._next_clause()
                if queued is None:
                    break
                try:
                    self._speak(*queued)
                finally:
                    with self._cond:
                        self._speaking = False
        except (RingAborted, SessionStopped):
            return
        except Exception as exc:
            if _is_voice_error(exc):  # the voice cannot read the client's text: no server fault, no traceback
                log.info("voice %s cannot speak a clause: %s", self._voice.name, exc)
                self._mux.fail(VoiceCannotSpeak(f"voice {self._voice.name!r} cannot speak this text: {exc}"))
            else:
                log.exception("TTS stage failed")
                self._mux.fail(StageFailed(f"speech synthesis failed: {exc}"))
        self._ring.close()
        self._mux.finish("control")

    def _next_clause(self) -> tuple[str, float] | None:
        with self._cond:
            while not self._clauses:
                if self._stopped or self._input_ended:
                    return None
                if self._realtime:
                    self._cond.release()
                    try:
                        self._fill_silence()
                    finally:
                        self._cond.acquire()
                    if self._clauses or self._stopped or self._input_ended:
                        continue
                    self._cond.wait(0.02)
                else:
                    self._cond.wait(0.5)
            if self._stopped:
                return None  # stopped while clauses were queued (stop() drops them; a race leaves none)
            self._speaking = True
            clause = self._clauses.popleft()
            self._queued_chars -= len(clause[0])
            return clause

    def _fill_silence(self) -> None:
        """REALTIME pacing: keeps the clock in step with the wall clock while there is nothing to say."""
        target = int((time.monotonic() - self._clock_start) * self._voice.sample_rate) + self._realtime_lead
        missing = target - self._ring.write_position
        if missing > 0:
            try:
                self._ring.write(np.zeros(missing, dtype=np.float32), epoch=self._ring.epoch)
            except RingInterrupted:
                return
            self._publish_watermark()

    def _publish_watermark(self) -> None:
        # The epoch first: a rewind between the two reads makes the watermark stale (ignored), not too late.
        epoch = self._ring.epoch
        position = self._ring.write_position
        self._mux.watermark("control", self._to_output(position) / self._output_rate, epoch=epoch)

    def _speak(self, clause: str, submitted_at: float) -> None:
        with self._cond:
            utterance_id = self._next_id
            self._next_id += 1
            epoch = self._ring.epoch
            start = self._ring.write_position
        began = time.perf_counter()
        stream = self._voice.synthesize_stream(clause, **self._options)
        compute = time.perf_counter() - began
        try:
            if stream.num_samples == 0:
                return  # nothing to say (punctuation only): no utterance
            if self.first_speech_submitted_at is None:
                self.first_speech_submitted_at = submitted_at
            span = UtteranceSpan(utterance_id, clause, start, list(stream.phonemes), voice=self._voice.name)
            with self._cond:  # atomic with interrupt()'s cut: a span added after it would break clock order
                if utterance_id < self._dead_below:
                    return  # interrupted while its synthesis began: nothing of it was written
                self._timeline.prune(self._ring.slowest_position())  # no reader looks back at those
                self._timeline.add(span)
            self._announce(span, epoch)
            written = 0
            chunks = iter(stream)
            while True:
                began = time.perf_counter()
                chunk = next(chunks, None)
                compute += time.perf_counter() - began
                if chunk is None:
                    break
                if self._is_stopped():
                    raise SessionStopped("the session was stopped")  # ends the worker, not just the clause
                if self._is_dead(utterance_id):
                    raise RingInterrupted("interrupted")
                self._ring.write(chunk, epoch=epoch)
                written += len(chunk)
                self._publish_watermark()
            end = start + written
            self._timeline.finish(span, end)
            out_start, out_end = self._to_output(start), self._to_output(end)
            self._mux.push(
                "control",
                UtteranceOut("finished", utterance_id, clause, out_start, out_end),
                out_end / self._output_rate,
                epoch=epoch,
            )
            self.figures.media_samples += written
        except RingInterrupted:
            if "span" in locals():
                self._timeline.finish(span, max(start, self._ring.write_position))
            self._publish_watermark()
        except RingClosed:
            pass
        finally:
            self.figures.compute_s += compute
            stream.close()

    def _is_dead(self, utterance_id: int) -> bool:
        with self._cond:
            return utterance_id < self._dead_below

    def _is_stopped(self) -> bool:
        with self._cond:
            return self._stopped

    def _announce(self, span: UtteranceSpan, epoch: int) -> None:
        rate = self._output_rate
        out_start = self._to_output(span.start)
        self._mux.push(
            "control",
            UtteranceOut("started", span.utterance_id, span.text, out_start, out_start),
            out_start / rate,
            epoch=epoch,
        )
        if not self._send_visemes:
            return
        for viseme in span.visemes():
            start, end = self._to_output(viseme.start_sample), self._to_output(viseme.end_sample)
            event = VisemeOut(viseme.viseme, viseme.phoneme, start, end, span.utterance_id)
            self._mux.push("control", event, start / rate, epoch=epoch)


class StageWorker:
    """A stage's one worker thread reading the ring, owned by its session: start(), stop() (seen between two
    steps), join(). A failure ends the session with StageFailed; the reader is released however it ends.

    An interrupt: the session calls rewind(target) (where the stage goes on, on its own clock), then the ring
    rewinds; the worker sees ReaderRewound at its next read, re-syncs (_rewound), works on in the new epoch.
    """

    def __init__(self, thread_name: str, task: str, reader: RingReader, mux: Multiplexer) -> None:
        self._task = task  # what the stage does, for the failure's message
        self._reader = reader
        self._mux = mux
        self._epoch = 0  # the ring's epoch this stage's events belong to
        self._rewind_lock = threading.Lock()
        self._rewind_target = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def rewind(self, target: int) -> None:
        """Where the stage goes on after the coming ring rewind (set before the ring's interrupt())."""
        with self._rewind_lock:
            self._rewind_target = target

    def _wait_flow(self, media_time: float, timeout: float = 0.2) -> bool:
        """Flow control's wait_until_near; raises ReaderRewound first after an interrupt (the stage's media
        time is then stale: waiting on it could block the stage for good)."""
        if self._reader.rewound:
            raise ReaderRewound("the audio ring was rewound by an interrupt")
        return self._mux.flow.wait_until_near(media_time, timeout)

    def _run(self) -> None:
        try:
            while True:
                try:
                    self._work()
                    return
                except ReaderRewound:
                    # The epoch first, then the target: a second interrupt in between rewinds again.
                    self._epoch = self._reader.take_rewind()
                    with self._rewind_lock:
                        target = self._rewind_target
                    self._rewound(target)
        except (RingAborted, SessionStopped):
            return
        except Exception as exc:
            log.exception("%s failed", self._task)
            self._mux.fail(StageFailed(f"{self._task} failed: {exc}"))
        finally:
            self._reader.close()

    def _work(self) -> None:
        """The stage's loop; raises ReaderRewound (from its reader) after an interrupt: it is run again."""
        raise NotImplementedError

    def _rewound(self, target: int) -> None:
        raise NotImplementedError


class AudioStage(StageWorker):
    """The WAV packetizer: reads the ring, resamples, and sends chunks that never straddle two utterances."""

    def __init__(
        self,
        reader: RingReader,
        timeline: Timeline,
        mux: Multiplexer,
        resampler: StreamResampler,
        *,
        audio_format: str,
        chunk_samples: int,
    ) -> None:
        self._timeline = timeline
        self._resampler = resampler
        self._format = audio_format
        self._chunk = chunk_samples
        self._out_position = 0
        self._last_utterance = 0
        super().__init__("lipstream-audio", "audio packetizing", reader, mux)

    def _work(self) -> None:
        while not self._stopped.is_set():
            out_time = self._out_position / self._resampler.out_rate
            if not self._wait_flow(out_time):
                continue
            # While the resampler holds an utterance's last samples, look again soon: its end may be known
            # (the TTS stage marks it after writing the samples), and its FINISHED waits on them.
            available = self._reader.wait(1, timeout=0.05 if self._resampler.holds_samples else 0.5)
            if available == 0:
                if self._reader.at_end:
                    break
                self._end_utterance()
                continue
            self._send_next(available)
            self._end_utterance()
        else:
            return
        self._emit(self._resampler.flush(), self._last_utterance)
        self._mux.finish("audio")

    def _rewound(self, target: int) -> None:
        """Goes on at output sample `target` (the end of the audio sent) with a fresh resampler."""
        self._out_position = target
        self._resampler.restart()

    def _end_utterance(self) -> None:
        """At the end of a finished utterance, sends what the resampler holds back, ending exactly where the
        utterance ends on the output clock (where its FINISHED is); the next utterance starts it afresh.
        Without this, with nothing to say next and the input still open, the reply would never end."""
        position = self._reader.position
        if not self._resampler.holds_samples or position == 0:
            return
        span, _ = self._timeline.at(position - 1)
        if span is None or span.end != position:
            return
        tail = self._resampler.flush()
        missing = self._resampler.to_output(position) - (self._out_position + len(tail))
        tail = np.pad(tail, (0, missing)) if missing > 0 else tail[: max(0, len(tail) + missing)]
        self._emit(tail, span.utterance_id)

    def _send_next(self, available: int) -> None:
        position = self._reader.position
        span, region_end = self._timeline.at(position)
        count = min(available, self._chunk)
        if region_end is not None and region_end > position:
            count = min(count, region_end - position)
        views = self._reader.peek(count)
        samples = np.concatenate(views) if len(views) > 1 else views[0]
        out = self._resampler.process(samples)  # copies: the ring's memory is released right after
        self._reader.advance(count)
        utterance_id = span.utterance_id if span is not None else 0
        self._last_utterance = utterance_id
        self._emit(out, utterance_id)

    def _emit(self, samples: np.ndarray, utterance_id: int) -> None:
        if len(samples) == 0:
            return
        samples = np.array(samples, dtype=np.float32, copy=True)
        rate = self._resampler.out_rate
        start = self._out_position
        event = AudioEvent(
            wav_bytes(samples, rate, self._format), samples, start, len(samples), rate, utterance_id
        )
        self._out_position += len(samples)
        self._mux.push("audio", event, start / rate, epoch=self._epoch)
        self._mux.watermark("audio", self._out_position / rate, epoch=self._epoch)
