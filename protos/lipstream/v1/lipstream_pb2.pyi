from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_FORMAT_UNSPECIFIED: _ClassVar[AudioFormat]
    WAV_PCM16: _ClassVar[AudioFormat]
    WAV_FLOAT32: _ClassVar[AudioFormat]
    PCM16: _ClassVar[AudioFormat]
    OGG_OPUS: _ClassVar[AudioFormat]

class LipSyncEngine(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIP_SYNC_ENGINE_UNSPECIFIED: _ClassVar[LipSyncEngine]
    AUTO: _ClassVar[LipSyncEngine]
    WAV2LIP: _ClassVar[LipSyncEngine]
    VISEME: _ClassVar[LipSyncEngine]

class Pacing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACING_UNSPECIFIED: _ClassVar[Pacing]
    AS_FAST_AS_POSSIBLE: _ClassVar[Pacing]
    REALTIME: _ClassVar[Pacing]
AUDIO_FORMAT_UNSPECIFIED: AudioFormat
WAV_PCM16: AudioFormat
WAV_FLOAT32: AudioFormat
PCM16: AudioFormat
OGG_OPUS: AudioFormat
LIP_SYNC_ENGINE_UNSPECIFIED: LipSyncEngine
AUTO: LipSyncEngine
WAV2LIP: LipSyncEngine
VISEME: LipSyncEngine
PACING_UNSPECIFIED: Pacing
AS_FAST_AS_POSSIBLE: Pacing
REALTIME: Pacing

class VideoConfig(_message.Message):
    __slots__ = ("enabled", "avatar", "fps", "jpeg_quality", "engine", "frame_mode", "avatar_image")
    class FrameMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FRAME_MODE_UNSPECIFIED: _ClassVar[VideoConfig.FrameMode]
        FULL_FRAME: _ClassVar[VideoConfig.FrameMode]
        FACE_PATCH: _ClassVar[VideoConfig.FrameMode]
    FRAME_MODE_UNSPECIFIED: VideoConfig.FrameMode
    FULL_FRAME: VideoConfig.FrameMode
    FACE_PATCH: VideoConfig.FrameMode
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    FRAME_MODE_FIELD_NUMBER: _ClassVar[int]
    AVATAR_IMAGE_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    avatar: str
    fps: float
    jpeg_quality: int
    engine: LipSyncEngine
    frame_mode: VideoConfig.FrameMode
    avatar_image: bytes
    def __init__(self, enabled: _Optional[bool] = ..., avatar: _Optional[str] = ..., fps: _Optional[float] = ..., jpeg_quality: _Optional[int] = ..., engine: _Optional[_Union[LipSyncEngine, str]] = ..., frame_mode: _Optional[_Union[VideoConfig.FrameMode, str]] = ..., avatar_image: _Optional[bytes] = ...) -> None: ...

class SessionConfig(_message.Message):
    __slots__ = ("voice", "speaker", "length_scale", "noise_scale", "noise_scale_w", "audio_format", "sample_rate", "video", "visemes", "pacing", "words", "blendshapes", "input_audio", "channel")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    LENGTH_SCALE_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_W_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    VISEMES_FIELD_NUMBER: _ClassVar[int]
    PACING_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    BLENDSHAPES_FIELD_NUMBER: _ClassVar[int]
    INPUT_AUDIO_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    voice: str
    speaker: str
    length_scale: float
    noise_scale: float
    noise_scale_w: float
    audio_format: AudioFormat
    sample_rate: int
    video: VideoConfig
    visemes: bool
    pacing: Pacing
    words: bool
    blendshapes: bool
    input_audio: InputAudio
    channel: str
    def __init__(self, voice: _Optional[str] = ..., speaker: _Optional[str] = ..., length_scale: _Optional[float] = ..., noise_scale: _Optional[float] = ..., noise_scale_w: _Optional[float] = ..., audio_format: _Optional[_Union[AudioFormat, str]] = ..., sample_rate: _Optional[int] = ..., video: _Optional[_Union[VideoConfig, _Mapping]] = ..., visemes: _Optional[bool] = ..., pacing: _Optional[_Union[Pacing, str]] = ..., words: _Optional[bool] = ..., blendshapes: _Optional[bool] = ..., input_audio: _Optional[_Union[InputAudio, _Mapping]] = ..., channel: _Optional[str] = ...) -> None: ...

class InputAudio(_message.Message):
    __slots__ = ("sample_rate",)
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    sample_rate: int
    def __init__(self, sample_rate: _Optional[int] = ...) -> None: ...

class TextInput(_message.Message):
    __slots__ = ("text", "flush")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    text: str
    flush: bool
    def __init__(self, text: _Optional[str] = ..., flush: _Optional[bool] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("action",)
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[Control.Action]
        INTERRUPT: _ClassVar[Control.Action]
        END_OF_INPUT: _ClassVar[Control.Action]
    ACTION_UNSPECIFIED: Control.Action
    INTERRUPT: Control.Action
    END_OF_INPUT: Control.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: Control.Action
    def __init__(self, action: _Optional[_Union[Control.Action, str]] = ...) -> None: ...

class AudioInput(_message.Message):
    __slots__ = ("pcm16", "end_of_utterance")
    PCM16_FIELD_NUMBER: _ClassVar[int]
    END_OF_UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    pcm16: bytes
    end_of_utterance: bool
    def __init__(self, pcm16: _Optional[bytes] = ..., end_of_utterance: _Optional[bool] = ...) -> None: ...

class ConverseRequest(_message.Message):
    __slots__ = ("config", "text", "control", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: SessionConfig
    text: TextInput
    control: Control
    audio: AudioInput
    def __init__(self, config: _Optional[_Union[SessionConfig, _Mapping]] = ..., text: _Optional[_Union[TextInput, _Mapping]] = ..., control: _Optional[_Union[Control, _Mapping]] = ..., audio: _Optional[_Union[AudioInput, _Mapping]] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("config", "text")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    config: SessionConfig
    text: str
    def __init__(self, config: _Optional[_Union[SessionConfig, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("session_id", "config", "sample_rate", "fps", "frame_width", "frame_height", "engine", "blendshape_names")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    FRAME_WIDTH_FIELD_NUMBER: _ClassVar[int]
    FRAME_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    BLENDSHAPE_NAMES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    config: SessionConfig
    sample_rate: int
    fps: float
    frame_width: int
    frame_height: int
    engine: LipSyncEngine
    blendshape_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., config: _Optional[_Union[SessionConfig, _Mapping]] = ..., sample_rate: _Optional[int] = ..., fps: _Optional[float] = ..., frame_width: _Optional[int] = ..., frame_height: _Optional[int] = ..., engine: _Optional[_Union[LipSyncEngine, str]] = ..., blendshape_names: _Optional[_Iterable[str]] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("data", "start_sample", "num_samples", "sample_rate", "utterance_id")
    DATA_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    start_sample: int
    num_samples: int
    sample_rate: int
    utterance_id: int
    def __init__(self, data: _Optional[bytes] = ..., start_sample: _Optional[int] = ..., num_samples: _Optional[int] = ..., sample_rate: _Optional[int] = ..., utterance_id: _Optional[int] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("jpeg", "frame_index", "pts", "width", "height", "utterance_id", "speaking", "patch_x", "patch_y", "repeat_of")
    JPEG_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SPEAKING_FIELD_NUMBER: _ClassVar[int]
    PATCH_X_FIELD_NUMBER: _ClassVar[int]
    PATCH_Y_FIELD_NUMBER: _ClassVar[int]
    REPEAT_OF_FIELD_NUMBER: _ClassVar[int]
    jpeg: bytes
    frame_index: int
    pts: float
    width: int
    height: int
    utterance_id: int
    speaking: bool
    patch_x: int
    patch_y: int
    repeat_of: int
    def __init__(self, jpeg: _Optional[bytes] = ..., frame_index: _Optional[int] = ..., pts: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., utterance_id: _Optional[int] = ..., speaking: _Optional[bool] = ..., patch_x: _Optional[int] = ..., patch_y: _Optional[int] = ..., repeat_of: _Optional[int] = ...) -> None: ...

class VisemeEvent(_message.Message):
    __slots__ = ("viseme_id", "start_sample", "end_sample", "utterance_id", "phoneme")
    class Viseme(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        sil: _ClassVar[VisemeEvent.Viseme]
        PP: _ClassVar[VisemeEvent.Viseme]
        FF: _ClassVar[VisemeEvent.Viseme]
        TH: _ClassVar[VisemeEvent.Viseme]
        DD: _ClassVar[VisemeEvent.Viseme]
        kk: _ClassVar[VisemeEvent.Viseme]
        CH: _ClassVar[VisemeEvent.Viseme]
        SS: _ClassVar[VisemeEvent.Viseme]
        nn: _ClassVar[VisemeEvent.Viseme]
        RR: _ClassVar[VisemeEvent.Viseme]
        aa: _ClassVar[VisemeEvent.Viseme]
        E: _ClassVar[VisemeEvent.Viseme]
        ih: _ClassVar[VisemeEvent.Viseme]
        oh: _ClassVar[VisemeEvent.Viseme]
        ou: _ClassVar[VisemeEvent.Viseme]
    sil: VisemeEvent.Viseme
    PP: VisemeEvent.Viseme
    FF: VisemeEvent.Viseme
    TH: VisemeEvent.Viseme
    DD: VisemeEvent.Viseme
    kk: VisemeEvent.Viseme
    CH: VisemeEvent.Viseme
    SS: VisemeEvent.Viseme
    nn: VisemeEvent.Viseme
    RR: VisemeEvent.Viseme
    aa: VisemeEvent.Viseme
    E: VisemeEvent.Viseme
    ih: VisemeEvent.Viseme
    oh: VisemeEvent.Viseme
    ou: VisemeEvent.Viseme
    VISEME_ID_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    END_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PHONEME_FIELD_NUMBER: _ClassVar[int]
    viseme_id: VisemeEvent.Viseme
    start_sample: int
    end_sample: int
    utterance_id: int
    phoneme: str
    def __init__(self, viseme_id: _Optional[_Union[VisemeEvent.Viseme, str]] = ..., start_sample: _Optional[int] = ..., end_sample: _Optional[int] = ..., utterance_id: _Optional[int] = ..., phoneme: _Optional[str] = ...) -> None: ...

class UtteranceEvent(_message.Message):
    __slots__ = ("kind", "utterance_id", "text", "start_sample", "end_sample", "spoken_text")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[UtteranceEvent.Kind]
        STARTED: _ClassVar[UtteranceEvent.Kind]
        FINISHED: _ClassVar[UtteranceEvent.Kind]
        INTERRUPTED: _ClassVar[UtteranceEvent.Kind]
    KIND_UNSPECIFIED: UtteranceEvent.Kind
    STARTED: UtteranceEvent.Kind
    FINISHED: UtteranceEvent.Kind
    INTERRUPTED: UtteranceEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    END_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SPOKEN_TEXT_FIELD_NUMBER: _ClassVar[int]
    kind: UtteranceEvent.Kind
    utterance_id: int
    text: str
    start_sample: int
    end_sample: int
    spoken_text: str
    def __init__(self, kind: _Optional[_Union[UtteranceEvent.Kind, str]] = ..., utterance_id: _Optional[int] = ..., text: _Optional[str] = ..., start_sample: _Optional[int] = ..., end_sample: _Optional[int] = ..., spoken_text: _Optional[str] = ...) -> None: ...

class WordEvent(_message.Message):
    __slots__ = ("word", "start_sample", "end_sample", "utterance_id")
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    END_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    word: str
    start_sample: int
    end_sample: int
    utterance_id: int
    def __init__(self, word: _Optional[str] = ..., start_sample: _Optional[int] = ..., end_sample: _Optional[int] = ..., utterance_id: _Optional[int] = ...) -> None: ...

class BlendshapeFrame(_message.Message):
    __slots__ = ("frame_index", "pts", "weights")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    pts: float
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, frame_index: _Optional[int] = ..., pts: _Optional[float] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class SessionStats(_message.Message):
    __slots__ = ("time_to_first_audio_s", "time_to_first_frame_s", "audio_seconds", "frames", "wall_seconds", "tts_real_time_factor", "lipsync_real_time_factor", "utterances", "interrupted")
    TIME_TO_FIRST_AUDIO_S_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_FRAME_S_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TTS_REAL_TIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    LIPSYNC_REAL_TIME_FACTOR_FIELD_NUMBER: _ClassVar[int]
    UTTERANCES_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    time_to_first_audio_s: float
    time_to_first_frame_s: float
    audio_seconds: float
    frames: int
    wall_seconds: float
    tts_real_time_factor: float
    lipsync_real_time_factor: float
    utterances: int
    interrupted: int
    def __init__(self, time_to_first_audio_s: _Optional[float] = ..., time_to_first_frame_s: _Optional[float] = ..., audio_seconds: _Optional[float] = ..., frames: _Optional[int] = ..., wall_seconds: _Optional[float] = ..., tts_real_time_factor: _Optional[float] = ..., lipsync_real_time_factor: _Optional[float] = ..., utterances: _Optional[int] = ..., interrupted: _Optional[int] = ...) -> None: ...

class ConverseResponse(_message.Message):
    __slots__ = ("started", "audio", "frame", "viseme", "utterance", "stats", "word", "blendshapes", "warning")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    VISEME_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    WORD_FIELD_NUMBER: _ClassVar[int]
    BLENDSHAPES_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    started: SessionStarted
    audio: AudioChunk
    frame: VideoFrame
    viseme: VisemeEvent
    utterance: UtteranceEvent
    stats: SessionStats
    word: WordEvent
    blendshapes: BlendshapeFrame
    warning: SessionWarning
    def __init__(self, started: _Optional[_Union[SessionStarted, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., frame: _Optional[_Union[VideoFrame, _Mapping]] = ..., viseme: _Optional[_Union[VisemeEvent, _Mapping]] = ..., utterance: _Optional[_Union[UtteranceEvent, _Mapping]] = ..., stats: _Optional[_Union[SessionStats, _Mapping]] = ..., word: _Optional[_Union[WordEvent, _Mapping]] = ..., blendshapes: _Optional[_Union[BlendshapeFrame, _Mapping]] = ..., warning: _Optional[_Union[SessionWarning, _Mapping]] = ...) -> None: ...

class SessionWarning(_message.Message):
    __slots__ = ("code", "message", "utterance_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    utterance_id: int
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., utterance_id: _Optional[int] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Voice(_message.Message):
    __slots__ = ("name", "sample_rate", "speakers", "languages", "format", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    sample_rate: int
    speakers: _containers.RepeatedScalarFieldContainer[str]
    languages: _containers.RepeatedScalarFieldContainer[str]
    format: str
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., sample_rate: _Optional[int] = ..., speakers: _Optional[_Iterable[str]] = ..., languages: _Optional[_Iterable[str]] = ..., format: _Optional[str] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices",)
    VOICES_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ...) -> None: ...

class ListAvatarsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Avatar(_message.Message):
    __slots__ = ("name", "width", "height", "num_frames", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    width: int
    height: int
    num_frames: int
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_frames: _Optional[int] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ListAvatarsResponse(_message.Message):
    __slots__ = ("avatars",)
    AVATARS_FIELD_NUMBER: _ClassVar[int]
    avatars: _containers.RepeatedCompositeFieldContainer[Avatar]
    def __init__(self, avatars: _Optional[_Iterable[_Union[Avatar, _Mapping]]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "device", "engines", "default_voice", "default_avatar", "max_sessions", "active_sessions", "max_text_chars", "torch_version", "replica")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VOICE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_AVATAR_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    TORCH_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    version: str
    device: str
    engines: _containers.RepeatedScalarFieldContainer[LipSyncEngine]
    default_voice: str
    default_avatar: str
    max_sessions: int
    active_sessions: int
    max_text_chars: int
    torch_version: str
    replica: str
    def __init__(self, version: _Optional[str] = ..., device: _Optional[str] = ..., engines: _Optional[_Iterable[_Union[LipSyncEngine, str]]] = ..., default_voice: _Optional[str] = ..., default_avatar: _Optional[str] = ..., max_sessions: _Optional[int] = ..., active_sessions: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., torch_version: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

class SayOnChannelRequest(_message.Message):
    __slots__ = ("channel", "text", "interrupt")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INTERRUPT_FIELD_NUMBER: _ClassVar[int]
    channel: str
    text: str
    interrupt: bool
    def __init__(self, channel: _Optional[str] = ..., text: _Optional[str] = ..., interrupt: _Optional[bool] = ...) -> None: ...

class StopChannelRequest(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: _Optional[str] = ...) -> None: ...

class ChannelReply(_message.Message):
    __slots__ = ("displays", "warning")
    DISPLAYS_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    displays: int
    warning: str
    def __init__(self, displays: _Optional[int] = ..., warning: _Optional[str] = ...) -> None: ...
