"""The worker's metrics recorder driven through the real dispatcher, without sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.features.test_metrics_store import Region
from tests.pipeline.fakes import make_context, settle, start

from pounce.features.metrics_store import (
    DURATION_BOUNDS,
    LIVE,
    QUEUE_WAIT_BOUNDS,
    REJECTION_REASONS,
    MetricsStore,
    RegionLayout,
)
from pounce.pipeline.events import (
    REJECTED_RATE_LIMITED,
    RequestCompleted,
    RequestRejected,
    WebSocketClosed,
    WebSocketOpened,
)
from pounce.pipeline.metrics import MetricsRecorder

L = RegionLayout


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body or b"hello"})


def test_requests_are_counted_without_building_events(loop: asyncio.AbstractEventLoop) -> None:
    ctx = make_context(loop, echo)
    store = MetricsStore.create(1)
    recorder = MetricsRecorder(ctx, store, 0, 4242)
    region = Region(store, 0)
    assert (region[L.STATE], region[L.PID]) == (LIVE, 4242)
    assert not ctx.events.wants(RequestCompleted)  # counted through ctx.count_request
    cycle, _ = start(ctx, method="POST", has_body=True)
    cycle.feed_body(b"abc")
    cycle.feed_body(b"de")
    cycle.feed_end()
    start(ctx, raw_path=b"/missing")
    start(ctx, method="BREW", http_version="2")
    settle(loop)
    assert region[L.request_index(2, 1, 1)] == 1  # POST 2xx 1.1
    assert region[L.request_index(0, 3, 1)] == 1  # GET 4xx 1.1
    assert region[L.request_index(9, 1, 2)] == 1  # other 2xx 2
    assert region[L.BYTES_RECEIVED] == 5
    assert region[L.BYTES_SENT] == 5 + 5 + 5
    buckets = range(L.DURATION_BUCKETS, L.DURATION_BUCKETS + len(DURATION_BOUNDS) + 1)
    assert sum(region[i] for i in buckets) == 3
    assert 0 < region[L.DURATION_SUM] < 1
    recorder.close()
    assert ctx.count_request is None
    store.close()


def test_bus_events_count_rejections_and_websockets(loop: asyncio.AbstractEventLoop) -> None:
    ctx = make_context(loop, echo)
    store = MetricsStore.create(1)
    recorder = MetricsRecorder(ctx, store, 0, 1)
    region = Region(store, 0)
    bus = ctx.events
    bus.emit(RequestRejected(client=None, status=429, reason=REJECTED_RATE_LIMITED))
    bus.emit(RequestRejected(client=None, status=400, reason="something new"))
    bus.emit(WebSocketOpened(client=None, path="/ws", subprotocol=None, http_version="1.1"))
    bus.emit(WebSocketOpened(client=None, path="/ws", subprotocol=None, http_version="1.1"))
    bus.emit(WebSocketClosed(client=None, path="/ws", code=1000, initiator="client", duration=1))
    assert region[L.REJECTED + REJECTION_REASONS.index(REJECTED_RATE_LIMITED)] == 1
    assert region[L.REJECTED + len(REJECTION_REASONS)] == 1  # other
    assert (region[L.WEBSOCKETS_OPEN], region[L.WEBSOCKETS_TOTAL]) == (1, 2)
    recorder.close()
    store.close()


def test_gauges_are_sampled_from_the_context(loop: asyncio.AbstractEventLoop) -> None:
    ctx = make_context(loop, echo)
    store = MetricsStore.create(1)
    recorder = MetricsRecorder(ctx, store, 0, 1)
    region = Region(store, 0)
    ctx.active_requests = 3
    ctx.queue_depth = 7
    ctx.http2_streams = 5  # what the HTTP/2 engine will keep up to date
    recorder.sample()
    assert region[L.IN_FLIGHT] == 3
    assert region[L.QUEUE_DEPTH] == 7
    assert region[L.HTTP2_STREAMS_OPEN] == 5
    assert region[L.CONNECTIONS_OPEN] == 0
    recorder.close()
    store.close()


def test_the_completed_event_reports_body_bytes(loop: asyncio.AbstractEventLoop) -> None:
    events: list[Any] = []
    ctx = make_context(loop, echo, events=events)
    cycle, _ = start(ctx, method="POST", has_body=True)
    cycle.feed_body(b"x" * 10)
    cycle.feed_body(b"y" * 7)
    cycle.feed_end()
    settle(loop)
    (completed,) = [e for e in events if isinstance(e, RequestCompleted)]
    assert completed.bytes_received == 17
    assert ctx.count_request is None  # no metrics: nothing but the bus


def test_queue_wait_reaches_the_histogram_and_the_event(loop: asyncio.AbstractEventLoop) -> None:
    gates: dict[str, asyncio.Event] = {}

    async def gated(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await gates.setdefault(scope["path"], asyncio.Event()).wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    events: list[Any] = []
    ctx = make_context(loop, gated, events=events, max_concurrency=1, max_queue=4)
    store = MetricsStore.create(1)
    recorder = MetricsRecorder(ctx, store, 0, 1)
    region = Region(store, 0)
    start(ctx, raw_path=b"/first")
    settle(loop)
    start(ctx, raw_path=b"/second")  # waits in the queue for the first one's slot
    settle(loop)
    recorder.sample()
    assert region[L.QUEUE_DEPTH] == 1
    gates.setdefault("/first", asyncio.Event()).set()
    gates.setdefault("/second", asyncio.Event()).set()
    settle(loop)
    waits = {e.path: e.queue_wait for e in events if isinstance(e, RequestCompleted)}
    assert waits["/first"] == 0.0 and waits["/second"] > 0.0
    buckets = range(L.QUEUE_WAIT_BUCKETS, L.QUEUE_WAIT_BUCKETS + len(QUEUE_WAIT_BOUNDS) + 1)
    assert sum(region[i] for i in buckets) == 1  # only the request that waited
    assert region[L.QUEUE_WAIT_SUM] == waits["/second"]
    recorder.sample()
    assert region[L.QUEUE_DEPTH] == 0
