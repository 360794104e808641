"""Message size limits (ws_max_size -> 1009) and permessage-deflate (RFC 7692)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator

import pytest
from tests.protocols.websocket.conftest import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RSV1,
    WsClient,
    build_frame,
    deflate,
    expect_failure,
    http_get,
    ws_server,
)
from tests.protocols.websocket.ws_apps import app

Connect = Callable[..., WsClient]

MAX_SIZE = 4096


@pytest.fixture(scope="module")
def small_url() -> Iterator[str]:
    """A server whose messages may be at most MAX_SIZE bytes."""
    with ws_server(app, ws_max_size=MAX_SIZE) as running:
        yield running.url


@pytest.fixture
def small(small_url: str) -> Iterator[Callable[..., WsClient]]:
    clients: list[WsClient] = []

    def make(path: str = "/echo", **kwargs: object) -> WsClient:
        client = WsClient.open(small_url)
        clients.append(client)
        client.handshake(path, **kwargs)
        return client

    yield make
    for client in clients:
        client.close()
    assert http_get(small_url) == (200, b"ok")


# -- ws_max_size -------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_message_of_exactly_max_size_is_delivered(small: Connect, opcode: int) -> None:
    client = small()
    client.send_frame(opcode, b"a" * MAX_SIZE)
    assert client.read_message() == (opcode, b"a" * MAX_SIZE)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_single_frame_over_max_size_fails_with_1009(small: Connect, opcode: int) -> None:
    client = small()
    client.send_frame(opcode, b"a" * (MAX_SIZE + 1))
    expect_failure(client, 1009)


def test_fragmented_message_over_max_size_in_total_fails_with_1009(small: Connect) -> None:
    client = small()
    piece = b"b" * (MAX_SIZE // 4)
    client.send_frame(OP_BINARY, piece, fin=False)
    for _ in range(3):
        client.send_frame(OP_CONTINUATION, piece, fin=False)
    # Exactly MAX_SIZE so far, in fragments each far under the limit: one more byte is too many.
    client.send_frame(OP_CONTINUATION, b"b")
    expect_failure(client, 1009)


def test_size_is_refused_from_the_header_without_waiting_for_the_payload(small: Connect) -> None:
    client = small()
    # Announce 1 GiB, send a little more than the limit, then nothing: the server must not
    # wait for (or buffer) the rest before refusing.
    head = build_frame(OP_BINARY, b"c" * (MAX_SIZE + 1024), declared_length=1 << 30)
    client.send_raw(head)
    expect_failure(client, 1009)


def test_nothing_is_delivered_after_a_1009(small: Connect) -> None:
    client = small()
    client.send_raw(
        build_frame(OP_BINARY, b"d" * (MAX_SIZE + 1)) + build_frame(OP_TEXT, b"after the limit")
    )
    frame = client.read_data_frame()
    assert frame.opcode != OP_TEXT, "the server answered a message sent after the oversize one"
    assert frame.close_code == 1009


def test_many_messages_under_the_limit_add_up_past_it(small: Connect) -> None:
    client = small()
    for index in range(20):
        client.send_binary(bytes([index]) * (MAX_SIZE // 2))
        assert client.read_message() == (OP_BINARY, bytes([index]) * (MAX_SIZE // 2))


# -- permessage-deflate (RFC 7692) -------------------------------------------------------


def extensions_of(client: WsClient) -> bytes:
    assert client.response is not None
    return b", ".join(client.response.header_values(b"sec-websocket-extensions"))


def test_deflate_is_negotiated(connect: Connect) -> None:
    client = connect(extensions="permessage-deflate")
    assert extensions_of(client).startswith(b"permessage-deflate")


def test_deflate_with_parameters_is_negotiated(connect: Connect) -> None:
    client = connect(
        extensions="permessage-deflate; client_max_window_bits; server_no_context_takeover; "
        "client_no_context_takeover"
    )
    agreed = extensions_of(client)
    assert agreed.startswith(b"permessage-deflate")
    # 7.1.1.1: a server that accepts server_no_context_takeover must say so in its answer.
    assert b"server_no_context_takeover" in agreed


def test_second_offer_is_used_when_the_first_has_an_unknown_parameter(connect: Connect) -> None:
    client = connect(extensions="permessage-deflate; unknown_param=1, permessage-deflate")
    agreed = extensions_of(client)
    assert agreed.startswith(b"permessage-deflate")
    assert b"unknown_param" not in agreed


def test_no_extension_without_an_offer(connect: Connect) -> None:
    client = connect()
    assert extensions_of(client) == b""


def test_unknown_extension_is_not_accepted(connect: Connect) -> None:
    client = connect(extensions="x-webkit-unknown-frame")
    assert extensions_of(client) == b""


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; \u00e9",
    ],
    ids=["swb-7", "cwb-16", "swb-abc", "sncto-value", "duplicate", "non-ascii"],
)
def test_invalid_deflate_offer_is_declined_not_crashed(echo_url: str, offer: str) -> None:
    # RFC 7692 5/7.1: a server declines an offer with invalid parameters; it does not fail the
    # handshake for it (refusing the whole handshake with 400 is tolerated), and never crashes.
    with WsClient.open(echo_url) as client:
        client.upgrade_request("/echo", headers=[(b"Sec-WebSocket-Extensions", offer.encode())])
        response = client.read_response_head()
        assert response.status in (101, 400)
        if response.status == 101:
            assert response.header(b"sec-websocket-extensions") is None
            client.send_text("plain")
            assert client.read_text() == "plain"
    assert http_get(echo_url) == (200, b"ok")


def test_garbage_extensions_header_does_not_crash(echo_url: str) -> None:
    with WsClient.open(echo_url) as client:
        client.upgrade_request(
            "/echo", headers=[(b"Sec-WebSocket-Extensions", b";;;, ,permessage-deflate;=,\xff")]
        )
        response = client.read_response_head()
        assert response.status in (101, 400)
        if response.status == 101 and response.header(b"sec-websocket-extensions") is None:
            client.send_text("plain")
            assert client.read_text() == "plain"
    assert http_get(echo_url) == (200, b"ok")


@pytest.mark.parametrize(
    "text", ["hello", "\u00e9t\u00e9 " * 1000, ""], ids=["short", "repetitive", "empty"]
)
def test_compressed_text_round_trip(connect: Connect, text: str) -> None:
    client = connect(extensions="permessage-deflate; client_no_context_takeover")
    client.send_text(deflate(text.encode()), rsv=RSV1)
    assert client.read_text() == text


def test_compressed_messages_keep_the_server_context(connect: Connect) -> None:
    client = connect(extensions="permessage-deflate; client_no_context_takeover")
    for index in range(5):
        payload = b"repeat me please %d " % index * 200
        client.send_binary(deflate(payload), rsv=RSV1)
        assert client.read_message() == (OP_BINARY, payload)


def test_compressed_message_in_fragments(connect: Connect) -> None:
    client = connect(extensions="permessage-deflate; client_no_context_takeover")
    payload = os.urandom(3000) + b"z" * 30000
    data = deflate(payload)
    third = len(data) // 3
    # RFC 7692 6.1: RSV1 on the first frame only.
    client.send_frame(OP_BINARY, data[:third], fin=False, rsv=RSV1)
    client.send_frame(OP_CONTINUATION, data[third : 2 * third], fin=False)
    client.send_frame(OP_CONTINUATION, data[2 * third :])
    assert client.read_message() == (OP_BINARY, payload)


def test_uncompressed_message_is_still_allowed(connect: Connect) -> None:
    client = connect(extensions="permessage-deflate")
    client.send_text("plain")
    assert client.read_text() == "plain"


def test_rsv1_on_a_continuation_frame_fails_with_1002(connect: Connect) -> None:
    client = connect(extensions="permessage-deflate; client_no_context_takeover")
    data = deflate(b"x" * 100)
    client.send_frame(OP_BINARY, data[:5], fin=False, rsv=RSV1)
    client.send_frame(OP_CONTINUATION, data[5:], rsv=RSV1)
    expect_failure(client, 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG], ids=["ping", "pong"])
def test_rsv1_on_a_control_frame_fails_with_1002(connect: Connect, opcode: int) -> None:
    client = connect(extensions="permessage-deflate")
    client.send_frame(opcode, deflate(b"ping"), rsv=RSV1)
    expect_failure(client, 1002)


def test_compressed_invalid_utf8_fails_with_1007(connect: Connect) -> None:
    client = connect(extensions="permessage-deflate; client_no_context_takeover")
    client.send_text(deflate(b"caf\xc3"), rsv=RSV1)
    expect_failure(client, 1007)


def test_garbage_compressed_data_fails_the_connection(connect: Connect) -> None:
    client = connect(extensions="permessage-deflate")
    client.send_binary(b"\xff\xff\xff\xff not deflate", rsv=RSV1)
    # RFC 7692 does not name a code for data that does not inflate; any failure code will do,
    # but the connection must fail (not deliver garbage, not crash the server).
    expect_failure(client, (1002, 1007, 1011))


def test_deflate_bomb_fails_with_1009(small: Connect) -> None:
    client = small(extensions="permessage-deflate; client_no_context_takeover")
    bomb = deflate(b"\x00" * (MAX_SIZE * 64))
    assert len(bomb) < MAX_SIZE // 4
    client.send_binary(bomb, rsv=RSV1)
    expect_failure(client, 1009)


def test_compressed_message_of_max_size_is_delivered(small: Connect) -> None:
    client = small(extensions="permessage-deflate; client_no_context_takeover")
    client.send_binary(deflate(b"\x01" * MAX_SIZE), rsv=RSV1)
    assert client.read_message() == (OP_BINARY, b"\x01" * MAX_SIZE)


def test_deflate_disabled_by_option() -> None:
    with ws_server(app, ws_per_message_deflate=False) as running, WsClient.open(
        running.url
    ) as client:
        response = client.handshake("/echo", extensions="permessage-deflate")
        assert response.header(b"sec-websocket-extensions") is None
        client.send_text("x", rsv=RSV1)
        expect_failure(client, 1002)


def test_inflater_sanity() -> None:
    # The client helper's own compressor is what the cases above rely on.
    assert zlib.decompressobj(-15).decompress(deflate(b"abc") + b"\x00\x00\xff\xff") == b"abc"
