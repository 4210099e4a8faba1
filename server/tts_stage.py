"""The TTS stage: speaks the session's clauses one after the other into its ring, one utterance each."""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from lipstream.models.synthesis import SynthesisOptions
from lipstream.server.cpu import LEDGER
from lipstream.server.events import UtteranceOut, VisemeOut, WarningOut, WordOut
from lipstream.server.models_api import VoiceLike
from lipstream.server.mux import Multiplexer, SessionStopped, StageFailed
from lipstream.server.ring import AudioRing, RingClosed, RingInterrupted
from lipstream.server.scripts import (
    Readable,
    has_words,
    judge_text,
    readable_text,
    readers_hint,
    script_name,
    scripts_of_languages,
    skipped_message,
    unreadable_message,
)
from lipstream.server.stage import SourceStage
from lipstream.server.timeline import Timeline, UtteranceSpan

log = logging.getLogger(__name__)

# (voice, script) pairs already logged at WARNING in this process: the text is the client's and the client is
# told (a warning event, a header), so the operator needs the missing reader once, not a line per request.
_LOGGED_UNREADABLE: set[tuple[str, str]] = set()
_LOGGED_UNREADABLE_LOCK = threading.Lock()

# A clause cut with no punctuation (the segmenter's early first cut, a length bound, a flush) ends
# mid-sentence: the quiet VITS puts after it is trimmed to TRIM_KEEP_S, looked for in its last TRIM_HOLD_S
# (the silence such a cut adds: bench/FIGURES.md). Quiet: 10 ms frames under -40 dB of the clause's loudest.
TRIM_HOLD_S = 0.25
TRIM_KEEP_S = 0.03
_CLAUSE_END = frozenset(".!?;:,。！？；：，、…")
Late = WordOut | VisemeOut


class VoiceCannotSpeak(StageFailed):
    """The voice cannot read the client's text (its frontend lacks a language or a package); the message
    names what is missing. The servicer: FAILED_PRECONDITION."""


class UnreadableText(VoiceCannotSpeak):
    """Every clause of the session was in scripts the voice cannot read: nothing was said. The servicer:
    INVALID_ARGUMENT (the client chose the text and the voice)."""


def _is_voice_error(exc: Exception) -> bool:
    try:
        from lipstream.models.vits.errors import VoiceError
    except ImportError:  # no VITS voices in this process (torch absent): no voice raises them
        return False
    return isinstance(exc, VoiceError)


class TtsStage(SourceStage):
    """Speaks queued clauses one after the other into the ring; each clause is one utterance."""

    def __init__(
        self,
        voice: VoiceLike,
        synthesis_options: SynthesisOptions,
        ring: AudioRing,
        timeline: Timeline,
        mux: Multiplexer,
        to_output: Callable[[int], int],
        *,
        output_rate: int,
        send_visemes: bool,
        realtime: bool,
        realtime_lead_s: float,
        send_words: bool = False,
        voices: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """`voices`: every loaded voice's languages by name, to name the voices that read what this one
        cannot."""
        super().__init__(
            "lipstream-tts", "speech synthesis", ring, timeline, mux, to_output, rate=voice.sample_rate,
            output_rate=output_rate, realtime=realtime, realtime_lead_s=realtime_lead_s,
        )  # fmt: skip
        self._voice = voice
        self._scripts = scripts_of_languages(voice.languages)
        self._voices = dict(voices or {})
        self._skipped_scripts: dict[str, str] = {}  # script -> the first text of it skipped
        self._spoke = False
        self._options = synthesis_options
        self._send_visemes = send_visemes
        self._send_words = send_words
        self._clauses: collections.deque[tuple[str, float]] = collections.deque()  # (clause, submitted at)
        self._queued_chars = 0  # of the clauses queued: the servicer asks on every text input
        self._speaking = False
        self._synthesis_cpu = 0.0  # the worker's CPU seconds in _speak (lipstream.server.cpu's "vits")

    # -- owner's side ------------------------------------------------------------------------------------
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

    def _drop_queued(self, *, interrupt: bool) -> None:
        self._clauses.clear()
        self._queued_chars = 0

    # -- worker ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            super()._run()
        finally:
            LEDGER.add("vits", self._synthesis_cpu)
            LEDGER.add_thread("tts_wait", self._synthesis_cpu)

    def judge(self, text: str) -> tuple[str, str]:
        """scripts.judge_text for this stage's voice."""
        return judge_text(text, self._voice.name, self._scripts, self._voices)

    def _work(self) -> None:
        while (queued := self._next_clause()) is not None:
            began = time.thread_time()
            try:
                self._speak(*queued)
            finally:
                self._synthesis_cpu += time.thread_time() - began
                with self._cond:
                    self._speaking = False
        if self._skipped_scripts and not self._spoke and not self._is_stopped():
            raise UnreadableText(unreadable_message(self._voice.name, self._skipped_scripts, self._voices))

    def _failure(self, exc: Exception) -> StageFailed:
        if isinstance(exc, UnreadableText):
            return exc
        if _is_voice_error(exc):  # the voice cannot read the client's text: no server fault, no traceback
            log.info("voice %s cannot speak a clause: %s", self._voice.name, exc)
            return VoiceCannotSpeak(f"voice {self._voice.name!r} cannot speak this text: {exc}")
        return super()._failure(exc)

    def _next_clause(self) -> tuple[str, float] | None:
        with self._cond:
            if not self._wait_for_work(self._clauses):
                return None
            self._speaking = True
            clause = self._clauses.popleft()
            self._queued_chars -= len(clause[0])
            return clause

    def _speak(self, clause: str, submitted_at: float) -> None:
        with self._cond:
            utterance_id = self._next_id
            self._next_id += 1
            epoch = self._ring.epoch
            start = self._ring.write_position
        readable = readable_text(clause, self._scripts)
        if readable.skipped:
            self._skip(readable, utterance_id if has_words(readable.text) else 0, start, epoch)
        if readable.text != clause:  # spans skipped, or language marks the voice would spell dropped
            clause = readable.text
            if not has_words(clause):
                return
        began = time.perf_counter()
        stream = self._voice.synthesize_stream(clause, options=self._options)
        compute = time.perf_counter() - began
        try:
            if stream.num_samples == 0:
                return  # nothing to say (punctuation only): no utterance
            self._spoke = True
            if self.first_speech_submitted_at is None:
                self.first_speech_submitted_at = submitted_at
            span = UtteranceSpan(
                utterance_id, clause, start, list(stream.phonemes), voice=self._voice.name,
                word_timer=getattr(self._voice, "words", None),  # test voices may have none: spread evenly
            )
            with self._cond:  # atomic with interrupt()'s cut: a span added after it would break clock order
                if utterance_id < self._dead_below:
                    return  # interrupted while its synthesis began: nothing of it was written
                self._timeline.prune(self._ring.slowest_position())  # no reader looks back at those
                self._timeline.add(span)
            rate = self._voice.sample_rate
            hold = min(stream.num_samples, int(TRIM_HOLD_S * rate)) if clause[-1] not in _CLAUSE_END else 0
            late = self._announce(span, epoch, until=start + stream.num_samples - hold if hold else None)
            if late:  # nothing may be sent past them before they are pushed (their ends wait for the trim)
                self._watermark_cap = min(ring_start for ring_start, _ in late)
            written = 0
            tail: list[np.ndarray] = []  # the last `hold` samples, written once the quiet is trimmed
            loudest = 0.0
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
                if hold:
                    loudest = max(loudest, _loudest_frame(chunk, rate))
                    free = stream.num_samples - hold - written - sum(len(t) for t in tail)
                    if free < len(chunk):
                        tail.append(chunk[max(0, free):])
                        chunk = chunk[: max(0, free)]
                if len(chunk):
                    self._ring.write(chunk, epoch=epoch)
                    written += len(chunk)
                    self._publish_watermark()
            if tail:
                kept = _trim_quiet(np.concatenate(tail), rate, loudest)
                self._ring.write(kept, epoch=epoch)
                written += len(kept)
                self._publish_watermark()
            end = start + written
            self._timeline.finish(span, end)
            self._push_late(late, end, utterance_id, epoch)
            self._watermark_cap = None
            self._publish_watermark()
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
            self._watermark_cap = None
            self.figures.compute_s += compute
            stream.close()

    def _skip(self, readable: Readable, utterance_id: int, start: int, epoch: int) -> None:
        """Tells the client what was skipped (a warning per clause); the log, once per voice and script."""
        for script, text in readable.skipped.items():
            if script not in self._skipped_scripts:
                self._skipped_scripts[script] = text
                with _LOGGED_UNREADABLE_LOCK:
                    first = (self._voice.name, script) not in _LOGGED_UNREADABLE
                    _LOGGED_UNREADABLE.add((self._voice.name, script))
                log.log(logging.WARNING if first else logging.DEBUG,
                        "voice %s cannot read %s text, skipped (logged once per voice and script): %s",
                        self._voice.name, script_name(script),
                        readers_hint(script, self._voice.name, self._voices))
        out = self._to_output(start)
        message = skipped_message(self._voice.name, readable.skipped, self._voices, spans=readable.spans)
        warning = WarningOut("unreadable_script", message, utterance_id)
        self._mux.push("control", warning, out / self._output_rate, epoch=epoch)

    def _push_late(self, late: list[tuple[int, Late]], end: int, utterance_id: int, epoch: int) -> None:
        """The word and viseme events that reach into a trimmed tail: cut at the utterance's end."""
        out_end = self._to_output(end)
        for _, event in late:
            if event.start_sample < out_end:
                event = dataclasses.replace(event, end_sample=min(event.end_sample, out_end))
                self._mux.push("control", event, event.start_sample / self._output_rate, epoch=epoch)

    def _announce(self, span: UtteranceSpan, epoch: int, until: int | None = None) -> list[tuple[int, Late]]:
        """Pushes STARTED and the utterance's words and visemes; those ending after `until` (ring samples: a
        tail that may be trimmed) are returned instead with their ring start, for _push_late."""
        late: list[tuple[int, Late]] = []
        rate = self._output_rate
        out_start = self._to_output(span.start)
        self._mux.push(
            "control",
            UtteranceOut(
                "started", span.utterance_id, span.text, out_start, out_start,
                spoken=lambda heard_until: span.spoken_text(heard_until, self._to_output),
            ),
            out_start / rate,
            epoch=epoch,
        )
        if self._send_words:
            for word in span.words():
                start, end = self._to_output(word.start_sample), self._to_output(word.end_sample)
                timed = WordOut(word.word, start, end, span.utterance_id)
                if until is not None and word.end_sample > until:
                    late.append((word.start_sample, timed))
                else:
                    self._mux.push("control", timed, start / rate, epoch=epoch)
        if not self._send_visemes:
            return late
        for viseme in span.visemes():
            start, end = self._to_output(viseme.start_sample), self._to_output(viseme.end_sample)
            event = VisemeOut(viseme.viseme, viseme.phoneme, start, end, span.utterance_id)
            if until is not None and viseme.end_sample > until:
                late.append((viseme.start_sample, event))
            else:
                self._mux.push("control", event, start / rate, epoch=epoch)
        return late


def _loudest_frame(chunk: np.ndarray, rate: int) -> float:
    """The RMS of the loudest 10 ms frame of a chunk."""
    frame = max(1, rate // 100)
    n = len(chunk) // frame
    if n == 0:
        return float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64)))) if len(chunk) else 0.0
    frames = chunk[: n * frame].reshape(n, frame).astype(np.float64)
    return float(np.sqrt((frames**2).mean(axis=1)).max())


def _trim_quiet(tail: np.ndarray, rate: int, loudest: float) -> np.ndarray:
    """`tail` less its trailing quiet beyond TRIM_KEEP_S (10 ms frames under -40 dB of `loudest`)."""
    frame = max(1, rate // 100)
    n = len(tail) // frame
    if n == 0 or loudest <= 0:
        return tail
    rms = np.sqrt((tail[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(axis=1))
    loud = np.nonzero(rms >= loudest * 0.01)[0]
    speech_end = (int(loud[-1]) + 1) * frame if len(loud) else 0
    return tail[: min(len(tail), speech_end + int(TRIM_KEEP_S * rate))]
