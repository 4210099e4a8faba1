"""`lipstream serve`: the gRPC server (and the kiosk web page) for one engine, with a graceful shutdown."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from lipstream.server.engine import Engine
from lipstream.server.options import EngineSettings

log = logging.getLogger("lipstream.serve")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="lipstream serve",
        description="Serve lipstream over gRPC: text in, WAV chunks and lip-synced JPEG frames out.",
    )
    parser.add_argument(
        "--host",
        default=env("LIPSTREAM_HOST", "127.0.0.1"),
        help="address to listen on (env LIPSTREAM_HOST; default 127.0.0.1, 0.0.0.0 for all)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env("LIPSTREAM_PORT", "50051")),
        help="gRPC port (env LIPSTREAM_PORT; default 50051; 0 picks a free one)",
    )
    parser.add_argument(
        "--voice",
        default=env("LIPSTREAM_VOICE", ""),
        help="default voice: an installed name or a checkpoint path (env LIPSTREAM_VOICE; "
        "default en_US-joe-medium)",
    )
    parser.add_argument(
        "--extra-voice",
        action="append",
        default=[],
        metavar="VOICE",
        help="another voice to load (repeatable)",
    )
    parser.add_argument(
        "--avatar",
        default=env("LIPSTREAM_AVATAR", ""),
        help="default avatar: a built-in name or an image/video path (env LIPSTREAM_AVATAR; "
        "default astronaut)",
    )
    parser.add_argument(
        "--wav2lip-checkpoint",
        default=env("LIPSTREAM_WAV2LIP_CHECKPOINT", ""),
        help="wav2lip.pth or wav2lip_gan.pth: enables the WAV2LIP engine "
        "(env LIPSTREAM_WAV2LIP_CHECKPOINT; without it, the viseme renderer)",
    )
    parser.add_argument(
        "--device",
        default=env("LIPSTREAM_DEVICE", ""),
        help="torch device, e.g. cpu, cuda, cuda:1 (env LIPSTREAM_DEVICE; default: CUDA if present)",
    )
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=int(env("LIPSTREAM_MAX_SESSIONS", "16")),
        help="open sessions at most; more get RESOURCE_EXHAUSTED (env LIPSTREAM_MAX_SESSIONS)",
    )
    parser.add_argument(
        "--max-text-chars",
        type=int,
        default=int(env("LIPSTREAM_MAX_TEXT_CHARS", "10000")),
        help="bound on one text input and on the pending text of a session",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=float(env("LIPSTREAM_IDLE_TIMEOUT", "300")),
        metavar="SECONDS",
        help="end a session (with its stats, DEADLINE_EXCEEDED) after this long with no client input and "
        "nothing spoken; REALTIME idle frames do not count (env LIPSTREAM_IDLE_TIMEOUT; default 300; "
        "0 = never)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=float(env("LIPSTREAM_GRACE", "5")),
        help="seconds running sessions get to finish on SIGINT/SIGTERM (default 5)",
    )
    parser.add_argument(
        "--web-port",
        type=int,
        default=int(env("LIPSTREAM_WEB_PORT", "8080")),
        help="port of the kiosk web page (env LIPSTREAM_WEB_PORT; default 8080; 0 = off)",
    )
    parser.add_argument(
        "--replica-id",
        default=env("LIPSTREAM_REPLICA_ID", ""),
        help="this replica's name in ServerInfo.replica, for clients behind a proxy "
        "(env LIPSTREAM_REPLICA_ID; default hostname:port)",
    )
    parser.add_argument(
        "--log-level",
        default=env("LIPSTREAM_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (env LIPSTREAM_LOG_LEVEL)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> EngineSettings:
    return EngineSettings(
        voice=args.voice,
        extra_voices=tuple(args.extra_voice),
        avatar=args.avatar,
        wav2lip_checkpoint=args.wav2lip_checkpoint,
        device=args.device,
        max_sessions=args.max_sessions,
        max_text_chars=args.max_text_chars,
        shutdown_grace_s=args.grace,
        idle_timeout_s=args.idle_timeout,
        replica_id=args.replica_id,
    ).validated()


class Service:
    """Owns the engine, the gRPC server and the web server; starts them and stops them in a fixed order."""

    def __init__(self, engine: Engine, host: str, port: int, web_port: int | None = None) -> None:
        """`web_port` None: no web page; 0: the web page on a free port."""
        self.engine = engine
        self.host = host
        self.requested_port = port
        self.web_port = web_port
        self.port = 0
        self.web_url = ""
        self._server = None
        self._health = None
        self._web = None

    async def start(self) -> None:
        from lipstream.server.servicer import create_server

        self._server, self.port, self._health = await create_server(
            self.engine, self.host, self.requested_port
        )
        await self._server.start()
        if self.web_port is not None:
            self._web = _web_server(self.engine, self.host, self.web_port)
            if self._web is not None:
                try:
                    await self._web.start()
                except BaseException:  # e.g. the web port is taken: nothing is left listening
                    self._web = None
                    await self._server.stop(None)
                    self._server = None
                    raise
                self.web_url = self._web.url

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting (health NOT_SERVING, no new sessions) -> grace for running sessions -> the rest
        end with UNAVAILABLE -> the listeners close."""
        log.info("shutting down: %d sessions running", self.engine.active_sessions)
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self.engine.shutdown(grace_s)
        if self._web is not None:
            await self._web.stop()
        if self._server is not None:
            await self._server.stop(1.0)
        log.info("stopped")


def _web_server(engine: Engine, host: str, port: int):  # type: ignore[no-untyped-def]
    try:
        from lipstream.server.web import WebServer
    except ImportError as exc:
        log.warning("no web page (%s)", exc)
        return None
    return WebServer(engine, host, port)


async def serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    log.info("loading models ...")
    engine = await asyncio.to_thread(Engine, settings)
    service = Service(engine, args.host, args.port, args.web_port or None)
    try:
        await service.start()
    except BaseException:
        engine.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    info = engine.info()
    target = f"{args.host}:{service.port}"
    print(
        f"lipstream serving on {target} (voice {info.default_voice}, avatar {info.default_avatar or '-'}, "
        f"engines {', '.join(info.engines) or 'audio only'}, device {info.device})",
        flush=True,
    )
    print(f"  say something:  lipstream --target {target} say 'Hello there!' -o hello.mp4", flush=True)
    print(f"  grpcurl:        grpcurl -plaintext {target} list", flush=True)
    if service.web_url:
        print(f"  kiosk page:     {service.web_url}", flush=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await service.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:  # a bad setting, voice, avatar or checkpoint: the message says what to change
        print(f"lipstream serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, a file cannot be read
        print(f"lipstream serve: {exc}", file=sys.stderr)
        return 1
