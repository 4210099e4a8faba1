"""lipstream.client: talk to a lipstream server from Python with only grpcio, protobuf and numpy.

    from lipstream.client import Client, AudioChunk, VideoFrame

    with Client("127.0.0.1:50051") as client:
        with client.converse(llm_tokens(), video=True) as conversation:
            for event in conversation:
                ...

`AsyncClient` is the asyncio twin. A server with TLS and tokens:
`Client(target, credentials=tls_credentials(ca_cert="ca.pem"), token=...)`. Helpers: `collect_audio`,
`write_wav`, `write_mp4` / `Mp4Writer` (PyAV), `JitterBuffer` / `play`. Torch is never imported here.
"""

from lipstream.v1.enums import AudioFormat, LipSyncEngine, Pacing

from .aio import AsyncClient, AsyncConversation, AsyncEventStream
from .config import (
    AvatarInfo,
    ChannelSaid,
    ServerInfo,
    SessionKeywords,
    VideoConfig,
    VoiceInfo,
    session_config,
)
from .credentials import tls_credentials
from .errors import (
    CallCancelledError,
    DeadlineExceededError,
    InvalidArgumentError,
    LipStreamError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from .events import (
    VISEMES,
    AudioChunk,
    BlendshapeFrame,
    Event,
    SessionStarted,
    SessionStats,
    UtteranceEvent,
    UtteranceKind,
    VideoFrame,
    VisemeEvent,
    WarningEvent,
    WordEvent,
    decode_audio,
)
from .media import (
    AudioClip,
    FrameCompositor,
    JitterBuffer,
    Mp4Writer,
    collect_audio,
    play,
    wav_bytes,
    write_mp4,
    write_wav,
)
from .sync import DEFAULT_TARGET, Client, Conversation, EventStream, default_target

__all__ = [
    "DEFAULT_TARGET",
    "VISEMES",
    "AsyncClient",
    "AsyncConversation",
    "AsyncEventStream",
    "AudioChunk",
    "AudioClip",
    "BlendshapeFrame",
    "AudioFormat",
    "AvatarInfo",
    "CallCancelledError",
    "ChannelSaid",
    "Client",
    "Conversation",
    "DeadlineExceededError",
    "Event",
    "EventStream",
    "FrameCompositor",
    "InvalidArgumentError",
    "JitterBuffer",
    "LipSyncEngine",
    "LipStreamError",
    "Mp4Writer",
    "Pacing",
    "ResourceExhaustedError",
    "ServerInfo",
    "SessionKeywords",
    "SessionStarted",
    "SessionStats",
    "UnauthenticatedError",
    "UnavailableError",
    "UtteranceEvent",
    "UtteranceKind",
    "VideoConfig",
    "VideoFrame",
    "VisemeEvent",
    "VoiceInfo",
    "WarningEvent",
    "WordEvent",
    "collect_audio",
    "decode_audio",
    "default_target",
    "play",
    "session_config",
    "tls_credentials",
    "wav_bytes",
    "write_mp4",
    "write_wav",
]
