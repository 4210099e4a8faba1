"""Scale-out on loopback (README "Scale-out"): replicas behind the client's health-checked round-robin.

Each test runs two real replicas on 127.0.0.1 and one client whose target lists both
("ipv4:127.0.0.1:A,127.0.0.1:B"); the client library adds the round-robin service config with
grpc.health.v1 checking, so a replica that is shutting down (NOT_SERVING) gets no new sessions.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from lipstream.client import AudioChunk, Client
from lipstream.client.config import ROUND_ROBIN_SERVICE_CONFIG, channel_options

from tests.servers import RunningServer, running_server, tiny_engine

CALLS_BOUND = 40


def _say(client: Client, text: str = "hello there") -> int:
    """Speak `text` in one session; the number of audio samples that came back."""
    samples = 0
    for event in client.synthesize(text):
        if isinstance(event, AudioChunk):
            samples += event.num_samples
    return samples


def _until_both_served(client: Client, a: RunningServer, b: RunningServer) -> None:
    """Calls until each replica has opened a session (the second connection may come up a little later)."""
    for _ in range(CALLS_BOUND):
        if a.engine.sessions_opened and b.engine.sessions_opened:
            return
        assert _say(client) > 0
    raise AssertionError(
        f"round-robin never reached both replicas: {a.engine.sessions_opened} / {b.engine.sessions_opened}"
    )


@contextlib.contextmanager
def _two_replicas() -> Iterator[tuple[RunningServer, RunningServer, Client]]:
    """Two replicas and a client of both, each replica having served a session already."""
    with (
        running_server(tiny_engine()) as a,
        running_server(tiny_engine()) as b,
        Client(f"ipv4:{a.target},{b.target}") as client,
    ):
        _until_both_served(client, a, b)
        yield a, b, client


def test_several_replicas_get_round_robin_with_health_checks() -> None:
    options = channel_options("ipv4:127.0.0.1:1,127.0.0.1:2")
    assert ("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG) in options
    assert '"serviceName": "lipstream.v1.LipStream"' in ROUND_ROBIN_SERVICE_CONFIG
    assert channel_options("127.0.0.1:50051") == []  # one server: grpc's defaults
    own = [("grpc.service_config", "{}")]
    assert channel_options("ipv4:127.0.0.1:1,127.0.0.1:2", own) == own  # the caller's config wins


def test_sessions_alternate_between_replicas() -> None:
    with _two_replicas() as (a, b, client):
        before = (a.engine.sessions_opened, b.engine.sessions_opened)
        for _ in range(6):
            assert _say(client) > 0
        # Both connections are up: round-robin takes them in turn.
        assert (a.engine.sessions_opened - before[0], b.engine.sessions_opened - before[1]) == (3, 3)


def test_a_draining_replica_finishes_its_session_and_gets_no_new_ones() -> None:
    with _two_replicas() as (a, b, client):
        # Open conversations until one is running on replica A (round-robin: at most a few).
        held, on_a = [], None
        for _ in range(4):
            count = a.engine.active_sessions
            conversation = client.converse(None)
            conversation.send("the first words, ")
            held.append(conversation)
            for _ in range(200):  # the session opens when the server has read the config
                if a.engine.active_sessions + b.engine.active_sessions >= len(held):
                    break
                time.sleep(0.01)
            if a.engine.active_sessions > count:
                on_a = conversation
                break
        assert on_a is not None, "no conversation landed on replica A"

        # A rolling restart of A: it says NOT_SERVING, keeps its session for the grace period, then stops.
        # (The service's own stop: RunningServer.stop also checks that no session worker of the process is
        # left, and B's are running.)
        stopper = threading.Thread(target=a.call, args=(a.service.stop(30.0), 60.0), name="test-stop-a")
        stopper.start()
        for _ in range(200):
            if not a.engine.accepting:
                break
            time.sleep(0.01)
        assert not a.engine.accepting
        opened_on_a = a.engine.sessions_opened
        for _ in range(6):
            # No error, not even in the moment before the client has seen A's NOT_SERVING: A refuses such a
            # call with UNAVAILABLE before answering, and the client retries it on B.
            served_by_b = b.engine.sessions_opened
            assert _say(client) > 0
            assert b.engine.sessions_opened == served_by_b + 1
        assert a.engine.sessions_opened == opened_on_a

        # The session A was running when the drain began still completes, with all its audio.
        on_a.send("and the last ones.")
        on_a.end()
        events = list(on_a)
        assert sum(e.num_samples for e in events if isinstance(e, AudioChunk)) > 0
        stopper.join(30.0)
        assert not stopper.is_alive()
        for conversation in held:
            conversation.close()


@pytest.mark.parametrize("stop_first", ["a", "b"])
def test_a_stopped_replica_is_skipped(stop_first: str) -> None:
    with _two_replicas() as (a, b, client):
        stopped, alive = (a, b) if stop_first == "a" else (b, a)
        stopped.stop()
        before = alive.engine.sessions_opened
        for _ in range(4):
            assert _say(client) > 0
        assert alive.engine.sessions_opened == before + 4


def test_a_call_refused_before_the_health_switch_is_retried_elsewhere() -> None:
    with _two_replicas() as (a, b, client):
        # A refuses new sessions while its health still says SERVING: the moment between the two in a
        # shutdown, held open. Every call that round-robin gives to A is refused and retried on B.
        a.call(a.engine.shutdown(0.0))
        assert a.engine.active_sessions == 0 and not a.engine.accepting
        before = b.engine.sessions_opened
        for _ in range(4):
            assert _say(client) > 0
        assert b.engine.sessions_opened == before + 4
