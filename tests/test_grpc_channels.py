"""Named display channels over gRPC (issue 19, point 4): SayOnChannel / StopChannel make the kiosk pages on
/?channel=NAME speak and stop, as POST /v1/channels/NAME does; a Converse stream with SessionConfig.channel
is on the channel too. One registry serves both transports, so each reaches the other's sessions."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from lipstream.client import AsyncClient, ChannelSaid, LipStreamError, SessionStarted, UtteranceEvent
from lipstream.client.cli import ExitCode
from lipstream.client.cli import main as cli_main
from lipstream.server.channels import ChannelRefused, ChannelRegistry, NoDisplay, Said
from lipstream.server.options import InvalidArgument
from lipstream.server.security import TokenSet
from lipstream.server.servicer import _status_of
from lipstream.server.web.protocol import parse_binary_message

from tests.servers import RunningServer, tiny_engine

# REALTIME: the page's own pacing, and speech then lasts long enough on the wall clock to be stopped.
PAGE_CONFIG = {"type": "config", "video": False, "pacing": "realtime"}
LONG_TEXT = " ".join(["The painting you see here was made in the spring of that year by a young artist"] * 4)


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[RunningServer]:
    """The tiny voice behind gRPC and the web page, on the server's own loop."""
    server = await asyncio.to_thread(RunningServer, tiny_engine(), web=True, **options)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def page(server: RunningServer, query: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A kiosk page's WebSocket with its session open (it is on the channel when this yields)."""
    async with aiohttp.ClientSession() as http:
        url = server.web_url.replace("http", "ws", 1) + "ws" + query
        async with http.ws_connect(url) as ws:
            await ws.send_str(json.dumps(PAGE_CONFIG))
            channel = query.partition("channel=")[2].partition("&")[0]
            await _joined(server, channel, 1)
            yield ws


async def _joined(server: RunningServer, channel: str, count: int) -> None:
    for _ in range(250):  # the session opens as the config arrives
        if server.service.channels.displays(channel) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no session joined channel {channel!r}")


async def _until(ws: aiohttp.ClientWebSocketResponse, wanted: str) -> list[dict[str, Any]]:
    """The page's messages (binary ones by their header) up to and including the first that is an
    utterance event of kind `wanted`, or with `wanted` "speech", an audio chunk of an utterance."""
    received: list[dict[str, Any]] = []
    for _ in range(20_000):
        raw = await ws.receive(timeout=60)
        assert raw.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), raw
        if raw.type == aiohttp.WSMsgType.BINARY:
            message = parse_binary_message(raw.data)[0]
        else:
            message = json.loads(raw.data)
        received.append(message)
        if (message["type"] == "utterance" and message["kind"] == wanted) or (
            wanted == "speech" and message["type"] == "audio" and message["utterance_id"]
        ):
            return received
    raise AssertionError(f"no {wanted} message")


def _speech(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The audio chunks that carry an utterance (not REALTIME's silence between them)."""
    return [m for m in messages if m["type"] == "audio" and m["utterance_id"]]


async def test_say_and_stop_over_grpc_drive_the_page_on_the_channel() -> None:
    async with serving() as server, page(server, "?channel=lobby") as lobby:
        async with AsyncClient(server.target) as client:
            assert await client.say_on_channel("lobby", "Welcome to the lobby.") == ChannelSaid(1)
            heard = await _until(lobby, "finished")
            assert heard[-1]["text"] == "Welcome to the lobby." and _speech(heard)

            assert await client.say_on_channel("lobby", LONG_TEXT) == ChannelSaid(1)
            speaking = (await _until(lobby, "speech"))[-1]  # the page is hearing it
            assert await client.stop_channel("lobby") == 1
            stopped = (await _until(lobby, "interrupted"))[-1]
            assert stopped["utterance_id"] == speaking["utterance_id"]

            # interrupt=True stops what is being said and speaks the new text at once.
            assert await client.say_on_channel("lobby", LONG_TEXT) == ChannelSaid(1)
            await _until(lobby, "started")
            assert await client.say_on_channel("lobby", "Closing now.", interrupt=True) == ChannelSaid(1)
            await _until(lobby, "interrupted")
            assert (await _until(lobby, "finished"))[-1]["text"] == "Closing now."


async def test_bad_calls_get_their_status() -> None:
    async with serving() as server, page(server, "?channel=lobby"), AsyncClient(server.target) as client:
        with pytest.raises(LipStreamError) as missing:
            await client.say_on_channel("hall", "Hi.")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
        assert "/?channel=hall" in missing.value.details
        with pytest.raises(LipStreamError) as missing:
            await client.stop_channel("hall")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
        for bad in ("bad name", "", "x" * 65):
            with pytest.raises(LipStreamError) as invalid:
                await client.stop_channel(bad)
            assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "1 to 64 letters" in invalid.value.details
        with pytest.raises(LipStreamError) as empty:
            await client.say_on_channel("lobby", "  ")
        assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(LipStreamError) as converse:  # a stream's channel name is checked as well
            async for _ in client.converse("Hi.", channel="no way"):
                pass
        assert converse.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(LipStreamError) as synthesize:  # a Synthesize session cannot wait to be told
            async for _ in client.synthesize("Hi.", channel="lobby"):
                pass
        assert synthesize.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "Converse" in synthesize.value.details


async def test_text_no_display_can_say_is_invalid_argument_as_on_http() -> None:
    """As POST /v1/channels/NAME/say (400): text over --max-text-chars, which no waiting makes fit, is not
    FAILED_PRECONDITION's "send it again"; text in a script no display's voice reads is not taken silently."""
    async with serving() as server, page(server, "?channel=lobby") as lobby:
        async with AsyncClient(server.target) as client:
            with pytest.raises(LipStreamError) as long:
                await client.say_on_channel("lobby", "word " * 2_001)
            assert long.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "10005 characters is over the bound of 10000: send it in parts" in long.value.details
            with pytest.raises(LipStreamError) as unreadable:
                await client.say_on_channel("lobby", "你好，欢迎。")
            assert unreadable.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "cannot read the text's script: Han" in unreadable.value.details
            # Text with some words the voice reads is taken: those are spoken, the page is warned of the rest.
            said = await client.say_on_channel("lobby", "Hello 你好 there.")
            assert said.displays == 1 and said.warning.startswith("voice 'tiny' cannot read Han"), said
            heard = await _until(lobby, "finished")
            assert heard[-1]["text"] == "Hello there."
            assert any(m["type"] == "warning" and "'你好'" in m["message"] for m in heard), heard


async def test_a_converse_stream_on_a_channel_is_driven_by_grpc_and_by_http() -> None:
    async with serving() as server, AsyncClient(server.target) as client:
        async with client.converse(channel="stage") as stream:
            spoken: list[str] = []
            channels_echoed: list[str] = []
            events = aiter(stream)
            await _joined(server, "stage", 1)
            assert await client.say_on_channel("stage", "Over gRPC.") == ChannelSaid(1)
            async with aiohttp.ClientSession() as http:
                say = server.web_url + "v1/channels/stage/say"
                async with http.post(say, json={"text": "Over HTTP."}) as response:
                    assert response.status == 200 and await response.json() == {"displays": 1}
            async for event in events:
                if isinstance(event, SessionStarted):
                    channels_echoed.append(event.config.channel)
                if isinstance(event, UtteranceEvent) and event.kind == "finished":
                    spoken.append(event.text)
                    if len(spoken) == 2:
                        break
            assert spoken == ["Over gRPC.", "Over HTTP."]
            assert channels_echoed == ["stage"]  # SessionStarted's resolved config names the channel
            await stream.end()
            async for _ in events:
                pass
        for _ in range(250):  # a stream that ended is off its channel
            if not server.service.channels.displays("stage"):
                break
            await asyncio.sleep(0.02)
        assert not server.service.channels.displays("stage")


async def test_with_tokens_a_call_needs_one(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("kiosk-token-7\n")
    async with serving(tokens=TokenSet(tmp_path / "tokens")) as server:
        async with page(server, "?channel=lobby&token=kiosk-token-7") as lobby:
            async with AsyncClient(server.target) as anonymous:
                for call in (anonymous.say_on_channel("lobby", "Hello."), anonymous.stop_channel("lobby")):
                    with pytest.raises(LipStreamError) as refused:
                        await call
                    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
            async with AsyncClient(server.target, token="kiosk-token-7") as client:
                assert await client.say_on_channel("lobby", "Hello.") == ChannelSaid(1)
            assert (await _until(lobby, "finished"))[-1]["text"] == "Hello."


def test_the_cli_says_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> tuple[list[int], list[str]]:
        async with serving() as server, page(server, "?channel=lobby") as lobby:
            target = ["--target", server.target]
            run = asyncio.to_thread
            codes = [await run(cli_main, [*target, "channel", "lobby", "say", "Hello from the CLI."])]
            heard = (await _until(lobby, "finished"))[-1]["text"]
            codes += [
                await run(cli_main, [*target, "channel", "lobby", "stop"]),
                await run(cli_main, [*target, "channel", "hall", "stop"]),
                await run(cli_main, [*target, "channel", "lobby", "say"]),
                await run(cli_main, [*target, "channel", "lobby", "say", "Bye 再见."]),
            ]
            return codes, heard

    codes, heard = asyncio.run(scenario())
    assert heard == "Hello from the CLI."
    assert codes == [ExitCode.OK, ExitCode.OK, ExitCode.INVALID_ARGUMENT, ExitCode.USAGE, ExitCode.OK]
    out, err = capsys.readouterr()
    assert "1 display on channel lobby speaking" in out and "stopped 1 display" in out
    assert "NOT_FOUND" in err and "/?channel=hall" in err
    assert "warning: voice 'tiny' cannot read Han (Chinese characters) text: skipped" in err


class _Display:
    """A session stand-in that records what the registry tells it, or refuses text."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[str] = []
        self._refuse = refuse

    def judge(self, text: str) -> tuple[str, str]:
        return "", ""  # its voice reads every script

    def wait_for_channel(self) -> None:
        self.calls.append("on the channel")

    async def interrupt(self) -> None:
        self.calls.append("interrupt")

    async def send_text(self, text: str, flush: bool = False) -> None:
        if self._refuse:
            raise InvalidArgument("12000 characters would be waiting to be spoken, over the bound of 10000")
        self.calls.append(f"text {text!r} flush={flush}")


async def test_the_registry_counts_the_displays_that_took_it() -> None:
    channels = ChannelRegistry()
    took, refused = _Display(), _Display(refuse=True)
    with channels.joined("lobby", took), channels.joined("lobby", refused):  # type: ignore[arg-type]
        assert channels.displays("lobby") == 2
        assert await channels.say("lobby", "Hi.", interrupt=True) == Said(1, "")
        assert took.calls == ["on the channel", "interrupt", "text 'Hi.' flush=True"]
        assert await channels.stop("lobby") == 2
    assert channels.displays("lobby") == 0
    with channels.joined("shop", refused), pytest.raises(ChannelRefused) as busy:  # type: ignore[arg-type]
        await channels.say("shop", "Hi.")
    assert "over the bound" in str(busy.value) and "send it again" in str(busy.value)
    assert _status_of(busy.value) == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(NoDisplay) as none:
        await channels.stop("shop")
    assert _status_of(none.value) == grpc.StatusCode.NOT_FOUND
