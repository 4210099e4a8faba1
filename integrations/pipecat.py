"""Pipecat processors that give a voice agent lipstream's avatar (extra `pipecat`: `pip install
lipstream[pipecat]`).

- `LipStreamVideoService`: put it after any TTS. Its `TTSAudioRawFrame`s go to a lipstream server as an
  audio-in session; what comes back goes downstream in media-time order: the same audio (as
  `TTSAudioRawFrame`s) interleaved with the avatar's frames (`OutputImageRawFrame`, RGB,
  `sync_with_audio=True`, so the output transport shows each one after the audio before it). A
  `TTSStoppedFrame` ends the utterance; an `InterruptionFrame` drops what the server has not sent yet and
  what is on its way.
- `LipStreamTTSService`: lipstream's own VITS voice. Text in (`TextFrame`s, e.g. an LLM's tokens; an
  `LLMFullResponseEndFrame` speaks the rest), speech and frames out, the same way.

Both talk to the server with `lipstream.client.AsyncClient` over gRPC; no model runs in the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from typing import Any

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
    from PIL import Image
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InterruptionFrame,
        LLMFullResponseEndFrame,
        OutputImageRawFrame,
        TextFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as error:  # pragma: no cover - the extra is not installed
    raise ImportError(
        f"lipstream.integrations.pipecat needs Pipecat ({error.name} is missing): see README 'Pipecat' for "
        "the install lines (pipecat-ai and pillow)"
    ) from error

log = logging.getLogger(__name__)

__all__ = ["LipStreamTTSService", "LipStreamVideoService", "image_frame"]


def image_frame(frame: VideoFrame) -> OutputImageRawFrame:
    """A lipstream VideoFrame as Pipecat's RGB image, queued with the audio (`sync_with_audio`); its
    `metadata["lipstream"]` holds the frame's index and utterance id."""
    with Image.open(io.BytesIO(frame.jpeg)) as picture:
        rgb = picture.convert("RGB")
    image = OutputImageRawFrame(image=rgb.tobytes(), size=(frame.width, frame.height), format="RGB")
    image.sync_with_audio = True
    image.pts = round(frame.pts * 1e9)
    image.metadata["lipstream"] = {"frame_index": frame.frame_index, "utterance_id": frame.utterance_id}
    return image


class _LipStreamProcessor(FrameProcessor):
    """What both services share: one lipstream conversation, its events turned into Pipecat frames."""

    def __init__(
        self,
        *,
        client: AsyncClient | None = None,
        target: str | None = None,
        avatar: str = "",
        fps: float = 25.0,
        engine: str = "auto",
        jpeg_quality: int = 80,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._own_client = client is None
        self._client = client if client is not None else AsyncClient(target)
        self._video = VideoConfig(avatar=avatar, fps=fps, jpeg_quality=jpeg_quality, engine=engine)
        self._conversation: AsyncConversation | None = None
        self._reader: asyncio.Task[None] | None = None
        self._seen_utterance = 0  # the highest utterance id received
        self._dead_below = 0  # events of utterances below this are dropped (interrupted)

    async def _read_events(self, conversation: AsyncConversation) -> None:
        try:
            async for event in conversation:
                await self._on_event(event)
        except DeadlineExceededError:
            log.info("the lipstream session ended on the server's idle timeout; the next input opens one")
        except LipStreamError as error:
            log.warning("the lipstream session failed (%s); the next input opens a new one", error)
        finally:
            if self._conversation is conversation:  # ended by the server: the next input opens a new one
                self._conversation = None
                self._seen_utterance = self._dead_below = 0  # ids start again at 1 in a new session

    async def _on_event(self, event: object) -> None:
        utterance_id = getattr(event, "utterance_id", 0)
        if utterance_id:
            if utterance_id < self._dead_below:
                return  # on its way when the interruption came
            self._seen_utterance = max(self._seen_utterance, utterance_id)
        if isinstance(event, AudioChunk):
            if event.num_samples:
                await self.push_frame(TTSAudioRawFrame(event.data, event.sample_rate, 1))
        elif isinstance(event, VideoFrame):
            await self.push_frame(image_frame(event))
        elif isinstance(event, UtteranceEvent):
            await self._on_utterance(event)

    async def _on_utterance(self, event: UtteranceEvent) -> None:
        """Hook: an utterance started, finished or was interrupted (after its audio and frames)."""

    def _start_reader(self, conversation: AsyncConversation) -> None:
        self._conversation = conversation
        self._reader = self.create_task(self._read_events(conversation), "lipstream-events")

    async def _interrupt(self) -> None:
        if self._conversation is not None:
            self._dead_below = self._seen_utterance + 1
            await self._conversation.interrupt()

    async def _finish(self) -> None:
        """The pipeline ends: the server says the rest, its events go downstream, then the session ends."""
        conversation, reader = self._conversation, self._reader
        if conversation is not None and reader is not None:
            await conversation.end()
            await reader
        await self._close()

    async def _close(self) -> None:
        conversation, self._conversation = self._conversation, None
        reader, self._reader = self._reader, None
        if conversation is not None:
            await conversation.close()
        if reader is not None and not reader.done():
            await self.cancel_task(reader)
        if self._own_client:
            await self._client.close()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            await self._interrupt()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._finish()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._close()
            await self.push_frame(frame, direction)
        elif direction != FrameDirection.DOWNSTREAM or not await self._take(frame):
            await self.push_frame(frame, direction)

    async def _take(self, frame: Frame) -> bool:
        """Handles a frame this service consumes; False passes it on."""
        return False


class LipStreamVideoService(_LipStreamProcessor):
    """An avatar for any TTS: its audio to lipstream, lip-synced frames and the same audio back, in order.

    `client`: an `AsyncClient` to share (else one for `target`, closed with the pipeline); `avatar`, `fps`,
    `engine`, `jpeg_quality`: the session's video options. The session opens at the first audio, at the
    TTS's sample rate, and the audio comes back at that rate.
    """

    async def _take(self, frame: Frame) -> bool:
        if isinstance(frame, TTSAudioRawFrame):
            conversation = self._conversation or self._open(frame.sample_rate)
            await conversation.send_audio(_mono(frame.audio, frame.num_channels))
            return True
        if isinstance(frame, TTSStoppedFrame):
            if self._conversation is not None:
                await self._conversation.send_audio(b"", end_of_utterance=True)
            return False
        return False

    def _open(self, sample_rate: int) -> AsyncConversation:
        conversation = self._client.converse_audio(
            input_sample_rate=sample_rate, audio_format="pcm16", sample_rate=sample_rate, video=self._video
        )
        self._start_reader(conversation)
        return conversation


class LipStreamTTSService(_LipStreamProcessor):
    """lipstream's own voice and avatar: `TextFrame`s in (any size: an LLM's tokens), `TTSStartedFrame`,
    `TTSAudioRawFrame`s, `OutputImageRawFrame`s and `TTSStoppedFrame` out per utterance.

    `voice`, `speaker`, `sample_rate` (0: the voice's own): the session's voice options; the rest as
    `LipStreamVideoService`. The session opens with the pipeline's first text.
    """

    def __init__(self, *, voice: str = "", speaker: str = "", sample_rate: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._voice = voice
        self._speaker = speaker
        self._sample_rate = sample_rate

    async def _take(self, frame: Frame) -> bool:
        if isinstance(frame, TextFrame) and not isinstance(frame, _OWN_TEXT_FRAMES):
            if frame.text:
                await self._open().send(frame.text)
            return True
        if isinstance(frame, LLMFullResponseEndFrame) and self._conversation is not None:
            await self._conversation.send("", flush=True)
        return False

    def _open(self) -> AsyncConversation:
        if self._conversation is None:
            conversation = self._client.converse(
                voice=self._voice, speaker=self._speaker, audio_format="pcm16", sample_rate=self._sample_rate,
                video=self._video,
            )
            self._start_reader(conversation)
        assert self._conversation is not None
        return self._conversation

    async def _on_utterance(self, event: UtteranceEvent) -> None:
        context = f"lipstream-{event.utterance_id}"
        if event.kind == "started":
            await self.push_frame(TTSStartedFrame(context_id=context))
        else:
            await self.push_frame(TTSStoppedFrame(context_id=context))


# Text frames that are the output of a TTS (its words as spoken), not text to speak.
_OWN_TEXT_FRAMES: tuple[type[Frame], ...] = ()
with contextlib.suppress(ImportError):
    from pipecat.frames.frames import TTSTextFrame

    _OWN_TEXT_FRAMES = (TTSTextFrame,)


def _mono(pcm16: bytes, channels: int) -> bytes:
    """Interleaved PCM16 down to mono (the mean of the channels)."""
    if channels <= 1:
        return pcm16
    import numpy as np

    frames = np.frombuffer(pcm16, dtype="<i2").reshape(-1, channels).astype(np.int32)
    return frames.mean(axis=1).round().astype("<i2").tobytes()
