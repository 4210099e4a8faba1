"""Shared fixtures: one real lipstream server on 127.0.0.1 for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lipstream.server.engine import Engine

from tests.servers import RunningServer


@pytest.fixture(scope="session")
def lipstream_server() -> Iterator[RunningServer]:
    """The default voice and avatar, the viseme renderer, the web page on a free port."""
    server = RunningServer(Engine(), web=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def grpc_target(lipstream_server: RunningServer) -> str:
    """ "127.0.0.1:PORT" of the session's server."""
    return lipstream_server.target


@pytest.fixture(scope="session")
def web_url(lipstream_server: RunningServer) -> str:
    """ "http://127.0.0.1:PORT/" of the session server's kiosk page."""
    return lipstream_server.web_url
