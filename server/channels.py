"""Named display channels: the sessions that joined each channel, and what "say" and "stop" do to them.

A session joins a channel while it runs (a kiosk page opened as ``/?channel=lobby``, a Converse stream with
``SessionConfig.channel``); another process makes every session on it speak or stop, over HTTP
(web/channels.py) or gRPC (SayOnChannel / StopChannel in servicer.py). Both transports use one
`ChannelRegistry`, so a gRPC call reaches the pages and a POST reaches the gRPC sessions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lipstream.server.options import InvalidArgument, shown
from lipstream.server.scripts import has_words
from lipstream.server.session import TextTooLong
from lipstream.server.tts_stage import UnreadableText

if TYPE_CHECKING:
    from lipstream.server.session import Session

__all__ = [
    "CHANNEL_NAME", "ChannelRefused", "ChannelRegistry", "NoDisplay", "NothingToSay", "Said", "check_channel"
]

log = logging.getLogger(__name__)

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class NoDisplay(LookupError):
    """No session is on the channel (gRPC NOT_FOUND, HTTP 404); the message says how to open one."""


class ChannelRefused(RuntimeError):
    """Sessions are on the channel but none could take the text now (gRPC FAILED_PRECONDITION, HTTP 409)."""


class NothingToSay(InvalidArgument):
    """The text has no letter or digit (HTTP: code empty_input)."""


@dataclasses.dataclass(frozen=True)
class Said:
    """What "say" did: the displays that took the text, and what some of their voices skip ("" for none)."""

    displays: int
    warning: str


def check_channel(name: str) -> str:
    """The name when it is a valid channel name; raises InvalidArgument naming the rule."""
    if not CHANNEL_NAME.fullmatch(name):
        raise InvalidArgument(
            f"channel {shown(name)} is not a channel name: use 1 to 64 letters, digits, '-' or '_'"
        )
    return name


class ChannelRegistry:
    """The sessions on each named channel. One per process, shared by the gRPC and the web server."""

    def __init__(self) -> None:
        self._sessions: dict[str, set[Session]] = {}

    @contextlib.contextmanager
    def joined(self, name: str, session: Session) -> Iterator[None]:
        """The session is on channel `name` while the block runs ("": on none). Check the name first
        (check_channel): this does not."""
        if not name:
            yield
            return
        session.wait_for_channel()
        self._sessions.setdefault(name, set()).add(session)
        try:
            yield
        finally:
            members = self._sessions.get(name, set())
            members.discard(session)
            if not members:
                self._sessions.pop(name, None)

    def displays(self, name: str) -> int:
        """How many sessions are on the channel now."""
        return len(self._sessions.get(name, ()))

    async def say(self, name: str, text: str, interrupt: bool = False) -> Said:
        """Every session on the channel speaks `text` (flushed at once; `interrupt`: what they are saying
        stops first); raises NothingToSay, InvalidArgument (also a text over the bound), UnreadableText (no
        display's voice would say a word of it), NoDisplay or ChannelRefused."""
        sessions = self._members(name)
        if not has_words(text):
            raise NothingToSay("the text to say has no letter or digit: give the words to speak")
        verdicts = [session.judge(text) for session in sessions]
        if all(refusal for _, refusal in verdicts):  # one that reads some says that, warned of the rest
            raise UnreadableText(verdicts[0][1])
        warning = "; ".join(sorted({skipped for skipped, _ in verdicts if skipped}))
        spoken = 0
        reasons = []
        for session in sessions:
            try:
                if interrupt:
                    await session.interrupt()
                await session.send_text(text, flush=True)
                spoken += 1
            except TextTooLong:  # the same for every display: waiting does not help
                raise
            except InvalidArgument as error:  # that session cannot take it (its pending text is at the bound)
                log.info("channel %s: a display refused the text: %s", name, error)
                reasons.append(str(error))
        if not spoken:
            raise ChannelRefused(
                f"no display on channel {name!r} could take the text now ({reasons[0]}): send it again once "
                "they have spoken what they have"
            )
        return Said(spoken, warning)

    async def stop(self, name: str) -> int:
        """What the channel's sessions are saying stops (they go on); returns how many; raises
        InvalidArgument or NoDisplay."""
        sessions = self._members(name)
        for session in sessions:
            await session.interrupt()
        return len(sessions)

    def _members(self, name: str) -> list[Session]:
        """The channel's sessions now (a copy: they may leave while we await)."""
        check_channel(name)
        sessions = list(self._sessions.get(name, ()))
        if not sessions:
            raise NoDisplay(
                f"no display is on channel {name!r}: open the kiosk page as /?channel={name}, or a Converse "
                f"stream with SessionConfig.channel {name!r}"
            )
        return sessions
