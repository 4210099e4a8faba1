"""LiveKit Agents avatar on lipstream (extra `livekit`: `pip install lipstream[livekit]`).

- `LipStreamVideoGenerator`: LiveKit's `VideoGenerator` over a lipstream audio-in session. `push_audio`
  sends the agent's speech (`rtc.AudioFrame`s; `AudioSegmentEnd` ends the utterance) to the server;
  iterating it yields the lip-synced `rtc.VideoFrame`s (RGBA) and the same audio as `rtc.AudioFrame`s in
  media-time order, and `AudioSegmentEnd` after each utterance's audio; `clear_buffer` interrupts: nothing
  more of the utterance comes out. Hand it to LiveKit's `AvatarRunner`.
- `LipStreamAvatarSession`: the local mode in one process: `await avatar.start(session, room)` routes the
  agent session's audio through the generator and publishes the avatar's tracks from the agent itself.

The generator talks to the server with `lipstream.client.AsyncClient` over gRPC; no model runs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np
from lipstream.client import (
    AsyncClient,
    AsyncConversation,
    AudioChunk,
    DeadlineExceededError,
    LipStreamError,
    UtteranceEvent,
    VideoConfig,
    VideoFrame,
)

try:
    from livekit import rtc
    from livekit.agents.voice.avatar import (
        AudioSegmentEnd,
        AvatarOptions,
        AvatarRunner,
        AvatarSession,
        QueueAudioOutput,
        VideoGenerator,
    )
    from PIL import Image
except ImportError as error:  # pragma: no cover - the extra is not installed
    raise ImportError(
        f"lipstream.integrations.livekit needs LiveKit Agents ({error.name} is missing): "
        'pip install "lipstream[livekit]"'
    ) from error

if TYPE_CHECKING:
    from livekit.agents.voice.agent_session import AgentSession

log = logging.getLogger(__name__)

__all__ = ["LipStreamAvatarSession", "LipStreamVideoGenerator", "audio_frame", "video_frame"]


def video_frame(frame: VideoFrame) -> rtc.VideoFrame:
    """A lipstream VideoFrame as LiveKit's RGBA frame."""
    with Image.open(io.BytesIO(frame.jpeg)) as picture:
        rgba = picture.convert("RGBA")
    return rtc.VideoFrame(frame.width, frame.height, rtc.VideoBufferType.RGBA, rgba.tobytes())


def audio_frame(chunk: AudioChunk) -> rtc.AudioFrame:
    """A lipstream AudioChunk of the "pcm16" format as LiveKit's audio frame (mono)."""
    return rtc.AudioFrame(chunk.data, chunk.sample_rate, 1, chunk.num_samples)


class LipStreamVideoGenerator(VideoGenerator):
    """LiveKit's VideoGenerator over one lipstream audio-in session, opened at the first audio frame (at
    its sample rate; the audio comes back at that rate).

    `client`: an `AsyncClient` to share (else one for `target`, closed by `aclose()`); `avatar`, `fps`,
    `engine`, `jpeg_quality`: the video options; `pacing`: "realtime" (default: the server paces to the
    wall clock and sends the avatar's idle frames while silent, as a published track needs) or
    "as_fast_as_possible".
    """

    def __init__(
        self,
        *,
        client: AsyncClient | None = None,
        target: str | None = None,
        avatar: str = "",
        fps: float = 25.0,
        engine: str = "auto",
        jpeg_quality: int = 80,
        pacing: str = "realtime",
    ) -> None:
        self._own_client = client is None
        self._client = client if client is not None else AsyncClient(target)
        self._video = VideoConfig(avatar=avatar, fps=fps, jpeg_quality=jpeg_quality, engine=engine)
        self._pacing = pacing
        self._conversation: AsyncConversation | None = None
        self._reader: asyncio.Task[None] | None = None
        # The sessions' events in order, read as they come so that a session the server ends (its idle
        # timeout) is seen at once and the next audio opens a new one; _SESSION_END after each session.
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._closed = False
        self._seen_utterance = 0
        self._dead_below = 0  # events of utterances below this are dropped (cleared)
        self._segment_open = False  # audio of the current utterance has been yielded
        self.playback_position = 0.0
        """Seconds of the current utterance's audio yielded so far (LiveKit's playback position); after
        clear_buffer(), where its audio stopped, until the next utterance's audio."""

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if self._closed:
            raise RuntimeError("push_audio() after aclose(): make a new LipStreamVideoGenerator")
        if isinstance(frame, AudioSegmentEnd):
            if self._conversation is not None:
                await self._conversation.send_audio(b"", end_of_utterance=True)
            return
        conversation = self._conversation or self._open(frame.sample_rate)
        pcm = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).round().astype(np.int16)
        await conversation.send_audio(pcm)

    def _open(self, sample_rate: int) -> AsyncConversation:
        conversation = self._conversation = self._client.converse_audio(
            input_sample_rate=sample_rate, audio_format="pcm16", sample_rate=sample_rate, video=self._video,
            pacing=self._pacing,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read(conversation))
        return conversation

    async def _read(self, conversation: AsyncConversation) -> None:
        try:
            async for event in conversation:
                self._events.put_nowait(event)
        except DeadlineExceededError:
            log.info("the lipstream session ended on the server's idle timeout; the next audio opens one")
        except LipStreamError as error:
            log.warning("the lipstream session failed (%s); the next audio opens a new one", error)
        finally:
            if self._conversation is conversation:
                self._conversation = None
            self._events.put_nowait(_SESSION_END)

    async def clear_buffer(self) -> None:
        """Stops the current utterance now: the server drops what it has not sent, and what is on its way
        is not yielded."""
        self._dead_below = self._seen_utterance + 1
        self._segment_open = False
        if self._conversation is not None:
            await self._conversation.interrupt()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        while not self._closed:
            event = await self._events.get()
            if event is _SESSION_END:
                self._seen_utterance = self._dead_below = 0  # ids start again at 1 in a new session
                self._segment_open = False
                continue
            utterance_id = getattr(event, "utterance_id", 0)
            if utterance_id:
                if utterance_id < self._dead_below:
                    continue
                self._seen_utterance = max(self._seen_utterance, utterance_id)
            if isinstance(event, AudioChunk):
                # Speech only: the silence REALTIME pacing sends between utterances would read as playback
                # to LiveKit (playback started, a position that counts the pause).
                if event.num_samples and event.utterance_id:
                    if not self._segment_open:
                        self._segment_open = True
                        self.playback_position = 0.0
                    self.playback_position += event.duration
                    yield audio_frame(event)
            elif isinstance(event, VideoFrame):
                yield video_frame(event)
            elif isinstance(event, UtteranceEvent) and event.kind == "finished" and self._segment_open:
                self._segment_open = False
                yield AudioSegmentEnd()

    async def aclose(self) -> None:
        """Cancels the session (what was not sent yet is dropped); closes the client if it is this one's."""
        self._closed = True
        conversation, self._conversation = self._conversation, None
        if conversation is not None:
            await conversation.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._events.put_nowait(_SESSION_END)  # wakes an iteration waiting for events: it ends
        if self._own_client:
            await self._client.close()


_SESSION_END = object()


class LipStreamAvatarSession(AvatarSession):
    """The avatar in the agent's own process (LiveKit's local mode): the agent session's speech goes through
    a `LipStreamVideoGenerator`, and an `AvatarRunner` publishes the avatar's video and audio to the room.

    `sample_rate`: of the agent's speech as it reaches the avatar (the session resamples to it); the other
    keywords are the generator's.
    """

    def __init__(self, *, sample_rate: int = 24000, **generator_options: Any) -> None:
        super().__init__()
        self._sample_rate = sample_rate
        self._options = generator_options
        self._runner: AvatarRunner | None = None
        self._generator: LipStreamVideoGenerator | None = None
        self._identity = ""

    @property
    def avatar_identity(self) -> str:
        return self._identity

    @property
    def provider(self) -> str:
        return "lipstream"

    async def start(self, agent_session: AgentSession, room: rtc.Room) -> None:
        generator = self._generator = LipStreamVideoGenerator(**self._options)
        avatar_name = self._options.get("avatar", "")
        avatars = await generator._client.avatars()
        wanted = [a for a in avatars if a.name == avatar_name or (not avatar_name and a.is_default)]
        if not wanted:
            names = [a.name for a in avatars]
            raise ValueError(f"the server has no avatar {avatar_name!r}: use one of {names}")
        chosen = wanted[0]
        audio = QueueAudioOutput(sample_rate=self._sample_rate)
        agent_session.output.audio = audio
        options = AvatarOptions(
            video_width=chosen.width, video_height=chosen.height, video_fps=self._options.get("fps", 25.0),
            audio_sample_rate=self._sample_rate, audio_channels=1,
        )
        self._runner = AvatarRunner(room, audio_recv=audio, video_gen=generator, options=options)
        self._identity = room.local_participant.identity
        await self._runner.start()

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.aclose()
        if self._generator is not None:
            await self._generator.aclose()
