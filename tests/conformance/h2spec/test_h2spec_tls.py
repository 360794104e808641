"""The same peer over TLS, h2 chosen by ALPN (h2spec's ``-t``): handshake, a request, an error."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from tests.conformance.h2spec.h2spec_apps import app
from tests.conformance.h2spec.peer import (
    COMPRESSION_ERROR,
    PROTOCOL_ERROR,
    Peer,
    expect_connection_error,
    expect_headers,
    expect_ping_ack,
)
from tests.helpers import address

from pounce.testing import serve_in_thread


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[tuple[str, int], ssl.SSLContext]]:
    directory = tmp_path_factory.mktemp("h2spec-tls")
    ca = trustme.CA()
    cert = directory / "server.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(cert))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    with serve_in_thread(
        app, http="auto", access_log=False, ssl_certfile=str(Path(cert))
    ) as running:
        yield address(running.url), context


@pytest.fixture
def tls_peer(tls_server: tuple[tuple[str, int], ssl.SSLContext]) -> Iterator[Peer]:
    server, context = tls_server
    peer = Peer(server, tls=context)
    try:
        assert peer.sock.selected_alpn_protocol() == "h2"  # type: ignore[attr-defined]
        peer.handshake()
        yield peer
    finally:
        peer.close()


def test_tls_request_and_ping(tls_peer: Peer) -> None:
    tls_peer.request(1)
    expect_headers(tls_peer, 1)
    tls_peer.ping(b"h2spec\0\0")
    expect_ping_ack(tls_peer, b"h2spec\0\0")


def test_tls_stream_0_headers_is_a_connection_error(tls_peer: Peer) -> None:
    tls_peer.request(0)
    expect_connection_error(tls_peer, PROTOCOL_ERROR)


def test_tls_broken_hpack_is_a_compression_error(tls_peer: Peer) -> None:
    tls_peer.headers(1, tls_peer.encode(tls_peer.request_headers()) + b"\x80")
    expect_connection_error(tls_peer, COMPRESSION_ERROR)
