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
