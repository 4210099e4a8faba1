"""The synchronous client: `Client` owns a grpc channel; streams are `EventStream` / `Conversation`."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Unpack

import grpc
import numpy as np
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

__all__ = ["DEFAULT_TARGET", "Client", "Conversation", "EventStream", "check_audio", "default_target"]


DEFAULT_TARGET = "127.0.0.1:50051"
Metadata = Sequence[tuple[str, str | bytes]]

_INTERRUPT = pb.ConverseRequest(control=pb.Control(action=pb.Control.INTERRUPT))
_END_OF_INPUT = pb.ConverseRequest(control=pb.Control(action=pb.Control.END_OF_INPUT))
# How long close() waits for the thread that reads the caller's text source (it may be blocked in the
# caller's own iterator, which nothing can interrupt; the thread is a daemon then).
_FEEDER_JOIN_S = 1.0


def default_target() -> str:
    """$LIPSTREAM_TARGET, or 127.0.0.1:50051."""
    return os.environ.get("LIPSTREAM_TARGET") or DEFAULT_TARGET


def check_text(chunk: object) -> str:
    if not isinstance(chunk, str):
        raise TypeError(f"text chunks must be str, got {type(chunk).__name__}: {chunk!r:.80}")
    return chunk


def check_audio(chunk: object) -> bytes:
    """PCM16 little-endian mono bytes from a bytes-like object (whole samples), an int16 array, or a float
    array in [-1, 1] (clipped)."""
    if isinstance(chunk, bytes | bytearray | memoryview):
        data = bytes(chunk)
        if len(data) % 2:
            raise ValueError(f"PCM16 audio has 2 bytes a sample, got {len(data)} bytes: send whole samples")
        return data
    if isinstance(chunk, np.ndarray):
        if chunk.ndim != 1:
            raise ValueError(f"audio must be mono (one dimension), got shape {chunk.shape}: mix it down")
        if chunk.dtype == np.int16:
            return chunk.astype("<i2", copy=False).tobytes()
        if np.issubdtype(chunk.dtype, np.floating):
            scaled = np.rint(np.clip(chunk, -1.0, 1.0) * 32767.0)
            return scaled.astype("<i2").tobytes()
        raise TypeError(f"audio arrays must be int16 or float in [-1, 1], got {chunk.dtype}")
    raise TypeError(f"audio chunks must be PCM16 bytes or a numpy array, got {type(chunk).__name__}")


AudioSource = bytes | bytearray | memoryview | np.ndarray | Iterable[bytes | np.ndarray]
"""What converse_audio() takes: one piece of PCM16 (bytes, int16 or float array) or an iterable of pieces."""


def audio_request(pcm16: object, end_of_utterance: bool = False) -> pb.ConverseRequest:
    piece = pb.AudioInput(pcm16=check_audio(pcm16), end_of_utterance=end_of_utterance)
    return pb.ConverseRequest(audio=piece)


def is_audio_piece(source: object) -> bool:
    return isinstance(source, bytes | bytearray | memoryview | np.ndarray)


def input_audio_config(config: pb.SessionConfig, input_sample_rate: int) -> pb.SessionConfig:
    """`config` made an audio-in session: the client's PCM16 at `input_sample_rate` instead of text."""
    config.input_audio.CopyFrom(pb.InputAudio(sample_rate=int(input_sample_rate)))
    return config


class EventStream:
    """The events of one streaming call, in media-time order; iterate it once. Ends after SessionStats.

    `started` and `stats` hold the first and last event once seen. close() cancels the call.
    """

    def __init__(self, call: Any, target: str) -> None:
        self._call = call
        self._target = target
        self._audio_format = "wav_pcm16"
        self._closed = False
        self._source_error: BaseException | None = None
        self.started: SessionStarted | None = None
        self.stats: SessionStats | None = None

    def __iter__(self) -> Iterator[Event]:
        try:
            for response in self._call:
                event = event_from_proto(response, self._audio_format)
                if isinstance(event, SessionStarted):
                    self.started = event
                    self._audio_format = event.audio_format
                elif isinstance(event, SessionStats):
                    self.stats = event
                yield event
        except grpc.RpcError as error:
            if self._source_error is not None:
                raise self._source_error from None
            if self._closed and error.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(error, self._target) from None
        finally:
            self._stream_done()

    def _stream_done(self) -> None:
        """Hook: the response stream ended (normally, by error, or the caller stopped iterating)."""

    def close(self) -> None:
        """Cancel the call if it is still running (the server stops this session's work). Idempotent."""
        self._closed = True
        self._call.cancel()
        self._stream_done()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Conversation(EventStream):
    """A bidirectional Converse call. Iterate it for events; from any thread, `send()` more text,
    `interrupt()` the speech and `end()` the input.

    The text given to `Client.converse` (a str or an iterator of chunks, e.g. an LLM's tokens) is sent by a
    thread this object owns; when it is exhausted, the input ends (END_OF_INPUT) and the stream ends after
    the server has spoken everything and sent SessionStats.
    """

    def __init__(
        self,
        stub: lipstream_pb2_grpc.LipStreamStub,
        config: pb.SessionConfig,
        text: str | Iterable[str] | None,
        target: str,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        if isinstance(text, bytes | bytearray):
            raise TypeError(f"text must be str, not bytes: decode it first ({bytes(text[:20])!r}.decode())")
        self._outbox: queue.Queue[pb.ConverseRequest | None] = queue.Queue()
        self._lock = threading.Lock()        # orders the source's chunks against interrupt()
        self._input_ended = False
        self._source_stopped = False
        self._feeder: threading.Thread | None = None
        self._audio_in = config.HasField("input_audio")
        call = stub.Converse(self._requests(config), timeout=timeout, metadata=metadata)
        super().__init__(call, target)
        if isinstance(text, str):
            self.send(text)
            self.end()
        elif text is not None:
            if not isinstance(text, Iterable):
                self.close()
                raise TypeError(f"text must be a str or an iterable of str, got {type(text).__name__}")
            self._feeder = threading.Thread(
                target=self._feed, args=(iter(text),), name="lipstream-text-source", daemon=True
            )
            self._feeder.start()

    def _requests(self, config: pb.SessionConfig) -> Iterator[pb.ConverseRequest]:
        yield pb.ConverseRequest(config=config)
        while (request := self._outbox.get()) is not None:
            yield request

    def _feed(self, source: Iterator[Any]) -> None:
        try:
            for chunk in source:
                with self._lock:
                    if self._source_stopped:
                        return
                    if self._audio_in:
                        if len(chunk):
                            self._outbox.put(audio_request(chunk))
                    elif chunk:
                        self._outbox.put(pb.ConverseRequest(text=pb.TextInput(text=check_text(chunk))))
            with self._lock:
                if not self._source_stopped:
                    self._end_locked()
        except BaseException as error:  # the caller's iterator failed: end the call, re-raise in __iter__
            self._source_error = error
            self._call.cancel()

    def send(self, text: str, flush: bool = False) -> None:
        """Send a chunk of text (any size); `flush=True` speaks what was sent without waiting for a
        punctuation mark."""
        check_text(text)
        with self._lock:
            if self._input_ended:
                raise RuntimeError("send() after end(): the conversation's input has ended")
            self._outbox.put(pb.ConverseRequest(text=pb.TextInput(text=text, flush=flush)))

    def send_audio(self, pcm16: bytes | np.ndarray, end_of_utterance: bool = False) -> None:
        """Send a piece of the audio of a session opened with converse_audio(): PCM16 bytes (little-endian
        mono at its input_sample_rate), an int16 array or a float array in [-1, 1]. `end_of_utterance=True`
        ends the utterance after these samples (UtteranceEvent FINISHED)."""
        request = audio_request(pcm16, end_of_utterance)
        with self._lock:
            if self._input_ended:
                raise RuntimeError("send_audio() after end(): the conversation's input has ended")
            self._outbox.put(request)

    def _start_audio(self, audio: AudioSource | None) -> None:
        if audio is None:
            return
        if is_audio_piece(audio):
            self.send_audio(audio, end_of_utterance=True)  # type: ignore[arg-type]
            self.end()
            return
        if not isinstance(audio, Iterable):
            self.close()
            raise TypeError(f"audio must be PCM16 bytes, an array or an iterable of them, got {audio!r:.80}")
        self._feeder = threading.Thread(
            target=self._feed, args=(iter(audio),), name="lipstream-audio-source", daemon=True
        )
        self._feeder.start()

    def interrupt(self) -> None:
        """Stop the current utterance now and drop the text not yet spoken, including the rest of the text
        source given to converse(). The conversation stays open for send(); end() it when done."""
        with self._lock:
            self._source_stopped = True
            self._outbox.put(_INTERRUPT)

    def end(self) -> None:
        """No more text: the server speaks the rest, sends SessionStats and ends the stream. Idempotent."""
        with self._lock:
            self._source_stopped = True
            self._end_locked()

    def _end_locked(self) -> None:
        if not self._input_ended:
            self._input_ended = True
            self._outbox.put(_END_OF_INPUT)

    def _stream_done(self) -> None:
        # Let grpc's request thread leave _requests(), and stop reading the caller's text source.
        with self._lock:
            self._source_stopped = True
            self._input_ended = True
        self._outbox.put(None)
        if self._feeder is not None and self._feeder is not threading.current_thread():
            self._feeder.join(_FEEDER_JOIN_S)

    def __enter__(self) -> Conversation:
        return self


class Client:
    """A synchronous lipstream client. It owns its channel: use `with Client(...) as client:` or close().

    target: "host:port" (default $LIPSTREAM_TARGET or 127.0.0.1:50051), or replicas "ipv4:host:port,host:port"
    (new calls go round-robin to those whose health is SERVING; see README "Scale-out"). credentials: TLS
    channel credentials, e.g. `tls_credentials(ca_cert="ca.pem")` (add client_cert/client_key for mTLS);
    None for a plain-text channel. token: the bearer token of a server started with --auth-token-file (sent
    as "authorization: Bearer <token>" with every call). metadata: more metadata for every call. timeout:
    the default deadline in seconds of every call.
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
            self._channel = grpc.insecure_channel(self.target, options=chosen)
        else:
            self._channel = grpc.secure_channel(self.target, credentials, options=chosen)
        self._stub = lipstream_pb2_grpc.LipStreamStub(self._channel)

    def _call_args(self, timeout: float | None, metadata: Metadata | None) -> dict[str, Any]:
        return {
            "timeout": self._timeout if timeout is None else timeout,
            "metadata": self._metadata + tuple(metadata or ()),
        }

    def converse(
        self,
        text: str | Iterable[str] | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **options: Unpack[SessionKeywords],
    ) -> Conversation:
        """Open a conversation. `text`: a str, an iterator of chunks (an LLM's token stream), or None to
        drive it with send()/end(). The session options (SessionKeywords) are the SessionConfig fields."""
        config = session_config(**options)
        return Conversation(self._stub, config, text, self.target, **self._call_args(timeout, metadata))

    def converse_audio(
        self,
        audio: AudioSource | None = None,
        *,
        input_sample_rate: int,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **options: Unpack[SessionKeywords],
    ) -> Conversation:
        """Lip-sync audio from any TTS: a session whose input is the caller's PCM16 mono at
        `input_sample_rate` (8000..48000) instead of text. `audio`: one piece (PCM16 bytes, an int16 array,
        a float array in [-1, 1]; the input ends after it), an iterable of pieces (the input ends when it
        is exhausted), or None to drive it with send_audio()/end(). The events are converse()'s: the same
        audio back in `audio_format` at `sample_rate` (0: the input's rate), frames, utterance events. The
        voice's options (voice, speaker, length_scale, noise scales) do not apply."""
        config = input_audio_config(session_config(**options), input_sample_rate)
        call_args = self._call_args(timeout, metadata)
        conversation = Conversation(self._stub, config, None, self.target, **call_args)
        conversation._start_audio(audio)
        return conversation

    def synthesize(
        self,
        text: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **options: Unpack[SessionKeywords],
    ) -> EventStream:
        """Speak one text: the same events as converse() for a session that ends after it."""
        config = session_config(**options)
        request = pb.SynthesizeRequest(config=config, text=check_text(text))
        call = self._stub.Synthesize(request, **self._call_args(timeout, metadata))
        return EventStream(call, self.target)

    def voices(self, *, timeout: float | None = None, metadata: Metadata | None = None) -> list[VoiceInfo]:
        response = self._unary(self._stub.ListVoices, pb.ListVoicesRequest(), timeout, metadata)
        return [VoiceInfo.from_proto(v) for v in response.voices]

    def avatars(self, *, timeout: float | None = None, metadata: Metadata | None = None) -> list[AvatarInfo]:
        response = self._unary(self._stub.ListAvatars, pb.ListAvatarsRequest(), timeout, metadata)
        return [AvatarInfo.from_proto(a) for a in response.avatars]

    def info(self, *, timeout: float | None = None, metadata: Metadata | None = None) -> ServerInfo:
        return ServerInfo.from_proto(
            self._unary(self._stub.GetServerInfo, pb.GetServerInfoRequest(), timeout, metadata)
        )

    def say_on_channel(
        self,
        channel: str,
        text: str,
        interrupt: bool = False,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ChannelSaid:
        """Every session on the named display channel (kiosk pages opened as /?channel=NAME, converse()
        streams with channel=NAME) speaks `text`; `interrupt`: what they are saying stops first. Returns how
        many took it and what some of their voices skip. LipStreamError NOT_FOUND when none is on the
        channel, FAILED_PRECONDITION when none could take it now, INVALID_ARGUMENT for text with no word, over
        the server's --max-text-chars, or in scripts no display's voice reads."""
        request = pb.SayOnChannelRequest(channel=channel, text=check_text(text), interrupt=interrupt)
        reply = self._unary(self._stub.SayOnChannel, request, timeout, metadata)
        return ChannelSaid(int(reply.displays), str(reply.warning))

    def stop_channel(
        self, channel: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> int:
        """What the sessions on the display channel are saying stops (they go on); returns how many."""
        request = pb.StopChannelRequest(channel=channel)
        return int(self._unary(self._stub.StopChannel, request, timeout, metadata).displays)

    def _unary(self, method: Any, request: Any, timeout: float | None, metadata: Metadata | None) -> Any:
        try:
            return method(request, **self._call_args(timeout, metadata))
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.target) from None

    def close(self) -> None:
        """Close the channel (cancels the calls still running). Idempotent."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

