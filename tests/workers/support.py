"""Helpers for worker-model tests: a server in a thread, a bounded keep-alive load client."""

from __future__ import annotations

import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from pounce.testing import serve_in_thread
from pounce.workers.server import Server


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    """Poll a condition with a deadline (never a fixed sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@contextmanager
def running(app: Any, **options: Any) -> Iterator[tuple[Server, tuple[str, int]]]:
    options.setdefault("log_level", "warning")
    with serve_in_thread(app, startup_timeout=20, **options) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        yield server.server, (host, int(port))
    assert not server.thread.is_alive(), "server did not stop"


def get(address: tuple[str, int], path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    """One request on a fresh connection."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data:
        raise ConnectionError("closed without a response")
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class KeepAliveConnection:
    """A minimal HTTP/1.1 client connection that behaves like a connection pool entry.

    Before reusing the connection it checks whether the server closed it (readable at EOF),
    as every pooling client does, and reconnects; it follows ``Connection: close``.
    """

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _fresh(self) -> socket.socket:
        if self.sock is not None:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if readable:  # closed by the server while idle (or junk): do not reuse
                self.close()
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
            self.buffer = b""
        return self.sock

    def request(self, path: str = "/") -> tuple[int, bytes]:
        sock = self._fresh()
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the response head")
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the response body")
            rest += chunk
        body, self.buffer = rest[:length], rest[length:]
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@dataclass
class LoadResult:
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    bodies: set[bytes] = field(default_factory=set)


class Load:
    """``connections`` threads, each issuing requests on a keep-alive connection until
    ``stop()`` or ``max_requests`` each, or the deadline: bounded in count and time."""

    def __init__(
        self,
        address: tuple[str, int],
        connections: int,
        *,
        max_requests: int = 10_000,
        deadline: float = 30.0,
        path: str = "/",
    ) -> None:
        self.address = address
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._max = max_requests
        self._deadline = time.monotonic() + deadline
        self._path = path
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(connections)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self) -> None:
        conn = KeepAliveConnection(self.address)
        try:
            for _ in range(self._max):
                if self._stop.is_set() or time.monotonic() > self._deadline:
                    return
                try:
                    status, body = conn.request(self._path)
                except Exception as exc:
                    conn.close()
                    with self._lock:
                        self.result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    if status == 200:
                        self.result.ok += 1
                        self.result.bodies.add(body)
                    else:
                        self.result.errors.append(f"status {status}")
        finally:
            conn.close()

    @property
    def ok(self) -> int:
        with self._lock:
            return self.result.ok

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.result

    def join(self) -> LoadResult:
        for thread in self._threads:
            thread.join(60)
        return self.result


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Force thread switches every microsecond to surface races (GIL builds too)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
