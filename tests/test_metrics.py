"""/metrics on the web port: the figures move with real sessions over real gRPC, and tokens guard them."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from lipstream.client import Client, InvalidArgumentError
from lipstream.server.security import TokenSet
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import running_server, tiny_engine


def scrape(url: str, token: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    request = urllib.request.Request(url + "metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_sessions_statuses_bytes_and_latencies_are_counted() -> None:
    with running_server(tiny_engine(), web=True) as server:
        before = scrape(server.web_url)
        assert before[("lipstream_active_sessions", ())] == 0
        assert before[("lipstream_max_sessions", ())] == server.engine.settings.max_sessions

        with Client(server.target) as client:
            events = list(client.synthesize("Hello there. How are you?", video=True))
            with pytest.raises(InvalidArgumentError):
                list(client.synthesize("Hi", voice="no-such-voice"))
        audio_bytes = sum(len(e.data) for e in events if type(e).__name__ == "AudioChunk")
        frames = sum(1 for e in events if type(e).__name__ == "VideoFrame")
        assert audio_bytes > 0 and frames > 0

        after = scrape(server.web_url)
        assert after[("lipstream_active_sessions", ())] == 0
        assert after[("lipstream_sessions_ended_total", (("reason", "finished"),))] == 1
        assert after[("lipstream_rpcs_total", (("code", "OK"), ("method", "Synthesize")))] == 1
        assert after[("lipstream_rpcs_total", (("code", "INVALID_ARGUMENT"), ("method", "Synthesize")))] == 1
        assert after[("lipstream_sent_bytes_total", (("kind", "audio"),))] == audio_bytes
        assert after[("lipstream_frames_total", ())] == frames
        assert after[("lipstream_time_to_first_audio_seconds_count", ())] == 1
        assert after[("lipstream_time_to_first_frame_seconds_count", ())] == 1
        assert after[("lipstream_audio_seconds_total", ())] > 0


def test_a_cancelled_conversation_is_counted_as_such() -> None:
    with running_server(tiny_engine(), web=True) as server:
        with Client(server.target) as client, client.converse(video=True) as conversation:
            conversation.send("A sentence long enough to still be speaking when the client goes away.")
            next(iter(conversation))  # SessionStarted
        for _ in range(100):  # the server learns of the cancel asynchronously
            after = scrape(server.web_url)
            if after.get(("lipstream_rpcs_total", (("code", "CANCELLED"), ("method", "Converse")))) == 1:
                break
            server.call(_sleep(0.05))
        assert after[("lipstream_rpcs_total", (("code", "CANCELLED"), ("method", "Converse")))] == 1
        assert after[("lipstream_sessions_ended_total", (("reason", "cancelled"),))] == 1
        assert after[("lipstream_active_sessions", ())] == 0


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_with_tokens_metrics_need_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# scrape\nsecret-scrape-token\n")
    with running_server(tiny_engine(), web=True, tokens=TokenSet(token_file)) as server:
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(server.web_url)
        assert refused.value.code == 401
        assert "Authorization: Bearer" in refused.value.read().decode()
        with caplog.at_level("INFO", logger="lipstream.server.web.v1"), pytest.raises(urllib.error.HTTPError):
            scrape(server.web_url, token="wrong")
        refusals = [r.getMessage() for r in caplog.records if "refused 401" in r.getMessage()]
        assert refusals and refusals[0].startswith("HTTP GET /metrics refused 401: this server needs a token")
        assert "wrong" not in caplog.text  # the token given is never logged
        assert scrape(server.web_url, token="secret-scrape-token")[("lipstream_active_sessions", ())] == 0

