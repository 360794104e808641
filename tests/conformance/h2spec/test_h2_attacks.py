"""Published HTTP/2 attacks, sent as raw frames: each must end in GOAWAY (ENHANCE_YOUR_CALM
where the peer abuses something legal, the RFC's code where it breaks a rule), and the server
must keep serving new connections.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import hpack
import pytest
from tests.conformance.h2spec.peer import (
    CANCEL,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    PING,
    PRIORITY,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Peer,
    expect_frame,
    expect_headers,
    expect_stream_error,
    raw_frame,
)

ENHANCE_YOUR_CALM = 0xB


def goaway_code(peer: Peer) -> int:
    return expect_frame(peer, GOAWAY).error_code


def still_serving(server_address: tuple[str, int]) -> None:
    peer = Peer(server_address)
    try:
        peer.handshake()
        peer.request(1)
        expect_headers(peer, 1)
    finally:
        peer.close()


def slow_request(peer: Peer, stream_id: int, *, end_stream: bool = True) -> bytes:
    block = peer.encode(peer.request_headers(path=b"/slow"))
    flags = END_HEADERS | (END_STREAM if end_stream else 0)
    return raw_frame(HEADERS, flags, stream_id, block)


def test_rapid_reset(peer: Peer, server_address: tuple[str, int]) -> None:
    """CVE-2023-44487: streams opened and reset at once, the apps left running."""
    cancel = struct.pack(">I", CANCEL)
    peer.send(
        b"".join(
            slow_request(peer, sid) + raw_frame(RST_STREAM, 0, sid, cancel)
            for sid in range(1, 1200, 2)
        )
    )
    assert goaway_code(peer) == ENHANCE_YOUR_CALM
    still_serving(server_address)


def test_made_you_reset(peer: Peer, server_address: tuple[str, int]) -> None:
    """CVE-2025-8671: frames that make the *server* reset streams whose apps keep running
    (here DATA after END_STREAM, which the server answers with RST_STREAM STREAM_CLOSED)."""
    peer.send(
        b"".join(
            slow_request(peer, sid) + raw_frame(DATA, 0, sid, b"x") for sid in range(1, 1200, 2)
        )
    )
    assert goaway_code(peer) == ENHANCE_YOUR_CALM
    still_serving(server_address)


def test_made_you_reset_by_window_overflow(peer: Peer, server_address: tuple[str, int]) -> None:
    """CVE-2025-8671 again: a stream window pushed past 2^31-1 is a stream error."""
    big = struct.pack(">I", 2**31 - 1)
    peer.send(
        b"".join(
            slow_request(peer, sid) + raw_frame(WINDOW_UPDATE, 0, sid, big) * 2
            for sid in range(1, 1200, 2)
        )
    )
    assert goaway_code(peer) == ENHANCE_YOUR_CALM
    still_serving(server_address)


def test_continuation_flood_of_empty_frames(peer: Peer, server_address: tuple[str, int]) -> None:
    """CVE-2024-27316 and kin: a header block that never ends, in many tiny frames."""
    peer.request(1, end_headers=False)
    peer.send(raw_frame(CONTINUATION, 0, 1) * 10_000)
    assert goaway_code(peer) in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR)
    still_serving(server_address)


def test_continuation_flood_of_large_frames(peer: Peer, server_address: tuple[str, int]) -> None:
    peer.request(1, end_headers=False)
    filler = b"\x40\x01a\x01b" * 3000  # literal fields, never finished
    peer.send(raw_frame(CONTINUATION, 0, 1, filler[:16384]) * 100)
    assert goaway_code(peer) in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR)
    still_serving(server_address)


def test_hpack_bomb(peer: Peer, server_address: tuple[str, int]) -> None:
    """A 4000-byte value enters the dynamic table, then is referenced again and again."""
    block = peer.encode([*peer.request_headers(), *[(b"x-bomb", b"a" * 4000)] * 40])
    assert len(block) < 16384
    peer.headers(1, block)
    assert goaway_code(peer) in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR)
    still_serving(server_address)


def test_data_beyond_the_window(peer: Peer, server_address: tuple[str, int]) -> None:
    """A peer that ignores flow control (RFC 9113 §6.9.1) cannot make the server buffer:
    more than the stream's window while the app (``/slow``) reads nothing is an error."""
    window = peer.settings.get(0x4, 65535)
    peer.send(slow_request(peer, 1, end_stream=False))
    chunk = b"x" * 16384
    peer.send(raw_frame(DATA, 0, 1, chunk) * (window // len(chunk) + 8))
    expect_stream_error(peer, FLOW_CONTROL_ERROR, stream_id=1)
    still_serving(server_address)


def test_huge_header_table_allowance_is_not_used(peer: Peer) -> None:
    """A client may allow a 4 GiB HPACK table for responses; the server keeps to 4 KiB, or
    every distinct response field would stay in its memory for the connection's life."""
    peer.send_settings((HEADER_TABLE_SIZE, 2**32 - 1))
    expect_frame(peer, SETTINGS)  # the ACK
    peer.request(1)
    block = expect_frame(peer, HEADERS).payload
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 2**32 - 1
    decoder.decode(block)
    assert decoder.header_table_size <= 4096


FLOODS: dict[str, Callable[[Peer], bytes]] = {
    "ping": lambda p: b"".join(raw_frame(PING, 0, 0, b"%08d" % i) for i in range(1000)),
    "settings": lambda p: raw_frame(SETTINGS, 0, 0) * 1000,
    "empty data": lambda p: slow_request(p, 1, end_stream=False) + raw_frame(DATA, 0, 1) * 1000,
    "window update": lambda p: raw_frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\x01") * 25_000,
    "priority": lambda p: raw_frame(PRIORITY, 0, 3, b"\0\0\0\0\x10") * 6_000,
    "reset of answered-at-once streams": lambda p: b"".join(
        raw_frame(HEADERS, END_HEADERS | END_STREAM, sid, p.encode(p.request_headers()))
        + raw_frame(RST_STREAM, 0, sid, b"\0\0\0\x08")
        for sid in range(1, 1200, 2)
    ),
}


@pytest.mark.parametrize("kind", list(FLOODS))
def test_flood(peer: Peer, server_address: tuple[str, int], kind: str) -> None:
    peer.send(FLOODS[kind](peer))
    assert goaway_code(peer) == ENHANCE_YOUR_CALM
    still_serving(server_address)
