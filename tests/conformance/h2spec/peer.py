"""A raw HTTP/2 client for conformance cases: it writes exact bytes and reports what comes back.

``h2``'s client side refuses to build most of what these cases send (frames of the wrong
length, frames on the wrong stream, broken HPACK), so frames are put together here by hand;
header blocks come from ``hpack``'s encoder (one per connection, so its dynamic table stays in
step with the server's decoder).

The verdicts follow the conformance tester h2spec: each wait for the server's next frame is
bounded by :data:`WAIT`; a connection error is a GOAWAY with an expected code or the
connection closing; a stream error is also accepted as RST_STREAM with an expected code; a
clean close in the middle of a frame (after an HTTP/1.1 response, say) is no close but an
error. One thing is stricter than h2spec: a GOAWAY with a code that is not among the expected
ones fails the case at once, instead of passing when the close follows it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Final

import hpack

__all__ = [
    "CLOSED",
    "GARBLED",
    "PREFACE",
    "TIMEOUT",
    "WAIT",
    "Frame",
    "Peer",
    "raw_frame",
]

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: How long each wait for the server's next frame may take (h2spec's default is 2 s; a little
#: more here, for a loaded test machine).
WAIT: Final = 3.0

CLOSED: Final = "connection closed"
GARBLED: Final = "bytes that are not HTTP/2 frames, then the close"
TIMEOUT: Final = "timeout"

# Frame types and flags (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Error codes (RFC 9113 §7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x4, 0x5, 0x6, 0x7
CANCEL, COMPRESSION_ERROR = 0x8, 0x9

# SETTINGS identifiers.
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

_NAMES = {
    DATA: "DATA",
    HEADERS: "HEADERS",
    PRIORITY: "PRIORITY",
    RST_STREAM: "RST_STREAM",
    SETTINGS: "SETTINGS",
    PUSH_PROMISE: "PUSH_PROMISE",
    PING: "PING",
    GOAWAY: "GOAWAY",
    WINDOW_UPDATE: "WINDOW_UPDATE",
    CONTINUATION: "CONTINUATION",
}


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame exactly as given: no check of its length, flags or stream."""
    return len(payload).to_bytes(3, "big") + struct.pack(">BBI", kind, flags, stream_id) + payload


@dataclass(frozen=True)
class Frame:
    """A frame the server sent."""

    kind: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def error_code(self) -> int:
        """The code of a GOAWAY or RST_STREAM."""
        if self.kind == GOAWAY:
            return int.from_bytes(self.payload[4:8], "big")
        return int.from_bytes(self.payload[:4], "big")

    @property
    def ends_stream(self) -> bool:
        return self.kind in (DATA, HEADERS) and bool(self.flags & END_STREAM)

    @property
    def is_ack(self) -> bool:
        return self.kind in (SETTINGS, PING) and bool(self.flags & ACK)

    def __str__(self) -> str:
        name = _NAMES.get(self.kind, f"type 0x{self.kind:x}")
        text = f"{name} frame (length {len(self.payload)}, flags 0x{self.flags:02x}, "
        text += f"stream {self.stream_id}"
        if self.kind in (GOAWAY, RST_STREAM) and len(self.payload) >= 4:
            text += f", error code 0x{self.error_code:x}"
        return text + ")"


Event = Frame | str


class Peer:
    """One connection to the server under test, speaking for the client."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        tls: ssl.SSLContext | None = None,
        wait: float = WAIT,
    ) -> None:
        sock = socket.create_connection(address, timeout=wait)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=address[0])
        self.sock = sock
        self.wait = wait
        self.authority = f"{address[0]}:{address[1]}".encode()
        self.scheme = b"https" if tls is not None else b"http"
        self.encoder = hpack.Encoder()
        self.buffer = b""
        #: True once the connection closed or a wait timed out (as in h2spec: the case ends).
        self.done = False
        #: What the server's SETTINGS frame of the handshake said.
        self.settings: dict[int, int] = {}
        self.seen: list[Event] = []

    def close(self) -> None:
        self.sock.close()

    # -- sending ------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        # The server may already have closed after an earlier frame; the verdict comes from
        # what it sent.
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def frame(self, kind: int, flags: int, stream_id: int, payload: bytes = b"") -> None:
        self.send(raw_frame(kind, flags, stream_id, payload))

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        return bytes(self.encoder.encode(headers, huffman=True))

    def request_headers(
        self, method: bytes = b"GET", path: bytes = b"/"
    ) -> list[tuple[bytes, bytes]]:
        """:method, :scheme, :path, :authority, in h2spec's order."""
        return [
            (b":method", method),
            (b":scheme", self.scheme),
            (b":path", path),
            (b":authority", self.authority),
        ]

    def headers(
        self,
        stream_id: int,
        block: bytes | list[tuple[bytes, bytes]],
        *,
        end_stream: bool = True,
        end_headers: bool = True,
        priority: tuple[int, bool, int] | None = None,
        pad: int | None = None,
    ) -> None:
        """HEADERS; *priority* is (dependency, exclusive, weight 0-255); *pad* octets."""
        if isinstance(block, list):
            block = self.encode(block)
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        payload = block
        if priority is not None:
            dependency, exclusive, weight = priority
            flags |= PRIORITY_FLAG
            payload = struct.pack(">IB", dependency | (0x80000000 if exclusive else 0), weight)
            payload += block
        if pad is not None:
            flags |= PADDED
            payload = bytes([pad]) + payload + b"\0" * pad
        self.frame(HEADERS, flags, stream_id, payload)

    def request(
        self,
        stream_id: int = 1,
        method: bytes = b"GET",
        *,
        extra: list[tuple[bytes, bytes]] | None = None,
        end_stream: bool = True,
        end_headers: bool = True,
    ) -> None:
        headers = self.request_headers(method)
        if extra:
            headers += extra
        self.headers(stream_id, headers, end_stream=end_stream, end_headers=end_headers)

    def data(self, stream_id: int, data: bytes, *, end_stream: bool = True) -> None:
        self.frame(DATA, END_STREAM if end_stream else 0, stream_id, data)

    def continuation(
        self, stream_id: int, block: bytes | list[tuple[bytes, bytes]], *, end_headers: bool = True
    ) -> None:
        if isinstance(block, list):
            block = self.encode(block)
        self.frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, block)

    def priority(
        self, stream_id: int, dependency: int = 0, weight: int = 255, *, exclusive: bool = False
    ) -> None:
        dep = dependency | (0x80000000 if exclusive else 0)
        self.frame(PRIORITY, 0, stream_id, struct.pack(">IB", dep, weight))

    def rst_stream(self, stream_id: int, code: int = CANCEL) -> None:
        self.frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))

    def send_settings(self, *pairs: tuple[int, int]) -> None:
        self.frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))

    def ping(self, data: bytes = b"\0" * 8, *, ack: bool = False) -> None:
        self.frame(PING, ACK if ack else 0, 0, data)

    def goaway(self, last_stream_id: int = 0, code: int = NO_ERROR, debug: bytes = b"") -> None:
        self.frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code) + debug)

    def window_update(self, stream_id: int, increment: int) -> None:
        self.frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))

    # -- the handshake ------------------------------------------------------------------------

    def handshake(self) -> None:
        """Preface and SETTINGS both ways, each side's SETTINGS acknowledged (RFC 9113 §3.4)."""
        self.send(PREFACE)
        self.send_settings((INITIAL_WINDOW_SIZE, 65535))
        theirs = ours = False
        while not (theirs and ours):
            event = self.event()
            if not isinstance(event, Frame):
                raise AssertionError(f"handshake: expected SETTINGS, got {event}")
            if event.kind != SETTINGS:
                continue
            if event.is_ack:
                ours = True
            else:
                theirs = True
                for offset in range(0, len(event.payload) - 5, 6):
                    key, value = struct.unpack(">HI", event.payload[offset : offset + 6])
                    self.settings[key] = value
                self.frame(SETTINGS, ACK, 0)

    @property
    def max_frame_size(self) -> int:
        return self.settings.get(MAX_FRAME_SIZE, 16384)

    # -- receiving ----------------------------------------------------------------------------

    def read_raw(self) -> bytes:
        """Whatever the server sends until it closes (or :attr:`wait` passes), as bytes."""
        deadline = time.monotonic() + self.wait
        data = self.buffer
        self.buffer = b""
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            data += chunk
        self.done = True
        return data

    def event(self) -> Event:
        """The server's next frame, or :data:`CLOSED`, or :data:`TIMEOUT` after :attr:`wait`."""
        if self.done:
            return CLOSED
        deadline = time.monotonic() + self.wait
        while True:
            if len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 9 + length:
                    kind, flags, stream_id = struct.unpack(">BBI", self.buffer[3:9])
                    frame = Frame(kind, flags, stream_id & 0x7FFFFFFF, self.buffer[9 : 9 + length])
                    self.buffer = self.buffer[9 + length :]
                    self.seen.append(frame)
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                self.done = True
                self.seen.append(TIMEOUT)
                return TIMEOUT
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLError):
                self.buffer = b""  # a reset is a close, whatever came before (as in h2spec)
                chunk = b""
            if not chunk:
                self.done = True
                # As h2spec's frame reader: a clean close in the middle of a frame (or after
                # bytes that are no frame at all, such as an HTTP/1.1 response) is an error.
                event = GARBLED if self.buffer else CLOSED
                self.seen.append(event)
                return event
            self.buffer += chunk


# -- verdicts, as h2spec gives them -------------------------------------------------------------


def _fail(expected: str, peer: Peer) -> AssertionError:
    seen = ", ".join(str(event) for event in peer.seen[-6:]) or "nothing"
    return AssertionError(f"expected {expected}; the server sent: {seen}")


def _codes(codes: tuple[int, ...]) -> str:
    return "/".join(f"0x{code:x}" for code in codes)


def expect_connection_error(peer: Peer, *codes: int) -> None:
    """GOAWAY with one of *codes*, or the connection closed."""
    while True:
        event = peer.event()
        if event == CLOSED:
            return
        if not isinstance(event, Frame):
            raise _fail(f"GOAWAY {_codes(codes)} or the connection closed", peer)
        if event.kind == GOAWAY:
            if event.error_code in codes:
                return
            raise _fail(f"GOAWAY {_codes(codes)}", peer)


def expect_stream_error(peer: Peer, *codes: int, stream_id: int | None = None) -> None:
    """RST_STREAM or GOAWAY with one of *codes*, or the connection closed."""
    while True:
        event = peer.event()
        if event == CLOSED:
            return
        if not isinstance(event, Frame):
            raise _fail(f"RST_STREAM or GOAWAY {_codes(codes)} or the connection closed", peer)
        if event.kind == GOAWAY:
            if event.error_code in codes:
                return
            raise _fail(f"RST_STREAM or GOAWAY {_codes(codes)}", peer)
        if (
            event.kind == RST_STREAM
            and event.error_code in codes
            and (stream_id is None or event.stream_id == stream_id)
        ):
            return


def expect_connection_close(peer: Peer) -> None:
    while True:
        event = peer.event()
        if event == CLOSED:
            return
        if not isinstance(event, Frame):
            raise _fail("the connection closed", peer)


def expect_stream_close(peer: Peer) -> None:
    """The stream ended: END_STREAM on DATA or HEADERS, or RST_STREAM NO_ERROR."""
    while True:
        event = peer.event()
        if not isinstance(event, Frame):
            raise _fail("the stream to end", peer)
        if event.ends_stream or (event.kind == RST_STREAM and event.error_code == NO_ERROR):
            return


def expect_frame(peer: Peer, kind: int) -> Frame:
    """The next frame of *kind*, skipping others."""
    while True:
        event = peer.event()
        if not isinstance(event, Frame):
            raise _fail(f"a {_NAMES.get(kind, kind)} frame", peer)
        if event.kind == kind:
            return event


def expect_headers(peer: Peer, stream_id: int) -> None:
    """A HEADERS frame (a response) on *stream_id*."""
    frame = expect_frame(peer, HEADERS)
    if frame.stream_id != stream_id:
        raise _fail(f"HEADERS on stream {stream_id}", peer)


def expect_settings_ack(peer: Peer) -> None:
    if not expect_frame(peer, SETTINGS).is_ack:
        raise _fail("SETTINGS with ACK", peer)


def expect_ping_ack(peer: Peer, data: bytes) -> None:
    frame = expect_frame(peer, PING)
    if not (frame.is_ack and frame.payload == data):
        raise _fail(f"PING ACK with {data!r}", peer)


def expect_ping_ack_or_close(peer: Peer, data: bytes) -> None:
    while True:
        event = peer.event()
        if event == CLOSED:
            return
        if not isinstance(event, Frame):
            raise _fail(f"PING ACK with {data!r} or the connection closed", peer)
        if event.kind == PING and event.is_ack and event.payload == data:
            return


def expect_data_length(peer: Peer, length: int) -> None:
    frame = expect_frame(peer, DATA)
    if len(frame.payload) != length:
        raise _fail(f"DATA of length {length}", peer)
