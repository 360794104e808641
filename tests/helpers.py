"""Helpers for tests that talk to a real Pounce server over sockets on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import pytest

from pounce.testing import serve_in_thread
from pounce.workers.server import Server


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    informational: list[int] = field(default_factory=list)
    #: HTTP/2 only: the RST_STREAM error code when the server reset the stream.
    reset: int | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]


class RawClient:
    """A socket to the server plus an h11 client-side parser for what comes back."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address(url), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""
        self._h11 = h11.Connection(h11.CLIENT)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = "1.1",
    ) -> None:
        lines = [f"{method} {target} HTTP/{version}"]
        hdrs = headers if headers is not None else [("host", "test")]
        lines += [f"{k}: {v}" for k, v in hdrs]
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
            lines.append(f"content-length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def read_response(self, *, head: bool = False, http10: bool = False) -> Response:
        """Read one response; the parser is fed what the socket gives, one response at a time."""
        conn = h11.Connection(h11.CLIENT)
        # Pretend we sent a matching request so h11 frames the response correctly.
        # (h11 only speaks 1.1 as a client; the response's own version decides its framing.)
        del http10
        method = b"HEAD" if head else b"GET"
        conn.send(h11.Request(method=method, target=b"/", headers=[(b"host", b"x")]))
        conn.send(h11.EndOfMessage())
        if self.buffer:
            conn.receive_data(self.buffer)
            self.buffer = b""
        response: Response | None = None
        informational: list[int] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                conn.receive_data(data)
                if not data and response is None and conn.their_state is h11.SEND_RESPONSE:
                    raise ConnectionError("connection closed before a response")
                continue
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                response = Response(
                    event.status_code, list(event.headers), informational=informational
                )
            elif isinstance(event, h11.Data):
                assert response is not None
                response.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                response.trailers = list(event.headers)
                self.buffer = conn.trailing_data[0]
                return response
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed mid-response")

    def read_until_close(self, limit: float | None = None) -> bytes:
        deadline = time.monotonic() + (limit or self.timeout)
        data = self.buffer
        self.buffer = b""
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
        return data

    def is_closed(self, wait: float = 2.0) -> bool:
        """True when the server closed the connection (EOF or reset) within *wait* seconds."""
        self.sock.settimeout(wait)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(self.timeout)


def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.005
) -> bool:
    """Poll *predicate* until it is truthy or *timeout* passes; returns its last truth value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


def status_of(raw: bytes) -> int | None:
    """The status code of the first response in *raw* (``None`` when there is none)."""
    if not raw.startswith(b"HTTP/1.1 "):
        return None
    return int(raw[9:12])


@contextmanager
def running(app: Any, **options: Any) -> Iterator[tuple[Server, str, threading.Thread]]:
    """A Server in a thread; yields it with its URL and thread (force-stopped at the end)."""
    with serve_in_thread(app, force_stop=True, **options) as server:
        yield server.server, server.url, server.thread


class PounceSubprocess:
    """``python -m pounce ARGS`` in a subprocess, its stderr collected line by line.

    The environment's ``POUNCE_PORT`` is dropped so a developer's shell cannot move the server.
    """

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
        environ = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        environ.pop("POUNCE_PORT", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pounce", *args],
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def join_reader(self) -> None:
        self._reader.join(5)


@contextmanager
def propagating(*names: str) -> Iterator[None]:
    """Let these loggers reach the root logger (where caplog listens), then restore them."""
    import logging

    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, logger.level, logger.disabled))
        logger.propagate = True
        logger.disabled = False
    try:
        yield
    finally:
        for logger, propagate, level, disabled in saved:
            logger.propagate = propagate
            logger.setLevel(level)
            logger.disabled = disabled


# -- one client, two protocols --------------------------------------------------------------------

def _h2_installed() -> bool:
    try:
        import h2.connection  # noqa: F401
    except ImportError:
        return False
    return True


#: The protocols every feature's real-socket cases run over (HTTP/2 in cleartext, by prior
#: knowledge: what the server offers on a plain port whenever the ``h2`` extra is installed).
PROTOCOLS = [
    "http/1.1",
    pytest.param(
        "h2", marks=pytest.mark.skipif(not _h2_installed(), reason="needs the h2 extra")
    ),
]


class ProtocolClient:
    """One connection that speaks HTTP/1.1 or HTTP/2, for cases that must hold on both.

    Requests are written exactly as given (an HTTP/2 ``:path`` is not normalised, so traversal
    targets reach the server as sent). ``send`` returns a handle; ``response(handle)`` reads
    that request's answer. Over HTTP/1.1 the handles are answered in order (pipelining); over
    HTTP/2 each is a stream of its own, answered in any order.
    """

    def __init__(self, url: str, protocol: str = "http/1.1", timeout: float = 5.0) -> None:
        self.protocol = protocol
        self.url = url
        self._pending: list[tuple[int, bool]] = []  # HTTP/1.1: (handle, HEAD) in order
        self._answered: dict[int, Response] = {}
        self._next = 1
        if protocol == "h2":
            from tests.protocols.http2.h2client import H2Client

            self.h2: Any = H2Client(url, timeout=timeout, validate=False)
            self.raw: RawClient | None = None
        elif protocol == "http/1.1":
            self.h2 = None
            self.raw = RawClient(url, timeout=timeout)
        else:
            raise ValueError(f"unknown protocol {protocol!r}")

    def __enter__(self) -> ProtocolClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.h2 is not None:
            self.h2.close()
        if self.raw is not None:
            self.raw.close()

    @property
    def version(self) -> str:
        """How the server names the protocol (``scope["http_version"]``)."""
        return "2" if self.protocol == "h2" else "1.1"

    def send(
        self,
        method: str = "GET",
        target: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> int:
        """Send one request (``host: test`` unless *headers* name a host); its handle."""
        fields = list(headers or [])
        host = next((v for k, v in fields if k.lower() == "host"), None)
        if self.h2 is None:
            assert self.raw is not None
            if host is None:
                fields.insert(0, ("host", "test"))
            self.raw.request(method, target, fields, body)
            handle = self._next
            self._next += 1
            self._pending.append((handle, method == "HEAD"))
            return handle
        h2_fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", (host or "test").encode("latin-1")),
            (b":path", target.encode("latin-1")),
        ]
        h2_fields += [
            (k.lower().encode(), v.encode("latin-1")) for k, v in fields if k.lower() != "host"
        ]
        if body:
            h2_fields.append((b"content-length", b"%d" % len(body)))
        conn = self.h2.conn
        stream_id: int = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, h2_fields, end_stream=not body)
        for start in range(0, len(body), 16384):
            last = start + 16384 >= len(body)
            conn.send_data(stream_id, body[start : start + 16384], end_stream=last)
        self.h2.flush()
        return stream_id

    def response(self, handle: int, timeout: float | None = None) -> Response:
        """The answer to the request *handle* (read until it is complete)."""
        if self.h2 is not None:
            got = self.h2.response(handle, timeout)
            status = got["status"]
            return Response(
                status if status is not None else 0,
                [(k, v) for k, v in got["headers"] if not k.startswith(b":")],
                got["body"],
                [(k, v) for k, v in got["trailers"] if not k.startswith(b":")],
                [int(dict(fields)[b":status"]) for fields in got["informational"]],
                reset=got["reset"],
            )
        assert self.raw is not None
        while handle not in self._answered:
            assert self._pending, f"no request {handle} is waiting for an answer"
            first, head = self._pending.pop(0)
            if timeout is not None:
                self.raw.sock.settimeout(timeout)
            self._answered[first] = self.raw.read_response(head=head)
        return self._answered.pop(handle)

    def fetch(
        self,
        method: str = "GET",
        target: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        return self.response(self.send(method, target, headers, body))

    def cancel(self, handle: int) -> None:
        """HTTP/2: reset the stream (CANCEL); HTTP/1.1: close the connection."""
        if self.h2 is None:
            assert self.raw is not None
            self.raw.close()
            return
        import h2.errors

        self.h2.conn.reset_stream(handle, h2.errors.ErrorCodes.CANCEL)
        self.h2.flush()


def fetch(
    url: str,
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    body: bytes = b"",
    *,
    protocol: str = "http/1.1",
) -> Response:
    """One request on a fresh connection, over *protocol*."""
    with ProtocolClient(url, protocol) as client:
        return client.fetch(method, target, headers, body)


def http_version(protocol: str) -> str:
    """``scope["http_version"]`` for a :data:`PROTOCOLS` entry."""
    return "2" if protocol == "h2" else "1.1"
