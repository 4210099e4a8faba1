"""The kiosk page's subtitles from the word events, in real headless Chromium: while the avatar speaks, the
subtitle holds the sentence's words and the highlighted one is a word of it, moving on as the audio plays."""

from __future__ import annotations

from lipstream.models.vits import split_words
from playwright.sync_api import Page

from tests.test_web_browser import WAIT_MS, browser, figures, open_kiosk, page  # noqa: F401 (fixtures)

SENTENCE = "Subtitles follow the voice, one highlighted word at a time."


def test_the_page_shows_the_spoken_word_highlighted(page: Page, web_url: str) -> None:  # noqa: F811
    open_kiosk(page, web_url)
    page.fill("#text", SENTENCE)
    page.click("#speak")
    expected = [w for w, _, _ in split_words(SENTENCE)]
    seen: list[str] = []
    for _ in range(200):  # bounded: the sentence lasts about 4 s, polled every 50 ms
        page.wait_for_timeout(50)
        # The page's figures and what the subtitle shows, read in one go (the highlight moves meanwhile).
        now, shown, highlighted = page.evaluate(
            """() => { const s = document.querySelector('#subtitle .spoken');
                       return [window.lipstream, document.getElementById('subtitle').textContent,
                               s ? s.textContent : ''] }"""
        )
        if now["subtitleWord"] and (not seen or seen[-1] != now["subtitleWord"]):
            seen.append(now["subtitleWord"])
            assert now["subtitleWord"] in expected
            assert highlighted == now["subtitleWord"]
            assert shown.split() == now["subtitle"].split()
        if now["utterances"] and all(u["kind"] == "finished" for u in now["utterances"][-1:]) and seen \
                and now["pendingSpeech"] == 0:
            break
    assert figures(page)["wordsReceived"] >= len(expected)
    # The highlight moved through the sentence in order (a word may be skipped between two paints).
    assert len(seen) >= len(expected) // 2, seen
    positions = [expected.index(w) for w in seen]
    assert positions == sorted(positions), seen
