"""The gRPC face of the engine: protos to domain objects and back, and errors to status codes (one place)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lipstream.server.auth import TokenInterceptor
from lipstream.server.channels import ChannelRefused, ChannelRegistry, NoDisplay, check_channel
from lipstream.server.engine import MAX_AVATAR_IMAGE_BYTES, Engine, Session
from lipstream.server.events import (
    AudioEvent,
    BlendshapeOut,
    FrameEvent,
    SessionEvent,
    SessionStartedEvent,
    StatsEvent,
    UtteranceOut,
    VisemeOut,
    WarningOut,
    WordOut,
)
from lipstream.server.metrics import Metrics
from lipstream.server.mux import StageFailed
from lipstream.server.options import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    SessionOptions,
    Unavailable,
)
from lipstream.server.security import TLSFiles, TokenSet
from lipstream.server.tts_stage import UnreadableText, VoiceCannotSpeak
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc
from lipstream.v1.enums import (
    AudioFormat,
    FrameMode,
    LipSyncEngine,
    Pacing,
    UtteranceKind,
    from_proto,
    to_proto,
)

log = logging.getLogger(__name__)
E = TypeVar("E", bound=StrEnum)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LipStream"].full_name

# Checked in this order (VoiceCannotSpeak is a StageFailed that is the text's fault, not the server's).
_STATUS_OF = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    UnreadableText: grpc.StatusCode.INVALID_ARGUMENT,
    VoiceCannotSpeak: grpc.StatusCode.FAILED_PRECONDITION,
    StageFailed: grpc.StatusCode.INTERNAL,
    NoDisplay: grpc.StatusCode.NOT_FOUND,
    # Not UNAVAILABLE: that says "the server is down or draining" (clients retry on another replica, the
    # CLI diagnoses the connection); here the server is fine and the displays must speak first.
    ChannelRefused: grpc.StatusCode.FAILED_PRECONDITION,
}
_REFUSALS = (
    InvalidArgument, ResourceExhausted, Unavailable, DeadlineExceeded, StageFailed, NoDisplay, ChannelRefused
)
MAX_STATUS_CHARS = 1024
"""A status message is cut to this, so that it always fits gRPC's trailer (8 KB by default)."""
# -- protos -> domain ---------------------------------------------------------------------------------------
def options_from_proto(config: pb.SessionConfig) -> SessionOptions:
    """The domain options of a SessionConfig (defaults for 0 / unspecified); raises InvalidArgument."""
    video = config.video
    return SessionOptions(
        voice=config.voice,
        speaker=config.speaker,
        length_scale=config.length_scale if config.HasField("length_scale") else None,
        noise_scale=config.noise_scale if config.HasField("noise_scale") else None,
        noise_scale_w=config.noise_scale_w if config.HasField("noise_scale_w") else None,
        audio_format=_enum(AudioFormat, config.audio_format, "audio_format", AudioFormat.WAV_PCM16),
        sample_rate=config.sample_rate,
        video=video.enabled,
        avatar=video.avatar,
        fps=video.fps or 25.0,
        jpeg_quality=video.jpeg_quality or 80,
        frame_mode=_enum(FrameMode, video.frame_mode, "video.frame_mode", FrameMode.FULL_FRAME),
        engine=_enum(LipSyncEngine, video.engine, "video.engine", LipSyncEngine.AUTO),
        visemes=config.visemes,
        words=config.words,
        blendshapes=config.blendshapes,
        pacing=_enum(Pacing, config.pacing, "pacing", Pacing.AS_FAST_AS_POSSIBLE),
        input_sample_rate=_input_rate(config),
    ).validated()


def _input_rate(config: pb.SessionConfig) -> int:
    """0 for a text session; the input rate of an audio-in one (InputAudio set, its rate checked)."""
    if not config.HasField("input_audio"):
        return 0
    rate = config.input_audio.sample_rate
    if not 8000 <= rate <= 48000:
        raise InvalidArgument(
            f"input_audio.sample_rate {rate} is out of range: set the rate of the PCM16 you send, 8000..48000"
        )
    return rate


def _enum(kind: type[E], number: int, name: str, default: E) -> E:
    """The member of a proto enum field; its default when unspecified (0)."""
    try:
        member = from_proto(kind, number)
    except ValueError as exc:
        raise InvalidArgument(f"{name} {exc}") from None
    return default if member is None else member


_NO_FRAME_MODE = pb.VideoConfig.FRAME_MODE_UNSPECIFIED


# -- domain -> protos ---------------------------------------------------------------------------------------
def options_to_proto(options: SessionOptions) -> pb.SessionConfig:
    config = pb.SessionConfig(
        voice=options.voice,
        speaker=options.speaker,
        audio_format=to_proto(AudioFormat(options.audio_format)),
        sample_rate=options.sample_rate,
        video=pb.VideoConfig(
            enabled=options.video,
            avatar=options.avatar,
            fps=options.fps if options.video else 0.0,
            jpeg_quality=options.jpeg_quality if options.video else 0,
            frame_mode=to_proto(FrameMode(options.frame_mode)) if options.video else _NO_FRAME_MODE,
            engine=_engine_to_proto(options.engine),
        ),
        visemes=options.visemes,
        words=options.words,
        blendshapes=options.blendshapes,
        pacing=to_proto(Pacing(options.pacing)),
    )
    if options.input_sample_rate:
        config.input_audio.sample_rate = options.input_sample_rate
    for name in ("length_scale", "noise_scale", "noise_scale_w"):
        value = getattr(options, name)
        if value is not None:
            setattr(config, name, value)
    return config


def _engine_to_proto(engine: str) -> pb.LipSyncEngine:
    """"" (video off) is UNSPECIFIED."""
    return to_proto(LipSyncEngine(engine)) if engine else pb.LIP_SYNC_ENGINE_UNSPECIFIED


def event_to_proto(event: SessionEvent) -> pb.ConverseResponse:
    if isinstance(event, AudioEvent):
        return pb.ConverseResponse(
            audio=pb.AudioChunk(
                data=event.data,
                start_sample=event.start_sample,
                num_samples=event.num_samples,
                sample_rate=event.sample_rate,
                utterance_id=event.utterance_id,
            )
        )
    if isinstance(event, FrameEvent):
        return pb.ConverseResponse(
            frame=pb.VideoFrame(
                jpeg=event.jpeg,
                frame_index=event.frame_index,
                pts=event.pts,
                width=event.width,
                height=event.height,
                utterance_id=event.utterance_id,
                speaking=event.speaking,
                patch_x=event.patch_x,
                patch_y=event.patch_y,
                repeat_of=event.repeat_of,
            )
        )
    if isinstance(event, VisemeOut):
        return pb.ConverseResponse(
            viseme=pb.VisemeEvent(
                viseme_id=cast(pb.VisemeEvent.Viseme, event.viseme_id),  # an id of the 15 (mapping.py)
                start_sample=event.start_sample,
                end_sample=event.end_sample,
                utterance_id=event.utterance_id,
                phoneme=event.phoneme,
            )
        )
    if isinstance(event, UtteranceOut):
        return pb.ConverseResponse(
            utterance=pb.UtteranceEvent(
                kind=to_proto(UtteranceKind(event.kind)),
                utterance_id=event.utterance_id,
                text=event.text,
                start_sample=event.start_sample,
                end_sample=event.end_sample,
                spoken_text=event.spoken_text,
            )
        )
    if isinstance(event, WordOut):
        return pb.ConverseResponse(
            word=pb.WordEvent(
                word=event.word,
                start_sample=event.start_sample,
                end_sample=event.end_sample,
                utterance_id=event.utterance_id,
            )
        )
    if isinstance(event, WarningOut):
        return pb.ConverseResponse(
            warning=pb.SessionWarning(code=event.code, message=event.message, utterance_id=event.utterance_id)
        )
    if isinstance(event, BlendshapeOut):
        return pb.ConverseResponse(
            blendshapes=pb.BlendshapeFrame(
                frame_index=event.frame_index, pts=event.pts, weights=event.weights.tolist()
            )
        )
    if isinstance(event, SessionStartedEvent):
        return pb.ConverseResponse(
            started=pb.SessionStarted(
                session_id=event.session_id,
                config=options_to_proto(event.options),
                sample_rate=event.sample_rate,
                fps=event.fps,
                frame_width=event.frame_width,
                frame_height=event.frame_height,
                engine=_engine_to_proto(event.engine),
                blendshape_names=event.blendshape_names,
            )
        )
    if isinstance(event, StatsEvent):
        return pb.ConverseResponse(
            stats=pb.SessionStats(
                time_to_first_audio_s=event.time_to_first_audio_s,
                time_to_first_frame_s=event.time_to_first_frame_s,
                audio_seconds=event.audio_seconds,
                frames=event.frames,
                wall_seconds=event.wall_seconds,
                tts_real_time_factor=event.tts_real_time_factor,
                lipsync_real_time_factor=event.lipsync_real_time_factor,
                utterances=event.utterances,
                interrupted=event.interrupted,
            )
        )
    raise TypeError(f"no proto for event {type(event).__name__}")


# -- the service --------------------------------------------------------------------------------------------
class LipStreamServicer(lipstream_pb2_grpc.LipStreamServicer):
    def __init__(self, engine: Engine, channels: ChannelRegistry | None = None) -> None:
        """`channels`: the named display channels, shared with the web server in one process."""
        self._engine = engine
        self._metrics = engine.metrics
        self._channels = channels if channels is not None else ChannelRegistry()
        self.replica = engine.settings.replica_id

    @contextlib.asynccontextmanager
    async def _call(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Runs a call's body: a refusal (_REFUSALS) ends the call with its status; the call is counted in
        the metrics by the status it ends with."""
        code = grpc.StatusCode.OK
        try:
            yield
        except _REFUSALS as exc:
            code = _status_of(exc)
            await _abort(context, exc)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._metrics.rpcs.labels(method, code.name).inc()

    async def Converse(  # noqa: N802 (the proto's name)
        self, request_iterator: AsyncIterable[pb.ConverseRequest], context: grpc.aio.ServicerContext
    ) -> None:
        session: Session | None = None
        reader: asyncio.Task[None] | None = None
        failure: list[Exception] = []
        async with self._call("Converse", context):
            try:
                requests = aiter(request_iterator)
                first = await self._first_request(requests)
                channel = check_channel(first.config.channel) if first.config.channel else ""
                session = await self._engine.open_session(
                    options_from_proto(first.config), avatar_image=first.config.video.avatar_image
                )
                reader = asyncio.create_task(_read_requests(requests, session, failure))
                with self._channels.joined(channel, session):
                    await _send_events(session, context, self._metrics, channel)
                if session.timed_out is not None:
                    raise session.timed_out
                if failure:
                    raise failure[0]
                if session.stopped_by_shutdown:
                    raise Unavailable("the server shut down during this session: reconnect to continue")
            finally:
                await _stop(reader)  # before an abort, which would end the reader's pending read in an error
                if session is not None:
                    await session.close()

    async def _first_request(
        self, requests: AsyncIterator[pb.ConverseRequest | CorruptRequest]
    ) -> pb.ConverseRequest:
        """The SessionConfig message that must open a Converse stream, within the config timeout."""
        timeout_s = self._engine.settings.config_timeout_s
        try:
            first = await asyncio.wait_for(anext(requests, None), timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no SessionConfig came within {timeout_s:g} s of opening the Converse stream (the server's "
                "config timeout): send the config as the first message as soon as the stream is open"
            ) from None
        if isinstance(first, CorruptRequest):
            raise first.error()
        if first is None or first.WhichOneof("request") != "config":
            got = "nothing" if first is None else f"a {first.WhichOneof('request')} message"
            raise InvalidArgument(f"the first message of Converse must be a SessionConfig, got {got}")
        return first

    async def Synthesize(  # noqa: N802
        self, request: pb.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> None:
        session: Session | None = None
        async with self._call("Synthesize", context):
            try:
                if isinstance(request, CorruptRequest):
                    raise request.error()
                if request.config.channel:
                    raise InvalidArgument(
                        "SessionConfig.channel is for Converse (a session that waits for what it is told to "
                        "say); a Synthesize session ends after its text: leave channel empty"
                    )
                session = await self._engine.open_session(
                    options_from_proto(request.config), avatar_image=request.config.video.avatar_image
                )
                await session.send_text(request.text)
                await session.end_input()
                await _send_events(session, context, self._metrics)
                if session.timed_out is not None:
                    raise session.timed_out
                if session.stopped_by_shutdown:
                    raise Unavailable("the server shut down during this request: retry on another replica")
            finally:
                if session is not None:
                    await session.close()

    async def SayOnChannel(  # noqa: N802
        self, request: pb.SayOnChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChannelReply:
        reply = pb.ChannelReply()
        async with self._call("SayOnChannel", context):  # a refusal ends the call here, with its status
            if isinstance(request, CorruptRequest):
                raise request.error()
            said = await self._channels.say(request.channel, request.text, request.interrupt)
            reply.displays, reply.warning = said.displays, said.warning
        return reply

    async def StopChannel(  # noqa: N802
        self, request: pb.StopChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChannelReply:
        reply = pb.ChannelReply()
        async with self._call("StopChannel", context):
            if isinstance(request, CorruptRequest):
                raise request.error()
            reply.displays = await self._channels.stop(request.channel)
        return reply

    async def ListVoices(  # noqa: N802
        self, request: pb.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVoicesResponse:
        if isinstance(request, CorruptRequest):
            await _abort(context, request.error())
        return pb.ListVoicesResponse(
            voices=[
                pb.Voice(
                    name=v.name,
                    sample_rate=v.sample_rate,
                    speakers=v.speakers,
                    languages=v.languages,
                    format=v.format,
                    is_default=v.is_default,
                )
                for v in self._engine.voices()
            ]
        )

    async def ListAvatars(  # noqa: N802
        self, request: pb.ListAvatarsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAvatarsResponse:
        if isinstance(request, CorruptRequest):
            await _abort(context, request.error())
        avatars = await asyncio.to_thread(self._engine.avatars)
        return pb.ListAvatarsResponse(
            avatars=[
                pb.Avatar(
                    name=a.name,
                    width=a.width,
                    height=a.height,
                    num_frames=a.num_frames,
                    is_default=a.is_default,
                )
                for a in avatars
            ]
        )

    async def GetServerInfo(  # noqa: N802
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerInfo:
        if isinstance(request, CorruptRequest):
            await _abort(context, request.error())
        info = self._engine.info()
        return pb.ServerInfo(
            version=info.version,
            device=info.device,
            engines=[_engine_to_proto(e) for e in info.engines],
            default_voice=info.default_voice,
            default_avatar=info.default_avatar,
            max_sessions=info.max_sessions,
            active_sessions=info.active_sessions,
            max_text_chars=info.max_text_chars,
            torch_version=info.torch_version,
            replica=self.replica,
        )


async def _read_requests(
    requests: AsyncIterator[pb.ConverseRequest | CorruptRequest], session: Session, failure: list[Exception]
) -> None:
    """Feeds the session from the client's stream; a bad message ends the session (and frees its slot) at
    once, with its status."""
    try:
        async for request in requests:
            if isinstance(request, CorruptRequest):
                raise request.error()
            kind = request.WhichOneof("request")
            if kind == "text":
                await session.send_text(request.text.text, flush=request.text.flush)
            elif kind == "audio":
                await session.send_audio(request.audio.pcm16, request.audio.end_of_utterance)
            elif kind == "control":
                action = request.control.action
                if action == pb.Control.INTERRUPT:
                    await session.interrupt()
                elif action == pb.Control.END_OF_INPUT:
                    await session.end_input()
                else:
                    raise InvalidArgument(
                        f"control action {action} is unknown: use INTERRUPT or END_OF_INPUT"
                    )
            elif kind == "config":
                raise InvalidArgument(
                    "a second SessionConfig was sent: the config goes once, in the first message"
                )
            else:
                raise InvalidArgument("an empty ConverseRequest was sent: set config, text, audio or control")
        await session.end_input()  # the client closed its side: no more text will come
    except InvalidArgument as exc:
        failure.append(exc)
        await session.close()
    except grpc.aio.BaseError:  # the call ended under the read (cancelled, or aborted): nothing more comes
        await session.close()
    except Exception as exc:  # the server's fault: the session must still end, not wait for the client
        log.exception("reading the Converse stream failed")
        failure.append(StageFailed(f"reading the request stream failed: {exc}"))
        await session.close()


async def _send_events(
    session: Session, context: grpc.aio.ServicerContext, metrics: Metrics, channel: str = ""
) -> None:
    """Writes the session's events to the call, in order, until the last; `channel` is echoed in
    SessionStarted's config (it is the servicer's, not the engine's: the session never sees it).

    Written with context.write rather than yielded: a client that cancels while a message is on its way
    makes the write fail, which is then the cancellation it is (grpc.aio would log the failure of a yielded
    message as an error with a traceback when it comes before the news of the cancel)."""
    async with contextlib.aclosing(session.events()) as events:
        async for event in events:
            response = event_to_proto(event)
            if channel and response.HasField("started"):
                response.started.config.channel = channel
            try:
                await context.write(response)
            except grpc.aio.BaseError as exc:
                raise asyncio.CancelledError("the client went away") from exc
            metrics.count_sent(event)


async def _stop(reader: asyncio.Task[None] | None) -> None:
    if reader is not None and not reader.done():
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _status_of(exc: Exception) -> grpc.StatusCode:
    return next(code for kind, code in _STATUS_OF.items() if isinstance(exc, kind))


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    code = _status_of(exc)
    message = str(exc)
    if len(message) > MAX_STATUS_CHARS:
        message = message[:MAX_STATUS_CHARS] + "…"
    log.info("call ended with %s: %s", code.name, message)  # a refusal, or UNAVAILABLE at shutdown
    await context.abort(code, message)


@dataclass(frozen=True)
class CorruptRequest:
    """A request message that did not parse; the handler that gets it answers INVALID_ARGUMENT.

    grpc.aio turns a parser's exception into UNKNOWN with a traceback before a handler can see it, so the
    service's parsers return this instead."""

    type_name: str
    size: int
    reason: str

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"a message of {self.size} bytes is not a valid {self.type_name} ({self.reason[:200]}): send "
            "serialized protobuf messages of lipstream.v1 (reflection serves the .proto)"
        )


def _parser(message_class: type[Message]) -> Callable[[bytes], Message | CorruptRequest]:
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | CorruptRequest:
        try:
            return message_class.FromString(data)
        except Exception as exc:  # DecodeError, or the runtime's own complaint about the bytes
            return CorruptRequest(name, len(data), str(exc).rpartition("': ")[2] or str(exc))

    return parse


_HANDLER_OF = {  # (client streams, server streams) -> grpc's handler maker
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_servicer_to_server(servicer: LipStreamServicer, server: grpc.aio.Server) -> None:
    """What the generated add_LipStreamServicer_to_server does, with parsers that return CorruptRequest."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["LipStream"].methods:
        make = _HANDLER_OF[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_parser(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class PortUnavailable(OSError):
    """The gRPC port cannot be bound; the message names the address and the fix."""


def default_max_concurrent_rpcs(max_sessions: int) -> int:
    """Room for every session's stream plus unary and health calls, so a full server still answers them."""
    return max_sessions * 4 + 16


def max_receive_bytes(max_text_chars: int) -> int:
    """Larger than any valid request (the text bound in 4-byte UTF-8 plus a config, or a config with its
    avatar_image), so only junk is cut."""
    return max(1 << 20, max_text_chars * 4 + (64 << 10), MAX_AVATAR_IMAGE_BYTES + (64 << 10))


def server_options(engine: Engine, max_concurrent_rpcs: int | None = None) -> dict[str, Any]:
    """grpc.aio.server's keywords: the channel arguments and the concurrent-call bound."""
    settings = engine.settings
    return {
        "maximum_concurrent_rpcs": max_concurrent_rpcs or default_max_concurrent_rpcs(settings.max_sessions),
        "options": [
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", max_receive_bytes(settings.max_text_chars)),
            # SO_REUSEPORT off: with it (gRPC's default on Linux) a second server on a taken port binds too
            # and the kernel splits the connections between the two.
            ("grpc.so_reuseport", 0),
            # Ping an idle connection each minute and drop it when no answer comes in 20 s: a vanished
            # client (cable pulled, NAT forgot it) frees its session instead of holding it until TCP gives up.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            # Clients' own keepalive pings are welcome down to one every 10 s, also with no call open (a
            # health-checked channel waits that way); faster pingers get GOAWAY after 2 strikes.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    }


async def create_server(
    engine: Engine,
    host: str,
    port: int,
    *,
    tls: TLSFiles | None = None,
    tokens: TokenSet | None = None,
    max_concurrent_rpcs: int | None = None,
    channels: ChannelRegistry | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """An aio server (not yet started) with the service, health and reflection, and its bound port.

    tls: serve TLS with this key pair (client certificates required when it has a client CA). tokens: every
    LipStream call needs one of them as a bearer token (health and reflection stay open). channels: the
    named display channels, shared with the web server (a new registry when None).
    """
    interceptors = [TokenInterceptor(tokens)] if tokens is not None else []
    server = grpc.aio.server(interceptors=interceptors, **server_options(engine, max_concurrent_rpcs))
    servicer = LipStreamServicer(engine, channels)
    add_servicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            cert, key, client_ca = tls.read()
            credentials = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
            )
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio's "Failed to bind to address": say which and what to do
        bound = 0
    if bound == 0:
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: the port is taken (another lipstream serve?) or {host!r} is "
            "not an address of this machine: choose another --port (LIPSTREAM_PORT), or 0 for a free one"
        )
    servicer.replica = servicer.replica or f"{socket.gethostname()}:{bound}"
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return server, bound, health_servicer
