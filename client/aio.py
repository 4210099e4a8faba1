"""The asyncio client: `AsyncClient` owns a grpc.aio channel; streams are `AsyncEventStream` /
`AsyncConversation`. Same methods, keywords and events as the synchronous `Client`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any, Unpack

import grpc
import grpc.aio
from lipstream.v1 import lipstream_pb2 as pb
from lipstream.v1 import lipstream_pb2_grpc

from .config import (
    AvatarInfo,
    ChannelSaid,
    ServerInfo,
    SessionKeywords,
    VoiceInfo,
    channel_options,
    session_config,
)
from .credentials import call_metadata
from .errors import from_rpc_error
from .events import Event, SessionStarted, SessionStats, event_from_proto
from .sync import (
    AudioSource,
    Metadata,
    audio_request,
    check_text,
    default_target,
    input_audio_config,
    is_audio_piece,
)

__all__ = ["AsyncClient", "AsyncConversation", "AsyncEventStream"]

_INTERRUPT = pb.ConverseRequest(control=pb.Control(action=pb.Control.INTERRUPT))
_END_OF_INPUT = pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT))


class AsyncEventStream:
    """The events of one streaming call: `async for event in stream`. Ends after SessionStats."""

    def __init__(self, call: Any, target: str) -> None:
        self._call = call
        self._target = target
        self._audio_format = "wav_pcm16"
        self._closed = False
        self._source_error: BaseException | None = None
        self.started: SessionStarted | None = None
        self.stats: SessionStats | None = None

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            async for response in self._call:
                event = event_from_proto(response, self._audio_format)
                if isinstance(event, SessionStarted):
                    self.started = event
                    self._audio_format = event.audio_format
                    self._session_opened()
                elif isinstance(event, SessionStats):
                    self.stats = event
                yield event
        except (grpc.RpcError, asyncio.CancelledError) as error:
            if self._source_error is not None:
                raise self._source_error from None
            if isinstance(error, asyncio.CancelledError):
                task = asyncio.current_task()
                if self._closed and not (task is not None and task.cancelling()):
                    return  # the call was cancelled by close(), not this task
                raise
            if self._closed and error.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(error, self._target) from None
        finally:
            await self._stream_done()

    def _session_opened(self) -> None:
        """Hook: SessionStarted arrived."""

    async def _stream_done(self) -> None:
        """Hook: the response stream ended (normally, by error, or the caller stopped iterating)."""

    async def close(self) -> None:
        """Cancel the call if it is still running. Idempotent."""
        self._closed = True
        self._call.cancel()
        await self._stream_done()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncConversation(AsyncEventStream):
    """A bidirectional Converse call: `async for event in conversation`; `await send()`, `interrupt()`,
    `end()` from any task. The text given to converse() (a str, an iterable or an async iterable of chunks)
    is sent by a task this object owns; when it is exhausted the input ends (END_OF_INPUT).

    A plain (sync) iterable is read on the event loop: pass an async iterable for a source that blocks.
    """

    def __init__(
        self,
        stub: lipstream_pb2_grpc.LipStreamStub,
        config: pb.SessionConfig,
        text: str | Iterable[str] | AsyncIterable[str] | None,
        target: str,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        if isinstance(text, bytes | bytearray):
            raise TypeError(f"text must be str, not bytes: decode it first ({bytes(text[:20])!r}.decode())")
        self._outbox: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
        self._opened = asyncio.Event()
        self._input_ended = False
        self._source_stopped = False
        self._feeder: asyncio.Task[None] | None = None
        self._audio_in = config.HasField("input_audio")
        if text is not None and not isinstance(text, str | Iterable | AsyncIterable):
            raise TypeError(f"text must be a str, an iterable or an async iterable of str, got {text!r:.80}")
        call = stub.Converse(self._requests(config), timeout=timeout, metadata=metadata)
        super().__init__(call, target)
        if isinstance(text, str):
            self._put_text(text, flush=False)
            self._end_now()
        elif text is not None:
            loop = asyncio.get_running_loop()
            self._feeder = loop.create_task(self._feed(text), name="lipstream-text-source")

    async def _requests(self, config: pb.SessionConfig) -> AsyncIterator[pb.ConverseRequest]:
        yield pb.ConverseRequest(config=config)
        # grpc.aio reports INTERNAL instead of the server's status when a write races the server ending
        # the call (grpc/grpc#36066); a config the server rejects ends the call before SessionStarted,
        # so hold the text until the session is open (or the call is over) to keep that status.
        await self._opened.wait()
        while (request := await self._outbox.get()) is not None:
            yield request

    async def _feed(self, source: Iterable[Any] | AsyncIterable[Any]) -> None:
        try:
            if isinstance(source, AsyncIterable):
                async for chunk in source:
                    if self._source_stopped:
                        return
                    self._put_chunk(chunk)
            else:
                for chunk in source:
                    if self._source_stopped:
                        return
                    self._put_chunk(chunk)
                    await asyncio.sleep(0)  # let the request writer run between chunks
            if not self._source_stopped:
                self._end_now()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the caller's source failed: end the call, re-raise in __aiter__
            self._source_error = error
            self._call.cancel()

    def _put_chunk(self, chunk: Any) -> None:
        if self._audio_in:
            if len(chunk):
                self._put(audio_request(chunk))
        elif chunk:
            self._put_text(check_text(chunk), flush=False)

    def _put(self, request: pb.ConverseRequest) -> None:
        if self._input_ended:
            raise RuntimeError("send_audio() after end(): the conversation's input has ended")
        self._outbox.put_nowait(request)

    def _start_audio(self, audio: AudioSource | AsyncIterable[Any] | None) -> None:
        if audio is None:
            return
        if is_audio_piece(audio):
            self._put(audio_request(audio, end_of_utterance=True))
            self._end_now()
            return
        if not isinstance(audio, Iterable | AsyncIterable):
            raise TypeError(
                f"audio must be PCM16 bytes, an array or an (async) iterable of them: {audio!r:.40}"
            )
        loop = asyncio.get_running_loop()
        self._feeder = loop.create_task(self._feed(audio), name="lipstream-audio-source")

    async def send_audio(self, pcm16: Any, end_of_utterance: bool = False) -> None:
        """Send a piece of the audio of a session opened with converse_audio(): PCM16 bytes (little-endian
        mono at its input_sample_rate), an int16 array or a float array in [-1, 1]. `end_of_utterance=True`
        ends the utterance after these samples (UtteranceEvent FINISHED)."""
        self._put(audio_request(pcm16, end_of_utterance))

    def _put_text(self, text: str, flush: bool) -> None:
        if self._input_ended:
            raise RuntimeError("send() after end(): the conversation's input has ended")
        self._outbox.put_nowait(pb.ConverseRequest(text=pb.TextInput(text=text, flush=flush)))

    def _end_now(self) -> None:
        if not self._input_ended:
            self._input_ended = True
            self._outbox.put_nowait(_END_OF_INPUT)

    async def send(self, text: str, flush: bool = False) -> None:
        """Send a chunk of text; `flush=True` speaks what was sent without waiting for punctuation."""
        self._put_text(check_text(text), flush)

    async def interrupt(self) -> None:
        """Stop the current utterance now and drop the text not yet spoken, including the rest of the text
        source given to converse(). The conversation stays open for send(); end() it when done."""
        await self._stop_source()
        self._outbox.put_nowait(_INTERRUPT)

    async def end(self) -> None:
        """No more text: the server speaks the rest, sends SessionStats and ends the stream. Idempotent."""
        await self._stop_source()
        self._end_now()

    async def _stop_source(self) -> None:
        self._source_stopped = True
        feeder, self._feeder = self._feeder, None
        if feeder is not None and feeder is not asyncio.current_task():
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder

    def _session_opened(self) -> None:
        self._opened.set()

    async def _stream_done(self) -> None:
        self._opened.set()
        await self._stop_source()
        self._input_ended = True
        self._outbox.put_nowait(None)

    async def __aenter__(self) -> AsyncConversation:
        return self


class AsyncClient:
    """An asyncio lipstream client that owns its grpc.aio channel: `async with AsyncClient(...) as client:`.

    Same arguments as `Client`: target, credentials (TLS: `tls_credentials(...)`), token (bearer token),
    metadata (every call), timeout (default deadline).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        metadata: Metadata = (),
        timeout: float | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target or default_target()
        self._metadata = call_metadata(token, metadata)
        self._timeout = timeout
        chosen = channel_options(self.target, options)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=chosen)
        else:
            self._channel = grpc.aio.secure_channel(self.target, credentials, options=chosen)
        self._stub = lipstream_pb2_grpc.LipStreamStub(self._channel)

    def _call_args(self, timeout: float | None, metadata: Metadata | None) -> dict[str, Any]:
        return {
            "timeout": self._timeout if timeout is None else timeout,
            "metadata": self._metadata + tuple(metadata or ()),
        }

    def converse(
        self,
        text: str | Iterable[str] | AsyncIterable[str] | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **options: Unpack[SessionKeywords],
    ) -> AsyncConversation:
        """Open a conversation (call it inside a running event loop). `text`: a str, an (async) iterator
        of chunks, or None to drive it with send()/end(). The session options (SessionKeywords) are the
        proto SessionConfig fields."""
        config = session_config(**options)
        return AsyncConversation(self._stub, config, text, self.target, **self._call_args(timeout, metadata))

    def converse_audio(
        self,
        audio: AudioSource | AsyncIterable[Any] | None = None,
        *,
        input_sample_rate: int,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **options: Unpack[SessionKeywords],
    ) -> AsyncConversation:
        """Lip-sync audio from any TTS (call it inside a running event loop): `Client.converse_audio`'s
        arguments; `audio` may also be an async iterable of pieces."""
        config = input_audio_config(session_config(**options), input_sample_rate)
        call_args = self._call_args(timeout, metadata)
        conversation = AsyncConversation(self._stub, config, None, self.target, **call_args)
        conversation._start_audio(audio)
        return conversation

    def synthesize(
        self,
        text: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **options: Unpack[SessionKeywords],
    ) -> AsyncEventStream:
        """Speak one text: the same events as converse() for a session that ends after it."""
        config = session_config(**options)
        request = pb.SynthesizeRequest(config=config, text=check_text(text))
        call = self._stub.Synthesize(request, **self._call_args(timeout, metadata))
        return AsyncEventStream(call, self.target)

    async def voices(
        self, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[VoiceInfo]:
        response = await self._unary(self._stub.ListVoices, pb.ListVoicesRequest(), timeout, metadata)
        return [VoiceInfo.from_proto(v) for v in response.voices]

    async def avatars(
        self, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[AvatarInfo]:
        response = await self._unary(self._stub.ListAvatars, pb.ListAvatarsRequest(), timeout, metadata)
        return [AvatarInfo.from_proto(a) for a in response.avatars]

    async def info(self, *, timeout: float | None = None, metadata: Metadata | None = None) -> ServerInfo:
        return ServerInfo.from_proto(
            await self._unary(self._stub.GetServerInfo, pb.GetServerInfoRequest(), timeout, metadata)
        )

    async def say_on_channel(
        self,
        channel: str,
        text: str,
        interrupt: bool = False,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ChannelSaid:
        """`Client.say_on_channel`: every session on the display channel speaks `text`; how many took it and
        what some of their voices skip."""
        request = pb.SayOnChannelRequest(channel=channel, text=check_text(text), interrupt=interrupt)
        reply = await self._unary(self._stub.SayOnChannel, request, timeout, metadata)
        return ChannelSaid(int(reply.displays), str(reply.warning))

    async def stop_channel(
        self, channel: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> int:
        """`Client.stop_channel`: what the display channel's sessions are saying stops; how many."""
        request = pb.StopChannelRequest(channel=channel)
        return int((await self._unary(self._stub.StopChannel, request, timeout, metadata)).displays)

    async def _unary(
        self, method: Any, request: Any, timeout: float | None, metadata: Metadata | None
    ) -> Any:
        try:
            return await method(request, **self._call_args(timeout, metadata))
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.target) from None

    async def close(self) -> None:
        """Close the channel (cancels the calls still running). Idempotent."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
