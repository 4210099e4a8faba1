"""OpenAI's speech API on the kiosk port, so that any OpenAI-speech client (the `openai` package, curl, an
`<audio src>`) gets lipstream's voices. A thin transport onto the engine's Session (video off): limits,
session slots and errors are the engine's.

Routes: ``POST /v1/audio/speech`` (OpenAI's JSON body), ``GET /v1/audio/speech?input=...`` (the same audio,
WAV unless asked otherwise, for ``<audio src=...>``), ``GET /v1/models``, ``GET /v1/models/{id}``,
``GET /v1/audio/voices``. Errors are OpenAI's JSON, ``{"error": {"message", "type", "param", "code"}}``.
Text in a script the voice cannot read is skipped as on gRPC; the ``X-Lipstream-Warning`` header says so (a
400 ``unreadable_script`` when nothing readable is left, ``empty_input`` when nothing is there to say).

Names: `model` is a voice of this server or an alias (``lipstream``, ``tts-1``, ...: the default voice);
`voice` is a voice of this server, a speaker of the model's voice, or one of OpenAI's voice names (``alloy``,
...: the model's voice with its first speaker). `speed` s is the voice's length scale 1/s. Formats: ``wav``
(PCM16 at the voice's own rate, streamed with OpenAI's unknown-length header), ``pcm`` (raw PCM16 LE mono at
24 kHz, as OpenAI's), and, with PyAV installed (extra `mp4`), ``mp3``, ``opus`` (Ogg), ``aac`` (ADTS) and
``flac``. Beyond OpenAI's fields a body may set ``speaker``, ``noise_scale``, ``noise_scale_w`` (0 and 0: the
same samples every time) and ``sample_rate`` (8000..48000).

Exposure (web/v1.py, shared by every /v1 route): the kiosk port's Host guard and security headers apply as to
every route; a request that names
an `Origin` must come from the page's own site or an allowed one (a browser sends it with every POST), a
browser's no-Origin request from another site (``Sec-Fetch-Site: cross-site``, e.g. an `<audio>` on a foreign
page) is refused; pages of `--web-allowed-origin` sites get CORS answers (preflights included), so that
their fetch() and ``<audio crossorigin>`` read the audio; with tokens, `Authorization: Bearer <token>` (the
openai package's `api_key`) or ``?token=``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from lipstream.server.encoders import FORMATS, encoder_for, unavailable_reason
from lipstream.server.events import AudioEvent
from lipstream.server.mux import StageFailed
from lipstream.server.options import (
    AudioFormat,
    InvalidArgument,
    Pacing,
    ResourceExhausted,
    SessionOptions,
    Unavailable,
)
from lipstream.server.scripts import (
    has_words,
    judge_text,
    scripts_of_languages,
)
from lipstream.server.tts_stage import UnreadableText, VoiceCannotSpeak
from lipstream.server.web.v1 import ApiError, V1Routes, read_body

if TYPE_CHECKING:
    from lipstream.server.engine import Engine, VoiceInfo

__all__ = ["MODEL_ALIASES", "OPENAI_VOICES", "ApiError", "SpeechApi", "available_formats", "header_text"]

log = logging.getLogger(__name__)

MODEL_ALIASES = ("lipstream", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""Model names that mean the server's default voice (OpenAI's own model names, so clients work unchanged)."""
OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin",
    "cedar",
)  # fmt: skip
"""OpenAI's voice names: each means the model's voice with its first speaker."""
PCM_RATE = 24_000
"""OpenAI's `pcm` is 24 kHz; clients that play it (openai's LocalAudioPlayer) assume that rate."""
MIN_SPEED, MAX_SPEED = 0.25, 4.0
_BODY_SLACK_BYTES = 64 * 1024
_OWNER = "lipstream"


# -- the request -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeechRequest:
    """One speech request, resolved against the server's voices."""

    text: str
    voice: str
    speaker: str
    response_format: str
    sample_rate: int
    """Of the audio sent."""
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_scale_w: float | None = None
    warning: str = ""
    """What the X-Lipstream-Warning header tells ("" for none): text in a script the voice cannot read."""

    def session_options(self) -> SessionOptions:
        return SessionOptions(
            voice=self.voice,
            speaker=self.speaker,
            length_scale=self.length_scale,
            noise_scale=self.noise_scale,
            noise_scale_w=self.noise_scale_w,
            audio_format=AudioFormat.PCM16,  # the cheapest: each response encodes event.samples itself
            sample_rate=self.sample_rate,
            video=False,
            pacing=Pacing.AS_FAST_AS_POSSIBLE,  # the client paces (a file is written at once)
        )


def parse_speech_request(
    fields: Mapping[str, Any], voices: list[VoiceInfo], max_text_chars: int, default_format: str
) -> SpeechRequest:
    """The request in a JSON body or a query string (strings for numbers there); raises ApiError."""
    text = fields.get("input")
    if text is not None and not isinstance(text, str):
        raise ApiError(400, f"'input' must be a string, not {type(text).__name__}", param="input")
    if not text or not text.strip():
        raise ApiError(400, "'input' is missing or empty: give the text to speak", param="input")
    if len(text) > max_text_chars:
        raise ApiError(
            413,
            f"'input' has {len(text)} characters, over this server's bound of {max_text_chars} "
            "(--max-text-chars): send a shorter text, or the text in several requests",
            param="input",
            code="string_above_max_length",
        )
    stream_format = _string(fields, "stream_format") or "audio"
    if stream_format != "audio":
        raise ApiError(
            400,
            f"stream_format {stream_format[:40]!r} is not served: leave it out or use 'audio'",
            param="stream_format",
        )
    _string(fields, "instructions")  # OpenAI's style prompt: a VITS voice has no use for it
    voice, speaker = _resolve_voice(_string(fields, "model"), _voice_name(fields), voices)
    asked = _string(fields, "speaker")
    if asked:
        speakers = next(v.speakers for v in voices if v.name == voice)
        if asked not in speakers:
            known = f"one of {list(speakers)[:20]}" if speakers else "none: this voice has one speaker"
            message = f"speaker {asked[:80]!r} is not a speaker of {voice!r}: use {known}"
            raise ApiError(400, message, param="speaker")
        speaker = asked
    noise_scale = _number(fields, "noise_scale")
    noise_scale_w = _number(fields, "noise_scale_w")
    for name, value in (("noise_scale", noise_scale), ("noise_scale_w", noise_scale_w)):
        if value is not None and not 0.0 <= value <= 2.0:
            raise ApiError(400, f"{name} {value:.15g} is out of range: use 0..2", param=name)
    response_format = (_string(fields, "response_format") or default_format).lower()
    formats = available_formats()
    if response_format not in formats:
        reason = unavailable_reason(response_format) if response_format in RESPONSE_FORMATS else None
        hint = f" ({reason})" if reason else ""
        raise ApiError(
            400,
            f"response_format {response_format[:40]!r} is not served{hint}: use one of {list(formats)}",
            param="response_format",
        )
    speed = _number(fields, "speed")
    if speed is not None and not MIN_SPEED <= speed <= MAX_SPEED:
        message = f"speed {speed:.15g} is out of range: use {MIN_SPEED}..{MAX_SPEED}"
        raise ApiError(400, message, param="speed")
    sample_rate = _number(fields, "sample_rate")
    if sample_rate is not None and (sample_rate != int(sample_rate) or not 8000 <= sample_rate <= 48000):
        raise ApiError(
            400, f"sample_rate {sample_rate:.15g} is out of range: use 8000..48000", param="sample_rate"
        )
    warning = _script_warning(text, voice, voices)
    voice_rate = next(v.sample_rate for v in voices if v.name == voice)
    rate = int(sample_rate) if sample_rate else (PCM_RATE if response_format == "pcm" else voice_rate)
    return SpeechRequest(
        text=text,
        voice=voice,
        speaker=speaker,
        response_format=response_format,
        sample_rate=rate,
        length_scale=None if speed is None else 1.0 / speed,
        noise_scale=noise_scale,
        noise_scale_w=noise_scale_w,
        warning=warning,
    )


def _script_warning(text: str, voice: str, voices: list[VoiceInfo]) -> str:
    """The warning for text in scripts `voice` cannot read ("" for none); raises ApiError 400 when it has
    nothing to say (unreadable_script, or empty_input for punctuation only). The session's TTS stage skips
    those spans clause by clause, as on gRPC, but a header goes before the body: so it is decided here, from
    the whole input, by the same scripts.readable_text."""
    if not has_words(text):
        raise ApiError(
            400, "'input' has nothing to say (no letter or digit): give words to speak", param="input",
            code="empty_input",
        )
    languages = {v.name: v.languages for v in voices}
    warning, refusal = judge_text(text, voice, scripts_of_languages(languages[voice]), languages)
    if refusal:
        raise ApiError(400, refusal, param="input", code="unreadable_script")
    return header_text(warning)


def header_text(text: str) -> str:
    """`text` as an HTTP header value: ASCII, other characters as \\u escapes (clients read headers as
    Latin-1)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _resolve_voice(model: str, voice: str, voices: list[VoiceInfo]) -> tuple[str, str]:
    """(voice name, speaker) from OpenAI's `model` and `voice` fields; "" speaker means the voice's first."""
    by_name = {v.name: v for v in voices}
    default = next((v for v in voices if v.is_default), voices[0])
    if model and model not in by_name and model not in MODEL_ALIASES:
        raise ApiError(
            404,
            f"model {model[:80]!r} is unknown: use one of {[*MODEL_ALIASES, *by_name]} (GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    chosen = by_name.get(model, default)
    if not voice or voice in OPENAI_VOICES:
        return chosen.name, ""
    if voice in by_name:
        if model in by_name and model != voice:
            raise ApiError(
                400,
                f"model {model!r} and voice {voice!r} name two different voices: name the voice once, or "
                "give a speaker of the model's voice as voice",
                param="voice",
            )
        return voice, ""
    if voice in chosen.speakers:
        return chosen.name, voice
    raise ApiError(
        404,
        f"voice {voice[:80]!r} is unknown: use a voice of this server {sorted(by_name)}, a speaker of "
        f"{chosen.name!r} or one of OpenAI's names (GET /v1/audio/voices lists them)",
        param="voice",
        code="voice_not_found",
    )


def _voice_name(fields: Mapping[str, Any]) -> str:
    voice = fields.get("voice")
    if isinstance(voice, Mapping):  # OpenAI's custom-voice form, {"id": "..."}
        voice = voice.get("id")
    if voice is None:
        return ""
    if not isinstance(voice, str):
        raise ApiError(400, '\'voice\' must be a string (or {"id": "..."})', param="voice")
    return voice


def _string(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"{name!r} must be a string, not {type(value).__name__}", param=name)
    return value


def _number(fields: Mapping[str, Any], name: str) -> float | None:
    value = fields.get(name)
    if value is None or (value == "" and not isinstance(fields, dict)):
        return None
    if isinstance(value, str) and isinstance(fields, dict):  # a JSON body's: OpenAI's server refuses it too
        message = f"{name!r} must be a number, not a string: send it with no quotes"
        raise ApiError(400, message, param=name)
    if isinstance(value, str):  # a query string's
        try:
            return _number({name: float(value)}, name)
        except ValueError:
            raise ApiError(400, f"{name!r} must be a number, not {value[:40]!r}", param=name) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{name!r} must be a finite number", param=name)
    return float(value)


# -- audio out ---------------------------------------------------------------------------------------------
RESPONSE_FORMATS = ("wav", "pcm", "mp3", "opus", "aac", "flac")
"""OpenAI's response formats, each an entry of the encoder registry (server/encoders.py FORMATS): wav and pcm
always, the others through PyAV (extra `mp4`)."""


@functools.cache
def available_formats() -> tuple[str, ...]:
    """The response formats this installation encodes (PyAV and its FFmpeg build do not change while it
    runs)."""
    return tuple(name for name in RESPONSE_FORMATS if unavailable_reason(name) is None)


# -- the routes --------------------------------------------------------------------------------------------
class SpeechApi:
    """The speech routes of one WebServer, behind the port's /v1 checks (`v1`)."""

    def __init__(self, engine: Engine, v1: V1Routes) -> None:
        self.engine = engine
        self.v1 = v1
        self._created = int(time.time())

    def add_routes(self, router: web.UrlDispatcher) -> None:
        self.v1.add(router, "POST", "/v1/audio/speech", self._speech_post)
        self.v1.add(router, "GET", "/v1/audio/speech", self._speech_get)
        self.v1.add(router, "GET", "/v1/audio/voices", self._voices)
        self.v1.add(router, "GET", "/v1/models", self._models)
        self.v1.add(router, "GET", "/v1/models/{model}", self._model)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"object": "list", "data": [self._model_entry(m) for m in self._model_ids()]}
        )

    async def _model(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if model not in self._model_ids():
            raise ApiError(
                404,
                f"model {model[:80]!r} is unknown: GET /v1/models lists them",
                param="model",
                code="model_not_found",
            )
        return web.json_response(self._model_entry(model))

    def _model_ids(self) -> list[str]:
        return [*MODEL_ALIASES, *(v.name for v in self.engine.voices())]

    def _model_entry(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self._created, "owned_by": _OWNER}

    async def _voices(self, request: web.Request) -> web.StreamResponse:
        voices = [
            {
                "id": v.name,
                "object": "audio.voice",
                "name": v.name,
                "default": v.is_default,
                "sample_rate": v.sample_rate,
                "speakers": list(v.speakers),
                "languages": list(v.languages),
                "format": v.format,
            }
            for v in self.engine.voices()
        ]
        return web.json_response(
            {
                "object": "list",
                "data": voices,
                "openai_voices": list(OPENAI_VOICES),
                "formats": available_formats(),
            }
        )

    async def _speech_post(self, request: web.Request) -> web.StreamResponse:
        fields = await self._read_json(request)
        # OpenAI's default is mp3 (its examples write speech.mp3 without a format); WAV without PyAV.
        default = "mp3" if "mp3" in available_formats() else "wav"
        return await self._speak(request, self._parse(fields, default))

    async def _speech_get(self, request: web.Request) -> web.StreamResponse:
        return await self._speak(request, self._parse(request.query, "wav"))

    def _parse(self, fields: Mapping[str, Any], default_format: str) -> SpeechRequest:
        settings = self.engine.settings
        return parse_speech_request(fields, self.engine.voices(), settings.max_text_chars, default_format)

    async def _read_json(self, request: web.Request) -> Mapping[str, Any]:
        # Bounded by the text bound, JSON's escapes included (\uXXXX\uXXXX for one character at most).
        max_chars = self.engine.settings.max_text_chars
        limit = 12 * max_chars + _BODY_SLACK_BYTES
        fix = f"send at most {max_chars} characters of input (the server's --max-text-chars)"
        body = await read_body(request, limit)
        if body is None:
            raise ApiError(413, f"the body is over the bound of {limit} bytes: {fix}")
        try:
            fields = json.loads(body)
        except ValueError as error:
            raise ApiError(400, f"the body is not JSON ({error}): send a JSON object") from None
        if not isinstance(fields, dict):
            raise ApiError(400, 'the body must be a JSON object like {"input": ..., "voice": ...}')
        return fields

    async def _speak(self, request: web.Request, speech: SpeechRequest) -> web.StreamResponse:
        try:
            session = await self.engine.open_session(speech.session_options())
        except InvalidArgument as error:
            raise ApiError(400, str(error)) from None
        except ResourceExhausted as error:
            raise ApiError(429, str(error), kind="rate_limit_error", code="session_limit") from None
        except Unavailable as error:
            raise ApiError(503, str(error), code="unavailable") from None
        response: web.StreamResponse | None = None
        try:
            try:
                await session.send_text(speech.text)
                await session.end_input()
                encoder = encoder_for(speech.response_format, speech.sample_rate)
                async with contextlib.aclosing(session.events()) as events:
                    async for event in events:
                        if not isinstance(event, AudioEvent) or not event.num_samples:
                            continue
                        # The status waits for the first audio: an error before it is sent as JSON.
                        if response is None:
                            response = await _begin(request, speech, self.v1.cors_headers(request))
                        encoded = encoder.encode(event.samples)
                        await response.write(encoded)
                        self.engine.metrics.count_sent(event, written=len(encoded))
            except InvalidArgument as error:
                raise ApiError(400, str(error)) from None
            except UnreadableText as error:
                raise ApiError(400, str(error), param="input", code="unreadable_script") from None
            except VoiceCannotSpeak as error:
                raise ApiError(400, str(error), param="input", code="voice_cannot_speak") from None
            except StageFailed as error:
                raise ApiError(500, str(error)) from None
            if session.timed_out is not None:  # the client read nothing for the idle timeout
                raise ApiError(504, str(session.timed_out), code="timeout")
            if session.stopped_by_shutdown:
                raise ApiError(503, "the server shut down during this request: retry", code="unavailable")
            if response is None:  # no audio after all: an empty file of the format
                response = await _begin(request, speech, self.v1.cors_headers(request))
            await response.write(encoder.flush())
            await response.write_eof()
            return response
        except ApiError as error:
            if response is None:
                raise
            # The status is sent: the client learns of the failure by a connection cut before the last chunk.
            log.warning("speech stream cut: %s", error.message)
            if request.transport is not None:
                request.transport.abort()
            return response
        except ConnectionResetError:
            log.info("speech client went away: session %s stops", session.session_id)
            return response or web.Response(status=499)
        finally:
            await session.close()


async def _begin(request: web.Request, speech: SpeechRequest, cors: dict[str, str]) -> web.StreamResponse:
    content_type = FORMATS[speech.response_format].mime_type
    response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-store", **cors})
    if speech.response_format == "pcm":  # it says its rate nowhere else; a codec may run at another (Opus)
        response.headers["X-Sample-Rate"] = str(speech.sample_rate)
    if speech.warning:
        response.headers["X-Lipstream-Warning"] = speech.warning
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response
