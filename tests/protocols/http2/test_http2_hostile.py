"""Hostile HTTP/2 peers, one raw-frame test each: RFC 9113 errors and the published attacks.

Each case must end the offending stream or connection with the right error code, never put a
traceback in the log, and leave the worker serving other connections.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterator

import h2.errors
import httpx
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from tests.protocols.http2 import h2_apps
from tests.protocols.http2.h2client import H2Client

from pounce.testing import serve

APP = h2_apps.app
E = h2.errors.ErrorCodes


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(APP, access_log=False, timeout_write=0.5) as base:
        yield base


def frames_from_server(raw: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of every complete frame the server sent."""
    out = []
    while len(raw) >= 9:
        length = int.from_bytes(raw[:3], "big")
        if len(raw) < 9 + length:
            break
        kind, flags = raw[3], raw[4]
        stream_id = struct.unpack(">I", raw[5:9])[0] & 0x7FFFFFFF
        out.append((kind, flags, stream_id, raw[9 : 9 + length]))
        raw = raw[9 + length :]
    return out


def goaway_code(client: H2Client) -> tuple[int, int]:
    """Read until the server closes; (error code, last stream id) of its GOAWAY."""
    client.read_until_closed(timeout=10)
    assert client.closed, "the server did not close the connection"
    for kind, _, _, payload in frames_from_server(client.raw_in):
        if kind == 0x7:
            last, code = struct.unpack(">II", payload[:8])
            return code, last & 0x7FFFFFFF
    raise AssertionError("no GOAWAY")


def rst_codes(client: H2Client, stream_id: int) -> list[int]:
    return [
        struct.unpack(">I", payload[:4])[0]
        for kind, _, sid, payload in frames_from_server(client.raw_in)
        if kind == 0x3 and sid == stream_id
    ]


def still_serving(url: str) -> None:
    with httpx.Client(http1=False, http2=True) as client:
        assert client.get(f"{url}/").content == b"Hello, world!"


@pytest.fixture(autouse=True)
def no_traceback(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)
    yield
    for record in caplog.records:
        assert record.exc_info is None, f"traceback logged: {record.getMessage()}"
        assert record.levelno < logging.ERROR, record.getMessage()


REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"t"), (b":path", b"/")]

BAD_HEADERS: dict[str, list[tuple[bytes, bytes]]] = {
    "uppercase name": [*REQUEST, (b"X-Upper", b"1")],
    "connection-specific": [*REQUEST, (b"connection", b"keep-alive")],
    "te other than trailers": [*REQUEST, (b"te", b"gzip")],
    "pseudo after regular": [*REQUEST[:3], (b"x-a", b"1"), REQUEST[3]],
    "duplicate pseudo": [*REQUEST, (b":path", b"/again")],
    "unknown pseudo": [*REQUEST, (b":foo", b"bar")],
    "empty path": [*REQUEST[:3], (b":path", b"")],
    "missing method": REQUEST[1:],
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_malformed_request_headers_are_protocol_errors(url: str, case: str) -> None:
    with H2Client(url, validate=False) as c:
        stream_id = c.conn.get_next_available_stream_id()
        c.conn.send_headers(stream_id, BAD_HEADERS[case], end_stream=True)
        c.flush()
        code, _ = goaway_code(c)
    assert code == E.PROTOCOL_ERROR
    still_serving(url)


def test_content_length_disagreeing_with_data(url: str) -> None:
    with H2Client(url, validate=False) as c:
        stream_id = c.request("/echo", "POST", headers=[(b"content-length", b"10")], end=False)
        c.conn.send_data(stream_id, b"12345", end_stream=True)
        c.flush()
        code, _ = goaway_code(c)
    assert code == E.PROTOCOL_ERROR
    still_serving(url)


def test_data_on_an_idle_stream(url: str) -> None:
    with H2Client(url) as c:
        c.send_frame(DataFrame(7, data=b"x", flags=["END_STREAM"]))
        code, _ = goaway_code(c)
    assert code == E.PROTOCOL_ERROR
    still_serving(url)


def test_data_on_a_closed_stream(url: str) -> None:
    with H2Client(url) as c:
        stream_id = c.request("/")
        c.response(stream_id)
        c.send_frame(DataFrame(stream_id, data=b"late"))
        c.send_frame(PingFrame(0, opaque_data=b"after!!!"))
        deadline = time.monotonic() + 5
        while b"after!!!" not in c.raw_in and not c.closed and time.monotonic() < deadline:
            c.read_once()
        # A stream error (RST_STREAM) or a connection error (GOAWAY), of type STREAM_CLOSED.
        goaways = [
            struct.unpack(">II", payload[:8])[1]
            for kind, _, _, payload in frames_from_server(c.raw_in)
            if kind == 0x7
        ]
        assert E.STREAM_CLOSED in rst_codes(c, stream_id) + goaways
    still_serving(url)


def test_rapid_reset(url: str) -> None:
    with H2Client(url) as c:
        for _ in range(300):
            stream_id = c.request("/sleep", headers=[])
            c.conn.reset_stream(stream_id, E.CANCEL)
            c.flush()
        code, _ = goaway_code(c)
    assert code == E.ENHANCE_YOUR_CALM
    still_serving(url)


def test_continuation_flood(url: str) -> None:
    with H2Client(url) as c:
        block = c.conn.encoder.encode(REQUEST)
        c.send_frame(HeadersFrame(1, data=block))
        filler = b"\x40\x01a\x01b" * 3000  # literal fields, never finished
        for _ in range(100):
            c.send_frame(ContinuationFrame(1, data=filler[:16384]))
        code, _ = goaway_code(c)
    assert code in (E.ENHANCE_YOUR_CALM, E.PROTOCOL_ERROR)
    still_serving(url)


def test_hpack_bomb(url: str) -> None:
    # One 4000-byte value enters the dynamic table, then is referenced again and again:
    # a small block that decodes far past --h2-max-header-list-size (64 KiB).
    with H2Client(url) as c:
        headers = [*REQUEST] + [(b"x-bomb", b"a" * 4000)] * 40
        block = c.conn.encoder.encode(headers)
        assert len(block) < 16384
        c.send_frame(HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"]))
        code, _ = goaway_code(c)
    assert code in (E.ENHANCE_YOUR_CALM, E.PROTOCOL_ERROR)
    still_serving(url)


FLOODS: dict[str, Callable[[H2Client], None]] = {
    "ping": lambda c: c.send_raw(
        b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(600))
    ),
    "settings": lambda c: c.send_raw(SettingsFrame(0).serialize() * 600),
    "empty data": lambda c: (
        c.request("/echo", "POST", end=False),
        c.send_raw(DataFrame(1, data=b"").serialize() * 600),
    ),
    "window update": lambda c: c.send_raw(
        WindowUpdateFrame(0, window_increment=1).serialize() * 20_100
    ),
    "priority": lambda c: c.send_raw(
        PriorityFrame(3, depends_on=0, stream_weight=16).serialize() * 5_100
    ),
}


@pytest.mark.parametrize("kind", sorted(FLOODS))
def test_control_frame_floods(url: str, kind: str) -> None:
    with H2Client(url) as c:
        FLOODS[kind](c)
        code, _ = goaway_code(c)
    assert code == E.ENHANCE_YOUR_CALM
    still_serving(url)


def test_zero_window_peer_is_cut_off_after_the_write_timeout(url: str) -> None:
    with H2Client(url, window=0) as c:
        c.request("/big/100000")
        start = time.monotonic()
        c.read_until_closed(timeout=10)
        assert c.closed
        assert time.monotonic() - start < 5
    still_serving(url)


def test_one_stream_held_at_a_zero_window_is_reset_while_others_move(url: str) -> None:
    """The connection makes progress (other streams answered), so its own stall deadline never
    fires; the stream whose window stays shut is reset after --timeout-write (0.5 s here)."""
    with H2Client(url, window=16384, auto_ack=False) as c:
        stuck = c.request("/big/100000")  # 16 KiB go out, then its window stays shut
        start = time.monotonic()
        while not rst_codes(c, stuck):
            assert time.monotonic() - start < 5, "the stalled stream was never reset"
            assert c.response(c.request("/"))["status"] == 200  # the connection moves
            time.sleep(0.05)
        assert rst_codes(c, stuck) == [E.CANCEL]
        assert time.monotonic() - start >= 0.4
        assert c.response(c.request("/"))["status"] == 200  # and keeps serving
    still_serving(url)


def test_stream_id_exhaustion_ends_in_goaway(url: str) -> None:
    with H2Client(url) as c:
        block = c.conn.encoder.encode(REQUEST)
        last_id = 2**31 - 1
        c.send_frame(HeadersFrame(last_id, data=block, flags=["END_HEADERS", "END_STREAM"]))
        code, last = goaway_code(c)
        assert any(kind == 0x0 and sid == last_id
                   for kind, _, sid, _ in frames_from_server(c.raw_in))  # answered
    assert code == E.NO_ERROR and last == last_id
    still_serving(url)


def test_reset_of_an_answered_stream_is_fine(url: str) -> None:
    with H2Client(url) as c:
        stream_id = c.request("/")
        c.response(stream_id)
        c.send_frame(RstStreamFrame(stream_id, error_code=E.CANCEL))
        assert c.response(c.request("/"))["status"] == 200
        assert rst_codes(c, stream_id) == []


def test_apps_still_running_after_resets_count_against_the_stream_limit() -> None:
    with serve(APP, access_log=False, h2_max_concurrent_streams=2) as base, H2Client(base) as c:
        for _ in range(4):  # four abandoned apps: twice the stream limit
            stream_id = c.request("/sleep", headers=[])
            c.conn.reset_stream(stream_id, E.CANCEL)
            c.flush()
        time.sleep(0.1)
        refused = c.request("/")
        assert c.response(refused)["reset"] == E.REFUSED_STREAM
        # Once the abandoned apps finish (0.5 s), streams are served again.
        deadline = time.monotonic() + 5
        while c.response(c.request("/"))["status"] != 200:
            assert time.monotonic() < deadline, "streams stayed refused"
            time.sleep(0.1)


LIMITED: dict[str, tuple[list[tuple[bytes, bytes]], int]] = {
    "method not a token": ([(b":method", b"G(T"), *REQUEST[1:]], 400),
    "path not origin-form": ([*REQUEST[:3], (b":path", b"http://x/")], 400),
    "space in path": ([*REQUEST[:3], (b":path", b"/a b")], 400),
    "path too long": ([*REQUEST[:3], (b":path", b"/" + b"a" * 9000)], 414),
    "too many fields": ([*REQUEST, *[(b"x-%d" % i, b"1") for i in range(101)]], 431),
}


@pytest.mark.parametrize("case", sorted(LIMITED))
def test_request_limits_as_over_http1(url: str, case: str) -> None:
    headers, status = LIMITED[case]
    with H2Client(url, validate=False) as c:
        stream_id = c.conn.get_next_available_stream_id()
        c.conn.send_headers(stream_id, headers, end_stream=True)
        c.flush()
        assert c.response(stream_id)["status"] == status
        assert c.response(c.request("/"))["status"] == 200  # the connection carries on


def test_a_window_that_reopens_is_not_a_stall() -> None:
    with serve(APP, access_log=False, timeout_write=0.5) as base, H2Client(base, window=65535) as c:
        # The burst fills the window and waits for the client's WINDOW_UPDATEs; then the app
        # is silent for longer than the write timeout: that is no stall of the client's.
        response = c.response(c.request("/burst-then-pause"), timeout=10)
        assert response["body"] == b"b" * 131072 + b"end"
        assert not c.closed
