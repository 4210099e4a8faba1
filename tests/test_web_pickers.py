"""The kiosk page's voice and avatar pickers (issue 19, point 4), in real headless Chromium, and the
`GET /v1/avatars` listing they read. One server with two voices (one with two speakers), two avatars of
different frame sizes and tokens on, so that a reconnect that lost the token or the choice shows."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from lipstream.server.engine import Engine
from lipstream.server.options import EngineSettings
from lipstream.server.security import TokenSet
from playwright.sync_api import Browser, Page

from tests.servers import RunningServer, TinyVoice, running_server
from tests.test_web_browser import ASTRONAUT, WAIT_MS, _checked_page, browser, figures, open_kiosk

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with test_web_browser

TOKEN = "picker-token-5"


@pytest.fixture(scope="module")
def picker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    import cv2

    folder = tmp_path_factory.mktemp("pickers")
    portrait = folder / "portrait.png"
    cv2.imwrite(str(portrait), cv2.imread(str(ASTRONAUT))[0:384, 96:384])  # 288 x 384 (the default: 512)
    (folder / "tokens").write_text(TOKEN + "\n")
    voices = {"tiny": TinyVoice(), "duo": TinyVoice(name="duo", speakers=["ann", "bob"])}
    engine = Engine(EngineSettings(extra_avatars=(str(portrait),)), voices=voices)
    with running_server(engine, web=True, tokens=TokenSet(folder / "tokens")) as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from _checked_page(browser)


def _options(page: Page, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} option", "options => options.map(o => o.value)")


def _reconnected(page: Page, connections: int) -> dict[str, Any]:
    page.wait_for_function(
        f"() => window.lipstream.connected && window.lipstream.connections === {connections}", timeout=WAIT_MS
    )
    return figures(page)


def test_the_pickers_list_the_server_and_a_change_reconnects_with_it(
    page: Page, picker_server: RunningServer
) -> None:
    first = open_kiosk(page, f"{picker_server.web_url}?token={TOKEN}&lead=300")
    page.wait_for_function("() => !document.getElementById('pick-avatar').disabled", timeout=WAIT_MS)
    assert _options(page, "#pick-voice") == ["tiny", "duo"]
    assert _options(page, "#pick-avatar") == ["astronaut", "portrait"]
    assert page.input_value("#pick-voice") == "tiny" and page.input_value("#pick-avatar") == "astronaut"
    assert not page.is_visible("#pick-speaker")  # one speaker: nothing to pick
    assert (first["avatar"], page.eval_on_selector("#avatar", "c => [c.width, c.height]")) == (
        "astronaut", [512, 512])

    page.select_option("#pick-avatar", "portrait")
    again = _reconnected(page, 2)
    assert again["avatar"] == "portrait" and again["sessionId"] != first["sessionId"]
    # The session renders the new avatar: its frames are the portrait's size, and they are drawn.
    assert page.eval_on_selector("#avatar", "c => [c.width, c.height]") == [288, 384]
    drawn = again["framesDrawn"]
    page.wait_for_function(f"() => window.lipstream.framesDrawn > {drawn + 3}", timeout=WAIT_MS)
    # The address holds the choice and keeps the rest (the token the new session needed).
    assert "avatar=portrait" in page.url and f"token={TOKEN}" in page.url and "lead=300" in page.url

    page.select_option("#pick-voice", "duo")
    duo = _reconnected(page, 3)
    assert (duo["voice"], duo["speaker"], duo["avatar"]) == ("duo", "ann", "portrait")
    assert page.is_visible("#pick-speaker") and _options(page, "#pick-speaker") == ["ann", "bob"]
    page.select_option("#pick-speaker", "bob")
    assert _reconnected(page, 4)["speaker"] == "bob"
    assert "voice=duo" in page.url and "speaker=bob" in page.url

    reloaded = open_kiosk(page, page.url)  # the choice survives a reload: it is in the address
    page.wait_for_function("() => !document.getElementById('pick-voice').disabled", timeout=WAIT_MS)
    assert (reloaded["voice"], reloaded["speaker"], reloaded["avatar"]) == ("duo", "bob", "portrait")
    assert [page.input_value(s) for s in ("#pick-voice", "#pick-speaker", "#pick-avatar")] == [
        "duo", "bob", "portrait"]
    assert figures(page)["pickersError"] is None


def _selected(page: Page, selector: str) -> dict[str, Any]:
    return page.eval_on_selector(
        selector, "s => { const o = s.selectedOptions[0]; return { value: s.value, text: o ? o.text : null,"
        " disabled: o ? o.disabled : null }; }")


def test_a_choice_the_server_lacks_shows_as_missing_and_a_real_one_recovers(
    page: Page, picker_server: RunningServer
) -> None:
    page.goto(f"{picker_server.web_url}?token={TOKEN}&voice=bob&avatar=nobody&speaker=zed")
    page.wait_for_function(
        "() => window.lipstream.gaveUp && !document.getElementById('pick-avatar').disabled", timeout=WAIT_MS)
    # The pickers name what the address asked for, as missing, not the first voice as if it were in use.
    assert _selected(page, "#pick-voice") == {
        "value": "bob", "text": "bob (not on this server)", "disabled": True}
    assert _selected(page, "#pick-avatar") == {
        "value": "nobody", "text": "nobody (not on this server)", "disabled": True}
    assert _options(page, "#pick-voice") == ["bob", "tiny", "duo"]
    # A refused setting is not retried (it would be refused again): the status says what to do instead.
    status = page.inner_text("#status")
    assert "invalid_argument: voice 'bob' is unknown" in status and "not retrying" in status, status
    assert "pick another" in status and "retrying in" not in status, status
    assert not figures(page)["connected"] and figures(page)["connections"] == 0

    page.select_option("#pick-voice", "duo")  # a real voice is a change: a session, refused for the avatar
    page.wait_for_function(
        "() => window.lipstream.gaveUp && (window.lipstream.error || '').includes('avatar')", timeout=WAIT_MS)
    assert _options(page, "#pick-voice") == ["tiny", "duo"] and page.input_value("#pick-voice") == "duo"
    assert "speaker=" not in page.url  # the speaker went with the voice it was asked for
    page.select_option("#pick-avatar", "portrait")
    chosen = _reconnected(page, 1)
    assert (chosen["voice"], chosen["speaker"], chosen["avatar"], chosen["error"]) == (
        "duo", "ann", "portrait", None)
    assert _options(page, "#pick-avatar") == ["astronaut", "portrait"]
    assert page.inner_text("#status") == "connected"


def test_a_speaker_the_voice_lacks_shows_as_missing(page: Page, picker_server: RunningServer) -> None:
    page.goto(f"{picker_server.web_url}?token={TOKEN}&voice=duo&speaker=zed")
    page.wait_for_function(
        "() => window.lipstream.gaveUp && !document.getElementById('pick-voice').disabled", timeout=WAIT_MS)
    assert page.is_visible("#pick-speaker")
    assert _selected(page, "#pick-speaker") == {
        "value": "zed", "text": "zed (not on this server)", "disabled": True}
    page.select_option("#pick-speaker", "bob")
    assert _reconnected(page, 1)["speaker"] == "bob"
    assert _options(page, "#pick-speaker") == ["ann", "bob"]


def test_in_kiosk_mode_no_picker_shows(page: Page, picker_server: RunningServer) -> None:
    open_kiosk(page, f"{picker_server.web_url}?token={TOKEN}&kiosk=1")
    assert not page.is_visible("#pickers")
    assert not any(page.is_visible(s) for s in ("#pick-voice", "#pick-speaker", "#pick-avatar"))


def test_a_listing_that_fails_disables_the_pickers_and_says_why(
    page: Page, picker_server: RunningServer
) -> None:
    page.goto(picker_server.web_url)  # no token: both the listings and the session are refused
    page.wait_for_function("() => window.lipstream.pickersError !== null", timeout=WAIT_MS)
    assert "pickers unavailable" in page.inner_text("#pickers-status")
    assert "/v1/avatars: this server needs a token" in page.inner_text("#pickers-status")
    assert page.is_disabled("#pick-voice") and page.is_disabled("#pick-avatar")
    page.wait_for_function("() => window.lipstream.error !== null", timeout=WAIT_MS)
    assert "unauthenticated" in page.inner_text("#status")  # the page says what is wrong, it is not stuck


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Content-Type"].startswith("application/json")
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_the_avatar_listing_is_guarded_as_the_page_is(picker_server: RunningServer) -> None:
    url = picker_server.web_url + "v1/avatars"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, body = _get(url, bearer)
    assert status == 200
    assert body == {"object": "list", "data": [
        {"name": "astronaut", "width": 512, "height": 512, "num_frames": 1, "default": True},
        {"name": "portrait", "width": 288, "height": 384, "num_frames": 1, "default": False},
    ]}
    assert _get(url + f"?token={TOKEN}")[0] == 200
    status, body = _get(url)
    assert status == 401 and "needs a token" in body["error"]["message"]
    assert _get(url, {"Authorization": "Bearer wrong"})[0] == 401
    status, body = _get(url, {**bearer, "Origin": "http://evil.example"})
    assert status == 403 and "--web-allowed-origin" in body["error"]["message"]
    status, body = _get(picker_server.web_url + "v1/nothing", bearer)  # speech.py's catch-all still answers
    assert status == 404 and body["error"]["code"] == "unknown_url"
