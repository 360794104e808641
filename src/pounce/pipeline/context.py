"""Per-worker state shared by every connection that worker serves.

A worker is one event loop (in its own thread, or a process's main thread). Everything here is
touched only from that loop's thread, so it needs no locks; what other threads read (counters
for statistics) are plain ints whose reads are atomic even without a GIL. State shared by all
workers — the app, the frozen config, the parsed proxy trust — is immutable or owned by the app,
except the request queue's slots (:attr:`WorkerContext.slot_pool`), which lock themselves.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Protocol

from pounce.pipeline.events import EventBus, RequestCompleted
from pounce.pipeline.slots import SlotPool, Slots

if TYPE_CHECKING:
    from pounce.asgi.types import ASGIApp
    from pounce.config import ServerConfig
    from pounce.features.proxy_headers import ProxyTrust
    from pounce.features.rate_limit import RateLimitStore
    from pounce.logs import AccessLogger
    from pounce.pipeline.hub import EventLink


class RequestCounter(Protocol):
    """Counts one finished request (``--metrics``), as ``RequestCompleted`` would describe it."""

    def __call__(  # noqa: PLR0917 - positional on purpose: called once per request
        self,
        method: str,
        status: int,
        http_version: str,
        duration: float,
        bytes_sent: int,
        bytes_received: int,
        queue_wait: float,
    ) -> None: ...


class HeadFlusher(Protocol):
    def flush_head_alone(self) -> None: ...


class Connection(Protocol):
    """What the worker needs of any connection: timeouts and graceful shutdown."""

    #: When :meth:`on_deadline` is due (``loop.time()`` clock); checked by the worker's tick.
    deadline: float

    def on_deadline(self, now: float) -> None: ...

    def shutdown(self) -> None:
        """Close now if idle; otherwise finish the current response and then close."""

    def force_close(self) -> None: ...


class WorkerContext:
    """Everything one worker's connections share."""

    def __init__(
        self,
        *,
        app: ASGIApp,
        config: ServerConfig,
        loop: asyncio.AbstractEventLoop,
        access_log: AccessLogger,
        proxy_trust: ProxyTrust | None,
        state: dict[str, Any] | None = None,
        base_context: contextvars.Context | None = None,
        on_request_limit: Callable[[], None] | None = None,
        event_handlers: Sequence[Callable[[Any], None]] = (),
        event_hub: EventLink | None = None,
        rate_limiter: RateLimitStore | None = None,
        slot_pool: Slots | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self.loop = loop
        self.access_log = access_log
        self.proxy_trust = proxy_trust
        self.state: dict[str, Any] = state if state is not None else {}
        self.base_context = base_context if base_context is not None else contextvars.Context()
        # Request tasks start through the loop's own create_task, not eagerly (3.12's
        # eager_start), although running the app inside the protocol callback would save a
        # trip through the ready queue: under wrk with uvloop on 3.12 and 3.13, eager request
        # tasks served about a third fewer requests per second (benchmarks/run.py --apps
        # hello). An eager task factory the app installs still works: the protocol copes with a
        # request that finished before create_task() returned.
        self.start_task = loop.create_task
        self.connections: set[Connection] = set()
        self._pending_heads: list[HeadFlusher] = []
        self.debug_enabled = logging.getLogger("pounce.error").isEnabledFor(logging.DEBUG)
        self.root_path = config.root_path
        self.root_path_bytes = config.root_path.encode("utf-8")
        self.shutting_down = False
        #: During a retiring worker's idle grace, connections that fall idle stay open (their
        #: next request is answered with ``Connection: close``) instead of closing at once.
        self.linger_idle = False
        #: Set while the worker sheds load, so readiness probes (``--ready-path``) answer 503
        #: and a load balancer sends new requests elsewhere: raised by the request queue when
        #: it sheds a request, lowered once a second passed without one and the queue is not
        #: full (see :class:`~pounce.pipeline.request_queue.RequestQueue`).
        self.shedding = False
        #: This worker's requests waiting in the request queue now (``--max-queue``); written
        #: by the queue, read by the metrics.
        self.queue_depth = 0
        #: HTTP/2 streams open now on this worker's connections. The HTTP/2 engine adds one
        #: when a stream opens and takes one away when it closes (plain int arithmetic on the
        #: loop thread); ``--metrics`` samples it on the worker's tick.
        self.http2_streams = 0
        #: ``--rate-limit``'s bucket table, shared by every worker of the server (its own
        #: locks make it safe from any thread or process); None when the limit is off.
        self.rate_limiter = rate_limiter
        #: ``--max-concurrency``: the request queue's slots, None when off. *slot_pool* is
        #: the server's (thread workers share one); a worker on its own makes its own.
        if slot_pool is None and config.max_concurrency is not None:
            slot_pool = SlotPool(config.max_concurrency, config.max_queue)
        self.slot_pool = slot_pool
        #: Called once when the worker stops serving (on its loop): per-worker subscriptions
        #: to server-wide state, such as the request queue's shedding notices.
        self.cleanups: list[Callable[[], None]] = []
        self.requests_total = 0
        self.active_requests = 0
        self.on_request_limit = on_request_limit
        self.max_requests = config.limit_max_requests
        #: The lifecycle event bus; the access log subscribes when it is enabled.
        self.events = EventBus(event_handlers)
        #: ``--metrics``: called with the figures of every finished request, wherever a
        #: ``RequestCompleted`` is due, whether or not the bus is active. Metrics count every
        #: request, and building an event object per request for them alone measured as most
        #: of their cost (see docs/metrics.md); everything else they count comes off the bus.
        self.count_request: RequestCounter | None = None
        if access_log.enabled:
            self.events.subscribe(access_log.log, kinds=(RequestCompleted,))
        # The server's subscribers: the hub links this bus only while someone listens.
        self._unlink_hub = event_hub.link(self.events, loop) if event_hub is not None else None
        # Default response fields; an app's own field of the same name wins.
        self.server_field: tuple[bytes, bytes] | None = (
            (b"server", b"pounce") if config.server_header else None
        )
        self.server_line = b"server: pounce\r\n" if config.server_header else b""
        self.default_headers = config.encoded_headers
        self.date_header = config.date_header
        self.date_field: tuple[bytes, bytes] | None = None
        self._default_tail: tuple[tuple[bytes, bytes], ...] = ()
        self.date_line = b""
        self._date_second = -1
        self.refresh_date()

    def unlink_events(self) -> None:
        """Stop forwarding to the server's subscribers (the worker is gone; on its loop)."""
        unlink = self._unlink_hub
        if unlink is not None:
            self._unlink_hub = None
            unlink()

    def flush_head_soon(self, stream: HeadFlusher) -> None:
        """Have *stream* write its pending response head at the next loop iteration.

        One callback per loop iteration serves every connection of the worker, rather than
        one timer handle per response: under load many responses start in one iteration.
        """
        pending = self._pending_heads
        if not pending:
            self.loop.call_soon(self._flush_pending_heads)
        pending.append(stream)

    def _flush_pending_heads(self) -> None:
        pending = self._pending_heads
        self._pending_heads = []
        for stream in pending:
            stream.flush_head_alone()

    def refresh_date(self) -> None:
        """Recompute the Date header at most once per second (called by the worker's tick)."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            if self.date_header:
                value = formatdate(now, usegmt=True).encode()
                self.date_field = (b"date", value)
                self.date_line = b"date: " + value + b"\r\n"
            self._default_tail = tuple(
                f for f in (self.server_field, self.date_field) if f is not None
            )

    def add_default_fields(
        self, fields: list[tuple[bytes, bytes]], has_server: bool, has_date: bool
    ) -> None:
        """Complete a response head's *fields* with the server's defaults the app did not set.

        ``Server`` and ``Date`` (unless turned off) and ``--header`` fields; an app's own
        field of the same name wins. Every protocol's responses go through here.
        """
        if not (has_server or has_date or self.default_headers):
            fields.extend(self._default_tail)  # the usual case: both defaults, nothing else
            return
        if not has_server and self.server_field is not None:
            fields.append(self.server_field)
        if not has_date and self.date_field is not None:
            fields.append(self.date_field)
        if self.default_headers:
            names = {name for name, _ in fields}
            fields.extend(pair for pair in self.default_headers if pair[0] not in names)

    def request_started(self) -> None:
        self.requests_total += 1
        self.active_requests += 1
        limit = self.max_requests
        if limit is not None and self.requests_total == limit and self.on_request_limit:
            self.on_request_limit()

    def request_finished(self) -> None:
        self.active_requests -= 1
