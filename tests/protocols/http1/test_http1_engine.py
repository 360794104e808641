"""The HTTP/1.1 engine without sockets: framing, keep-alive, pipelining, deadlines, upgrade.

A real :class:`~pounce.transport.stream.StreamTransport` carries the engine, on a
:class:`FakeSocket` standing in for the event loop's transport: what the server writes is
collected, and reading, closing and write backpressure are flags the test reads and sets. The
event loop is real (request tasks run on it) but its clock is the test's, so deadlines are
checked by moving the clock and calling the transport's ``on_deadline`` as the worker's tick
does.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from tests.pipeline.fakes import make_context, settle

from pounce.pipeline.dispatcher import Dispatcher
from pounce.pipeline.events import (
    CLOSED_BODY_TIMEOUT,
    CLOSED_HEADER_TIMEOUT,
    CLOSED_KEEP_ALIVE_TIMEOUT,
    CLOSED_MALFORMED,
    CLOSED_WRITE_TIMEOUT,
    REJECTED_MALFORMED,
    REJECTED_TIMEOUT,
    RequestCompleted,
    RequestRejected,
)
from pounce.protocols.http1.protocol import BODY, HEADER, IDLE, http1_engine_factory
from pounce.protocols.websocket.engine import WebSocketEngine
from pounce.transport.stream import LINGER, NO_DEADLINE, StreamTransport


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def loop(clock: Clock) -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    # Nothing in these tests schedules a timer, so the loop runs the same on the test's clock.
    loop.time = clock  # type: ignore[method-assign]
    try:
        yield loop
    finally:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


class FakeSocket:
    """The part of ``asyncio.Transport`` the StreamTransport uses."""

    def __init__(self) -> None:
        self.extra = {"peername": ("10.0.0.7", 51000), "sockname": ("10.0.0.1", 8000)}
        self.out = bytearray()
        self.reading = True
        self.eof_written = False
        self.closed = False
        self.aborted = False
        self.buffer_size = 0
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed and not self.eof_written, "write after close"
        self.out += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class App:
    """Routes by path; ``/gate/NAME`` waits until the test opens gate NAME."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.ws_received: list[dict[str, Any]] = []

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            self.ws_received.append(await receive())
            await send({"type": "websocket.close"})
            return
        path = scope["path"]
        if path.startswith("/gate/"):
            await self.gate(path[6:]).wait()
        if path.endswith("/echo"):
            data = b""
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                data += message["body"]
                if not message["more_body"]:
                    break
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": data})
            return
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ab", "more_body": True})
            await send({"type": "http.response.body", "body": b"cd", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/length":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": b"ab", "more_body": True})
            await send({"type": "http.response.body", "body": b"cd"})
            return
        if path in ("/204", "/304"):
            await send({"type": "http.response.start", "status": int(path[1:]), "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": path.encode()})


class Conn:
    """One connection: a StreamTransport with the HTTP/1.1 engine on a FakeSocket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: Any, **options: Any) -> None:
        self.loop = loop
        self.app = app
        self.events: list[Any] = []
        options.setdefault("server_header", False)
        options.setdefault("date_header", False)
        self.ctx = make_context(loop, app, events=self.events, **options)
        self.sock = FakeSocket()
        self.t = StreamTransport(self.ctx, http1_engine_factory(Dispatcher(self.ctx)))
        self.t.connection_made(self.sock)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        self.t.data_received(data)
        settle(self.loop)

    def take(self) -> bytes:
        out = bytes(self.sock.out)
        self.sock.out.clear()
        return out

    @property
    def closing(self) -> bool:
        return self.t.closing

    def completed(self) -> list[RequestCompleted]:
        return [e for e in self.events if isinstance(e, RequestCompleted)]


def ok(body: bytes, *extra: bytes) -> bytes:
    """The response the App gives a plain path, as HTTP/1.1 frames it."""
    return (b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n" % len(body) + b"".join(extra)
            + b"\r\n" + body)


def get(path: str, *fields: str, version: str = "1.1") -> bytes:
    return (f"GET {path} HTTP/{version}\r\nhost: t\r\n" + "".join(f + "\r\n" for f in fields)
            + "\r\n").encode()


@pytest.fixture
def app() -> App:
    return App()


# -- keep-alive and pipelining ------------------------------------------------------------------


def test_keep_alive_across_two_requests(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(get("/one"))
    assert conn.take() == ok(b"/one")
    assert not conn.closing
    conn.send(get("/two"))
    assert conn.take() == ok(b"/two")
    assert not conn.closing
    assert conn.t.requests == 2
    assert [e.path for e in conn.completed()] == ["/one", "/two"]
    assert conn.ctx.active_requests == 0


def test_pipelined_requests_are_answered_in_order(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(get("/gate/a") + get("/second") + get("/third"))
    assert conn.take() == b""  # the first one waits; the others must not overtake it
    assert [s["path"] for s in app.scopes] == ["/gate/a"]
    app.gate("a").set()
    settle(loop)
    assert conn.take() == ok(b"/gate/a") + ok(b"/second") + ok(b"/third")
    assert not conn.closing


def test_reading_pauses_while_pipelined_requests_are_buffered(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(get("/gate/a"))
    assert conn.sock.reading
    conn.send(get("/gate/b") + get("/three"))  # arrives while /gate/a runs
    assert not conn.sock.reading  # it waits in the parser's buffer, which must not grow
    app.gate("a").set()
    settle(loop)
    assert [s["path"] for s in app.scopes] == ["/gate/a", "/gate/b"]
    assert not conn.sock.reading  # "/three" is still buffered
    app.gate("b").set()
    settle(loop)
    assert conn.take() == ok(b"/gate/a") + ok(b"/gate/b") + ok(b"/three")
    assert conn.sock.reading  # everything buffered is answered: read again


def test_pipelined_request_waits_while_the_client_does_not_read(
    loop: asyncio.AbstractEventLoop, app: App, clock: Clock
) -> None:
    conn = Conn(loop, app)
    conn.send(get("/gate/a") + get("/second"))
    conn.t.pause_writing()  # the loop says the client stopped reading
    assert conn.t.write_deadline == clock.now + conn.ctx.config.timeout_write
    app.gate("a").set()
    settle(loop)
    assert conn.take() == ok(b"/gate/a")
    assert [s["path"] for s in app.scopes] == ["/gate/a"]  # the next one waits
    # Reading goes on until more bytes come (a client that merely reads its response costs
    # no pause and resume); then it stops, so the buffer grows by one read at most.
    conn.send(get("/third"))
    assert [s["path"] for s in app.scopes] == ["/gate/a"]
    assert not conn.sock.reading
    conn.t.resume_writing()
    settle(loop)
    assert [s["path"] for s in app.scopes] == ["/gate/a", "/second", "/third"]
    assert conn.take() == ok(b"/second") + ok(b"/third")
    assert conn.sock.reading


def test_unread_body_is_discarded_and_the_connection_reused(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(b"POST /early HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\n")
    assert conn.take() == ok(b"/early")  # answered before the body came
    assert conn.t.deadline_kind == BODY  # the rest must still arrive, at the body's pace
    conn.send(b"hello" + get("/next"))
    assert conn.take() == ok(b"/next")
    assert not conn.closing


def test_early_answer_to_a_request_expecting_continue_closes(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(b"POST /early HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n"
              b"expect: 100-continue\r\n\r\n")
    # No 100 Continue went out, so the client may never send the body: nothing to wait for.
    assert conn.take() == ok(b"/early")
    assert conn.closing


def test_discarding_stops_beyond_the_limit(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(b"POST /early HTTP/1.1\r\nhost: t\r\ncontent-length: 5000000\r\n\r\n")
    assert conn.take() == ok(b"/early")
    conn.send(b"x" * 600_000)
    assert not conn.closing
    conn.send(b"x" * 600_000)  # past DISCARD_LIMIT: closing is cheaper than reading on
    assert conn.closing


def test_reading_pauses_above_the_body_high_water_mark(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    size = 300_000
    conn.send(b"POST /gate/echo HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % size)
    conn.send(b"x" * (size - 10))
    assert not conn.sock.reading  # the app has not read it yet: stop buffering
    app.gate("echo").set()
    settle(loop)
    assert conn.sock.reading  # the app took the body
    conn.send(b"y" * 10)
    assert conn.take() == ok(b"x" * (size - 10) + b"y" * 10)


def test_streaming_waits_for_the_client_to_read(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.t.pause_writing()
    conn.send(get("/stream"))
    assert conn.take() == (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                           b"2\r\nab\r\n")
    assert conn.t.drain_waiter is not None  # send() waits in the transport's drain()
    conn.t.resume_writing()
    settle(loop)
    assert conn.take() == b"2\r\ncd\r\n0\r\n\r\n"


def test_write_timeout_aborts_and_reports_incomplete(
    loop: asyncio.AbstractEventLoop, app: App, clock: Clock
) -> None:
    conn = Conn(loop, app, timeout_write=4)
    conn.t.pause_writing()
    conn.send(get("/stream"))
    clock.now += 4
    conn.t.on_deadline(clock.now)
    assert conn.sock.aborted
    assert conn.t.close_reason == CLOSED_WRITE_TIMEOUT
    conn.t.connection_lost(None)  # what the loop reports after abort()
    settle(loop)
    (done,) = conn.completed()
    assert (done.bytes_sent, done.complete) == (2, False)
    assert conn.ctx.active_requests == 0


# -- framing ------------------------------------------------------------------------------------


def test_chunked_framing_for_a_streamed_response(loop: asyncio.AbstractEventLoop,
                                                 app: App) -> None:
    conn = Conn(loop, app)
    conn.send(get("/stream"))
    assert conn.take() == (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                           b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")
    assert conn.completed()[0].bytes_sent == 4


def test_content_length_framing(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(get("/length"))
    assert conn.take() == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabcd"


def test_head_response_has_the_length_but_no_body(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(b"HEAD /abc HTTP/1.1\r\nhost: t\r\n\r\n" + get("/after"))
    assert conn.take() == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n" + ok(b"/after")


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(loop: asyncio.AbstractEventLoop, app: App, status: int) -> None:
    conn = Conn(loop, app)
    conn.send(get(f"/{status}") + get("/after"))
    out = conn.take()
    head, rest = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert b"content-length" not in head and b"transfer-encoding" not in head
    assert rest == ok(b"/after")


def test_http10_streamed_response_is_framed_by_close(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(get("/stream", version="1.0"))
    assert conn.take() == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nabcd"
    assert conn.closing
    assert conn.sock.eof_written  # the body's end is the connection's end


def test_http10_closes_by_default(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(get("/x", version="1.0"))
    assert conn.take() == ok(b"/x", b"connection: close\r\n")
    assert conn.closing


def test_http10_keep_alive(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(get("/x", "connection: keep-alive", version="1.0"))
    assert conn.take() == ok(b"/x", b"connection: keep-alive\r\n")
    assert not conn.closing
    conn.send(get("/y", "connection: keep-alive", version="1.0"))
    assert conn.take() == ok(b"/y", b"connection: keep-alive\r\n")
    assert set(app.scopes[0]["extensions"]) == {"http.response.pathsend"}


def test_http11_scope_offers_trailers_and_early_hints(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(get("/x"))
    assert set(app.scopes[0]["extensions"]) == {
        "http.response.pathsend", "http.response.trailers", "http.response.early_hint"
    }


def test_connection_close_from_the_client(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(get("/x", "connection: close"))
    assert conn.take() == ok(b"/x", b"connection: close\r\n")
    assert conn.closing


def test_expect_continue_through_the_engine(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n"
              b"expect: 100-continue\r\n\r\n")
    assert conn.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"abc")
    assert conn.take() == ok(b"abc")


async def trailers_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.early_hint", "links": [b"</s.css>; rel=preload"]})
    await send({"type": "http.response.start", "status": 200, "headers": [],
                "trailers": True})
    await send({"type": "http.response.body", "body": b"data"})
    await send({"type": "http.response.trailers", "headers": [(b"checksum", b"abc")]})


def test_early_hints_and_trailers_on_http11(loop: asyncio.AbstractEventLoop) -> None:
    conn = Conn(loop, trailers_app)
    conn.send(get("/"))
    assert conn.take() == (
        b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"4\r\ndata\r\n0\r\nchecksum: abc\r\n\r\n"
    )
    assert not conn.closing


def test_http10_gets_neither_early_hints_nor_trailers(loop: asyncio.AbstractEventLoop) -> None:
    conn = Conn(loop, trailers_app)
    conn.send(get("/", version="1.0"))
    assert conn.take() == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\ndata"
    assert conn.closing


async def short_body_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"10")]})
    await send({"type": "http.response.body", "body": b"short"})


def test_body_shorter_than_its_content_length_closes(loop: asyncio.AbstractEventLoop) -> None:
    conn = Conn(loop, short_body_app)
    conn.send(get("/") + get("/never"))
    assert conn.take() == b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"
    assert conn.closing  # the client is still waiting for 5 bytes: only closing ends that


async def long_body_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"toolong"})


def test_body_longer_than_its_content_length_is_cut_and_aborted(
    loop: asyncio.AbstractEventLoop,
) -> None:
    conn = Conn(loop, long_body_app)
    conn.send(get("/"))
    assert conn.take() == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nto"
    assert conn.sock.aborted
    assert conn.ctx.active_requests == 0


# -- malformed requests -------------------------------------------------------------------------


def test_parse_error_answers_400_and_closes(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    out = conn.take()
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in out
    assert conn.closing
    assert conn.t.close_reason == CLOSED_MALFORMED
    assert app.scopes == []
    rejected = [e for e in conn.events if isinstance(e, RequestRejected)]
    assert [(e.status, e.reason) for e in rejected] == [(400, REJECTED_MALFORMED)]


def test_garbage_after_a_good_request_gets_400_after_its_response(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(get("/fine") + b"\x00\x01 nonsense\r\n\r\n")
    out = conn.take()
    assert out.startswith(ok(b"/fine"))
    assert out[len(ok(b"/fine")):].startswith(b"HTTP/1.1 400 ")
    assert conn.closing


def test_no_second_response_for_an_answered_requests_malformed_rest(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(b"POST /early HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n")
    assert conn.take() == ok(b"/early")
    conn.send(b"zz-not-a-chunk-size\r\n")
    assert conn.take() == b""  # a 400 now would answer the client's *next* request
    assert conn.closing
    assert conn.t.close_reason == CLOSED_MALFORMED


def test_malformed_body_of_a_running_request(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n")
    conn.send(b"zz\r\n")
    assert conn.take().startswith(b"HTTP/1.1 400 ")
    assert conn.closing
    assert conn.ctx.active_requests == 0  # the app saw a disconnect and returned
    (done,) = conn.completed()
    assert done.status == 400


# -- deadlines ----------------------------------------------------------------------------------


def test_header_deadline_is_armed_at_start_and_idle_after_a_response(
    loop: asyncio.AbstractEventLoop, app: App, clock: Clock
) -> None:
    conn = Conn(loop, app, timeout_request_header=7, timeout_keep_alive=3)
    t = conn.t
    assert (t.deadline_kind, t.state_deadline, t.deadline) == (HEADER, 1007.0, 1007.0)
    clock.now = 1002.0
    conn.send(get("/x"))
    assert (t.deadline_kind, t.deadline) == (IDLE, 1005.0)
    clock.now = 1004.0
    conn.send(b"GET /y HT")  # the next head starts arriving: the header deadline runs again
    assert (t.deadline_kind, t.deadline) == (HEADER, 1011.0)


def test_no_deadline_while_the_app_runs(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(get("/gate/a"))
    assert conn.t.deadline_kind == NO_DEADLINE
    assert conn.t.deadline == float("inf")


def test_idle_timeout_closes_quietly(loop: asyncio.AbstractEventLoop, app: App,
                                     clock: Clock) -> None:
    conn = Conn(loop, app, timeout_keep_alive=3)
    conn.send(get("/x"))
    conn.take()
    clock.now += 2.9
    conn.t.on_deadline(clock.now)
    assert not conn.closing
    clock.now += 0.1
    conn.t.on_deadline(clock.now)
    assert conn.take() == b""
    assert conn.sock.closed and not conn.sock.eof_written  # no linger for an idle connection
    assert conn.t.close_reason == CLOSED_KEEP_ALIVE_TIMEOUT


def test_header_timeout_with_a_partial_head_answers_408(
    loop: asyncio.AbstractEventLoop, app: App, clock: Clock
) -> None:
    conn = Conn(loop, app, timeout_request_header=5)
    conn.send(b"GET /slow HTTP/1.1\r\nhost:")
    clock.now += 5
    conn.t.on_deadline(clock.now)
    assert conn.take().startswith(b"HTTP/1.1 408 ")
    assert conn.sock.closed
    assert conn.t.close_reason == CLOSED_HEADER_TIMEOUT
    rejected = [e for e in conn.events if isinstance(e, RequestRejected)]
    assert [(e.status, e.reason) for e in rejected] == [(408, REJECTED_TIMEOUT)]


def test_header_timeout_without_a_byte_just_closes(
    loop: asyncio.AbstractEventLoop, app: App, clock: Clock
) -> None:
    conn = Conn(loop, app, timeout_request_header=5)
    clock.now += 5
    conn.t.on_deadline(clock.now)
    assert conn.take() == b""
    assert conn.sock.closed


def test_body_budget_runs_out_at_the_minimum_rate(
    loop: asyncio.AbstractEventLoop, app: App, clock: Clock
) -> None:
    conn = Conn(loop, app, timeout_request_body=10, min_request_body_rate=100)
    t = conn.t
    conn.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\n")
    assert (t.deadline_kind, t.deadline) == (BODY, 1010.0)  # the app waits for the body
    clock.now = 1008.0
    conn.send(b"x" * 100)  # 100 bytes at 100 B/s earn one second back: 10 - 8 + 1 = 3 left
    assert (t.deadline_kind, t.deadline) == (BODY, 1011.0)
    clock.now = 1010.9
    t.on_deadline(clock.now)
    assert conn.take() == b""
    clock.now = 1011.0
    t.on_deadline(clock.now)
    settle(loop)
    assert conn.take().startswith(b"HTTP/1.1 408 ")
    assert conn.sock.closed
    assert t.close_reason == CLOSED_BODY_TIMEOUT
    assert conn.ctx.active_requests == 0


def test_body_credit_is_capped_at_the_body_timeout(
    loop: asyncio.AbstractEventLoop, app: App, clock: Clock
) -> None:
    conn = Conn(loop, app, timeout_request_body=10, min_request_body_rate=100)
    conn.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100000\r\n\r\n")
    clock.now += 1
    conn.send(b"x" * 10000)  # worth 100 s at the minimum rate, but the budget caps at 10
    assert conn.t.deadline == clock.now + 10


def test_without_a_rate_every_piece_restarts_the_body_timeout(
    loop: asyncio.AbstractEventLoop, app: App, clock: Clock
) -> None:
    conn = Conn(loop, app, timeout_request_body=10, min_request_body_rate=None)
    conn.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\n")
    clock.now = 1009.0
    conn.send(b"x")
    assert (conn.t.deadline_kind, conn.t.deadline) == (BODY, 1019.0)


def test_a_slow_app_spends_no_body_credit(
    loop: asyncio.AbstractEventLoop, app: App, clock: Clock
) -> None:
    conn = Conn(loop, app, timeout_request_body=10)
    conn.send(b"POST /gate/a HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\n")
    assert conn.t.deadline_kind == NO_DEADLINE  # the app is not waiting for the body
    clock.now += 100
    conn.t.on_deadline(clock.now)
    assert not conn.closing


def test_graceful_shutdown_closes_an_idle_connection(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(get("/x"))
    conn.t.shutdown()
    assert conn.closing


def test_graceful_shutdown_finishes_the_running_request_first(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    conn.send(get("/gate/a"))
    conn.t.shutdown()
    assert not conn.closing
    app.gate("a").set()
    settle(loop)
    assert conn.take() == ok(b"/gate/a", b"connection: close\r\n")
    assert conn.closing
    assert conn.t.deadline_kind == LINGER


# -- upgrade ------------------------------------------------------------------------------------

WS_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
)


def masked_text_frame(text: str) -> bytes:
    data = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return struct.pack("!BB", 0x81, 0x80 | len(data)) + mask + masked


def test_upgrade_switches_the_engine_with_the_trailing_bytes(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app)
    http1 = conn.t.engine
    conn.send(WS_HANDSHAKE + masked_text_frame("early"))
    assert isinstance(conn.t.engine, WebSocketEngine)
    assert conn.t.engine is not http1
    out = conn.take()
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in out
    # The frame that came in the handshake's read reached the app through the new engine.
    assert app.ws_received == [{"type": "websocket.receive", "text": "early"}]
    assert app.scopes[0]["type"] == "websocket"
    assert conn.t.requests == 1


def test_bad_handshake_is_refused_over_http(loop: asyncio.AbstractEventLoop, app: App) -> None:
    conn = Conn(loop, app)
    conn.send(WS_HANDSHAKE.replace(b"version: 13", b"version: 8"))
    out = conn.take()
    assert out.startswith(b"HTTP/1.1 426 ")
    assert conn.closing
    assert app.scopes == []


def test_upgrade_without_websocket_support_is_plain_http(
    loop: asyncio.AbstractEventLoop, app: App
) -> None:
    conn = Conn(loop, app, ws="none")
    conn.send(WS_HANDSHAKE)
    assert conn.take() == ok(b"/ws")
    assert conn.t.engine.__class__.__name__ == "HTTP1Engine"
