"""h2spec's "generic" group: what every HTTP/2 server must simply accept (RFC 9113, RFC 7541).

Each case names the section it comes from; ``peer`` is past the handshake.
"""

from __future__ import annotations

import pytest
from tests.conformance.h2spec.peer import (
    CANCEL,
    DATA,
    ENABLE_PUSH,
    END_STREAM,
    HEADER_TABLE_SIZE,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    PADDED,
    PREFACE,
    SETTINGS,
    Frame,
    Peer,
    expect_frame,
    expect_headers,
    expect_ping_ack,
    expect_ping_ack_or_close,
    expect_settings_ack,
    expect_stream_close,
)

PING_DATA = b"h2spec\0\0"


# -- 1. Starting HTTP/2 ---------------------------------------------------------------------------


def test_1_1_client_preface(conn: Peer) -> None:
    conn.send(PREFACE)
    conn.send_settings((INITIAL_WINDOW_SIZE, 65535))
    event = conn.event()
    assert isinstance(event, Frame) and event.kind == SETTINGS and not event.is_ack, event


# -- 2. Streams and multiplexing ------------------------------------------------------------------


def test_2_1_priority_on_idle_stream(peer: Peer) -> None:
    peer.priority(1)
    peer.ping()
    expect_ping_ack(peer, b"\0" * 8)


def test_2_2_window_update_on_half_closed_remote(peer: Peer) -> None:
    peer.send_settings((INITIAL_WINDOW_SIZE, 0))
    peer.request(1)
    peer.window_update(1, 1)
    expect_frame(peer, DATA)


def test_2_3_priority_on_half_closed_remote(peer: Peer) -> None:
    peer.send_settings((INITIAL_WINDOW_SIZE, 0))
    peer.request(1)
    peer.priority(1)
    peer.window_update(1, 1)
    expect_frame(peer, DATA)


def test_2_4_rst_stream_on_half_closed_remote(peer: Peer) -> None:
    peer.request(1)
    peer.rst_stream(1, CANCEL)
    peer.ping()
    expect_ping_ack_or_close(peer, b"\0" * 8)


def test_2_5_priority_on_closed_stream(peer: Peer) -> None:
    peer.request(1)
    expect_stream_close(peer)
    peer.priority(1)
    peer.ping()
    expect_ping_ack(peer, b"\0" * 8)


# -- 3. Frame definitions -------------------------------------------------------------------------


def test_3_1_1_data(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False)
    peer.data(1, b"test")
    expect_headers(peer, 1)


def test_3_1_2_multiple_data(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False)
    peer.data(1, b"test", end_stream=False)
    peer.data(1, b"test")
    expect_headers(peer, 1)


def test_3_1_3_data_with_padding(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False)
    peer.frame(DATA, PADDED | END_STREAM, 1, b"\x05test\0\0\0\0\0")
    expect_headers(peer, 1)


def test_3_2_1_headers(peer: Peer) -> None:
    peer.request(1)
    expect_headers(peer, 1)


def test_3_2_2_headers_with_padding(peer: Peer) -> None:
    peer.headers(1, peer.request_headers(), pad=8)
    expect_headers(peer, 1)


def test_3_2_3_headers_with_priority(peer: Peer) -> None:
    peer.headers(1, peer.request_headers(), priority=(0, False, 255))
    expect_headers(peer, 1)


def test_3_3_1_priority_weight_1(peer: Peer) -> None:
    peer.priority(1, 0, 0)
    peer.request(1)
    expect_headers(peer, 1)


def test_3_3_2_priority_weight_256(peer: Peer) -> None:
    peer.priority(1, 0, 255)
    peer.request(1)
    expect_headers(peer, 1)


def test_3_3_3_priority_with_dependency(peer: Peer) -> None:
    peer.priority(3, 1, 0)
    peer.request(1)
    expect_headers(peer, 1)


def test_3_3_4_priority_exclusive(peer: Peer) -> None:
    peer.priority(1, 0, 0, exclusive=True)
    peer.request(1)
    expect_headers(peer, 1)


def test_3_3_5_priority_on_idle_then_lower_stream(peer: Peer) -> None:
    peer.priority(3, 0, 255)
    peer.request(1)
    expect_headers(peer, 1)


def test_3_4_1_rst_stream(peer: Peer) -> None:
    peer.request(1, end_stream=False)
    peer.rst_stream(1, CANCEL)
    peer.ping()
    expect_ping_ack_or_close(peer, b"\0" * 8)


def test_3_5_1_settings(peer: Peer) -> None:
    peer.send_settings(
        (HEADER_TABLE_SIZE, 4096),
        (ENABLE_PUSH, 1),
        (MAX_CONCURRENT_STREAMS, 100),
        (INITIAL_WINDOW_SIZE, 65535),
        (MAX_FRAME_SIZE, 16384),
        (MAX_HEADER_LIST_SIZE, 100),
    )
    expect_settings_ack(peer)


def test_3_7_1_ping(peer: Peer) -> None:
    peer.ping(PING_DATA)
    expect_ping_ack(peer, PING_DATA)


def test_3_8_1_goaway(peer: Peer) -> None:
    peer.goaway(0, 0, b"h2spec")
    peer.ping(PING_DATA)
    expect_ping_ack_or_close(peer, PING_DATA)


def test_3_9_1_window_update_connection(peer: Peer) -> None:
    peer.window_update(0, 1)
    peer.ping()
    expect_ping_ack(peer, b"\0" * 8)


def test_3_9_2_window_update_stream(peer: Peer) -> None:
    peer.request(1)
    peer.window_update(1, 1)
    expect_headers(peer, 1)


def test_3_10_1_continuation(peer: Peer) -> None:
    block = peer.encode(peer.request_headers())
    peer.headers(1, block[:5], end_headers=False)
    peer.continuation(1, block[5:])
    expect_headers(peer, 1)


def test_3_10_2_multiple_continuation(peer: Peer) -> None:
    block = peer.encode(peer.request_headers())
    peer.headers(1, block[:5], end_headers=False)
    peer.continuation(1, block[5:10], end_headers=False)
    peer.continuation(1, block[10:])
    expect_headers(peer, 1)


# -- 4. HTTP message exchanges --------------------------------------------------------------------


def test_4_1_get(peer: Peer) -> None:
    peer.request(1)
    expect_headers(peer, 1)


def test_4_2_head(peer: Peer) -> None:
    peer.request(1, b"HEAD")
    expect_headers(peer, 1)


def test_4_3_post(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False)
    peer.data(1, b"test")
    expect_headers(peer, 1)


def test_4_4_post_with_trailers(peer: Peer) -> None:
    peer.request(1, b"POST", extra=[(b"trailer", b"x-test")], end_stream=False)
    peer.data(1, b"test", end_stream=False)
    peer.headers(1, [(b"x-test", b"ok")])
    expect_headers(peer, 1)


# -- 5. HPACK -------------------------------------------------------------------------------------

#: Representations appended to a valid request block (RFC 7541 §6); each must be accepted.
HPACK_ACCEPTED = {
    "indexed": b"\xba",
    "incremental, indexed name": b"\x40\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4",
    "incremental, indexed name, huffman": (
        b"\x40\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"
    ),
    "incremental, new name": b"\x40\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63",
    "incremental, new name, huffman": b"\x40\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4",
    "without indexing, indexed name": (
        b"\x00\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"
    ),
    "without indexing, indexed name, huffman": (
        b"\x00\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"
    ),
    "without indexing, new name": b"\x00\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63",
    "without indexing, new name, huffman": b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4",
    "never indexed, indexed name": (
        b"\x10\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"
    ),
    "never indexed, indexed name, huffman": (
        b"\x10\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"
    ),
    "never indexed, new name": b"\x10\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63",
    "never indexed, new name, huffman": b"\x10\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4",
}


@pytest.mark.parametrize("representation", list(HPACK_ACCEPTED), ids=list(HPACK_ACCEPTED))
def test_5_1_to_13_hpack_representation(peer: Peer, representation: str) -> None:
    peer.headers(1, peer.encode(peer.request_headers()) + HPACK_ACCEPTED[representation])
    expect_headers(peer, 1)


def test_5_14_dynamic_table_size_update(peer: Peer) -> None:
    peer.encoder.header_table_size = 128  # the next block starts with the update
    peer.request(1)
    expect_headers(peer, 1)


def test_5_15_multiple_dynamic_table_size_updates(peer: Peer) -> None:
    # Two updates (to 128, then 4096... as the bytes say) before the first field.
    peer.headers(1, b"\x3f\x61\x3f\xe1\x1f" + peer.encode(peer.request_headers()))
    expect_headers(peer, 1)
