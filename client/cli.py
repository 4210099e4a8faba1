"""The `lipstream` command line: `say`, `voices`, `avatars`, `info`, and `serve` (the server, lazily).

Exit codes (ExitCode): 0 ok, 2 usage, 3 no server at the target, 4 the server rejected the request,
5 the server is busy, 6 the deadline passed, 7 another server error, 8 the output could not be written,
9 the server wants a (different) token, 130 interrupted by Ctrl-C; 1 is an unexpected error (a bug: please
report it).
"""

from __future__ import annotations

import argparse
import codecs
import enum
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import grpc

from .config import VideoConfig
from .credentials import tls_credentials
from .errors import LipStreamError
from .events import AudioChunk, Event, SessionStarted, SessionStats, UtteranceEvent, VideoFrame
from .media import Mp4Writer, write_wav
from .sync import DEFAULT_TARGET, Client

__all__ = ["ExitCode", "main"]


class ExitCode(enum.IntEnum):
    OK = 0
    UNEXPECTED = 1          # a bug: the traceback is printed
    USAGE = 2               # bad command line (argparse's code)
    UNAVAILABLE = 3         # no server answers at --target (or it is shutting down)
    INVALID_ARGUMENT = 4    # the server rejected the request: unknown voice / avatar, bad value, long text
    BUSY = 5                # the server is at its session limit (RESOURCE_EXHAUSTED)
    DEADLINE = 6            # --timeout passed (DEADLINE_EXCEEDED)
    SERVER_ERROR = 7        # any other gRPC status from the server
    OUTPUT = 8              # the output file could not be written (or PyAV is missing for .mp4)
    UNAUTHENTICATED = 9     # no token, or one the server does not accept
    INTERRUPTED = 130       # Ctrl-C


_EXIT_BY_STATUS = {
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNAVAILABLE,
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.INVALID_ARGUMENT,
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
    parser.add_argument(
        "--target", default=os.environ.get("LIPSTREAM_TARGET") or DEFAULT_TARGET,
        help=f"server HOST:PORT (default: $LIPSTREAM_TARGET or {DEFAULT_TARGET})",
    )
    parser.add_argument("--timeout", type=float, default=None, help="deadline of the call in seconds")
    env = os.environ.get
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system root certificates)")
    parser.add_argument(
        "--ca-cert", type=Path, default=env("LIPSTREAM_CA_CERT") or None, metavar="PATH",
        help="PEM root certificate(s) that signed the server's (implies --tls; env LIPSTREAM_CA_CERT)",
    )
    parser.add_argument(
        "--client-cert", type=Path, default=env("LIPSTREAM_CLIENT_CERT") or None, metavar="PATH",
        help="PEM client certificate for a server that requires one (mTLS; implies --tls; "
        "env LIPSTREAM_CLIENT_CERT)",
    )
    parser.add_argument(
        "--client-key", type=Path, default=env("LIPSTREAM_CLIENT_KEY") or None, metavar="PATH",
        help="PEM private key of --client-cert (env LIPSTREAM_CLIENT_KEY)",
    )
    parser.add_argument(
        "--token", default=env("LIPSTREAM_TOKEN") or None,
        help="bearer token for a server started with --auth-token-file (env LIPSTREAM_TOKEN, which other "
        "users cannot see in the process list)",
    )
    parser.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE",
        help="gRPC metadata sent with the call, e.g. authorization='Bearer ...' (repeatable)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    say = commands.add_parser("say", help="speak a text into an .mp4 (video + audio) or a .wav file")
    say.add_argument("text", help='the text to speak; "-" streams it from stdin as it arrives')
    say.add_argument("-o", "--output", required=True, type=Path, help="out.mp4 or out.wav")
    say.add_argument("--voice", default="", help="voice name (default: the server's)")
    say.add_argument("--speaker", default="", help="speaker of a multi-speaker voice")
    say.add_argument("--length-scale", type=float, help="speed: > 1 slower, < 1 faster")
    say.add_argument("--noise-scale", type=float)
    say.add_argument("--noise-scale-w", type=float)
    say.add_argument("--sample-rate", type=int, default=0, help="output sample rate (default: the voice's)")
    say.add_argument("--avatar", default="", help="avatar name (.mp4 only; default: the server's)")
    say.add_argument("--fps", type=float, default=0.0, help="video frame rate (default: the server's, 25)")
    say.add_argument("--engine", default="auto", choices=["auto", "wav2lip", "viseme"], help="lip sync")
    say.add_argument("-q", "--quiet", action="store_true", help="no progress display on stderr")

    for name, what in (
        ("voices", "list the server's voices"),
        ("avatars", "list the server's avatars"),
        ("info", "show the server's version, device, engines and limits"),
    ):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("--json", action="store_true", help="print JSON")

    commands.add_parser("serve", help="run the server (all flags go to it: lipstream serve --help)")
    return parser


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
    otherwise) while a long text streams."""

    def __init__(self, out: TextIO, total_chars: int | None, enabled: bool) -> None:
        self.out = out
        self.total_chars = total_chars
        self.enabled = enabled
        self.tty = out.isatty()
        self.spoken_chars = 0
        self.utterances = 0
        self.audio_seconds = 0.0
        self.frames = 0
        self._last_draw = 0.0

    def update(self, event: object) -> None:
        if isinstance(event, AudioChunk):
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

    def _line(self) -> str:
        done = ""
        if self.total_chars:
            done = f"{min(100, round(100 * self.spoken_chars / self.total_chars))}% | "
        return (
            f"lipstream say: {done}{self.utterances} utterances | {self.audio_seconds:.1f} s audio | "
            f"{self.frames} frames"
        )

    def _write(self, text: str) -> None:
        if self.enabled:
            self.out.write(text)
            self.out.flush()
            self._last_draw = time.monotonic()

    def finish(self, summary: str) -> None:
        if self.tty:
            self._write("\r\x1b[K")
        self._write(summary + "\n")


def _say(client: Client, args: argparse.Namespace, timeout: float | None) -> ExitCode:
    suffix = args.output.suffix.lower()
    if suffix not in (".mp4", ".wav"):
        raise UsageError(f"-o {args.output}: the output must end in .mp4 (video and audio) or .wav (audio)")
    if suffix == ".wav" and (args.avatar or args.fps):
        raise UsageError("--avatar and --fps need an .mp4 output; a .wav has no video")
    if not args.output.parent.is_dir():  # fail before the server does any work
        raise OSError(f"{args.output.parent} is not a directory: create it first")
    text = _stdin_chunks(sys.stdin) if args.text == "-" else args.text
    if isinstance(text, str) and not text.strip():
        raise UsageError('the text is empty: pass the words to say, or "-" to read them from stdin')
    video: bool | VideoConfig = False
    writer: Mp4Writer | None = None
    if suffix == ".mp4":
        video = VideoConfig(avatar=args.avatar, fps=args.fps, engine=args.engine)
        writer = Mp4Writer(args.output)   # imports PyAV now: missing PyAV is exit 8 before any call
    total = _letters(text) if isinstance(text, str) else None
    progress = Progress(sys.stderr, total, enabled=not args.quiet)
    audio_events: list[Event] = []   # for a .wav: SessionStarted and the AudioChunks
    stats: SessionStats | None = None
    try:
        with client.converse(
            text, voice=args.voice, speaker=args.speaker, length_scale=args.length_scale,
            noise_scale=args.noise_scale, noise_scale_w=args.noise_scale_w, sample_rate=args.sample_rate,
            video=video, timeout=timeout,
        ) as conversation:
            for event in conversation:
                progress.update(event)
                if writer is not None:
                    writer.add(event)
                elif isinstance(event, AudioChunk | SessionStarted):
                    audio_events.append(event)
                if isinstance(event, SessionStats):
                    stats = event
        if writer is not None:
            writer.close()
        else:
            write_wav(args.output, audio_events)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # the original failure is what the user needs to see
                pass
        args.output.unlink(missing_ok=True)   # no half-written file left behind
        raise
    audio = stats.audio_seconds if stats else progress.audio_seconds
    first = f", first audio after {stats.time_to_first_audio_s:.2f} s" if stats else ""
    frames = f", {progress.frames} frames" if writer is not None else ""
    progress.finish(f"lipstream say: wrote {args.output} ({audio:.1f} s audio{frames}{first})")
    return ExitCode.OK


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


def _client(args: argparse.Namespace) -> Client:
    credentials = _credentials(args)
    try:
        return Client(
            args.target, credentials=credentials, token=args.token, metadata=_metadata(args.metadata)
        )
    except ValueError as error:   # a malformed token, or a token and an authorization --metadata
        raise UsageError(str(error).replace("token=...", "--token")) from None


def _run(args: argparse.Namespace) -> ExitCode:
    with _client(args) as client:
        if args.command == "say":
            return _say(client, args, args.timeout)
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
            print("  is the server running? start one with `make run` or `lipstream serve`", file=sys.stderr)
            if not _uses_tls(args):
                print("  does it serve TLS? then pass --ca-cert CA.pem (or --tls)", file=sys.stderr)
            elif args.client_cert is None:
                print("  does it require client certificates? then pass --client-cert and --client-key",
                      file=sys.stderr)
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
