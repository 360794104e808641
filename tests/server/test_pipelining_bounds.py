"""Memory per connection stays bounded whatever a pipelining client sends or fails to read.

A complete response must not start the next pipelined request while the client is not reading:
otherwise a client that sends requests and reads nothing makes the worker buffer responses
without bound (seen: 38 MB -> 1 GB RSS in 2 s).
"""

from __future__ import annotations

import socket
import time
from typing import Any

from tests.helpers import address

from pounce.testing import serve

BIG = b"x" * (16 * 1024 * 1024)  # more than loopback buffers hold


def test_pipelined_requests_for_big_responses_wait_for_the_client_to_read() -> None:
    started: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": BIG})  # one message: done at once

    with serve(app, timeout_write=5) as url:
        sock = socket.create_connection(address(url))
        try:
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
            time.sleep(1.0)  # the server had every chance to run them all
            # The first response fills the buffers; the next may start once a little drained.
            assert len(started) <= 2
            # Reading lets the queue move on again: the pipeline is paused, not dropped.
            sock.settimeout(5)
            received = 0
            while received < 3 * len(BIG):
                chunk = sock.recv(1 << 20)
                assert chunk, "connection closed while the client was reading"
                received += len(chunk)
            assert len(started) >= 3
        finally:
            sock.close()


def test_a_flood_of_pipelined_requests_stops_being_read() -> None:
    # Small responses finish at once; a client that floods requests and reads nothing must
    # soon find the server no longer reading its socket (its sends block), instead of the
    # server turning every request into buffered response bytes.
    with serve("tests.apps:hello", timeout_write=10) as url:
        sock = socket.create_connection(address(url))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        batch = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
        sent = 0
        blocked_since: float | None = None
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline and sent < 256 * 1024 * 1024:
                try:
                    sent += sock.send(batch)
                    blocked_since = None
                except BlockingIOError:
                    now = time.monotonic()
                    if blocked_since is None:
                        blocked_since = now
                    elif now - blocked_since > 1.0:
                        break  # the server stopped reading: what it holds is bounded
                    time.sleep(0.01)
        finally:
            sock.close()
        assert blocked_since is not None, f"the server kept reading ({sent} bytes sent)"
        # Kernel buffers on both sides plus the write buffer's high-water mark: a few MB.
        assert sent < 64 * 1024 * 1024
