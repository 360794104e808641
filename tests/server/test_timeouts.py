"""Timeouts on a live server: slowloris, idle keep-alive, silent connections, stalled bodies,
clients that stop reading. Every test bounds how long the server may take, so a missing
timeout fails instead of hanging.

(``time.sleep`` below only paces a deliberately slow client; synchronisation is by polling.)
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from typing import Any

import pytest
from tests.apps import Recorder, hello
from tests.helpers import RawClient, address, running, status_of, wait_until

from pounce.server.server import Server
from pounce.testing import serve

PARSERS = ["fast", "h11"]


@pytest.fixture(params=PARSERS)
def http(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_slowloris_head_is_cut_at_the_header_deadline_while_others_are_served(http: str) -> None:
    app = Recorder()
    head = b"GET /slow HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 200 + b"\r\n\r\n"
    outcome: dict[str, Any] = {}
    stop = threading.Event()

    def trickle(url: str) -> None:
        with RawClient(url, timeout=5.0) as client:
            start = time.monotonic()
            try:
                for byte in head:
                    if stop.is_set():
                        break
                    client.send(bytes([byte]))
                    time.sleep(0.02)  # pacing: ~5 s for the whole head, far past the deadline
            except OSError:
                pass  # the server closed on us mid-trickle: that is the point
            outcome["data"] = client.read_until_close(limit=3.0)
            outcome["elapsed"] = time.monotonic() - start

    with serve(app, http=http, timeout_request_header=0.5) as url:
        thread = threading.Thread(target=trickle, args=(url,))
        thread.start()
        try:
            # While the slow client dribbles, the worker keeps serving everybody else.
            for _ in range(5):
                with RawClient(url, timeout=2.0) as other:
                    other.request(target="/fast")
                    assert other.read_response().status == 200
            thread.join(8.0)
        finally:
            stop.set()
            thread.join(8.0)
    assert not thread.is_alive()
    data = outcome["data"]
    assert data == b"" or status_of(data) == 408
    # The deadline covers the whole head: it is not pushed back by every byte.
    assert outcome["elapsed"] < 3.0
    assert app.paths == [b"/fast"] * 5


def test_slow_second_request_on_a_kept_alive_connection_gets_408(http: str) -> None:
    # The head deadline applies to every request, not only the first on a connection.
    with serve(
        hello, http=http, timeout_request_header=0.5, timeout_keep_alive=30
    ) as url, RawClient(url) as client:
        client.request()
        assert client.read_response().status == 200
        client.send(b"GET /second HTTP/1.1\r\n")
        start = time.monotonic()
        data = client.read_until_close(limit=4.0)
        elapsed = time.monotonic() - start
    assert status_of(data) == 408
    assert 0.4 <= elapsed < 3.0


def test_fresh_connection_sending_nothing_is_closed_after_header_timeout(http: str) -> None:
    with serve(hello, http=http, timeout_request_header=0.5) as url, RawClient(url) as client:
        start = time.monotonic()
        assert client.is_closed(wait=4.0)
        elapsed = time.monotonic() - start
        assert client.buffer == b""  # nothing was asked, so nothing (not even a 408) is sent
    assert 0.4 <= elapsed < 3.0


def test_partial_head_gets_408_after_header_timeout(http: str) -> None:
    with serve(hello, http=http, timeout_request_header=0.5) as url, RawClient(url) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        data = client.read_until_close(limit=4.0)
        elapsed = time.monotonic() - start
    assert status_of(data) == 408
    assert 0.4 <= elapsed < 3.0


def test_idle_keep_alive_connection_is_closed_after_keep_alive_timeout(http: str) -> None:
    with serve(
        hello, http=http, timeout_keep_alive=0.3, timeout_request_header=10
    ) as url, RawClient(url) as client:
        client.request()
        assert client.read_response().status == 200
        start = time.monotonic()
        assert client.is_closed(wait=4.0)
        elapsed = time.monotonic() - start
        assert client.buffer == b""
    assert 0.2 <= elapsed < 2.5


def test_keep_alive_connection_in_use_is_not_closed_early(http: str) -> None:
    # Requests that keep coming within the idle timeout keep the connection alive past it.
    with serve(hello, http=http, timeout_keep_alive=0.4) as url, RawClient(url) as client:
        start = time.monotonic()
        while time.monotonic() - start < 1.2:
            client.request()
            assert client.read_response().status == 200
            time.sleep(0.1)  # pacing, well inside the idle timeout


def test_stalled_request_body_gets_408_and_app_sees_disconnect(http: str) -> None:
    received: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        if received[-1] == "http.request":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"complete"})

    with serve(app, http=http, timeout_request_body=0.5) as url, RawClient(url) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
        start = time.monotonic()
        data = client.read_until_close(limit=5.0)
        elapsed = time.monotonic() - start
        assert wait_until(lambda: "http.disconnect" in received, 3.0)
    assert status_of(data) == 408
    assert 0.4 <= elapsed < 3.0
    assert received[-1] == "http.disconnect"


async def _count_body(scope: Any, receive: Any, send: Any) -> None:
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % size})


def test_without_a_minimum_rate_the_body_timeout_runs_between_pieces(http: str) -> None:
    # --min-request-body-rate off: the timeout is between two pieces, not for the whole body.
    with serve(
        _count_body, http=http, timeout_request_body=0.4, min_request_body_rate=None
    ) as url, RawClient(url) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):
            time.sleep(0.1)  # pacing: 1 s in all, each gap well inside the timeout
            client.send(b"b")
        assert client.read_response().body == b"10"


def test_slow_but_steady_body_is_not_cut(http: str) -> None:
    # 1 KiB every 0.1 s (10 KiB/s) is above the minimum rate: it earns more than it spends,
    # for longer than the body timeout.
    with serve(
        _count_body, http=http, timeout_request_body=0.4, min_request_body_rate=2048
    ) as url, RawClient(url) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10240\r\n\r\n")
        for _ in range(10):
            time.sleep(0.1)  # 1 s in all: more than twice the body timeout
            client.send(b"b" * 1024)
        assert client.read_response().body == b"10240"


def test_trickled_body_gets_408(http: str) -> None:
    # One byte every 50 ms never leaves the timeout's window between two bytes, but it is far
    # below the minimum rate: the body's waiting budget runs out and the client gets 408.
    with serve(
        _count_body, http=http, timeout_request_body=0.5, min_request_body_rate=500
    ) as url, RawClient(url) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        start = time.monotonic()
        try:
            for _ in range(100):  # 5 s at most
                client.send(b"b")
                time.sleep(0.05)
                if select.select([client.sock], [], [], 0)[0]:
                    break  # the server answered
        except OSError:
            pass  # the server closed while the client was still sending
        data = client.read_until_close(limit=5.0)
        elapsed = time.monotonic() - start
    assert status_of(data) == 408
    assert elapsed < 3.0


@pytest.mark.parametrize("reads_body", [True, False], ids=["app-reads", "app-ignores-body"])
def test_half_close_in_the_middle_of_a_body_closes_after_the_response(
    http: str, reads_body: bool
) -> None:
    # The rest of the body can never come: once the app has answered, the connection must be
    # closed, not kept waiting for bytes that a half-closed client cannot send.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if reads_body:
            while (await receive())["type"] == "http.request":
                pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"answered"})

    with serve(app, http=http) as url, RawClient(url) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        client.sock.shutdown(socket.SHUT_WR)
        assert client.read_response().body == b"answered"
        assert client.is_closed(wait=3.0)


def test_stalled_rest_of_an_unread_body_is_closed_after_body_timeout(http: str) -> None:
    # The app answered without reading; the server drops the rest of the body to reuse the
    # connection, but a client that stops sending it cannot hold the connection for ever.
    with serve(hello, http=http, timeout_request_body=0.5) as url, RawClient(url) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        start = time.monotonic()
        assert client.read_response().status == 200
        assert client.is_closed(wait=5.0)
        assert 0.4 <= time.monotonic() - start < 4.0


def test_steady_rest_of_an_unread_body_keeps_the_connection(http: str) -> None:
    # Without a minimum rate each piece restarts the timeout, for a dropped body too.
    with serve(
        hello, http=http, timeout_request_body=0.4, min_request_body_rate=None
    ) as url, RawClient(url) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
        assert client.read_response().status == 200
        for _ in range(8):
            time.sleep(0.1)  # pacing: each gap well inside the timeout, 0.8 s in all
            client.send(b"b")
        client.request()
        assert client.read_response().body == b"Hello, world!"


def test_client_that_stops_reading_is_aborted_after_write_timeout() -> None:
    outcome: list[str] = []
    sent: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * (1024 * 1024)
        try:
            for _ in range(10_000):  # ~10 GB: far more than any buffer
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent.append(len(chunk))
            await send({"type": "http.response.body", "body": b""})
            outcome.append("finished")
        except OSError as exc:
            outcome.append(f"send raised {type(exc).__name__}")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    with serve(app, timeout_write=0.5) as url:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = url.removeprefix("http://").split(":")
        sock.connect((host, int(port)))
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(100)  # the response started; now stop reading for good
            start = time.monotonic()
            assert wait_until(lambda: outcome, 10.0), "the app is still blocked in send()"
            elapsed = time.monotonic() - start
        finally:
            sock.close()
    assert outcome[0] in {"send raised ClientDisconnected", "cancelled"}
    assert elapsed < 8.0
    assert sum(sent) < 500 * 1024 * 1024  # backpressure held the app back until the abort


def connections(server: Server) -> int:
    return sum(worker["connections"] for worker in server.stats()["workers"])


# Regression: the WRITE deadline used to be overwritten while the transport was still paused,
# by IDLE when the response completed inside the paused write (transport.close() then waited
# for the unread buffer forever) and by _start_cycle() for a pipelined request (the app then
# blocked in drain() with no deadline at all).
@pytest.mark.parametrize("pipelined", [False, True], ids=["single", "pipelined"])
def test_big_response_to_a_client_that_never_reads_is_aborted(pipelined: bool) -> None:
    outcome: list[str] = []
    started: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/big":  # one send: the cycle completes while writing is paused
            await send({"type": "http.response.body", "body": b"x" * (48 * 1024 * 1024)})
            return
        try:
            for _ in range(1000):
                await send({"type": "http.response.body", "body": b"y" * 65536, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            outcome.append("finished")
        except OSError:
            outcome.append("send raised")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    with running(app, timeout_write=0.5, timeout_keep_alive=0.5) as (server, url, _):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(address(url))
        try:
            request = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
            if pipelined:
                request += b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(request)
            sock.recv(100)  # the response started; now stop reading for good
            assert wait_until(lambda: connections(server) == 0, 3.0), "connection never aborted"
            # The pipelined request never started: its response could only have been buffered
            # behind one the client does not read.
            assert started == ["/big"]
            assert outcome == []
        finally:
            sock.close()


# Regression: the LINGER deadline (2 s) used to start as soon as write_eof() was queued behind
# an unsent response, cutting off a Connection: close / HTTP/1.0 response under a slow reader.
@pytest.mark.parametrize("closing", ["connection-close", "http10"])
def test_closing_response_is_fully_delivered_to_a_slow_reader(closing: str) -> None:
    size = 16 * 1024 * 1024

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"%d" % size)] if closing == "connection-close" else []
        if closing == "connection-close":
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"z" * size})

    with serve(app) as url:
        sock = socket.create_connection(address(url), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        version = b"1.1" if closing == "connection-close" else b"1.0"
        sock.sendall(b"GET / HTTP/" + version + b"\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                time.sleep(0.01)  # pacing: a steady ~4 MB/s reader, ~4 s for the body
        except ConnectionResetError:
            pass
        finally:
            sock.close()
    body = data.partition(b"\r\n\r\n")[2]
    assert len(body) == size
