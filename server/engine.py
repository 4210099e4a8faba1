"""Engine (one per process: the models, the limits, the open sessions) and Session (one conversation).

The servicer and the web bridge use only this API; protos never reach it.

    engine = Engine(EngineSettings())
    session = await engine.open_session(SessionOptions(video=True))
    await session.send_text("Hello there, ")
    await session.end_input()
    async for event in session.events():   # SessionStartedEvent first, StatsEvent last
        ...
"""

from __future__ import annotations

import asyncio
import collections
import gc
import hashlib
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from lipstream import __version__
from lipstream.server.lipsync.registry import ENGINES, load_engines
from lipstream.server.lipsync.renderer import RendererFactory
from lipstream.server.metrics import Metrics
from lipstream.server.models_api import AvatarLike, VoiceLike, Wav2LipModel
from lipstream.server.options import (
    EngineSettings,
    InvalidArgument,
    ResourceExhausted,
    SessionOptions,
    Unavailable,
    listed,
    shown,
)
from lipstream.server.session import Session
from lipstream.v1.enums import LipSyncEngine

__all__ = ["AvatarInfo", "Engine", "ServerInfo", "Session", "VoiceInfo", "freeze_loaded_objects"]

log = logging.getLogger(__name__)

MAX_AVATAR_IMAGE_BYTES = 4 << 20
"""VideoConfig.avatar_image: a phone photo fits; a larger one is refused before it is decoded."""
UPLOADED_AVATARS_KEPT = 16
MAX_AVATAR_IMAGE_SIDE = 4096
"""A photo's bound in pixels a side, read from its header before it is decoded: a small PNG can hold a huge
image (a decompression bomb), and face detection's time grows with the pixels."""
"""Avatars from VideoConfig.avatar_image kept (by content; the least recently used goes first)."""


def freeze_loaded_objects() -> None:
    """Puts every object alive now (call it once the models are loaded) out of the cyclic garbage
    collector's reach for good. They live as long as the process, and a full collection that walks them
    holds the interpreter, so every session's event loop and workers, for a tenth of a second or more."""
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    sample_rate: int
    speakers: tuple[str, ...]
    languages: tuple[str, ...]
    format: str
    is_default: bool


@dataclass(frozen=True)
class AvatarInfo:
    name: str
    width: int
    height: int
    num_frames: int
    is_default: bool


@dataclass(frozen=True)
class ServerInfo:
    version: str
    device: str
    engines: tuple[str, ...]  # LipSyncEngine values, in the order AUTO prefers them
    default_voice: str
    default_avatar: str
    max_sessions: int
    active_sessions: int
    max_text_chars: int
    torch_version: str


class Engine:
    """The models and limits of one server process, shared by all its sessions."""

    def __init__(
        self,
        settings: EngineSettings | None = None,
        *,
        voices: Mapping[str, VoiceLike] | None = None,
        avatars: Mapping[str, AvatarLike] | None = None,
        wav2lip: Wav2LipModel | None = None,
    ) -> None:
        """Loads the models the settings name; `voices`, `avatars` and `wav2lip` replace them (tests)."""
        self.settings = (settings or EngineSettings()).validated()
        self._voices: dict[str, VoiceLike] = dict(voices) if voices is not None else self._load_voices()
        if not self._voices:
            raise InvalidArgument("the engine needs at least one voice")
        self.default_voice = next(iter(self._voices))
        self._avatars = dict(avatars) if avatars is not None else self._load_default_avatar()
        self._avatar_lock = threading.Lock()
        self.default_avatar = next(iter(self._avatars), "")
        self._avatars_builtin = avatars is None
        self._uploaded: collections.OrderedDict[str, AvatarLike] = collections.OrderedDict()
        self._sessions: dict[str, Session] = {}
        self.metrics = Metrics(lambda: self.active_sessions, self.settings.max_sessions)
        # The lip-sync engines, by name: none without avatars (they draw on one).
        models = {LipSyncEngine.WAV2LIP: wav2lip} if wav2lip is not None else {}
        self._lipsync = load_engines(self.settings, models, self.metrics) if self._avatars else {}
        self.sessions_opened = 0  # since start; with active_sessions, what a replica has served
        self._accepting = True

    # -- loading -----------------------------------------------------------------------------------------
    def _load_voices(self) -> dict[str, VoiceLike]:
        from lipstream.models.vits import DEFAULT_VOICE, load_voice

        names = [self.settings.voice or DEFAULT_VOICE, *self.settings.extra_voices]
        loaded: dict[str, VoiceLike] = {}
        for name in names:
            # One thread per call: sessions synthesize side by side, and a call split over a pool only adds
            # its workers' wake-ups (bench sessions: FIGURES.md).
            voice = load_voice(
                name, device=self.settings.device or None, threads=1, precision=self.settings.voice_precision
            )
            loaded[voice.name] = voice
            log.info("voice %s loaded (%s, %d Hz)", voice.name, voice.format, voice.sample_rate)
        return loaded

    def _load_default_avatar(self) -> dict[str, AvatarLike]:
        try:
            from lipstream.models.avatar import AvatarError, load_avatar
        except ImportError as exc:  # the avatar package is optional for audio-only use
            log.warning("no avatar support (%s): video sessions are refused", exc)
            return {}
        avatar = load_avatar(self.settings.avatar or None)
        loaded: dict[str, AvatarLike] = {avatar.name: avatar}
        sources = {avatar.name: avatar.source}
        for path in self.settings.extra_avatars:
            extra = load_avatar(path)
            seen = sources.setdefault(extra.name, extra.source)
            if seen.resolve() != extra.source.resolve():  # clients pick an avatar by its name alone
                raise AvatarError(
                    f"two avatars are named {extra.name!r}: {str(seen)!r} and {str(extra.source)!r}; clients "
                    "pick an avatar by its file name less the suffix, so rename one of the files"
                )
            loaded.setdefault(extra.name, extra)
            log.info("avatar %s loaded (%dx%d)", extra.name, extra.width, extra.height)
        return loaded

    def _uploaded_avatar(self, image: bytes) -> tuple[str, AvatarLike]:
        """The avatar of a client's photo (VideoConfig.avatar_image): its face found once per content."""
        if len(image) > MAX_AVATAR_IMAGE_BYTES:
            raise InvalidArgument(
                f"video.avatar_image is {len(image)} bytes, over the bound of {MAX_AVATAR_IMAGE_BYTES}: "
                "send a smaller JPEG or PNG (a face of 256 pixels or more is enough)"
            )
        name = "upload-" + hashlib.sha256(image).hexdigest()[:16]
        with self._avatar_lock:
            if name in self._uploaded:
                self._uploaded.move_to_end(name)
                return name, self._uploaded[name]
        suffix = ".png" if image.startswith(b"\x89PNG") else ".jpg"
        _check_photo_size(image)
        from lipstream.models.avatar import NoFaceError, load_avatar

        with tempfile.TemporaryDirectory(prefix="lipstream-avatar-") as folder:
            path = f"{folder}/{name}{suffix}"
            with open(path, "wb") as file:
                file.write(image)
            try:
                avatar = load_avatar(path)
            except NoFaceError as exc:  # the file's own message tells of avatar.json, which a client has not
                raise InvalidArgument(
                    "video.avatar_image: no face found in the photo: send a photo of one face, front-on and "
                    f"well lit, the face at least {MIN_PHOTO_FACE} pixels wide"
                ) from exc
            except ValueError as exc:  # AvatarError: the header was read, the image is not (a cut file)
                raise InvalidArgument(_NOT_A_PHOTO) from exc
        with self._avatar_lock:
            self._uploaded[name] = avatar
            while len(self._uploaded) > UPLOADED_AVATARS_KEPT:
                self._uploaded.popitem(last=False)
        log.info("avatar %s from a client's image (%dx%d)", name, avatar.width, avatar.height)
        return name, avatar

    def _avatar(self, name: str) -> AvatarLike:
        name = name or self.default_avatar
        with self._avatar_lock:
            if name in self._avatars:
                return self._avatars[name]
        known = self._avatar_names()
        if not self._avatars_builtin or name not in known:
            raise InvalidArgument(
                f"avatar {shown(name)} is unknown: use one of {listed(known)} or leave it empty"
            )
        from lipstream.models.avatar import load_avatar

        try:
            avatar = load_avatar(name)
        except ValueError as exc:  # AvatarError: the avatar cannot be used (no face found, unreadable)
            raise InvalidArgument(f"avatar {shown(name)} cannot be used: {exc}") from exc
        with self._avatar_lock:
            return self._avatars.setdefault(name, avatar)

    def _avatar_names(self) -> list[str]:
        names = list(self._avatars)
        if self._avatars_builtin:
            try:
                from lipstream.models.avatar import builtin_avatars

                names += [name for name in builtin_avatars() if name not in names]
            except ImportError:
                pass
        return names

    # -- public API --------------------------------------------------------------------------------------
    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(
                name,
                v.sample_rate,
                tuple(v.speakers),
                tuple(v.languages),
                v.format,
                name == self.default_voice,
            )
            for name, v in self._voices.items()
        ]

    def avatars(self) -> list[AvatarInfo]:
        infos = []
        for name in self._avatar_names():
            try:
                avatar = self._avatar(name)
            except InvalidArgument as exc:
                log.warning("avatar %s is not listed: %s", name, exc)
                continue
            infos.append(
                AvatarInfo(name, avatar.width, avatar.height, avatar.num_frames, name == self.default_avatar)
            )
        return infos

    def info(self) -> ServerInfo:
        try:
            import torch

            torch_version = str(torch.__version__)
        except ImportError:
            torch_version = ""
        engines = tuple(self._lipsync)
        return ServerInfo(
            version=__version__,
            device=self.device,
            engines=engines,
            default_voice=self.default_voice,
            default_avatar=self.default_avatar,
            max_sessions=self.settings.max_sessions,
            active_sessions=self.active_sessions,
            max_text_chars=self.settings.max_text_chars,
            torch_version=torch_version,
        )

    @property
    def device(self) -> str:
        voice = self._voices[self.default_voice]
        device = getattr(voice, "device", None)
        name = str(device) if device is not None else (self.settings.device or "cpu")
        if name.startswith("cuda"):
            try:
                import torch

                name = f"{name} ({torch.cuda.get_device_name(torch.device(name))})"
            except Exception:  # the name is a nicety
                pass
        return name

    async def open_session(self, options: SessionOptions, avatar_image: bytes = b"") -> Session:
        """A started session, options resolved; raises InvalidArgument, ResourceExhausted, Unavailable.
        `avatar_image`: a photo (JPEG or PNG) to use instead of options.avatar (VideoConfig.avatar_image)."""
        if not self._accepting:
            raise Unavailable("the server is shutting down: connect to another replica or retry later")
        if len(self._sessions) >= self.settings.max_sessions:
            limit = self.settings.max_sessions
            raise ResourceExhausted(
                f"the server is at its limit of {limit} open session{'s' * (limit != 1)} "
                f"(--max-sessions {limit}): retry later"
            )
        validated = options.validated()
        voice: VoiceLike | None = None
        if validated.input_sample_rate:  # audio in: the client's speech, no voice; it comes back at its rate
            rate = validated.sample_rate or validated.input_sample_rate
            resolved = replace(validated, voice="", speaker="", sample_rate=rate)
        else:
            resolved, voice = self._resolve_voice(validated)
        avatar = None
        if resolved.video:
            if not self._avatars:
                raise InvalidArgument("this server has no avatar support: set video.enabled to false")
            if avatar_image:
                name, avatar = await asyncio.to_thread(self._uploaded_avatar, avatar_image)
                resolved = replace(resolved, avatar=name)
            else:
                avatar = await asyncio.to_thread(self._avatar, resolved.avatar)
                resolved = replace(resolved, avatar=resolved.avatar or self.default_avatar)
            resolved = replace(resolved, engine=self._resolve_engine(resolved.engine))
        else:
            resolved = replace(resolved, avatar="", engine="")
        session_id = uuid.uuid4().hex[:12]
        session = Session(self, session_id, resolved, voice, avatar, asyncio.get_running_loop())
        self._sessions[session_id] = session
        self.sessions_opened += 1
        session._start()
        return session

    def _resolve_voice(self, options: SessionOptions) -> tuple[SessionOptions, VoiceLike]:
        name = options.voice or self.default_voice
        voice = self._voices.get(name)
        if voice is None:
            raise InvalidArgument(
                f"voice {shown(name)} is unknown: use one of {listed(sorted(self._voices))} or leave it empty"
            )
        speaker = options.speaker
        if speaker and speaker not in voice.speakers:
            if not voice.speakers:
                raise InvalidArgument(
                    f"voice {name!r} has a single speaker: leave speaker empty (got {shown(speaker)})"
                )
            known = list(voice.speakers)
            raise InvalidArgument(
                f"speaker {shown(speaker)} is unknown to voice {name!r}: use one of {listed(known)}"
            )
        speaker = speaker or (voice.speakers[0] if voice.speakers else "")
        sample_rate = options.sample_rate or voice.sample_rate
        return replace(options, voice=name, speaker=speaker, sample_rate=sample_rate), voice

    def _resolve_engine(self, requested: LipSyncEngine | Literal[""]) -> LipSyncEngine:
        if requested in (LipSyncEngine.AUTO, ""):
            return next(iter(self._lipsync))  # the first the registry lists
        engine = LipSyncEngine(requested)
        if engine not in self._lipsync:
            raise InvalidArgument(ENGINES[engine].missing)
        return engine

    def lipsync_engine(self, name: str) -> RendererFactory:
        """The loaded lip-sync engine `name` (a resolved SessionOptions.engine)."""
        return self._lipsync[LipSyncEngine(name)]

    def _forget(self, session: Session) -> None:
        self._sessions.pop(session.session_id, None)

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stops accepting sessions, lets running ones finish for `grace_s`, then cancels the rest."""
        self._accepting = False
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        while self._sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        remaining = list(self._sessions.values())
        if remaining:
            count = len(remaining)
            log.info("grace period over: cancelling %d session%s", count, "s" * (count != 1))
        for session in remaining:
            session.stopped_by_shutdown = True
        await asyncio.gather(*(session.close() for session in remaining))
        self.close()

    def close(self) -> None:
        """Stops the engines' own workers (the Wav2Lip batcher). Idempotent."""
        for factory in self._lipsync.values():
            factory.close()


_NOT_A_PHOTO = "video.avatar_image: the photo is not a JPEG or PNG image: send a JPEG or PNG photo"
MIN_PHOTO_FACE = 96
"""Wav2Lip's face crop is 96x96: a smaller face is upscaled and blurs (the Haar detector itself finds 24)."""


def _check_photo_size(image: bytes) -> None:
    """Refuses a photo that is not a PNG or JPEG, or is over MAX_AVATAR_IMAGE_SIDE, from its header alone."""
    if image.startswith(b"\x89PNG\r\n\x1a\n") and image[12:16] == b"IHDR":
        width, height = int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")
    elif image.startswith(b"\xff\xd8"):
        import simplejpeg

        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(image)
        except ValueError as exc:
            raise InvalidArgument(_NOT_A_PHOTO) from exc
    else:
        raise InvalidArgument(_NOT_A_PHOTO)
    if max(width, height) > MAX_AVATAR_IMAGE_SIDE:
        raise InvalidArgument(
            f"video.avatar_image is {width}x{height} pixels, over the bound of {MAX_AVATAR_IMAGE_SIDE} "
            "pixels a side: downscale it before sending (a face of 256 pixels is plenty)"
        )
