"""The `lipstream` command line: `say`, `voices`, `avatars`, `info`, `channel`, and `serve` (the server,
lazily).

Exit codes (ExitCode): 0 ok, 2 usage, 3 no server at the target, 4 the server rejected the request,
5 the server is busy, 6 the deadline passed, 7 another server error, 8 the output could not be written,
9 the server wants a (different) token, 130 interrupted by Ctrl-C; 1 is an unexpected error (a bug: please
report it).
"""

from __future__ import annotations

import argparse
import codecs
import enum
import itertools
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import grpc
from lipstream.v1.enums import LipSyncEngine, names

from .config import VideoConfig
from .credentials import tls_credentials
from .errors import LipStreamError
from .events import AudioChunk, Event, SessionStarted, SessionStats, UtteranceEvent, VideoFrame, WarningEvent
from .media import Mp4Writer, write_wav
from .sync import DEFAULT_TARGET, Client, Conversation
from .timings import Timings

__all__ = ["ExitCode", "main"]


class ExitCode(enum.IntEnum):
    OK = 0
    UNEXPECTED = 1          # a bug: the traceback is printed
    USAGE = 2               # bad command line (argparse's code)
    UNAVAILABLE = 3         # no server answers at --target (or it is shutting down)
    INVALID_ARGUMENT = 4    # the server rejected the request: unknown voice / avatar, bad value, long text,
                            # no display on the channel (NOT_FOUND)
    BUSY = 5                # the server is at its session limit (RESOURCE_EXHAUSTED)
    DEADLINE = 6            # --timeout passed (DEADLINE_EXCEEDED)
    SERVER_ERROR = 7        # any other gRPC status from the server
    OUTPUT = 8              # the output file could not be written (or PyAV is missing for .mp4)
    UNAUTHENTICATED = 9     # no token, or one the server does not accept
    INTERRUPTED = 130       # Ctrl-C


_EXIT_BY_STATUS = {
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNAVAILABLE,
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: ExitCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ExitCode.BUSY,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitCode.DEADLINE,
    grpc.StatusCode.UNAUTHENTICATED: ExitCode.UNAUTHENTICATED,
}


class UsageError(Exception):
    """A command-line value that cannot work (exit code 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lipstream",
        description="Talk to a lipstream server: lip-synced speech from text.",
        epilog="Exit codes: 0 ok, 2 usage, 3 no server at the target, 4 request rejected, 5 server busy, "
        "6 deadline passed, 7 other server error, 8 output not written, 9 token missing or refused, "
        "130 Ctrl-C, 1 unexpected.",
    )
    _connection_flags(parser, suppress=False)
    # The same flags after the subcommand (`lipstream say --target H:P ...`): their defaults are SUPPRESS,
    # so a flag given only before the subcommand keeps its value.
    common = argparse.ArgumentParser(add_help=False)
    _connection_flags(common, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    say = commands.add_parser(
        "say", parents=[common], help="speak a text into an .mp4 (video + audio) or a .wav file"
    )
    say.add_argument(
        "text", nargs="?", help='the text to speak; "-" streams it from stdin as it arrives (or --audio)'
    )
    say.add_argument(
        "--audio", type=Path, help="lip-sync this speech instead of a text: a 16-bit PCM .wav from any TTS"
    )
    say.add_argument("-o", "--output", required=True, type=Path, help="out.mp4 or out.wav")
    say.add_argument("--voice", default="", help="voice name (default: the server's)")
    say.add_argument("--speaker", default="", help="speaker of a multi-speaker voice")
    say.add_argument("--length-scale", type=float, help="speed: > 1 slower, < 1 faster")
    say.add_argument(
        "--noise-scale", type=float,
        help="variation of the voice (0, with --noise-scale-w 0: the same audio every time; "
        "default: the voice's)",
    )
    say.add_argument(
        "--noise-scale-w", type=float,
        help="variation of the timing (0: the same every time; default: the voice's)",
    )
    say.add_argument("--sample-rate", type=int, default=0, help="output sample rate (default: the voice's)")
    say.add_argument(
        "--avatar", default="",
        help="an avatar name of the server, or a photo (JPEG/PNG path, at most 4 MiB and 4096 pixels a "
        "side) to speak with (.mp4 only; default: the server's)",
    )
    say.add_argument("--fps", type=float, default=0.0, help="video frame rate (default: the server's, 25)")
    say.add_argument("--engine", default="auto", choices=names(LipSyncEngine), help="lip sync")
    say.add_argument("--words", action="store_true", help="also write OUTPUT.json: each word's start and end")
    say.add_argument("--blendshapes", action="store_true", help="also write OUTPUT.json: ARKit weights")

    for name, what in (
        ("voices", "list the server's voices"),
        ("avatars", "list the server's avatars"),
        ("info", "show the server's version, device, engines and limits"),
    ):
        sub = commands.add_parser(name, parents=[common], help=what)
        sub.add_argument("--json", action="store_true", help="print JSON")

    channel = commands.add_parser(
        "channel", parents=[common],
        help="make the displays on a named channel speak or stop (kiosk pages opened as /?channel=NAME)",
    )
    channel.add_argument("name", help="the channel: 1 to 64 letters, digits, '-' or '_'")
    channel.add_argument(
        "action", choices=("say", "stop"), help="say: the displays speak the text; stop: they stop speaking"
    )
    channel.add_argument("text", nargs="?", help='say: the text to speak ("-" reads it from stdin)')
    channel.add_argument(
        "--interrupt", action="store_true", help="say: what the displays are saying stops first"
    )

    commands.add_parser("serve", help="run the server (all flags go to it: lipstream serve --help)")
    return parser


def _connection_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """--target, --timeout, TLS, token, metadata and -q: valid before and after the subcommand."""
    env = os.environ.get

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--target", default=default(env("LIPSTREAM_TARGET") or DEFAULT_TARGET),
        help=f"server HOST:PORT, its gRPC port (default: $LIPSTREAM_TARGET or {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=default(None), metavar="SECONDS",
        help="deadline of the call in seconds (what was received by then is kept)",
    )
    parser.add_argument(
        "--tls", action="store_true", default=default(False),
        help="connect with TLS (system root certificates)",
    )
    parser.add_argument(
        "--ca-cert", type=Path, default=default(env("LIPSTREAM_CA_CERT") or None), metavar="PATH",
        help="PEM root certificate(s) that signed the server's (implies --tls; env LIPSTREAM_CA_CERT)",
    )
    parser.add_argument(
        "--client-cert", type=Path, default=default(env("LIPSTREAM_CLIENT_CERT") or None), metavar="PATH",
        help="PEM client certificate for a server that requires one (mTLS; implies --tls; "
        "env LIPSTREAM_CLIENT_CERT)",
    )
    parser.add_argument(
        "--client-key", type=Path, default=default(env("LIPSTREAM_CLIENT_KEY") or None), metavar="PATH",
        help="PEM private key of --client-cert (env LIPSTREAM_CLIENT_KEY)",
    )
    parser.add_argument(
        "--token", default=default(env("LIPSTREAM_TOKEN") or None),
        help="bearer token for a server started with --auth-token-file (env LIPSTREAM_TOKEN, which other "
        "users cannot see in the process list)",
    )
    parser.add_argument(
        "--metadata", action="append", default=default([]), metavar="KEY=VALUE",
        help="gRPC metadata sent with the call, e.g. authorization='Bearer ...' (repeatable)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="no progress display on stderr"
    )


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"--timeout must be > 0 seconds, got {value}")
    return seconds


def _stdin_chunks(stream: TextIO) -> Iterator[str]:
    """The text on stdin as it arrives (a pipe from an LLM streams), decoded UTF-8 across chunk edges."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = stream.fileno()
    while block := os.read(fd, 4096):
        if text := decoder.decode(block):
            yield text
    if tail := decoder.decode(b"", final=True):
        yield tail


def _letters(text: str) -> int:
    """Characters that are spoken: utterances come back without the spaces between them."""
    return sum(not c.isspace() for c in text)


class Progress:
    """A one-line progress display on stderr (rewritten in place on a terminal, a line per utterance
    otherwise) while a long text streams.

    `hold_warnings` (a text given whole): the server's warnings wait for the first audio, so a text with
    nothing readable left shows only the refusal, which names the same scripts, not each skipped clause
    before it too (`drop_held`)."""

    def __init__(
        self, out: TextIO, total_chars: int | None, enabled: bool, video: bool = True,
        hold_warnings: bool = False,
    ) -> None:
        self.out = out
        self.total_chars = total_chars
        self.enabled = enabled
        self.video = video
        self._held: list[str] | None = [] if hold_warnings else None
        self.tty = out.isatty()
        self.spoken_chars = 0
        self.utterances = 0
        self.audio_seconds = 0.0
        self.frames = 0
        self._last_draw = 0.0

    def update(self, event: object) -> None:
        if isinstance(event, AudioChunk):
            self.release()
            self.audio_seconds = max(self.audio_seconds, event.end_sample / event.sample_rate)
        elif isinstance(event, VideoFrame):
            self.frames += 1
        elif isinstance(event, UtteranceEvent) and event.kind != "started":
            self.utterances += 1
            self.spoken_chars += _letters(event.text)
            self._write(self._line() + "\n" if not self.tty else "\r" + self._line() + "\x1b[K")
            return
        if self.tty and time.monotonic() - self._last_draw > 0.1:
            self._write("\r" + self._line() + "\x1b[K")

    def warn(self, message: str) -> None:
        """A warning on a line of its own (always shown: -q hides the progress, not what went unsaid)."""
        if self._held is not None:
            self._held.append(message)
            return
        clear = "\r\x1b[K" if self.tty and self.enabled else ""
        self.out.write(f"{clear}lipstream say: warning: {message}\n")
        self.out.flush()

    def release(self) -> None:
        """Show the held warnings, and the next ones as they come."""
        held, self._held = self._held or [], None
        for message in held:
            self.warn(message)

    def drop_held(self) -> None:
        """The request was refused: its error says what the held warnings would have."""
        self._held = None

    def _line(self) -> str:
        done = ""
        if self.total_chars:
            done = f"{min(100, round(100 * self.spoken_chars / self.total_chars))}% | "
        frames = f" | {self.frames} frames" if self.video else ""   # a .wav has none to count
        return (
            f"lipstream say: {done}{self.utterances} utterance{'s' * (self.utterances != 1)} | "
            f"{self.audio_seconds:.1f} s audio{frames}"
        )

    def _write(self, text: str) -> None:
        if self.enabled:
            self.out.write(text)
            self.out.flush()
            self._last_draw = time.monotonic()

    def done(self) -> None:
        """All the text was handled: what the server skipped (a warning said so) counts as done."""
        if self.total_chars and self.spoken_chars < self.total_chars:
            self.spoken_chars = self.total_chars
            self._write(self._line() + "\n" if not self.tty else "\r" + self._line() + "\x1b[K")

    def finish(self, summary: str, always: bool = False) -> None:
        """The last line; `always`: shown with -q too (the run did not end as asked)."""
        if self.tty and self.enabled:
            self._write("\r\x1b[K")
        if always and not self.enabled:
            self.out.write(summary + "\n")
            self.out.flush()
        else:
            self._write(summary + "\n")


class TextPacer:
    """Sends a text of any length no faster than the server speaks it.

    The server bounds one text input and the text waiting to be spoken (ServerInfo.max_text_chars). The
    pacer cuts the text into inputs of at most a quarter of the bound and holds the next one back while the
    characters sent but not yet started (counted from UtteranceEvent STARTED, which the caller passes to
    `observe`) would put the server near its bound. Whitespace runs are sent as one character and control
    characters as spaces, so the letters counted here bound the characters counted there.
    """

    def __init__(self, source: Iterable[str], max_text_chars: int) -> None:
        self._source = source
        self.max_text_chars = max_text_chars
        self.piece_chars = max(1, min(2_000, max_text_chars // 4))
        self._cond = threading.Condition()
        self._in_flight = 0          # letters sent and not yet seen started
        self._open_utterances = 0    # started and not yet finished or interrupted
        self._last_event = time.monotonic()
        self._stopped = False

    def __iter__(self) -> Iterator[str]:
        for text in self._source:
            text = _WHITESPACE_RUN.sub(_one_space, _CONTROL.sub(" ", text))
            for at in range(0, len(text), self.piece_chars):
                piece = text[at : at + self.piece_chars]
                if not self._wait_for_room(_letters(piece)):
                    return
                yield piece

    def _fits(self, letters: int) -> bool:
        # The server counts a clause's spaces too (at most one per letter here) and up to one clause still
        # being cut (a few hundred characters).
        return self._in_flight == 0 or 2 * (self._in_flight + letters) + 400 <= self.max_text_chars

    def _wait_for_room(self, letters: int) -> bool:
        with self._cond:
            while not self._stopped and not self._fits(letters):
                self._cond.wait(0.5)
                if self._open_utterances == 0 and time.monotonic() - self._last_event > _IDLE_S:
                    # The server went quiet with everything started spoken: what it dropped (text it
                    # cannot read) never comes back as an utterance, so stop counting it.
                    self._in_flight = 0
            if self._stopped:
                return False
            self._in_flight += letters
            return True

    def observe(self, event: Event) -> None:
        """Count the server's progress (call with every event of the stream)."""
        with self._cond:
            self._last_event = time.monotonic()
            if isinstance(event, UtteranceEvent):
                if event.kind == "started":
                    self._open_utterances += 1
                    self._in_flight = max(0, self._in_flight - _letters(event.text))
                else:
                    self._open_utterances = max(0, self._open_utterances - 1)
                self._cond.notify_all()

    def stop(self) -> None:
        """Stop sending (the conversation ended or was interrupted)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


_IDLE_S = 2.0
_WHITESPACE_RUN = re.compile(r"\s{2,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _one_space(run: re.Match[str]) -> str:
    return "\n" if "\n" in run.group() else " "


def _text_source(text: str) -> Iterable[str]:
    """The words to say: the argument, or stdin as it arrives for "-". Raises UsageError when there are
    none, before anything is sent or written (stdin is read up to its first non-blank chunk)."""
    if text != "-":
        if not text.strip():
            raise UsageError('the text is empty: pass the words to say, or "-" to read them from stdin')
        return [text]
    if sys.stdin.isatty():   # else `say -` at a prompt waits in silence, as if hung
        print("lipstream say: type the text; each line is spoken at Enter, Ctrl-D ends", file=sys.stderr)
    chunks = _stdin_chunks(sys.stdin)
    for first in chunks:
        if first.strip():
            return itertools.chain([first], chunks)
    raise UsageError("stdin had no text to say: pipe some in, e.g. echo Hello | lipstream say - -o hi.mp4")


def _wav_pieces(path: Path) -> tuple[int, list[bytes]]:
    """The sample rate and 0.1 s pieces (PCM16 mono) of a 16-bit PCM .wav; channels are mixed down."""
    import wave

    import numpy as np

    try:
        with wave.open(str(path), "rb") as wav:
            width, rate, channels = wav.getsampwidth(), wav.getframerate(), wav.getnchannels()
            frames = wav.readframes(wav.getnframes())
    except OSError as error:   # not there, a folder, not readable: no conversion helps
        raise UsageError(f"--audio {path}: {error.strerror or error}") from None
    except (wave.Error, EOFError) as error:
        raise UsageError(
            f"--audio {path}: cannot read it as a 16-bit PCM .wav ({error}): convert it, e.g. "
            f"ffmpeg -i {path} -c:a pcm_s16le out.wav"
        ) from None
    if width != 2:
        raise UsageError(
            f"--audio {path}: {8 * width}-bit samples; give 16-bit PCM, e.g. "
            f"ffmpeg -i {path} -c:a pcm_s16le out.wav"
        )
    samples = np.frombuffer(frames, dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).round().astype("<i2")
    if not samples.size:
        raise UsageError(f"--audio {path}: the file has no samples")
    step = max(1, rate // 10)
    return rate, [samples[i : i + step].tobytes() for i in range(0, len(samples), step)]


MAX_AVATAR_IMAGE_BYTES = 4 << 20  # the server's bound on VideoConfig.avatar_image


def _avatar_choice(avatar: str) -> tuple[str, bytes]:
    """(name, b"") for a server's avatar; ("", the photo's bytes) for a path to an image file."""
    path = Path(avatar).expanduser()
    if not avatar or not (path.suffix or os.sep in avatar or "/" in avatar):
        return avatar, b""  # a name: the server knows it, or says which it has
    if not path.is_file():
        raise UsageError(f"--avatar {avatar}: no such file (a server avatar's name has no extension)")
    image = path.read_bytes()
    if len(image) > MAX_AVATAR_IMAGE_BYTES:
        raise UsageError(
            f"--avatar {avatar}: {len(image)} bytes, over the server's bound of {MAX_AVATAR_IMAGE_BYTES}: "
            "use a smaller JPEG (a face of 256 pixels or more is enough)"
        )
    return "", image


def _say(client: Client, args: argparse.Namespace, timeout: float | None) -> ExitCode:
    suffix = args.output.suffix.lower()
    if suffix not in (".mp4", ".wav"):
        raise UsageError(f"-o {args.output}: the output must end in .mp4 (video and audio) or .wav (audio)")
    if suffix == ".wav" and (args.avatar or args.fps):
        raise UsageError("--avatar and --fps need an .mp4 output; a .wav has no video")
    if not args.output.parent.is_dir():  # fail before the server does any work
        raise OSError(f"{args.output.parent} is not a directory: create it first")
    if args.output.is_dir():
        raise OSError(f"-o {args.output} is a folder: name a file, e.g. -o {args.output / ('out' + suffix)}")
    if (args.text is None) == (args.audio is None):
        raise UsageError("give the text to speak or --audio speech.wav (one of them)")
    audio_in = _wav_pieces(args.audio) if args.audio is not None else None
    source = _text_source(args.text) if audio_in is None else None
    # Written beside the output and renamed over it only when there is speech to keep, so a refused
    # request never costs the user an existing file; creating it now finds an unwritable place before
    # the server does any work.
    part = args.output.with_name(f".{args.output.name}.{os.getpid()}.part")
    try:
        part.touch()
    except OSError as error:
        raise OSError(f"-o {args.output}: cannot create a file there ({error.strerror or error})") from None
    try:
        return _say_into(client, args, timeout, part, audio_in, source)
    finally:
        part.unlink(missing_ok=True)


def _say_into(
    client: Client, args: argparse.Namespace, timeout: float | None, part: Path,
    audio_in: tuple[int, list[bytes]] | None, source: Iterable[str] | None,
) -> ExitCode:
    video: bool | VideoConfig = False
    writer: Mp4Writer | None = None
    if args.output.suffix.lower() == ".mp4":
        name, image = _avatar_choice(args.avatar)
        video = VideoConfig(avatar=name, fps=args.fps, engine=args.engine, avatar_image=image)
        writer = Mp4Writer(part)   # imports PyAV now: missing PyAV is exit 8 before any call
    pacer = None
    if source is not None:
        pacer = TextPacer(source, client.info(timeout=timeout).max_text_chars)
    total = _letters(args.text) if args.text not in (None, "-") else None
    progress = Progress(
        sys.stderr, total, enabled=not args.quiet, video=writer is not None, hold_warnings=total is not None
    )
    audio_events: list[Event] = []   # for a .wav: SessionStarted and the AudioChunks
    stats: SessionStats | None = None
    timings = Timings() if args.words or args.blendshapes else None  # OUTPUT.json beside the output
    sidecar = args.output.with_suffix(".json")
    feed_failed: list[BaseException] = []
    try:
        if audio_in is not None:
            conversation = client.converse_audio(
                audio_in[1], input_sample_rate=audio_in[0], sample_rate=args.sample_rate, video=video,
                blendshapes=args.blendshapes, timeout=timeout,
            )
        else:
            assert pacer is not None
            conversation = client.converse(
                None if args.text == "-" else iter(pacer), voice=args.voice, speaker=args.speaker,
                length_scale=args.length_scale, noise_scale=args.noise_scale,
                noise_scale_w=args.noise_scale_w, sample_rate=args.sample_rate, video=video, words=args.words,
                blendshapes=args.blendshapes, timeout=timeout,
            )
        if args.text == "-" and pacer is not None:
            threading.Thread(
                target=_send_lines, args=(conversation, pacer, feed_failed), name="lipstream-say-stdin",
                daemon=True,   # it may sit in a read of stdin; the conversation's end stops its sends
            ).start()
        with conversation:
            for event in conversation:
                if pacer is not None:
                    pacer.observe(event)
                progress.update(event)
                if timings is not None:
                    timings.add(event)
                if writer is not None:
                    writer.add(event)
                elif isinstance(event, AudioChunk | SessionStarted):
                    audio_events.append(event)
                if isinstance(event, SessionStats):
                    stats = event
                elif isinstance(event, WarningEvent):  # shown with -q too: text was not said
                    progress.warn(event.message)
        if feed_failed:
            raise feed_failed[0]
    except KeyboardInterrupt:
        if pacer is not None:
            pacer.stop()
        progress.release()
        _keep_what_was_received(args.output, part, writer, audio_events, progress, "interrupted")
        return ExitCode.INTERRUPTED
    except LipStreamError as error:
        if pacer is not None:
            pacer.stop()
        if error.code == grpc.StatusCode.INVALID_ARGUMENT:
            progress.drop_held()   # "nothing to say: voice ... cannot read ...": the warnings' own words
        progress.release()
        if error.code in _STREAM_LOST and progress.audio_seconds > 0:
            # The server went away mid-reply (it stopped or crashed, a proxy reset the stream): the
            # speech so far is kept, as on Ctrl-C; the error and its exit code follow.
            _keep_what_was_received(args.output, part, writer, audio_events, progress, "the stream broke off")
            raise
        if error.code != grpc.StatusCode.DEADLINE_EXCEEDED:
            _close_quietly(writer)
            raise
        _keep_what_was_received(
            args.output, part, writer, audio_events, progress,
            f"the call took longer than --timeout {timeout:g} s: raise it",
        )
        return ExitCode.DEADLINE
    except BaseException:
        if pacer is not None:
            pacer.stop()
        progress.release()
        _close_quietly(writer)
        raise
    if pacer is not None:
        pacer.stop()
    progress.release()
    if writer is not None:
        writer.close()
        spoken = writer.samples_written > 0
    else:
        spoken = any(isinstance(event, AudioChunk) for event in audio_events)
        if spoken:
            write_wav(part, audio_events)
    if not spoken:   # emoji or punctuation only: the server finished without a sound
        raise UsageError("nothing to say: the text has no words the voice can speak; nothing written")
    os.replace(part, args.output)
    if timings is not None:
        timings.write(sidecar)
    progress.done()
    audio = stats.audio_seconds if stats else progress.audio_seconds
    first = f", first audio after {stats.time_to_first_audio_s:.2f} s" if stats else ""
    frames = f", {progress.frames} frames" if writer is not None else ""
    also = f" and {sidecar}" if timings is not None else ""
    progress.finish(f"lipstream say: wrote {args.output}{also} ({audio:.1f} s audio{frames}{first})")
    return ExitCode.OK


def _send_lines(conversation: Conversation, pieces: Iterable[str], failed: list[BaseException]) -> None:
    """Send stdin's text as it arrives; a piece that ends a line is flushed, so a line typed at a terminal
    is spoken at Enter (the server would otherwise wait for the next punctuation mark)."""
    try:
        for piece in pieces:
            conversation.send(piece, flush=piece.endswith("\n"))
        conversation.end()
    except RuntimeError:   # the conversation ended first (refused, deadline, interrupted): stop sending
        pass
    except BaseException as error:  # noqa: BLE001 - reading stdin failed: end the call, the caller re-raises
        failed.append(error)
        conversation.close()


def _close_quietly(writer: Mp4Writer | None) -> None:
    if writer is not None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the original failure is what the user needs to see
            pass


_STREAM_LOST = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def _keep_what_was_received(
    output: Path, part: Path, writer: Mp4Writer | None, audio_events: list[Event], progress: Progress,
    why: str,
) -> None:
    """On Ctrl-C, the deadline or a lost stream: keep the speech received so far in the output file, and
    say so."""
    try:
        if writer is not None:
            writer.close()
            kept = writer.samples_written > 0 or writer.frames_written > 0
        else:
            kept = any(isinstance(event, AudioChunk) for event in audio_events)
            if kept:
                write_wav(part, audio_events)
        if kept:
            os.replace(part, output)
    except Exception as error:  # noqa: BLE001 - the interrupt is what is being handled
        kept = False
        print(f"lipstream say: could not write what was received: {error}", file=sys.stderr)
    if kept:
        progress.finish(
            f"lipstream say: {why}; wrote what was received to {output} "
            f"({progress.audio_seconds:.1f} s audio)", always=True,
        )
    else:
        progress.finish(f"lipstream say: {why}; no speech had arrived, nothing written", always=True)


def _print_list(items: Sequence[object], as_json: bool, columns: Sequence[str]) -> None:
    rows = [asdict(item) for item in items]  # type: ignore[call-overload]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) if table else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "*" if value else ""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "-"
    return str(value)


def _uses_tls(args: argparse.Namespace) -> bool:
    return bool(args.tls or args.ca_cert or args.client_cert or args.client_key)


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if not _uses_tls(args):
        return None
    try:
        return tls_credentials(args.ca_cert, args.client_cert, args.client_key)
    except ValueError as error:   # "ca_cert PATH: No such file" -> "--ca-cert PATH: No such file"
        message = str(error)
        for name in ("ca_cert", "client_cert", "client_key"):
            message = message.replace(name, "--" + name.replace("_", "-"))
        raise UsageError(message) from None


def _metadata(pairs: list[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--metadata {pair!r}: write it as KEY=VALUE, e.g. authorization='Bearer abc'")
        out.append((key.strip().lower(), value))
    return out


def _check_target(target: str) -> None:
    """Refuse the targets a newcomer types that gRPC would only answer with UNAVAILABLE."""
    example = "e.g. --target 127.0.0.1:50051"
    for scheme in ("http://", "https://", "grpc://", "grpcs://"):
        if target.startswith(scheme):
            rest = target.removeprefix(scheme).rstrip("/")
            raise UsageError(f"--target {target}: drop the scheme: --target {rest} (--tls for TLS)")
    if target.endswith("/") and "://" not in target:
        raise UsageError(f"--target {target}: drop the slash: --target {target.rstrip('/')}")
    if target.isdigit():
        raise UsageError(f"--target {target}: a target is HOST:PORT, e.g. 127.0.0.1:{target}")
    address = _host_port(target)
    if address is None:
        return
    host, port = address
    if not host:
        raise UsageError(f"--target {target}: the host is missing, {example}")
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--target {target}: port {port} is out of range (1-65535), {example}")


def _check_pem(flag: str, path: Path | None) -> None:
    """A file that is not PEM, or a key given for a certificate (or the reverse), fails deep in the TLS
    handshake with no hint: say which flag is wrong."""
    if path is None or not path.is_file():
        return   # tls_credentials names a missing file
    head = path.read_bytes()[:1 << 20]
    if b"-----BEGIN " not in head:
        raise UsageError(f"{flag} {path}: not a PEM file (it should contain '-----BEGIN ...')")
    if flag == "--client-key":
        if b"PRIVATE KEY-----" not in head:
            raise UsageError(f"--client-key {path}: no key in it (a '-----BEGIN ... PRIVATE KEY-----')")
    elif b"-----BEGIN CERTIFICATE-----" not in head:
        raise UsageError(
            f"{flag} {path}: no certificate in it ('-----BEGIN CERTIFICATE-----'); is it a key?"
        )


def _check_key_pair(cert: Path | None, key: Path | None) -> None:
    """A --client-key that is not --client-cert's key fails the handshake as a vague connection error."""
    if cert is None or key is None or not cert.is_file() or not key.is_file():
        return
    try:   # the password callback refuses an encrypted key instead of prompting for its passphrase
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise UsageError(
                f"--client-key {key} is not the key of --client-cert {cert}: pass the pair made together"
            ) from None


def _client(args: argparse.Namespace) -> Client:
    _check_target(args.target)
    for flag, path in (("--ca-cert", args.ca_cert), ("--client-cert", args.client_cert),
                       ("--client-key", args.client_key)):
        _check_pem(flag, path)
    _check_key_pair(args.client_cert, args.client_key)
    credentials = _credentials(args)
    try:
        return Client(
            args.target, credentials=credentials, token=args.token, metadata=_metadata(args.metadata)
        )
    except ValueError as error:   # a malformed token, or a token and an authorization --metadata
        raise UsageError(str(error).replace("token=...", "--token")) from None


def _channel(client: Client, args: argparse.Namespace) -> ExitCode:
    if args.action == "stop":
        if args.text is not None or args.interrupt:
            raise UsageError("stop takes no text and no --interrupt: lipstream channel NAME stop")
        displays = client.stop_channel(args.name, timeout=args.timeout)
        print(f"stopped {displays} display{'s' * (displays != 1)} on channel {args.name}")
        return ExitCode.OK
    text = sys.stdin.read() if args.text == "-" else args.text
    if not text or not text.strip():
        raise UsageError(f'give the text to say: lipstream channel {args.name} say "Welcome!"')
    said = client.say_on_channel(args.name, text, args.interrupt, timeout=args.timeout)
    print(f"{said.displays} display{'s' * (said.displays != 1)} on channel {args.name} speaking")
    if said.warning:
        print(f"lipstream channel: warning: {said.warning}", file=sys.stderr)   # as say's warnings
    return ExitCode.OK


def _run(args: argparse.Namespace) -> ExitCode:
    with _client(args) as client:
        if args.command == "say":
            return _say(client, args, args.timeout)
        if args.command == "channel":
            return _channel(client, args)
        if args.command == "voices":
            _print_list(
                client.voices(timeout=args.timeout), args.json,
                ["name", "sample_rate", "format", "languages", "speakers", "is_default"],
            )
        elif args.command == "avatars":
            _print_list(
                client.avatars(timeout=args.timeout), args.json,
                ["name", "width", "height", "num_frames", "is_default"],
            )
        elif args.command == "info":
            info = client.info(timeout=args.timeout)
            if args.json:
                print(json.dumps(asdict(info), indent=2))
            else:
                for key, value in asdict(info).items():
                    print(f"{key:16} {_cell(value)}")
    return ExitCode.OK


_PROBE_S = 1.0   # each step of the diagnosis waits at most this long


def _why_unavailable(args: argparse.Namespace) -> list[str]:
    """What was tried and the likely cause, from a cheap look at the target: nothing listening, no port,
    TLS on one side only, or an HTTP port (the kiosk page) given as the gRPC target."""
    tls = _uses_tls(args)
    tried = f"tried {args.target} over {'TLS' if tls else 'plaintext'} gRPC"
    start = "start one with `make run` or `lipstream serve` (it listens on port 50051)"
    address = _host_port(args.target)
    if address is None:
        return [tried, "is the server running? " + start]
    host, port = address
    if port is None:
        return [
            tried + " (no port given, so gRPC used 443)",
            f"give the server's gRPC port: --target {host}:50051 (lipstream serve's default)",
        ]
    try:
        socket.getaddrinfo(host, port)
    except socket.gaierror:
        return [f"{tried}: the host name {host} does not resolve", "check the spelling of --target's host"]
    try:
        with socket.create_connection((host, port), timeout=_PROBE_S) as sock:
            speaks_tls = _speaks_tls(sock, host)
    except OSError as error:
        return [f"{tried}: {error.strerror or error}", "is the server running? " + start]
    answer = _first_bytes(host, port, speaks_tls)
    if answer.startswith(b"HTTP/"):
        return [
            f"{tried}: {host}:{port} answers HTTP{'S' if speaks_tls else ''}, as the kiosk page's port does",
            "--target takes the gRPC port (lipstream serve --port, default 50051), not the web port",
        ]
    if speaks_tls and not tls:
        return [
            f"{tried}: {host}:{port} speaks TLS",
            "pass --ca-cert CA.pem (the CA that signed the server's certificate; or --tls for a public one)",
        ]
    if not speaks_tls and tls:
        return [
            f"{tried}: {host}:{port} speaks plaintext, not TLS",
            "drop --tls/--ca-cert, or start the server with --tls-cert and --tls-key",
        ]
    if tls and (problem := _certificate_problem(host, port, args.ca_cert)):
        return [f"{tried}: {problem[0]}", problem[1]]
    if tls and _refuses_client(host, port, args):
        closed = f"{tried}: it closed the connection after the TLS handshake"
        if args.client_cert is None:
            return [
                f"{closed}: it requires a client certificate",
                "pass --client-cert and --client-key, signed by the CA of the server's --tls-client-ca",
            ]
        return [
            f"{closed}: it does not accept --client-cert {args.client_cert}",
            "pass a client certificate signed by the CA of the server's --tls-client-ca",
        ]
    if tls and args.client_cert is None:
        return [tried, "does it require client certificates? then pass --client-cert and --client-key"]
    return [tried, "is the server running? " + start]


def _host_port(target: str) -> tuple[str, int | None] | None:
    """(host, port or None) of a one-address target; None for targets this cannot probe (unix sockets,
    lists of replicas, names with a scheme)."""
    for prefix in ("dns:///", "ipv4:", "ipv6:"):
        target = target.removeprefix(prefix)
    if "," in target or "://" in target or target.startswith("unix:"):
        return None
    if target.startswith("["):   # [::1]:50051
        host, _, rest = target[1:].partition("]")
        port = rest.removeprefix(":")
    elif target.count(":") == 1:
        host, _, port = target.partition(":")
    else:
        host, port = target, ""   # no port, or a bare IPv6 address
    if not port:
        return host, None
    return (host, int(port)) if port.isdigit() else None


def _speaks_tls(sock: socket.socket, host: str) -> bool:
    """Whether the server completes a TLS handshake (any certificate: this only asks which protocol)."""
    try:
        with _probe_context("h2", "http/1.1").wrap_socket(sock, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False


_NOT_SIGNED = {2, 18, 19, 20, 21}   # OpenSSL's X509_V_ERR_*: no issuer, self-signed, unable to verify
_OTHER_NAME = {62, 64}              # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def _certificate_problem(host: str, port: int, ca_cert: Path | None) -> tuple[str, str] | None:
    """What fails when the server's certificate is verified as gRPC verifies it (against --ca-cert or the
    system roots, then for the host name of --target), and the fix; None when it passes or the probe
    cannot tell."""
    try:
        context = ssl.create_default_context(cafile=ca_cert)
        with socket.create_connection((host, port), timeout=_PROBE_S) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as error:
        code, why = error.verify_code, error.verify_message
    except (OSError, ValueError):
        return None   # another failure: not a verdict on the certificate
    if code in _OTHER_NAME:
        return (
            f"its certificate does not name {host}",
            "connect by a name or address in its subject alternative names, or reissue it with this one",
        )
    if code in _NOT_SIGNED and ca_cert is not None:
        return (
            f"its certificate is not signed by --ca-cert {ca_cert}",
            "pass the CA that signed the server's certificate (or that certificate itself)",
        )
    if code in _NOT_SIGNED:
        return (
            "its certificate is not signed by a system root CA (self-signed or a private CA)",
            "pass --ca-cert CA.pem: the server's certificate or the CA that signed it",
        )
    return f"its certificate fails verification: {why}", "renew or fix the server's certificate"


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")  # and SETTINGS


def _refuses_client(host: str, port: int, args: argparse.Namespace) -> bool:
    """Whether the server, shown this client's certificate (or none), ends the connection after the TLS
    handshake without answering HTTP/2: what a server that requires client certificates (mTLS) does to
    one it does not accept (under TLS 1.3 the client's side of the handshake completes first)."""
    try:
        context = _probe_context("h2")
        if args.client_cert is not None and args.client_key is not None:
            context.load_cert_chain(args.client_cert, args.client_key, password=lambda: b"")
        with socket.create_connection((host, port), timeout=_PROBE_S) as raw:
            with context.wrap_socket(raw, server_hostname=host) as sock:
                sock.sendall(_H2_PREFACE)
                return sock.recv(16) == b""
    except ssl.SSLError as error:
        return "ALERT" in (error.reason or "")   # a TLS 1.2 server refuses inside the handshake
    except (OSError, ValueError):
        return False


def _probe_context(*alpn: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE   # a probe of the protocol; the real call verifies
    context.set_alpn_protocols(list(alpn))
    return context


def _first_bytes(host: str, port: int, tls: bool) -> bytes:
    """The start of the server's answer to an HTTP/1.0 request (a gRPC port answers with HTTP/2 frames)."""
    try:
        with socket.create_connection((host, port), timeout=_PROBE_S) as raw:
            sock = raw
            if tls:
                sock = _probe_context("http/1.1").wrap_socket(raw, server_hostname=host)
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            return sock.recv(16)
    except OSError:
        return b""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lipstream` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        # The server (and torch) is imported only here, so the client works without them.
        try:
            from lipstream.server.main import main as serve_main
        except ImportError as error:
            print(
                f"lipstream serve: the server is not installed ({error}); "
                "install it with: pip install 'lipstream[server]'",
                file=sys.stderr,
            )
            return ExitCode.USAGE
        return int(serve_main(argv[1:]))
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except UsageError as error:
        print(f"lipstream {args.command}: {error}", file=sys.stderr)
        return ExitCode.USAGE
    except LipStreamError as error:
        print(f"lipstream {args.command}: {error.code.name} from {args.target}: {error.details}",
              file=sys.stderr)
        if error.code == grpc.StatusCode.UNAVAILABLE:
            for line in _why_unavailable(args):
                print("  " + line, file=sys.stderr)
        elif error.code == grpc.StatusCode.DEADLINE_EXCEEDED and args.timeout is not None:
            print(f"  the call took longer than --timeout {args.timeout:g} s: raise it", file=sys.stderr)
        return _EXIT_BY_STATUS.get(error.code, ExitCode.SERVER_ERROR)
    except ImportError as error:   # PyAV missing for .mp4
        print(f"lipstream {args.command}: {error}", file=sys.stderr)
        return ExitCode.OUTPUT
    except OSError as error:
        print(f"lipstream {args.command}: cannot write the output: {error}", file=sys.stderr)
        return ExitCode.OUTPUT
    except KeyboardInterrupt:
        print(f"lipstream {args.command}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
