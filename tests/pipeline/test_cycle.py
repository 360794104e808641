"""The ASGI request cycle on a fake channel: message order, headers, backpressure, the end."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from tests.pipeline.fakes import ERROR_BODY_SIZE, FakeChannel, make_context, settle, start

from pounce.pipeline.cycle import ClientDisconnected
from pounce.pipeline.events import RequestCompleted

Message = dict[str, Any]


class Script:
    """An app that sends *messages* in order and keeps what was raised into it."""

    def __init__(self, *messages: Message) -> None:
        self.messages = messages
        self.error: BaseException | None = None
        self.received: list[Message] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            for message in self.messages:
                await send(message)
        except Exception as exc:
            self.error = exc
            raise


START: Message = {"type": "http.response.start", "status": 200, "headers": []}


def body(data: bytes = b"", more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


def completed_events(events: list[Any]) -> list[RequestCompleted]:
    return [e for e in events if isinstance(e, RequestCompleted)]


def run_app(loop: asyncio.AbstractEventLoop, app: Any, **options: Any) -> tuple[
    FakeChannel, list[Any]
]:
    events: list[Any] = []
    ctx = make_context(loop, app, events=events, **options)
    _, channel = start(ctx)
    settle(loop)
    return channel, events


# -- message order ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ((body(b"x"),), "expected 'http.response.start'"),
        ((START, START), "unknown message type 'http.response.start'"),
        ((START, body(b"x"), body(b"y")), "after the response was complete"),
        ((START, {"type": "http.response.trailers", "headers": []}), "without 'trailers'"),
        (({**START, "trailers": True}, body(b"x", more=True),
          {"type": "http.response.trailers", "headers": []}), "before the final body"),
        ((START, {"type": "http.response.pathsend"}), "needs a 'path' string"),
        ((START, {"type": "http.response.bogus"}), "unknown message type"),
        (("not a message",), "not an ASGI message"),
        (({"type": "http.response.start", "status": 101},), "informational responses"),
        (({"type": "http.response.start", "status": "200"},), "invalid status"),
        ((START, body("text")), "body must be bytes"),  # type: ignore[arg-type]
        (({"type": "http.response.early_hint", "links": [b"bad\nlink"]},), "invalid link"),
    ],
)
def test_misuse_closes_and_raises_into_the_app(
    loop: asyncio.AbstractEventLoop, messages: tuple[Message, ...], problem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Script(*messages)
    with caplog.at_level(logging.ERROR, "pounce.error"):
        channel, _ = run_app(loop, app)
    assert isinstance(app.error, RuntimeError)
    assert problem in str(app.error)
    assert problem in caplog.text
    assert channel.aborts == 1
    assert channel.finished == 1
    assert channel.errors == []  # nothing more is written to a connection being closed


def test_body_after_final_with_trailers_pending(loop: asyncio.AbstractEventLoop) -> None:
    app = Script({**START, "trailers": True}, body(b"x"), body(b"y"))
    channel, _ = run_app(loop, app)
    assert app.error is not None
    assert "after the final body" in str(app.error)
    assert channel.aborts == 1


def test_bytes_like_bodies_are_accepted(loop: asyncio.AbstractEventLoop) -> None:
    app = Script(START, body(bytearray(b"ab"), more=True),  # type: ignore[arg-type]
                 body(memoryview(b"cd")))  # type: ignore[arg-type]
    channel, _ = run_app(loop, app)
    assert app.error is None
    assert channel.body == [(b"ab", True), (b"cd", False)]
    assert all(type(data) is bytes for data, _ in channel.body)


# -- the response head --------------------------------------------------------------------------


def test_invalid_header_answers_500_and_raises_into_the_app(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    app = Script({"type": "http.response.start", "status": 200,
                  "headers": [(b"x-evil", b"a\r\nset-cookie: x")]})
    with caplog.at_level(logging.ERROR, "pounce.error"):
        channel, events = run_app(loop, app)
    assert channel.head is None  # never forwarded
    assert channel.errors == [(500, ())]
    assert isinstance(app.error, RuntimeError)
    assert "invalid response header" in str(app.error)
    assert "Invalid response header" in caplog.text
    (done,) = completed_events(events)
    assert (done.status, done.bytes_sent, done.complete) == (500, ERROR_BODY_SIZE, True)
    assert channel.calls[-2:] == ["response_complete", "app_finished"]


def test_head_fields_are_validated_and_framing_fields_dropped(
    loop: asyncio.AbstractEventLoop,
) -> None:
    app = Script(
        {"type": "http.response.start", "status": 201, "headers": [
            (b"Content-Length", b"2"), (b"transfer-encoding", b"chunked"),
            (b"connection", b"close"), (b"X-Thing", b"v"),
        ]},
        body(b"ok"),
    )
    channel, _ = run_app(loop, app, server_header=False, date_header=False)
    assert channel.head == (201, [(b"content-length", b"2"), (b"x-thing", b"v")], 2, True,
                            False)


def test_server_date_and_default_headers_are_added(loop: asyncio.AbstractEventLoop) -> None:
    channel, events = run_app(loop, Script(START, body(b"x")),
                              headers=[("X-Default", "d"), ("X-Other", "o")])
    assert channel.head is not None
    fields = dict(channel.head[1])
    assert fields[b"server"] == b"pounce"
    assert fields[b"date"].endswith(b" GMT")
    assert fields[b"x-default"] == b"d"
    assert fields[b"x-other"] == b"o"
    (done,) = completed_events(events)
    assert done.response_headers == channel.head[1]


def test_the_apps_own_fields_win(loop: asyncio.AbstractEventLoop) -> None:
    app = Script({"type": "http.response.start", "status": 200, "headers": [
        (b"server", b"mine"), (b"date", b"yesterday"), (b"x-default", b"app"),
    ]}, body())
    channel, _ = run_app(loop, app, headers=[("X-Default", "d")])
    assert channel.head is not None
    assert channel.head[1] == [(b"server", b"mine"), (b"date", b"yesterday"),
                               (b"x-default", b"app")]


def test_defaults_can_be_turned_off(loop: asyncio.AbstractEventLoop) -> None:
    channel, _ = run_app(loop, Script(START, body()), server_header=False, date_header=False)
    assert channel.head is not None
    assert channel.head[1] == []


def test_early_hints_reach_the_channel(loop: asyncio.AbstractEventLoop) -> None:
    app = Script({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]},
                 {"type": "http.response.early_hint", "links": []}, START, body())
    channel, _ = run_app(loop, app)
    assert channel.early_hints == [[b"</a.css>; rel=preload"]]  # an empty hint sends nothing
    assert channel.calls[:3] == ["bind", "write_early_hint", "start_response"]


# -- backpressure -------------------------------------------------------------------------------


def test_send_waits_while_the_flow_is_paused(loop: asyncio.AbstractEventLoop) -> None:
    progress: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(START)
        for i in range(3):
            await send(body(b"x", more=True))
            progress.append(i)
        await send(body())

    ctx = make_context(loop, app)
    channel = FakeChannel()
    channel.flow.write_paused = True
    start(ctx, channel)
    settle(loop)
    assert progress == []  # the first chunk is written, then send() waits
    assert len(channel.body) == 1
    channel.flow.resume()
    settle(loop)
    assert progress == [0, 1, 2]
    # Not paused: no coroutine was awaited for the later chunks.
    assert channel.flow.drains == 1
    assert channel.completed == 1


def test_streaming_fast_path_also_waits(loop: asyncio.AbstractEventLoop) -> None:
    gate = asyncio.Event()
    sent: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"a", more=True))
        await gate.wait()
        await send(body(b"b", more=True))  # the streaming hot path of send()
        sent.append(1)
        await send(body())

    ctx = make_context(loop, app)
    channel = FakeChannel()
    start(ctx, channel)
    settle(loop)
    channel.flow.write_paused = True
    gate.set()
    settle(loop)
    assert channel.body_bytes == b"ab"
    assert sent == []
    assert channel.flow.waiting == 1
    channel.flow.resume()
    settle(loop)
    assert sent == [1]
    assert channel.completed == 1


# -- the request body and disconnects -----------------------------------------------------------


class Reader:
    """Reads every receive() message until the body is complete or the client is gone."""

    def __init__(self, respond: bool = True) -> None:
        self.received: list[Message] = []
        self.respond = respond

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        if self.respond:
            await send(START)
            await send(body(b"done"))


def test_body_pieces_are_delivered_and_reading_resumes(loop: asyncio.AbstractEventLoop) -> None:
    app = Reader()
    ctx = make_context(loop, app)
    cycle, channel = start(ctx, method="POST", has_body=True)
    cycle.feed_body(b"ab")
    cycle.feed_body(b"cd")  # buffered together before the app reads
    settle(loop)
    assert app.received == [{"type": "http.request", "body": b"abcd", "more_body": True}]
    assert channel.consumed == 1
    settle(loop)
    assert channel.waiting == [True]  # the app waits for more body: the body timeout runs
    cycle.feed_body(b"ef")
    cycle.feed_end()
    settle(loop)
    assert channel.waiting == [True, False]
    assert app.received[1:] == [{"type": "http.request", "body": b"ef", "more_body": False}]
    assert channel.body_bytes == b"done"


def test_request_without_body_gets_one_empty_message(loop: asyncio.AbstractEventLoop) -> None:
    app = Reader()
    ctx = make_context(loop, app)
    _, channel = start(ctx)
    settle(loop)
    assert app.received == [{"type": "http.request", "body": b"", "more_body": False}]
    assert channel.waiting == []


def test_expect_continue_is_sent_when_the_app_reads(loop: asyncio.AbstractEventLoop) -> None:
    app = Reader()
    ctx = make_context(loop, app)
    cycle, channel = start(ctx, method="POST", has_body=True, expect_continue=True)
    settle(loop)
    assert channel.continues == 1
    cycle.feed_body(b"x")
    cycle.feed_end()
    settle(loop)
    assert channel.continues == 1
    assert channel.calls.index("write_continue") < channel.calls.index("start_response")


def test_no_continue_when_the_app_answers_without_reading(
    loop: asyncio.AbstractEventLoop,
) -> None:
    ctx = make_context(loop, Script(START, body(b"no")))
    _, channel = start(ctx, method="POST", has_body=True, expect_continue=True)
    settle(loop)
    assert channel.continues == 0
    assert channel.completed == 1


def test_disconnect_reaches_receive_and_send(loop: asyncio.AbstractEventLoop) -> None:
    raised: list[BaseException] = []
    received: list[Message] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        received.append(await receive())
        received.append(await receive())
        try:
            await send(START)
        except OSError as exc:
            raised.append(exc)
            raise

    events: list[Any] = []
    ctx = make_context(loop, app, events=events)
    cycle, channel = start(ctx, method="POST", has_body=True)
    cycle.feed_body(b"part")
    settle(loop)
    cycle.feed_disconnect()
    settle(loop)
    assert received == [{"type": "http.request", "body": b"part", "more_body": True},
                        {"type": "http.disconnect"}]
    assert len(raised) == 1 and isinstance(raised[0], ClientDisconnected)
    (done,) = completed_events(events)
    assert not done.complete
    assert channel.finished == 1
    assert ctx.active_requests == 0


def test_client_eof_after_the_body_reads_as_disconnect(loop: asyncio.AbstractEventLoop) -> None:
    app = Reader(respond=False)
    ctx = make_context(loop, app)
    cycle, _ = start(ctx, method="POST", has_body=True)
    cycle.feed_body(b"x")
    cycle.feed_eof()
    settle(loop)
    assert app.received == [{"type": "http.request", "body": b"x", "more_body": True},
                            {"type": "http.disconnect"}]


def test_receive_after_the_response_reports_disconnect(loop: asyncio.AbstractEventLoop) -> None:
    received: list[Message] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"x"))
        received.append(await receive())

    ctx = make_context(loop, app)
    start(ctx, method="POST", has_body=True)
    settle(loop)
    assert received == [{"type": "http.disconnect"}]


def test_a_waiting_receive_wakes_when_the_response_completes(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A background reader (a disconnect watcher) must not hang once the response is done."""
    received: list[Message] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def watch() -> None:
            received.append(await receive())

        watcher = asyncio.ensure_future(watch())
        await asyncio.sleep(0)
        await send(START)
        await send(body(b"x"))
        await watcher

    ctx = make_context(loop, app)
    cycle, _ = start(ctx, method="POST", has_body=True)  # the body never comes
    settle(loop)
    assert received == [{"type": "http.disconnect"}]
    assert cycle.finished


# -- the end of a request -----------------------------------------------------------------------


def test_completed_once_on_a_normal_end(loop: asyncio.AbstractEventLoop) -> None:
    app = Script({"type": "http.response.start", "status": 202,
                  "headers": [(b"x-a", b"1")]}, body(b"ab", more=True), body(b"cd"))
    channel, events = run_app(loop, app, server_header=False, date_header=False)
    (done,) = completed_events(events)
    assert done.complete
    assert (done.status, done.bytes_sent) == (202, 4)
    assert done.response_headers == [(b"x-a", b"1")]
    assert (done.method, done.path, done.http_version, done.scheme) == ("GET", "/", "1.1",
                                                                         "http")
    assert done.duration >= 0
    assert channel.calls[-2:] == ["response_complete", "app_finished"]
    assert channel.completed == channel.finished == 1


def test_completed_after_the_trailers(loop: asyncio.AbstractEventLoop) -> None:
    app = Script({**START, "trailers": True}, body(b"x"),
                 {"type": "http.response.trailers", "headers": [(b"checksum", b"1")]})
    channel, events = run_app(loop, app)
    assert channel.calls[-4:] == ["write_body", "write_trailers", "response_complete",
                                  "app_finished"]
    (done,) = completed_events(events)
    assert done.complete


def test_error_after_start_aborts_and_reports_incomplete(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"partial", more=True))
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, "pounce.error"):
        channel, events = run_app(loop, app)
    assert "Exception in ASGI application" in caplog.text
    assert channel.aborts == 1
    assert channel.errors == []
    assert channel.completed == 0
    (done,) = completed_events(events)
    assert (done.status, done.bytes_sent, done.complete) == (200, 7, False)


def test_error_before_start_answers_500(loop: asyncio.AbstractEventLoop) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ValueError("boom")

    channel, events = run_app(loop, app)
    assert channel.errors == [(500, ())]
    (done,) = completed_events(events)
    assert (done.status, done.complete) == (500, True)


@pytest.mark.parametrize(
    ("messages", "expected_calls", "log"),
    [
        ((), ["send_error_response", "response_complete", "app_finished"],
         "returned without starting a response"),
        ((START, body(b"x", more=True)), ["write_body", "abort", "app_finished"],
         "returned without completing the response"),
    ],
)
def test_app_returning_early(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture,
    messages: tuple[Message, ...], expected_calls: list[str], log: str,
) -> None:
    with caplog.at_level(logging.ERROR, "pounce.error"):
        channel, events = run_app(loop, Script(*messages))
    assert channel.calls[-len(expected_calls):] == expected_calls
    assert log in caplog.text
    assert len(completed_events(events)) == 1


def test_app_returning_a_value_is_logged(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        await send(START)
        await send(body())
        return 42

    with caplog.at_level(logging.ERROR, "pounce.error"):
        channel, _ = run_app(loop, app)
    assert "returned a value (42)" in caplog.text
    assert channel.aborts == 0


def test_disconnect_mid_body_reports_incomplete(loop: asyncio.AbstractEventLoop) -> None:
    gate = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"abc", more=True))
        await gate.wait()
        await send(body(b"def", more=True))  # raises: the client is gone

    events: list[Any] = []
    ctx = make_context(loop, app, events=events)
    cycle, channel = start(ctx)
    settle(loop)
    cycle.feed_disconnect()
    gate.set()
    settle(loop)
    (done,) = completed_events(events)
    assert (done.bytes_sent, done.complete) == (3, False)
    assert channel.body_bytes == b"abc"
    assert channel.finished == 1
    assert ctx.active_requests == 0


def test_cancelled_app_aborts_and_is_accounted(loop: asyncio.AbstractEventLoop) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(START)
        await asyncio.Event().wait()

    events: list[Any] = []
    ctx = make_context(loop, app, events=events)
    cycle, channel = start(ctx)
    settle(loop)
    assert cycle.task is not None
    cycle.task.cancel()
    settle(loop)
    assert channel.aborts == 1
    assert channel.finished == 1
    assert cycle.finished and cycle.task is None
    assert ctx.active_requests == 0
    (done,) = completed_events(events)
    assert not done.complete


def test_pathsend_goes_to_write_file(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    channel, events = run_app(loop, Script(START, {"type": "http.response.pathsend",
                                                   "path": str(path)}))
    assert channel.files == [str(path)]
    assert channel.body == []
    (done,) = completed_events(events)
    assert (done.bytes_sent, done.complete) == (10, True)


class DisconnectDuringFile(FakeChannel):
    """The client goes away while the file is being sent (as ``connection_lost`` does)."""

    async def write_file(self, path: str) -> None:
        assert self.cycle is not None
        self.cycle.bytes_sent += 3  # part of the file made it out
        self.cycle.feed_disconnect()


def test_disconnect_during_pathsend_reports_incomplete(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    events: list[Any] = []
    ctx = make_context(loop, Script(START, {"type": "http.response.pathsend",
                                            "path": str(path)}), events=events)
    start(ctx, DisconnectDuringFile())
    settle(loop)
    (done,) = completed_events(events)
    assert not done.complete
