"""The dispatcher without sockets: scope building, admission, accounting, context, filters."""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path
from typing import Any

import pytest
from tests.pipeline.fakes import ERROR_BODY_SIZE, INFO, FakeChannel, make_context, settle, start

from pounce.asgi.types import Headers, Scope
from pounce.features.proxy_headers import ProxyTrust
from pounce.pipeline.admission import ConcurrencyLimit, Rejection
from pounce.pipeline.connection import ConnectionInfo
from pounce.pipeline.dispatcher import Dispatcher
from pounce.pipeline.events import (
    REJECTED_CONCURRENCY,
    RequestCompleted,
    RequestRejected,
    RequestStarted,
)
from pounce.pipeline.filters import FilteredChannel


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


class Recorder:
    """An app that records its scopes and, when *gate* is set, waits on it before answering."""

    def __init__(self, body: bytes = b"hello") -> None:
        self.scopes: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None
        self.body = body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if self.gate is not None:
            await self.gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": self.body})


# -- the scope ----------------------------------------------------------------------------------


def test_scope_carries_the_request_and_the_connection(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    ctx = make_context(loop, app)
    ctx.state["db"] = "pool"
    headers = [(b"host", b"example.com"), (b"x-a", b"1")]
    start(ctx, method="POST", raw_path=b"/caf%C3%A9/a%20b", query_string=b"q=1&r=%20",
          headers=headers, has_body=True)
    settle(loop)
    (scope,) = app.scopes
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "POST"
    assert scope["path"] == "/café/a b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%20b"  # never decoded
    assert scope["query_string"] == b"q=1&r=%20"  # never decoded either
    assert scope["headers"] == headers
    assert scope["client"] == ("10.0.0.7", 51000)
    assert scope["server"] == ("10.0.0.1", 8000)
    assert scope["scheme"] == "http"
    assert scope["root_path"] == ""
    assert scope["state"] == {"db": "pool"}
    assert scope["state"] is not ctx.state  # a copy per request


def test_invalid_percent_encoding_becomes_replacement_characters(
    loop: asyncio.AbstractEventLoop,
) -> None:
    app = Recorder()
    ctx = make_context(loop, app)
    start(ctx, raw_path=b"/a%FFb%zz")
    settle(loop)
    assert app.scopes[0]["path"] == "/a\ufffdb%zz"


def test_root_path_prefixes_path_and_raw_path(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    ctx = make_context(loop, app, root_path="/api")
    start(ctx, raw_path=b"/items%2F1")
    settle(loop)
    scope = app.scopes[0]
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/items/1"
    assert scope["raw_path"] == b"/api/items%2F1"


def test_tls_extension_is_copied_per_request(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    ctx = make_context(loop, app)
    tls: dict[str, Any] = {"server_cert": None, "client_cert_chain": [], "tls_version": 0x0304}
    info = ConnectionInfo(client=("10.0.0.7", 1), server=("10.0.0.1", 443), scheme="https",
                          tls=tls)
    start(ctx, connection=info)
    start(ctx, connection=info)
    settle(loop)
    first, second = (scope["extensions"]["tls"] for scope in app.scopes)
    assert first == second == tls
    first["tls_version"] = 1  # an app that scribbles on its scope
    assert second["tls_version"] == 0x0304
    assert tls["tls_version"] == 0x0304
    assert app.scopes[0]["scheme"] == "https"


def test_cleartext_requests_have_no_tls_extension(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    ctx = make_context(loop, app)
    start(ctx)
    settle(loop)
    assert "tls" not in app.scopes[0]["extensions"]


FORWARDED = [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https")]


def test_proxy_headers_apply_with_a_trusted_peer(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    ctx = make_context(loop, app)
    info = ConnectionInfo(client=("10.0.0.7", 1), server=("10.0.0.1", 80),
                          proxy_trust=ProxyTrust(["10.0.0.7"]))
    start(ctx, connection=info, headers=FORWARDED)
    settle(loop)
    scope = app.scopes[0]
    assert scope["client"] == ("203.0.113.9", 0)
    assert scope["scheme"] == "https"


def test_proxy_headers_ignored_without_proxy_trust(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    ctx = make_context(loop, app)
    start(ctx, headers=FORWARDED)  # INFO has no proxy_trust: the peer is not a trusted proxy
    settle(loop)
    scope = app.scopes[0]
    assert scope["client"] == INFO.client
    assert scope["scheme"] == "http"


@pytest.mark.parametrize(
    ("extensions", "expected"),
    [
        (True, {"http.response.pathsend", "http.response.trailers",
                "http.response.early_hint"}),
        (False, {"http.response.pathsend"}),
    ],
)
def test_extensions_are_the_ones_the_channel_offers(
    loop: asyncio.AbstractEventLoop, extensions: Any, expected: set[str]
) -> None:
    app = Recorder()
    ctx = make_context(loop, app)
    start(ctx, informational=extensions)
    start(ctx, informational=extensions)
    settle(loop)
    first, second = (scope["extensions"] for scope in app.scopes)
    assert set(first) == set(second) == expected
    assert first is not second  # built per request: an app may add to its own


# -- admission ----------------------------------------------------------------------------------


def test_concurrency_limit_answers_503_without_a_task(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    app.gate = asyncio.Event()
    events: list[Any] = []
    ctx = make_context(loop, app, events=events, limit_concurrency=1)
    assert [type(hook) for hook in ctx.dispatcher.admission] == [ConcurrencyLimit]
    running, _ = start(ctx)
    settle(loop)
    tasks_before = len(asyncio.all_tasks(loop))
    refused, channel = start(ctx, raw_path=b"/second")
    assert refused.task is None
    assert refused.finished
    assert len(asyncio.all_tasks(loop)) == tasks_before
    assert channel.errors == [(503, ())]
    # app_finished last, as for any request: the channel lets go of the cycle there.
    assert channel.calls == [
        "bind", "send_error_response", "response_complete", "app_finished"
    ]
    assert ctx.active_requests == 1
    assert ctx.requests_total == 1  # a refused request is not counted as started
    rejected = [e for e in events if isinstance(e, RequestRejected)]
    assert rejected == [RequestRejected(client=INFO.client, status=503,
                                        reason=REJECTED_CONCURRENCY, method="GET",
                                        path="/second")]
    (completed,) = [e for e in events if isinstance(e, RequestCompleted)]
    assert completed.status == 503
    assert completed.bytes_sent == ERROR_BODY_SIZE
    assert completed.complete
    assert completed.path == "/second"
    settle(loop)
    assert len(app.scopes) == 1  # the app never saw the refused request
    app.gate.set()
    settle(loop)
    assert running.finished
    assert ctx.active_requests == 0
    # With the first one done, the next request is admitted again.
    _, channel = start(ctx)
    settle(loop)
    assert channel.errors == []
    assert channel.body_bytes == b"hello"


class RateLimit:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ConnectionInfo]] = []

    def admit(self, scope: Scope, connection: ConnectionInfo) -> Rejection | None:
        self.seen.append((scope["path"], connection))
        if scope["path"] == "/limited":
            return Rejection(429, "rate limit", ((b"retry-after", b"5"),))
        return None


def test_custom_admission_hook_answers_with_its_headers(
    loop: asyncio.AbstractEventLoop,
) -> None:
    events: list[Any] = []
    ctx = make_context(loop, hello, events=events)
    hook = RateLimit()
    ctx.dispatcher = Dispatcher(ctx, admission=(hook,))
    refused, channel = start(ctx, raw_path=b"/limited")
    assert channel.errors == [(429, ((b"retry-after", b"5"),))]
    assert refused.task is None
    assert [(e.status, e.reason) for e in events if isinstance(e, RequestRejected)] == [
        (429, "rate limit")
    ]
    _, allowed = start(ctx, raw_path=b"/free")
    settle(loop)
    assert allowed.errors == []
    assert allowed.head is not None and allowed.head[0] == 200
    assert hook.seen == [("/limited", INFO), ("/free", INFO)]


def test_first_refusing_hook_wins(loop: asyncio.AbstractEventLoop) -> None:
    asked: list[str] = []

    class Hook:
        def __init__(self, name: str, rejection: Rejection | None) -> None:
            self.name = name
            self.rejection = rejection

        def admit(self, scope: Scope, connection: ConnectionInfo) -> Rejection | None:
            asked.append(self.name)
            return self.rejection

    ctx = make_context(loop, hello)
    ctx.dispatcher = Dispatcher(ctx, admission=(
        Hook("pass", None), Hook("refuse", Rejection(403, "no")), Hook("never", None)
    ))
    _, channel = start(ctx)
    assert asked == ["pass", "refuse"]
    assert channel.errors == [(403, ())]


# -- accounting and events ----------------------------------------------------------------------


def test_requests_are_counted_while_they_run(loop: asyncio.AbstractEventLoop) -> None:
    app = Recorder()
    app.gate = asyncio.Event()
    limit_reached: list[int] = []
    ctx = make_context(loop, app, limit_max_requests=2,
                       on_request_limit=lambda: limit_reached.append(ctx.requests_total))
    start(ctx)
    start(ctx)
    settle(loop)
    assert (ctx.active_requests, ctx.requests_total) == (2, 2)
    assert limit_reached == [2]
    app.gate.set()
    settle(loop)
    assert (ctx.active_requests, ctx.requests_total) == (0, 2)


def test_request_started_event(loop: asyncio.AbstractEventLoop) -> None:
    events: list[Any] = []
    ctx = make_context(loop, hello, events=events)
    start(ctx, method="PUT", raw_path=b"/x%20y", http_version="1.0")
    assert events == [RequestStarted(client=INFO.client, method="PUT", path="/x y",
                                     http_version="1.0", scheme="http")]
    settle(loop)
    assert [type(e) for e in events] == [RequestStarted, RequestCompleted]


def test_no_subscriber_builds_no_event(loop: asyncio.AbstractEventLoop) -> None:
    ctx = make_context(loop, hello)
    assert not ctx.events.active
    cycle, channel = start(ctx)
    settle(loop)
    assert cycle.start_time == 0.0  # no clock read either
    assert channel.completed == 1


# -- the app's context --------------------------------------------------------------------------

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


def test_app_runs_in_a_fresh_copy_of_the_base_context(
    loop: asyncio.AbstractEventLoop,
) -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(request_id.get())
        request_id.set(scope["path"])
        await hello(scope, receive, send)

    base = contextvars.Context()
    base.run(request_id.set, "from lifespan")
    ctx = make_context(loop, app, base_context=base)
    start(ctx, raw_path=b"/one")
    settle(loop)
    start(ctx, raw_path=b"/two")
    settle(loop)
    assert seen == ["from lifespan", "from lifespan"]
    assert base.run(request_id.get) == "from lifespan"
    assert request_id.get() == "unset"  # the test's own context is untouched too


# -- response filters ---------------------------------------------------------------------------


class Upper:
    """Upper-cases the body, adds a field, drops Content-Length, renames trailers."""

    def __init__(self) -> None:
        self.trailer_calls = 0

    def start(
        self, status: int, fields: list[tuple[bytes, bytes]], content_length: int | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        fields = [(n, v) for n, v in fields if n != b"content-length"]
        return [*fields, (b"x-filtered", b"upper")], None

    def body(self, data: bytes, more_body: bool) -> bytes:
        return data.upper()

    def trailers(self, headers: Headers) -> Headers:
        self.trailer_calls += 1
        return [(b"x-" + name, value.upper()) for name, value in headers]


class Buffer:
    """Holds the whole body back and sends it with the last piece (as a compressor may)."""

    def __init__(self) -> None:
        self.held = b""

    def start(
        self, status: int, fields: list[tuple[bytes, bytes]], content_length: int | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        return fields, content_length

    def body(self, data: bytes, more_body: bool) -> bytes:
        self.held += data
        if more_body:
            return b""
        out, self.held = self.held, b""
        return b"[" + out + b"]"

    def trailers(self, headers: Headers) -> Headers:
        return headers


def filtering(loop: asyncio.AbstractEventLoop, app: Any, *factories: Any,
              events: list[Any] | None = None) -> Any:
    ctx = make_context(loop, app, events=events, server_header=False, date_header=False)
    ctx.dispatcher = Dispatcher(ctx, filter_factories=factories)
    return ctx


def test_filter_factory_wraps_the_channel(loop: asyncio.AbstractEventLoop) -> None:
    scopes: list[dict[str, Any]] = []

    def factory(scope: dict[str, Any]) -> Upper | None:
        scopes.append(scope)
        return Upper() if scope["path"] == "/upper" else None

    ctx = filtering(loop, hello, factory)
    wrapped, raw = start(ctx, raw_path=b"/upper")
    plain, raw_plain = start(ctx, raw_path=b"/plain")
    # The filters wait for the response head: only then is the channel wrapped.
    assert wrapped.filters is not None and wrapped.channel is raw
    assert plain.filters is None and plain.channel is raw_plain  # no filter wanted it
    assert [s["path"] for s in scopes] == ["/upper", "/plain"]
    assert raw.cycle is wrapped
    settle(loop)
    assert isinstance(wrapped.channel, FilteredChannel)
    assert wrapped.channel.flow is raw.flow
    assert plain.channel is raw_plain
    assert raw.body_bytes == b"HELLO"
    assert raw_plain.body_bytes == b"hello"


def test_a_filter_that_does_not_want_the_response_costs_no_wrapper(
    loop: asyncio.AbstractEventLoop,
) -> None:
    class Picky(Upper):
        def wants(self, status: int, fields: Any, content_length: int | None) -> bool:
            return content_length is not None and content_length > 100

    ctx = filtering(loop, hello, lambda scope: Picky())
    cycle, raw = start(ctx)
    settle(loop)
    assert cycle.channel is raw  # not wanted: not wrapped
    assert raw.body_bytes == b"hello"


def test_filter_transforms_head_body_and_trailers(loop: asyncio.AbstractEventLoop) -> None:
    upper = Upper()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-length", b"10"), (b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        await send({"type": "http.response.body", "body": b"world"})
        await send({"type": "http.response.trailers", "headers": [(b"a", b"one")],
                    "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"b", b"two")]})

    events: list[Any] = []
    ctx = filtering(loop, app, lambda scope: upper, events=events)
    _, channel = start(ctx)
    settle(loop)
    assert channel.head == (200, [(b"x-app", b"1"), (b"x-filtered", b"upper")], None, False,
                            True)
    assert channel.body == [(b"HELLO", True), (b"WORLD", False)]
    # Trailers sent in two messages reach the filter once, together.
    assert upper.trailer_calls == 1
    assert channel.trailers == [([(b"x-a", b"ONE"), (b"x-b", b"TWO")], False)]
    assert channel.completed == 1
    (completed,) = [e for e in events if isinstance(e, RequestCompleted)]
    assert completed.bytes_sent == 10  # what went to the wire, counted by the channel


def test_filters_run_in_order_and_may_hold_body_back(loop: asyncio.AbstractEventLoop) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"d"})

    ctx = filtering(loop, app, lambda scope: Buffer(), lambda scope: Upper())
    _, channel = start(ctx)
    settle(loop)
    # Empty pieces in the middle are not passed on; the final one always is.
    assert channel.body == [(b"[ABCD]", False)]


def test_pathsend_through_a_filter_goes_through_write_body(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    path = tmp_path / "file.txt"
    path.write_bytes(b"file body")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(path)})

    ctx = filtering(loop, app, lambda scope: Upper())
    _, channel = start(ctx)
    settle(loop)
    assert channel.files == []  # never zero-copy: the bytes must pass through the filter
    assert channel.body == [(b"FILE BODY", True), (b"", False)]
    assert channel.completed == 1


def test_pathsend_through_a_filter_waits_for_drain(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pounce.pipeline.filters.FILE_CHUNK", 4)
    path = tmp_path / "file.txt"
    path.write_bytes(b"aaaabbbbcc")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(path)})

    ctx = filtering(loop, app, lambda scope: Upper())
    channel = FakeChannel()
    channel.flow.write_paused = True
    start(ctx, channel)
    settle(loop)
    assert channel.body == [(b"AAAA", True)]  # stopped after one chunk: the client is slow
    assert channel.flow.waiting == 1
    channel.flow.resume()
    settle(loop)
    assert channel.body_bytes == b"AAAABBBBCC"
    assert channel.body[-1] == (b"", False)
    assert channel.completed == 1
