"""The Pounces to test (cleartext by prior knowledge) and a connection per case."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from tests.conformance.h2spec.h2spec_apps import app, hello
from tests.conformance.h2spec.peer import Peer
from tests.helpers import address

from pounce.testing import serve_in_thread

#: The servers every case runs against: (app, --http). h2spec's verdicts must depend neither
#: on the app nor on whether HTTP/1.1 shares the port.
SERVERS = {
    "reads-body": (app, "auto"),
    "ignores-body": (hello, "auto"),
    "http2-only": (app, "h2"),
}


@pytest.fixture(scope="package", params=list(SERVERS))
def server_kind(request: pytest.FixtureRequest) -> str:
    """Which of SERVERS a case runs against."""
    return str(request.param)


@pytest.fixture(scope="package")
def server_address(server_kind: str) -> Iterator[tuple[str, int]]:
    server_app, http = SERVERS[server_kind]
    with serve_in_thread(server_app, http=http, access_log=False) as running:
        yield address(running.url)


@pytest.fixture
def conn(server_address: tuple[str, int]) -> Iterator[Peer]:
    """A connected peer that has not sent the preface yet."""
    peer = Peer(server_address)
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture
def peer(conn: Peer) -> Peer:
    """A connected peer past the handshake."""
    conn.handshake()
    return conn


@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a case sends, the server logs no error and no traceback."""
    caplog.set_level(logging.INFO)
    yield
    for record in caplog.records:
        assert record.exc_info is None, f"traceback logged: {record.getMessage()}"
        assert record.levelno < logging.ERROR, record.getMessage()
