"""A small blocking HTTP/2 client for tests: h2's client side on a socket, plus raw frames.

Real clients (httpx, curl, h2load) cover ordinary use; hostile-peer tests need to send what no
real client would (bad headers, floods, resets), so they drive ``h2`` directly or write frames
built with ``hyperframe``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import Frame
from tests.helpers import address

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class H2Client:
    """One HTTP/2 connection; ``events`` collects everything the server sent."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
        validate: bool = True,
        window: int | None = None,
        start: bool = True,
        auto_ack: bool = True,
    ) -> None:
        sock = socket.create_connection(address(url), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.timeout = timeout
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.events: list[h2.events.Event] = []
        self.closed = False
        self.raw_in = b""
        self.auto_ack = auto_ack
        if start:
            self.conn.initiate_connection()
            if window is not None:
                # A SETTINGS frame of its own: h2 writes only acknowledged values into the
                # preface's, so setting local_settings before it would announce 65535.
                self.conn.update_settings(
                    {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
                )
            self.flush()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, frame: Frame) -> None:
        self.sock.sendall(frame.serialize())

    def request(
        self,
        path: str = "/",
        method: str = "GET",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", b"test"),
            (b":path", path.encode()),
        ]
        fields += headers or []
        self.conn.send_headers(stream_id, fields, end_stream=end and not body)
        for start in range(0, len(body or b""), 16384):
            assert body is not None
            last = start + 16384 >= len(body)
            self.conn.send_data(stream_id, body[start : start + 16384], end_stream=end and last)
        self.flush()
        return stream_id

    def read_once(self, timeout: float | None = None) -> bool:
        """Read what arrives (False once the server closed)."""
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.raw_in += data
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            events = []
        for event in events:
            if (
                self.auto_ack
                and isinstance(event, h2.events.DataReceived)
                and event.flow_controlled_length
            ):
                # Read at once: the server's windows reopen as a real client's would.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
        self.events.extend(events)
        self.flush_quietly()
        return True

    def flush_quietly(self) -> None:
        with contextlib.suppress(OSError):
            self.flush()

    def wait_for(self, predicate: Any, timeout: float | None = None) -> Any:
        """Read until *predicate(event)* holds for some event; return it."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        seen = 0
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event; got {self.events!r}")
            try:
                if not self.read_once(left):
                    for event in self.events[seen:]:
                        if predicate(event):
                            return event
                    raise ConnectionError(f"server closed; events {self.events!r}")
            except TimeoutError:
                raise TimeoutError(f"no matching event; got {self.events!r}") from None

    def response(self, stream_id: int, timeout: float | None = None) -> dict[str, Any]:
        """Collect one stream's status, headers, body and trailers (until it ends)."""
        self.wait_for(
            lambda e: isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
            and e.stream_id == stream_id,
            timeout,
        )
        out: dict[str, Any] = {"status": None, "headers": [], "body": b"", "trailers": [],
                               "informational": [], "reset": None}
        for event in self.events:
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                out["headers"] = list(event.headers)
                out["status"] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.InformationalResponseReceived):
                out["informational"].append(list(event.headers))
            elif isinstance(event, h2.events.DataReceived):
                out["body"] += event.data
            elif isinstance(event, h2.events.TrailersReceived):
                out["trailers"] = list(event.headers)
            elif isinstance(event, h2.events.StreamReset):
                out["reset"] = event.error_code
        self.flush_quietly()
        return out

    def goaway(self, timeout: float | None = None) -> h2.events.ConnectionTerminated:
        event: h2.events.ConnectionTerminated = self.wait_for(
            lambda e: isinstance(e, h2.events.ConnectionTerminated), timeout
        )
        return event

    def read_until_closed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            try:
                self.read_once(deadline - time.monotonic())
            except TimeoutError:
                break
