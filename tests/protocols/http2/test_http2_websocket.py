"""WebSocket over HTTP/2 (RFC 8441): extended CONNECT served by the same session and engine."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import h2.events
import h2.settings
import pytest
from tests.protocols.http2 import h2_apps
from tests.protocols.http2.h2client import H2Client
from websockets.frames import Frame, Opcode

from pounce.testing import serve

APP = h2_apps.app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(APP, access_log=False) as base:
        yield base


def connect(
    c: H2Client, path: str, extra: list[tuple[bytes, bytes]] | None = None
) -> int:
    c.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    stream_id = c.conn.get_next_available_stream_id()
    c.conn.send_headers(
        stream_id,
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"test"),
            (b"sec-websocket-version", b"13"),
            *(extra or []),
        ],
    )
    c.flush()
    return stream_id


def send_ws(c: H2Client, stream_id: int, opcode: Opcode, data: bytes, end: bool = False) -> None:
    raw = Frame(opcode, data).serialize(mask=True, extensions=[])
    for start in range(0, len(raw), 16384):
        piece = raw[start : start + 16384]
        c.conn.send_data(stream_id, piece, end_stream=end and start + 16384 >= len(raw))
    c.flush()


def server_frames(c: H2Client, stream_id: int) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the unmasked frames the server sent on the stream so far."""
    raw = b"".join(
        e.data for e in c.events
        if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
    )
    frames = []
    while len(raw) >= 2:
        opcode, length = raw[0] & 0x0F, raw[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = int.from_bytes(raw[2:4], "big"), 4
        elif length == 127:
            length, offset = int.from_bytes(raw[2:10], "big"), 10
        if len(raw) < offset + length:
            break
        frames.append((opcode, raw[offset : offset + length]))
        raw = raw[offset + length :]
    return frames


def wait_frames(c: H2Client, stream_id: int, count: int) -> list[tuple[int, bytes]]:
    deadline = time.monotonic() + 5
    while len(server_frames(c, stream_id)) < count and time.monotonic() < deadline:
        c.read_once(deadline - time.monotonic())
    return server_frames(c, stream_id)


def test_settings_enable_connect_protocol(url: str) -> None:
    with H2Client(url) as c:
        event = c.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    code = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL
    assert event.changed_settings[code].new_value == 1


def test_echo_over_extended_connect(url: str) -> None:
    with H2Client(url, validate=False) as c:
        stream_id = connect(c, "/ws")
        response = c.wait_for(
            lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id
        )
        assert dict(response.headers)[b":status"] == b"200"
        send_ws(c, stream_id, Opcode.TEXT, b"hello")
        send_ws(c, stream_id, Opcode.BINARY, b"\x00\x01" * 40_000)
        frames = wait_frames(c, stream_id, 2)
        assert frames[0] == (Opcode.TEXT.value, b"hello")
        assert frames[1] == (Opcode.BINARY.value, b"\x00\x01" * 40_000)
        # Other streams keep working on the same connection.
        assert c.response(c.request("/"))["body"] == b"Hello, world!"
        send_ws(c, stream_id, Opcode.CLOSE, b"\x03\xe8")
        frames = wait_frames(c, stream_id, 3)
        assert frames[2][0] == Opcode.CLOSE.value
    assert h2_apps.SEEN["ws-scope"] == {"http_version": "2", "scheme": "ws", "subprotocols": []}


def test_subprotocol_and_app_close(url: str) -> None:
    with H2Client(url, validate=False) as c:
        stream_id = connect(c, "/ws-proto", [(b"sec-websocket-protocol", b"chat, superchat")])
        response = c.wait_for(
            lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id
        )
        assert dict(response.headers)[b"sec-websocket-protocol"] == b"chat"
        send_ws(c, stream_id, Opcode.TEXT, b"close")
        frames = wait_frames(c, stream_id, 1)
        assert frames[0][0] == Opcode.CLOSE.value
        assert frames[0][1][:2] == (4000).to_bytes(2, "big")


def test_denial_is_an_http_response_on_the_stream(url: str) -> None:
    with H2Client(url, validate=False) as c:
        stream_id = connect(c, "/ws-deny")
        response = c.response(stream_id)
        assert response["status"] == 403
        assert c.response(c.request("/"))["status"] == 200


def test_wrong_version_is_refused_with_426(url: str) -> None:
    with H2Client(url, validate=False) as c:
        c.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        stream_id = c.conn.get_next_available_stream_id()
        c.conn.send_headers(stream_id, [
            (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
            (b":path", b"/ws"), (b":authority", b"test"), (b"sec-websocket-version", b"8"),
        ])
        c.flush()
        assert c.response(stream_id)["status"] == 426


def test_reset_stream_disconnects_the_app(url: str) -> None:
    h2_apps.SEEN.pop("ws-disconnect", None)
    with H2Client(url, validate=False) as c:
        stream_id = connect(c, "/ws")
        c.wait_for(lambda e: isinstance(e, h2.events.ResponseReceived))
        c.conn.reset_stream(stream_id)
        c.flush()
        deadline = time.monotonic() + 5
        while "ws-disconnect" not in h2_apps.SEEN and time.monotonic() < deadline:
            time.sleep(0.01)
    assert h2_apps.SEEN["ws-disconnect"] == 1006


def test_stream_window_is_the_backpressure(url: str) -> None:
    with H2Client(url, validate=False, window=65535, auto_ack=False) as c:
        stream_id = connect(c, "/ws-flood")
        c.wait_for(lambda e: isinstance(e, h2.events.ResponseReceived))
        time.sleep(0.5)
        with contextlib.suppress(TimeoutError):
            while True:
                c.read_once(0.2)
        # The client never reopened its window: the app is stuck in send() after ~64 KiB.
        assert h2_apps.SEEN["ws-sent"] <= 3
        received = sum(len(e.data) for e in c.events
                       if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id)
        assert received <= 65535
