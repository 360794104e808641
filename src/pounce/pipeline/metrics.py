"""The worker's side of ``--metrics``: request counts, bus subscriptions, gauges, the endpoint.

:class:`MetricsRecorder` writes this worker's region of the shared store
(:mod:`pounce.features.metrics_store`), on the worker's loop thread, the region's only writer,
so it takes no lock. Finished requests reach it through ``WorkerContext.count_request``, which
the pipeline calls wherever a ``RequestCompleted`` is due (an HTTP/1.1 or HTTP/2 request, a
WebSocket handshake) with the figures that event would carry: building the event object per
request for the metrics alone measured as half their cost (docs/metrics.md). The rarer kinds
(refusals, WebSocket sessions) come as :class:`~pounce.pipeline.events.EventBus` events, like
the access log's. Nothing in it knows a protocol.

Gauges that change with every request (requests in flight, open connections, HTTP/2 streams,
the queue depth) are not events: the worker's tick copies them from the
:class:`~pounce.pipeline.context.WorkerContext` into the region (:meth:`MetricsRecorder.sample`),
so a scrape sees them at most one tick old, and the request path pays nothing for them.

:class:`MetricsEndpoint` answers ``--metrics-path`` on the main port before the app, as an
admission hook placed right after the health probes (so no rate limit or queue refuses it).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from pounce.features.metrics import Exposition, wants_openmetrics
from pounce.features.metrics_store import (
    DURATION_BOUNDS,
    HTTP_VERSIONS,
    LIVE,
    METHODS,
    QUEUE_WAIT_BOUNDS,
    REJECTION_REASONS,
    STATUS_CLASSES,
    RegionLayout,
)
from pounce.pipeline.admission import Rejection
from pounce.pipeline.events import (
    REJECTED_METHOD,
    RequestRejected,
    WebSocketClosed,
    WebSocketOpened,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pounce.asgi.types import Scope
    from pounce.features.metrics_store import MetricsStore
    from pounce.pipeline.connection import ConnectionInfo
    from pounce.pipeline.context import WorkerContext

__all__ = ["METRICS_SCRAPE", "MetricsEndpoint", "MetricsRecorder"]

#: The ``reason`` of a scrape's 200 answer (not a refusal: no ``RequestRejected`` for it).
METRICS_SCRAPE = "metrics scrape"

_L = RegionLayout
#: method -> http_version -> offset of the request counters of that pair (status class 1xx);
#: subscripts, not .get(): a KeyError takes the rare path for an unlisted method or version.
_REQUEST_BASE = {
    method: {version: _L.request_index(m, 0, v) for v, version in enumerate(HTTP_VERSIONS)}
    for m, method in enumerate(METHODS)
}
_OTHER_METHOD = len(METHODS)
_OTHER_VERSION = len(HTTP_VERSIONS)
#: status // 100 (statuses are 0..999) -> offset of its status class (0 and >= 6: other).
_STATUS_OFFSET = tuple(
    (c - 1 if 1 <= c <= 5 else len(STATUS_CLASSES) - 1) * _L.STATUS_STRIDE for c in range(10)
)
_REJECTED = {reason: _L.REJECTED + i for i, reason in enumerate(REJECTION_REASONS)}
_REJECTED_OTHER = _L.REJECTED + len(REJECTION_REASONS)


def _other_request_base(method: str, http_version: str) -> int:
    """The counters of a method or HTTP version outside the listed ones (label ``other``)."""
    m = METHODS.index(method) if method in METHODS else _OTHER_METHOD
    v = HTTP_VERSIONS.index(http_version) if http_version in HTTP_VERSIONS else _OTHER_VERSION
    return _L.request_index(m, 0, v)


# Fixed fields, as module constants: read once per use without an attribute lookup.
_DURATION_SUM = _L.DURATION_SUM
_DURATION_BUCKETS = _L.DURATION_BUCKETS
_QUEUE_WAIT_SUM = _L.QUEUE_WAIT_SUM
_QUEUE_WAIT_BUCKETS = _L.QUEUE_WAIT_BUCKETS
_BYTES_SENT = _L.BYTES_SENT
_BYTES_RECEIVED = _L.BYTES_RECEIVED


class MetricsRecorder:
    """Counts one worker's traffic into its region of the shared store (its loop thread).

    It writes the store's one shared view at its region's offset (see
    :mod:`pounce.features.metrics_store` for why no view of its own).
    """

    __slots__ = ("_base", "_ctx", "_unsubscribe", "_values")

    def __init__(self, ctx: WorkerContext, store: MetricsStore, index: int, pid: int) -> None:
        self._ctx = ctx
        values = store.values
        base = store.region_offset(index)
        self._values = values
        self._base = base
        values[base + _L.PID] = float(pid)
        values[base + _L.STATE] = LIVE
        # Finished requests are counted through the context's hook, not as RequestCompleted
        # events: see WorkerContext.count_request.
        ctx.count_request = self._count
        bus = ctx.events
        self._unsubscribe = (
            bus.subscribe(self._rejected, kinds=(RequestRejected,)),
            bus.subscribe(self._websocket_opened, kinds=(WebSocketOpened,)),
            bus.subscribe(self._websocket_closed, kinds=(WebSocketClosed,)),
        )

    def close(self) -> None:
        """Stop counting (the worker is gone); the supervisor zeroes the gauges."""
        self._ctx.count_request = None
        for unsubscribe in self._unsubscribe:
            unsubscribe()

    # -- counting (the worker's loop thread) -------------------------------------------------------

    def _count(  # noqa: PLR0917 - the WorkerContext.count_request signature
        self,
        method: str,
        status: int,
        http_version: str,
        duration: float,
        bytes_sent: int,
        bytes_received: int,
        queue_wait: float,
    ) -> None:
        # Once per request: plain lookups and in-place adds on one memoryview, nothing else.
        values = self._values
        base = self._base
        try:
            index = _REQUEST_BASE[method][http_version]
        except KeyError:
            index = _other_request_base(method, http_version)
        values[base + index + _STATUS_OFFSET[status // 100]] += 1.0
        values[base + _DURATION_BUCKETS + bisect_left(DURATION_BOUNDS, duration)] += 1.0
        values[base + _DURATION_SUM] += duration
        if bytes_sent:
            values[base + _BYTES_SENT] += bytes_sent
        if bytes_received:
            values[base + _BYTES_RECEIVED] += bytes_received
        if queue_wait > 0.0:
            bucket = _QUEUE_WAIT_BUCKETS + bisect_left(QUEUE_WAIT_BOUNDS, queue_wait)
            values[base + bucket] += 1.0
            values[base + _QUEUE_WAIT_SUM] += queue_wait

    def _rejected(self, event: RequestRejected) -> None:
        self._values[self._base + _REJECTED.get(event.reason, _REJECTED_OTHER)] += 1.0

    def _websocket_opened(self, event: WebSocketOpened) -> None:
        values = self._values
        base = self._base
        values[base + _L.WEBSOCKETS_OPEN] += 1.0
        values[base + _L.WEBSOCKETS_TOTAL] += 1.0

    def _websocket_closed(self, event: WebSocketClosed) -> None:
        self._values[self._base + _L.WEBSOCKETS_OPEN] -= 1.0

    # -- gauges (the worker's tick, and before this worker answers a scrape) -----------------------

    def sample(self) -> None:
        ctx = self._ctx
        values = self._values
        base = self._base
        values[base + _L.IN_FLIGHT] = ctx.active_requests
        values[base + _L.CONNECTIONS_OPEN] = len(ctx.connections)
        values[base + _L.HTTP2_STREAMS_OPEN] = ctx.http2_streams
        values[base + _L.QUEUE_DEPTH] = ctx.queue_depth


class MetricsEndpoint:
    """``--metrics-path`` on the main port: the exposition, answered before the app.

    GET and HEAD only (405 with ``Allow`` otherwise). The path is compared like the health
    probes' (as sent, without ``--root-path``); a WebSocket handshake to it goes to the app.
    The answer is built per scrape (it is the current figures) and written by the channel
    like any answer of the server's own, so every protocol serves it the same way.

    *sample* refreshes this worker's own gauges first (None: the worker has no region).
    """

    __slots__ = ("_exposition", "_path", "_sample", "_wrong_method")

    def __init__(
        self,
        ctx: WorkerContext,
        exposition: Exposition,
        path: str,
        sample: Callable[[], None] | None = None,
    ) -> None:
        self._exposition = exposition
        self._sample = sample
        self._path = ctx.root_path + path
        self._wrong_method = Rejection(405, REJECTED_METHOD, ((b"allow", b"GET, HEAD"),))

    def admit(self, scope: Scope, connection: ConnectionInfo) -> Rejection | None:
        if scope["path"] != self._path or scope["type"] != "http":
            return None
        if scope["method"] not in ("GET", "HEAD"):
            return self._wrong_method
        accept = None
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value if accept is None else accept + b"," + value
        if self._sample is not None:
            self._sample()  # this worker's own gauges as of now
        content_type, body = self._exposition.render(wants_openmetrics(accept))
        return Rejection(200, METRICS_SCRAPE, ((b"content-type", content_type),), body)
