"""The kiosk page end to end in real headless Chromium (Debian's `chromium`, driven by Playwright).

Each test reads the page's own figures (`window.lipstream`): what the Web Audio API scheduled and played, on
the AudioContext clock, and what the canvas showed. Headless Chromium has no sound card; its AudioContext
still runs on a null audio sink and its clock advances in real time, so nothing here needs flags for audio.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lipstream.server.options import EngineSettings
from lipstream.server.security import TLSFiles, TokenSet
from lipstream.server.web import WebServer
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.certs import make_certificates
from tests.servers import RunningServer, running_server, session_threads, tiny_engine

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
ASTRONAUT = Path(__file__).resolve().parents[1] / "models" / "avatar" / "assets" / "astronaut.png"
SCREENSHOT = Path(__file__).resolve().parents[1] / "out" / "kiosk.png"
SENTENCE = "Hello! I am the lipstream avatar, and my lips move with my voice."
LONG_TEXT = (
    "This is a long answer that the listener will not wait for, because it goes on and on about the weather, "
    "the trains, the price of bread and every other thing that came to mind while it was being written."
)
MAX_OFFSET_MS = 80.0
WAIT_MS = 120_000  # the page's own progress is what the tests wait for; this only bounds a broken run


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from _checked_page(browser)


def _checked_page(browser: Browser, **context_options: Any) -> Iterator[Page]:
    """A page that fails the test when it throws or when its Content-Security-Policy blocks something.

    The page's CSP has no 'unsafe-eval', so wait_for_function gets functions ("() => ..."): Playwright
    evaluates a bare expression with eval in the page, which the CSP blocks."""
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 800}, **context_options})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            errors.append(message.text)

    page.on("console", on_console)
    yield page
    context.close()
    assert not errors, f"the page threw or was blocked: {errors}"


def figures(page: Page) -> dict[str, Any]:
    return page.evaluate("window.lipstream")


def open_kiosk(page: Page, url: str) -> dict[str, Any]:
    page.goto(url)
    page.wait_for_function("() => window.lipstream && window.lipstream.connected", timeout=WAIT_MS)
    return figures(page)


@pytest.mark.parametrize("pacing", ["realtime", "fast"])
def test_the_page_speaks_with_lips_in_sync(page: Page, web_url: str, pacing: str) -> None:
    before = open_kiosk(page, f"{web_url}?pacing={pacing}")
    assert before["audioState"] == "running" and before["engine"] == "viseme"
    if pacing == "realtime":
        # Kiosk: while silent the server sends idle frames (REALTIME pacing) and the page draws them.
        page.wait_for_function("() => window.lipstream.framesDrawn >= 10", timeout=WAIT_MS)

    page.fill("#text", SENTENCE)
    page.click("#speak")
    page.wait_for_function(
        "() => window.lipstream.playingSpeech > 0 && window.lipstream.speakingFramesDrawn > 5",
        timeout=WAIT_MS,
    )
    if pacing == "realtime":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
    page.wait_for_function(
        """() => { const s = window.lipstream, u = s.utterances;
                   const started = u.filter(x => x.kind === 'started').length;
                   return started > 0 && u.filter(x => x.kind === 'finished').length === started
                          && s.pendingSpeech === 0; }""",
        timeout=WAIT_MS,
    )
    after = figures(page)

    finished = [u for u in after["utterances"] if u["kind"] == "finished"]
    assert " ".join(u["text"] for u in finished) == SENTENCE
    rate = after["sampleRate"]
    speech_seconds = 0.0
    for utterance in finished:
        seconds = (utterance["endSample"] - utterance["startSample"]) / rate
        audio = after["utteranceAudio"][str(utterance["id"])]
        # Every sample of the utterance was scheduled and played to its end on the AudioContext clock.
        assert audio["scheduledSeconds"] == pytest.approx(seconds, abs=0.005)
        assert audio["playedSeconds"] == pytest.approx(audio["scheduledSeconds"], abs=1e-6)
        assert audio["endedAt"] - audio["startedAt"] >= seconds - 0.005
        speech_seconds += seconds
    first = after["utteranceAudio"][str(finished[0]["id"])]
    last = after["utteranceAudio"][str(finished[-1]["id"])]
    assert speech_seconds > 2.0
    assert last["endedAt"] - first["startedAt"] >= speech_seconds - 0.005
    assert after["audioTime"] >= last["endedAt"]

    # Frames were drawn while the voice played, each on time against the audio clock.
    assert after["speakingFramesDrawn"] >= 0.5 * speech_seconds * after["fps"]
    assert after["patchesDrawn"] > 0  # the page asks for face_patch frames: mouth patches over the picture
    if pacing == "realtime":
        assert after["repeatsDrawn"] > 0  # the idle frames before the speech: repeats, no JPEG
    # (Ticks after the browser painted nothing for over 100 ms, a starved machine, are counted apart; so are
    # ticks whose due frame had not arrived yet, which must stay rare: the page cannot show what it lacks.)
    assert after["speechOffsetSamples"] >= 5 * speech_seconds
    assert after["maxSpeechOffsetMs"] <= MAX_OFFSET_MS, _diagnosis(after)
    assert after["lateFrameTicks"] <= 0.25 * after["speechOffsetSamples"], _diagnosis(after)
    assert after["timeToFirstAudioMs"] is not None and after["error"] is None


def test_stop_interrupts_playback(page: Page, web_url: str) -> None:
    open_kiosk(page, web_url)
    page.evaluate("text => window.lipstreamSpeak(text)", LONG_TEXT)
    page.wait_for_function(
        "() => window.lipstream.playingSpeech > 0 && window.lipstream.speechOffsetSamples > 10",
        timeout=WAIT_MS,
    )
    page.click("#stop")
    stopped = figures(page)
    assert stopped["interrupted"] == 1
    assert stopped["playingSpeech"] == 0 and stopped["pendingSpeech"] == 0

    page.wait_for_function(
        "() => window.lipstream.utterances.some(u => u.kind === 'interrupted')", timeout=WAIT_MS
    )
    # Let the audio clock run on for a second: no speech may sound or be scheduled meanwhile.
    page.wait_for_function(
        f"() => window.lipstream.audioTime > {stopped['audioTime'] + 1.0}", timeout=WAIT_MS
    )
    later = figures(page)
    assert later["playingSpeech"] == 0 and later["pendingSpeech"] == 0
    assert _speech(later, "playedSeconds") == pytest.approx(_speech(stopped, "playedSeconds"), abs=1e-9)
    assert _speech(later, "scheduledSeconds") == pytest.approx(_speech(stopped, "scheduledSeconds"), abs=1e-9)
    assert not [u for u in later["utterances"] if u["kind"] == "finished" and len(u["text"]) > 100]
    played = _speech(later, "playedSeconds")
    assert 0.0 < played < len(LONG_TEXT) / 20  # some of it, far from all (about 15 characters a second)

    # The session goes on: the next sentence is spoken from its start.
    page.evaluate("text => window.lipstreamSpeak(text)", "Now a short one.")
    page.wait_for_function(
        "() => window.lipstream.utterances.some(u => u.kind === 'finished' && u.text === 'Now a short one.')"
        " && window.lipstream.pendingSpeech === 0",
        timeout=WAIT_MS,
    )
    final = figures(page)
    short = next(u for u in final["utterances"] if u["kind"] == "finished" and u["text"].startswith("Now"))
    seconds = (short["endSample"] - short["startSample"]) / final["sampleRate"]
    assert final["utteranceAudio"][str(short["id"])]["playedSeconds"] == pytest.approx(seconds, abs=0.005), (
        final["utterances"], final["utteranceAudio"], _diagnosis(final))


def test_the_page_reconnects_when_the_server_restarts(page: Page, lipstream_server: RunningServer) -> None:
    web = WebServer(lipstream_server.engine, "127.0.0.1", 0)
    lipstream_server.call(web.start())
    port = web.port
    try:
        first = open_kiosk(page, web.url)
        assert first["connections"] == 1
        lipstream_server.call(web.stop())
        page.wait_for_function("() => !window.lipstream.connected", timeout=WAIT_MS)
        assert "retrying" in page.inner_text("#status")
        web = WebServer(lipstream_server.engine, "127.0.0.1", port)
        lipstream_server.call(web.start())
        page.wait_for_function("() => window.lipstream.connected && window.lipstream.connections === 2",
                               timeout=WAIT_MS)
        again = figures(page)
        assert again["sessionId"] != first["sessionId"]
        drawn = again["framesDrawn"]
        page.wait_for_function(f"() => window.lipstream.framesDrawn > {drawn + 5}", timeout=WAIT_MS)
    finally:
        lipstream_server.call(web.stop())


def test_a_bad_setting_in_the_address_is_shown(page: Page, web_url: str) -> None:
    page.goto(web_url + "?fps=500")
    page.wait_for_function("() => window.lipstream.error !== null", timeout=WAIT_MS)
    assert "fps 500.0 is out of range" in figures(page)["error"]
    assert "fps 500.0 is out of range" in page.inner_text("#status")
    assert not figures(page)["connected"]


def test_the_page_passes_its_token_on_over_https(
    browser: Browser, lipstream_server: RunningServer, tmp_path: Path
) -> None:
    certificates = make_certificates(tmp_path)
    (tmp_path / "tokens").write_text("page-token-41\n")
    web = WebServer(
        lipstream_server.engine, "127.0.0.1", 0, tokens=TokenSet(tmp_path / "tokens"),
        ssl_context=TLSFiles(certificates.server_cert, certificates.server_key).ssl_context(),
    )
    lipstream_server.call(web.start())
    try:
        # The test's CA is not the browser's: its certificate errors are waved through, the TLS is real.
        pages = _checked_page(browser, ignore_https_errors=True)
        page = next(pages)
        assert web.url.startswith("https://")
        page.goto(web.url)  # no token: the page loads and says how to pass one
        page.wait_for_function("() => window.lipstream.error !== null", timeout=WAIT_MS)
        assert "unauthenticated: this server needs a token" in page.inner_text("#status")
        connected = open_kiosk(page, web.url + "?token=page-token-41&pacing=fast")  # over wss://
        assert connected["error"] is None and connected["connections"] == 1
        next(pages, None)  # closes the context and checks the page
    finally:
        lipstream_server.call(web.stop())


@pytest.fixture(scope="module")
def portrait_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose avatar is a 3:4 portrait (the default avatar's face, cropped), so a stretched box
    shows in every orientation."""
    import cv2

    image = cv2.imread(str(ASTRONAUT))
    path = tmp_path_factory.mktemp("avatar") / "portrait.png"
    cv2.imwrite(str(path), image[0:384, 96:384])   # 288 x 384
    with running_server(tiny_engine(EngineSettings(avatar=str(path))), web=True) as server:
        yield server


@pytest.mark.parametrize("kiosk", [False, True], ids=["page", "kiosk"])
@pytest.mark.parametrize("width, height", [(1080, 1920), (390, 844), (1920, 1080)])
def test_the_avatar_keeps_its_aspect_ratio_on_any_screen(
    browser: Browser, portrait_server: RunningServer, width: int, height: int, kiosk: bool
) -> None:
    pages = _checked_page(browser, viewport={"width": width, "height": height})
    page = next(pages)
    open_kiosk(page, portrait_server.web_url + ("?kiosk=1" if kiosk else ""))
    box = page.evaluate(
        """() => { const c = document.getElementById('avatar'), r = c.getBoundingClientRect();
                   const d = document.documentElement;
                   return { left: r.left, top: r.top, width: r.width, height: r.height,
                            frameWidth: c.width, frameHeight: c.height,
                            scrollWidth: d.scrollWidth, scrollHeight: d.scrollHeight }; }"""
    )
    frame_ratio = box["frameWidth"] / box["frameHeight"]
    assert frame_ratio == pytest.approx(288 / 384, rel=0.02), box   # the session's frame, not the default
    assert box["width"] / box["height"] == pytest.approx(frame_ratio, rel=0.01), box
    # It fits the screen, nothing scrolls, and it is as large as the screen allows along one side.
    assert box["left"] >= 0 and box["left"] + box["width"] <= width + 0.5, box
    assert box["top"] >= 0 and box["top"] + box["height"] <= height + 0.5, box
    assert box["scrollWidth"] <= width and box["scrollHeight"] <= height, box
    if kiosk:
        assert max(box["width"] / width, box["height"] / height) > 0.99, box
    else:
        assert box["width"] * box["height"] >= 0.25 * width * height, box
        # The status badge and the subtitles sit on the picture, not on the page's margins.
        page.evaluate("() => window.lipstreamSpeak('Hello there, this is a subtitle test.')")
        page.wait_for_function("() => window.lipstream.subtitle !== ''", timeout=WAIT_MS)
        inside = page.evaluate(
            """() => { const a = document.getElementById('avatar').getBoundingClientRect();
                       return ['status', 'subtitle'].map((id) => {
                         const r = document.getElementById(id).getBoundingClientRect();
                         return { id, inside: r.width > 0 && r.left >= a.left - 0.5 && r.top >= a.top - 0.5
                                  && r.right <= a.right + 0.5 && r.bottom <= a.bottom + 0.5,
                                  box: [r.left, r.top, r.right, r.bottom],
                                  avatar: [a.left, a.top, a.right, a.bottom] };
                       }); }"""
        )
        assert all(element["inside"] for element in inside), inside
    next(pages, None)


def _diagnosis(state: dict[str, Any]) -> str:
    keys = ("worstSpeechOffset", "underruns", "reanchors", "trims", "leadMs", "framesReceived", "framesDrawn",
            "speechOffsetSamples", "stalledTicks", "longestStallMs", "maxStalledOffsetMs", "lateFrameTicks",
            "maxLateFrameOffsetMs")
    return f"page figures: {({key: state[key] for key in keys})}"


def _speech(state: dict[str, Any], key: str) -> float:
    return sum(audio[key] for audio in state["utteranceAudio"].values())


def test_the_kiosk_page_joins_its_channel(page: Page, web_url: str) -> None:
    """Chromium: the page opened as /?channel=lobby&kiosk=1 passes its channel on to its WebSocket."""
    open_kiosk(page, web_url + "?channel=lobby-browser&kiosk=1")
    body = json.dumps({"text": "Welcome to the lobby."}).encode()
    request = urllib.request.Request(
        web_url + "v1/channels/lobby-browser/say", data=body, headers={"Content-Type": "application/json"},
        method="POST",
    )
    for _ in range(100):  # the page's session opens once its config arrives
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                assert json.load(response) == {"displays": 1}
                break
        except urllib.error.HTTPError as error:
            assert error.code == 404
            time.sleep(0.05)
    page.wait_for_function(
        "() => window.lipstream.utterances.some((u) => u.text === 'Welcome to the lobby.')", timeout=WAIT_MS
    )
    page.goto("about:blank")  # the page's session ends before the module's own servers check for workers
    for _ in range(200):
        if not session_threads():
            break
        time.sleep(0.05)


def test_the_page_shows_the_servers_warning(page: Page, web_url: str) -> None:
    """Text the voice cannot read is skipped and the page says so (the rest is spoken)."""
    open_kiosk(page, web_url + "?pacing=fast")
    page.evaluate("() => window.lipstreamSpeak('Welcome. 欢迎来到博物馆。')")
    page.wait_for_function("() => window.lipstream.warnings.length > 0", timeout=WAIT_MS)
    assert "cannot read Han" in figures(page)["warnings"][0]
    assert "warning: voice" in page.inner_text("#status")
    page.evaluate("() => window.lipstreamSpeak('Thank you.')")  # the warning was about the text before
    assert page.inner_text("#status") == "connected"
    page.goto("about:blank")
    for _ in range(200):
        if not session_threads():
            break
        time.sleep(0.05)


def test_a_refused_text_is_shown_and_the_page_goes_on(page: Page, web_url: str) -> None:
    """A text the server refuses for its size (over --max-text-chars) is refused alone (a text_refused
    warning): the session goes on, the page says what was not spoken and why, and speaks the next text."""
    first = open_kiosk(page, web_url + "?pacing=fast")
    page.evaluate("() => window.lipstreamSpeak('word '.repeat(2001))")  # 10005 characters, over 10000
    page.wait_for_function("() => window.lipstream.warnings.length === 1", timeout=WAIT_MS)
    status = page.inner_text("#status")
    assert status.startswith("not spoken: ") and "over the bound of 10000" in status, status
    after = figures(page)
    assert after["connected"] and after["connections"] == 1 and after["sessionId"] == first["sessionId"]
    page.evaluate("() => window.lipstreamSpeak('Now this one.')")
    assert page.inner_text("#status") == "connected"  # the refusal was about the text before
    page.wait_for_function(
        "() => window.lipstream.utterances.some((u) => u.kind === 'finished' && u.text === 'Now this one.')",
        timeout=WAIT_MS,
    )
    page.goto("about:blank")
    for _ in range(200):
        if not session_threads():
            break
        time.sleep(0.05)


@pytest.mark.parametrize(
    "query, shown",
    [
        ("?lead=abc", 'lead "abc" is not a buffering time: use 0..5000'),  # NaN would schedule nothing
        ("?lead=-500", 'lead "-500" is not a buffering time'),
        ("?fps=abc", "config fps = 'abc' has the wrong type"),  # not "fps = None"
    ],
)
def test_a_setting_that_is_not_a_number_is_named(page: Page, web_url: str, query: str, shown: str) -> None:
    page.goto(web_url + query)
    page.wait_for_function("() => window.lipstream.gaveUp", timeout=WAIT_MS)
    assert shown in page.inner_text("#status")
    assert not figures(page)["connected"]


def test_an_idle_kiosk_starts_its_next_session_quietly(browser: Browser) -> None:
    """The server ends a session idle for --idle-timeout; the kiosk opens the next at once and its screen
    never says it was disconnected."""
    with running_server(tiny_engine(EngineSettings(idle_timeout_s=1.0)), web=True) as server:
        pages = _checked_page(browser)
        page = next(pages)
        open_kiosk(page, server.web_url + "?kiosk=1")
        page.evaluate(
            """() => { window.statusSeen = [];
                       new MutationObserver(() => window.statusSeen.push(
                         document.getElementById('status').textContent)).observe(
                         document.getElementById('status'), { childList: true, characterData: true,
                                                              subtree: true }); }"""
        )
        page.wait_for_function("() => window.lipstream.connected && window.lipstream.connections >= 3",
                               timeout=WAIT_MS)
        seen = page.evaluate("() => window.statusSeen")
        assert seen and set(seen) == {"connected"}, seen
        drawn = figures(page)["framesDrawn"]
        page.wait_for_function(f"() => window.lipstream.framesDrawn > {drawn + 5}", timeout=WAIT_MS)
        page.goto("about:blank")
        next(pages, None)


def test_a_warning_is_for_the_operator_not_the_kiosk_screen(page: Page, web_url: str) -> None:
    """kiosk=1 (a channel's display) keeps a warning off the screen: the say call's header carried it."""
    open_kiosk(page, web_url + "?pacing=fast&kiosk=1")
    page.evaluate("() => window.lipstreamSpeak('Welcome. 欢迎来到博物馆。')")
    page.wait_for_function("() => window.lipstream.warnings.length > 0", timeout=WAIT_MS)
    assert "warning: voice" in (page.text_content("#status") or "")
    assert not page.is_visible("#status")
    page.goto("about:blank")
    for _ in range(200):
        if not session_threads():
            break
        time.sleep(0.05)
