"""`lipstream serve`: the gRPC server (and the kiosk web page) for one engine, with a graceful shutdown."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lipstream.server.channels import ChannelRegistry
from lipstream.server.config_file import ConfigFileError, apply_config_file, dump_settings, read_config_file
from lipstream.server.engine import Engine, freeze_loaded_objects
from lipstream.server.options import VOICE_PRECISIONS, EngineSettings
from lipstream.server.security import TLSFiles, TokenSet, missing_protection

if TYPE_CHECKING:
    import ssl

    import grpc
    from grpc_health.v1 import health
    from lipstream.server.web import WebServer

log = logging.getLogger("lipstream.serve")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="lipstream serve",
        description="Serve lipstream over gRPC: text in, WAV chunks and lip-synced JPEG frames out.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=env("LIPSTREAM_CONFIG", ""),
        help="a TOML file of settings: the flags' names in snake case as keys (max_sessions = 8); "
        "flags and env variables override it (env LIPSTREAM_CONFIG)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved settings as a config file and exit",
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
        "--extra-avatar",
        action="append",
        default=[],
        metavar="AVATAR",
        help="another avatar to load, an image or video path (repeatable); clients pick it by its file name",
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
        "--voice-precision",
        default=env("LIPSTREAM_VOICE_PRECISION", "fp32"),
        choices=VOICE_PRECISIONS,
        help="the voices' decoder in fp32 (exact), or bf16 on a CPU with AVX512_BF16 or AMX: about a fifth "
        "less CPU per second of speech, ~40 dB from fp32's audio (env LIPSTREAM_VOICE_PRECISION)",
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
        help="bound on one text input and on the pending text of a session (env LIPSTREAM_MAX_TEXT_CHARS)",
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
        help="seconds running sessions get to finish on SIGINT/SIGTERM (env LIPSTREAM_GRACE; default 5)",
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
    _add_security_arguments(parser)
    parser.add_argument(
        "--log-level",
        default=env("LIPSTREAM_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (env LIPSTREAM_LOG_LEVEL)",
    )
    return parser


def _add_security_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    group = parser.add_argument_group(
        "exposure", "TLS, tokens and limits; needed (or --insecure) when --host is not a loopback address"
    )
    group.add_argument(
        "--tls-cert",
        default=env("LIPSTREAM_TLS_CERT", ""),
        metavar="PATH",
        help="PEM certificate chain: gRPC over TLS and the page over HTTPS/WSS (env LIPSTREAM_TLS_CERT)",
    )
    group.add_argument(
        "--tls-key", default=env("LIPSTREAM_TLS_KEY", ""), metavar="PATH",
        help="PEM private key of --tls-cert (env LIPSTREAM_TLS_KEY)",
    )
    group.add_argument(
        "--tls-client-ca",
        default=env("LIPSTREAM_TLS_CLIENT_CA", ""),
        metavar="PATH",
        help="PEM CA(s): clients must show a certificate it signed, on gRPC and the page (mTLS; "
        "env LIPSTREAM_TLS_CLIENT_CA)",
    )
    group.add_argument(
        "--auth-token-file",
        default=env("LIPSTREAM_AUTH_TOKEN_FILE", ""),
        metavar="PATH",
        help="one token per line (# comments): every LipStream call and the page's WebSocket need one as "
        "'authorization: Bearer <token>'; reread on SIGHUP (env LIPSTREAM_AUTH_TOKEN_FILE)",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        default=env("LIPSTREAM_INSECURE", "").strip().lower() in ("1", "true", "yes", "on"),
        help="serve a non-loopback --host without TLS and tokens, e.g. behind a proxy that adds them, or on "
        "a network you trust (env LIPSTREAM_INSECURE=1)",
    )
    group.add_argument(
        "--web-allowed-origin",
        action="append",
        default=[o.strip() for o in env("LIPSTREAM_WEB_ALLOWED_ORIGINS", "").split(",") if o.strip()],
        metavar="ORIGIN",
        help="another Origin (e.g. https://kiosk.example.com) whose pages may open the WebSocket, besides "
        "the page's own (repeatable; env LIPSTREAM_WEB_ALLOWED_ORIGINS, comma-separated)",
    )
    group.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=int(env("LIPSTREAM_MAX_CONCURRENT_RPCS", "0")),
        help="gRPC calls at once, more get RESOURCE_EXHAUSTED (env LIPSTREAM_MAX_CONCURRENT_RPCS; "
        "default 0 = 4 per session + 16)",
    )


def tls_from_args(args: argparse.Namespace) -> TLSFiles | None:
    """The TLS files, checked now (readable, the key matches the certificate); None without --tls-cert."""
    if not (args.tls_cert or args.tls_key or args.tls_client_ca):
        return None
    if not (args.tls_cert and args.tls_key):
        raise ValueError(
            "TLS needs both --tls-cert PATH and --tls-key PATH (env LIPSTREAM_TLS_CERT, LIPSTREAM_TLS_KEY)"
            + ("; --tls-client-ca only adds client certificates to them" if args.tls_client_ca else "")
        )
    client_ca = Path(args.tls_client_ca) if args.tls_client_ca else None
    tls = TLSFiles(Path(args.tls_cert), Path(args.tls_key), client_ca)
    tls.read()        # names the file that cannot be read
    tls.ssl_context()  # says when the key does not match or a file is not PEM
    return tls


def tokens_from_args(args: argparse.Namespace) -> TokenSet | None:
    return TokenSet(args.auth_token_file) if args.auth_token_file else None


def exposure_check(args: argparse.Namespace) -> str | None:
    """The refusal line when --host is reachable from other machines without TLS and tokens (None: go on);
    with --insecure, the warning is logged instead."""
    tls = bool(args.tls_cert and args.tls_key)
    missing = missing_protection(args.host, tls=tls, tokens=bool(args.auth_token_file))
    if missing is None:
        return None
    if args.insecure:
        log.warning(
            "--insecure: serving %s without %s; anyone who can reach the port can use the server",
            args.host, missing,
        )
        return None
    return (
        f"--host {args.host} is reachable from other machines, so it needs {missing}; "
        "or pass --insecure to serve it unprotected on a network you trust"
    )


def settings_from_args(args: argparse.Namespace) -> EngineSettings:
    return EngineSettings(
        voice=args.voice,
        extra_voices=tuple(args.extra_voice),
        avatar=args.avatar,
        extra_avatars=tuple(args.extra_avatar),
        wav2lip_checkpoint=args.wav2lip_checkpoint,
        device=args.device,
        voice_precision=args.voice_precision,
        max_sessions=args.max_sessions,
        max_text_chars=args.max_text_chars,
        shutdown_grace_s=args.grace,
        idle_timeout_s=args.idle_timeout,
        replica_id=args.replica_id,
    ).validated()


class Service:
    """Owns the engine, the gRPC server and the web server; starts them and stops them in a fixed order."""

    def __init__(
        self,
        engine: Engine,
        host: str,
        port: int,
        web_port: int | None = None,
        *,
        tls: TLSFiles | None = None,
        tokens: TokenSet | None = None,
        allowed_origins: Sequence[str] = (),
        max_concurrent_rpcs: int | None = None,
    ) -> None:
        """`web_port` None: no web page; 0: the web page on a free port. `tls`, `tokens`: both ports serve
        TLS and need a token; `allowed_origins`: other pages that may open the WebSocket."""
        self.engine = engine
        self.host = host
        self.requested_port = port
        self.web_port = web_port
        self.tls = tls
        self.tokens = tokens
        self.allowed_origins = tuple(allowed_origins)
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.channels = ChannelRegistry()  # one for both servers: gRPC reaches the pages and POST the streams
        self.port = 0
        self.web_url = ""
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._web: WebServer | None = None

    async def start(self) -> None:
        from lipstream.server.servicer import create_server

        web_ssl = None if self.tls is None else self.tls.ssl_context()   # a bad file fails before any bind
        self._server, self.port, self._health = await create_server(
            self.engine, self.host, self.requested_port, tls=self.tls, tokens=self.tokens,
            max_concurrent_rpcs=self.max_concurrent_rpcs, channels=self.channels,
        )
        await self._server.start()
        if self.web_port is not None:
            self._web = _web_server(
                self.engine, self.host, self.web_port, tokens=self.tokens, ssl_context=web_ssl,
                allowed_origins=self.allowed_origins, channels=self.channels,
            )
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
        count = self.engine.active_sessions
        log.info("shutting down: %d session%s running", count, "s" * (count != 1))
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self.engine.shutdown(grace_s)
        if self._web is not None:
            await self._web.stop()
        if self._server is not None:
            await self._server.stop(1.0)
        log.info("stopped")


def _web_server(
    engine: Engine,
    host: str,
    port: int,
    *,
    tokens: TokenSet | None,
    ssl_context: ssl.SSLContext | None,
    allowed_origins: Sequence[str],
    channels: ChannelRegistry,
) -> WebServer | None:
    try:
        from lipstream.server.web import WebServer
    except ImportError as exc:
        log.warning("no web page (%s)", exc)
        return None
    return WebServer(
        engine, host, port, tokens=tokens, ssl_context=ssl_context, allowed_origins=allowed_origins,
        channels=channels,
    )


async def serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    tls = tls_from_args(args)   # before the models load: a bad file fails at once
    tokens = tokens_from_args(args)
    if tokens is not None:   # from now on: a SIGHUP while the models load must not end the process
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _reload_tokens, tokens)
    for name, port in (("--port", args.port), ("--web-port", args.web_port)):
        if port and _port_taken(args.host, port):  # before the models load: seconds, not a minute, to say so
            from lipstream.server.servicer import PortUnavailable

            raise PortUnavailable(
                f"cannot listen on {args.host}:{port}: the port is taken (another lipstream serve?): choose "
                f"another {name}, or 0 for a free one"
            )
    log.info("loading models ...")
    engine = await asyncio.to_thread(Engine, settings)
    freeze_loaded_objects()
    service = Service(
        engine, args.host, args.port, args.web_port or None, tls=tls, tokens=tokens,
        allowed_origins=args.web_allowed_origin, max_concurrent_rpcs=args.max_concurrent_rpcs or None,
    )
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
    client_env, client_flags, grpcurl_flags = _connect_hints(tls, tokens)
    say = f"{client_env}lipstream --target {target}{client_flags} say 'Hello there!' -o hello.mp4"
    print(f"  say something:  {say}", flush=True)
    print(f"  grpcurl:        grpcurl {grpcurl_flags}{target} list", flush=True)
    if service.web_url:
        token_hint = "?token=YOUR_TOKEN" if tokens is not None else ""
        print(f"  kiosk page:     {service.web_url}{token_hint}", flush=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        await service.stop()
    return 0


def _port_taken(host: str, port: int) -> bool:
    """Whether something listens on host:port already (the real bind, later, still has the last word)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False  # the bind says what is wrong with the host
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _reload_tokens(tokens: TokenSet) -> None:
    """SIGHUP: reread the token file; a file that cannot be read or holds no token changes nothing."""
    try:
        tokens.reload()
    except ValueError as exc:
        log.warning("%s; the %d tokens loaded before stay in force", exc, len(tokens))


def _connect_hints(tls: TLSFiles | None, tokens: TokenSet | None) -> tuple[str, str, str]:
    """The environment and flags `lipstream` needs, and the flags `grpcurl` needs, to reach this server (the
    token is never printed). The client's token goes in LIPSTREAM_TOKEN: a --token flag shows in `ps`."""
    client_env, client, grpcurl = "", "", "-plaintext "
    if tls is not None:
        client += " --ca-cert CA.pem"
        grpcurl = "-cacert CA.pem "
        if tls.client_ca is not None:
            client += " --client-cert CLIENT.pem --client-key CLIENT.key"
            grpcurl += "-cert CLIENT.pem -key CLIENT.key "
    if tokens is not None:
        client_env = "LIPSTREAM_TOKEN=$TOKEN "
        grpcurl += '-H "authorization: Bearer $TOKEN" '
    return client_env, client, grpcurl


def parse_args(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Flags over env over the --config file over the defaults; a bad file raises ConfigFileError."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        apply_config_file(parser, read_config_file(first.config), first.config)
    return parser, parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser, args = parse_args(list(sys.argv[1:] if argv is None else argv))
    except ConfigFileError as exc:
        print(f"lipstream serve: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_settings(parser, args), end="")
        return 0
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    refusal = exposure_check(args)   # before anything loads or binds
    if refusal is not None:
        print(f"lipstream serve: {refusal}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:  # a bad setting, voice, avatar or checkpoint: the message says what to change
        print(f"lipstream serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, a file cannot be read: the message names it and the fix
        print(f"lipstream serve: {exc}", file=sys.stderr)
        return 2
