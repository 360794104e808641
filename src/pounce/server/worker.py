"""One worker: an event loop serving connections with the shared app and config.

A worker either listens on the shared sockets itself (one worker, or ``SO_REUSEPORT``-style
setups) or adopts connections handed to it by an accept distributor via :meth:`Worker.adopt`,
which is safe to call from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pounce.features.compression import compression_factory
from pounce.features.metrics import Exposition
from pounce.features.server_timing import server_timing_factory
from pounce.features.static import static_files
from pounce.pipeline.admission import admission_hooks
from pounce.pipeline.context import WorkerContext
from pounce.pipeline.dispatcher import Dispatcher
from pounce.pipeline.metrics import MetricsEndpoint, MetricsRecorder
from pounce.pipeline.request_id import request_id_filter
from pounce.protocols.http1.protocol import http1_engine_factory
from pounce.protocols.http2 import HTTP2Options, http1_enabled, http2_enabled
from pounce.protocols.http2.handoff import H2CHandoff
from pounce.protocols.websocket import websocket_support
from pounce.server.accept import ListenerGuard, TLSAcceptor
from pounce.transport.stream import Engine, StreamTransport
from pounce.transport.tls import log_handshake_failure, peer_of

if TYPE_CHECKING:
    import contextvars
    import ssl

    from pounce.asgi.types import ASGIApp
    from pounce.config import ServerConfig
    from pounce.features.metrics_store import MetricsStore
    from pounce.features.proxy_headers import ProxyTrust
    from pounce.features.rate_limit import RateLimitStore
    from pounce.logs import AccessLogger
    from pounce.pipeline.filters import FilterFactory
    from pounce.pipeline.hub import EventLink
    from pounce.pipeline.slots import Slots

logger = logging.getLogger("pounce.error")

INFINITY = float("inf")
#: Loop rounds a drain yields before its first look at the connections: enough for one
#: accepted by the loop's own accept path to reach ``connection_made``.
ATTACH_ROUNDS = 4


def tick_interval(config: ServerConfig) -> float:
    """How often deadlines are checked: fine enough for the shortest timeout, at most 0.5 s."""
    shortest = min(
        config.timeout_keep_alive,
        config.timeout_request_header,
        config.timeout_request_body,
        config.timeout_write,
        # WebSocket keepalive pings and their timeout are deadlines of the same sweep.
        config.ws_ping_interval or INFINITY,
        config.ws_ping_timeout or INFINITY,
    )
    return max(0.01, min(0.5, shortest / 4))


def filter_factories(ctx: WorkerContext) -> tuple[FilterFactory, ...]:
    """The response filters the config turns on, in the order they see a response."""
    config = ctx.config
    factories: list[FilterFactory] = []
    if config.request_id:
        factories.append(request_id_filter(config.request_id_header))
    if config.server_timing:
        factories.append(server_timing_factory(config))
    compress = compression_factory(config)
    if compress is not None:
        factories.append(compress)
    return tuple(factories)


def protocol_factory(
    ctx: WorkerContext,
    metrics: MetricsStore | None = None,
    recorder: MetricsRecorder | None = None,
) -> Callable[[], StreamTransport]:
    """What the event loop calls for each new connection of this worker.

    *metrics*: the shared store when ``--metrics`` is on (*recorder*: this worker's, unless
    every region was taken); unless the metrics have a listener of their own
    (``--metrics-bind``), the main port answers ``--metrics-path`` from it.
    """
    endpoint = None
    config = ctx.config
    if metrics is not None and config.metrics_bind is None:
        sample = recorder.sample if recorder is not None else None
        endpoint = MetricsEndpoint(ctx, Exposition(metrics), config.metrics_path, sample)
    dispatcher = Dispatcher(
        ctx,
        admission=admission_hooks(ctx, metrics=endpoint),
        filter_factories=filter_factories(ctx),
    )
    websocket = websocket_support(config)
    http1 = (
        http1_engine_factory(dispatcher, H2CHandoff(dispatcher, config, websocket))
        if http1_enabled(config)
        else None
    )
    engine: Callable[[StreamTransport], Engine]
    if http2_enabled(config):
        from pounce.protocols.http2.engine import http2_engine_factory

        http2 = http2_engine_factory(dispatcher, HTTP2Options.from_config(config), websocket)
        if http1 is None:
            engine = http2
        else:
            # TLS: ALPN decided; cleartext starts as HTTP/1.1 (h2c is recognised from there).
            def engine(transport: StreamTransport) -> Engine:
                if transport.info.alpn == "h2":
                    return http2(transport)
                return http1(transport)
    else:
        assert http1 is not None
        engine = http1
    return lambda: StreamTransport(ctx, engine)


class Worker:
    """Serves connections on one event loop until asked to stop."""

    def __init__(
        self,
        *,
        app: ASGIApp,
        config: ServerConfig,
        access_log: AccessLogger,
        proxy_trust: ProxyTrust | None,
        state: dict[str, Any] | None = None,
        base_context: contextvars.Context | None = None,
        name: str = "worker",
        max_requests: int | bool | None = True,
        on_request_limit: Callable[[], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        event_hub: EventLink | None = None,
        rate_limiter: RateLimitStore | None = None,
        metrics: tuple[MetricsStore, int | None] | None = None,
        slot_pool: Slots | None = None,
    ) -> None:
        self.app = app
        #: ``--rate-limit``'s table, shared with the server's other workers.
        self.rate_limiter = rate_limiter
        #: ``--metrics``: the shared store and the region this worker writes (it alone; None
        #: when every region was taken: the worker then serves scrapes but is not counted).
        self.metrics = metrics
        self._recorder: MetricsRecorder | None = None
        #: The server's request-queue slots (``--max-concurrency``), shared by thread workers.
        self.slot_pool = slot_pool
        #: The server's event subscribers (None: only this worker's own bus, e.g. a process).
        self.event_hub = event_hub
        self.config = config
        #: This worker's own TLS context (built after the worker started), None for plain TCP.
        self.ssl_context = ssl_context
        self.access_log = access_log
        self.proxy_trust = proxy_trust
        self.state = state
        self.base_context = base_context
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ctx: WorkerContext | None = None
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._force = False
        self._idle_grace = 0.0
        self._servers: list[asyncio.Server | TLSAcceptor] = []
        self._protocol_factory: Callable[[], StreamTransport] | None = None
        #: ``--limit-max-requests`` for this worker: True = the config's value; a supervisor
        #: passes a jittered number, or None when it watches ``requests_total`` itself.
        self.max_requests: int | None = (
            config.limit_max_requests
            if max_requests is True
            else None
            if max_requests is False
            else max_requests
        )
        #: Called (on the worker's loop) when ``max_requests`` is reached; by default the worker
        #: stops itself. A supervisor passes a hook that starts a replacement first.
        self._on_limit = on_request_limit
        #: ``time.monotonic()`` of the last tick of this worker's loop. A supervisor reading a
        #: stale value knows the loop is stuck (a hung app blocking the thread).
        self.heartbeat = time.monotonic()
        #: Connections handed over by :meth:`adopt` and now attached to the loop. Only the
        #: worker's loop writes it; the distributor compares it with its own hand-off count to
        #: know how many connections are still queued for this worker (no shared lock).
        self.adopted = 0
        #: TLS handshakes in progress (not yet in ``ctx.connections``). A drain treats them like
        #: idle connections: it gives them the idle grace of a retirement (a connection handed
        #: over just before it must not be cut mid-handshake), then cancels them.
        self._handshakes: set[asyncio.Task[None]] = set()
        #: Plain connections handed over by :meth:`adopt` and not yet attached (their
        #: ``connection_made`` has not run, so they are not in ``ctx.connections``). A drain
        #: waits for them: one handed over just before a retirement must still be answered.
        self._attaching: set[asyncio.Task[None]] = set()
        #: True while a hand-off channel may still bring connections (a process worker's
        #: descriptor channel before its end-of-file): a retiring worker's drain waits for it
        #: (within the idle grace), as connections queued in it were meant for this worker.
        self.inbox_open = False

    # -- thread-safe controls -----------------------------------------------------------------

    def request_stop(self, *, force: bool = False, idle_grace: float = 0.0) -> None:
        """Begin a graceful stop (or a forced one). Safe from any thread, idempotent.

        *idle_grace* (used when a worker is retired by a reload or recycling, while other
        workers keep serving): idle keep-alive connections are not closed at once but may send
        one more request, answered with ``Connection: close``, for up to this long. Closing an
        idle connection races with a client that is just sending its next request on it; busy
        clients thus move to the new workers without a single failed request.
        """
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        self._idle_grace = max(self._idle_grace, idle_grace)
        with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
            loop.call_soon_threadsafe(self._stop_now, force)

    def adopt(self, sock: socket.socket) -> None:
        """Serve an already-accepted connection. Safe from any thread."""
        loop = self.loop
        assert loop is not None
        loop.call_soon_threadsafe(self._adopt, sock)

    @property
    def connection_count(self) -> int:
        ctx = self.ctx
        return len(ctx.connections) if ctx is not None else 0

    @property
    def requests_total(self) -> int:
        ctx = self.ctx
        return ctx.requests_total if ctx is not None else 0

    # -- running ------------------------------------------------------------------------------

    async def serve(self, sockets: list[socket.socket]) -> None:
        """Serve until :meth:`request_stop`, then drain gracefully."""
        loop = asyncio.get_running_loop()
        self.loop = loop
        self._stop = asyncio.Event()
        ctx = WorkerContext(
            # --static: the files are served by a wrapper in front of the app, so they take
            # the pipeline's way like any response (the app itself when the option is off).
            app=static_files(self.app, self.config),
            config=self.config,
            loop=loop,
            access_log=self.access_log,
            proxy_trust=self.proxy_trust,
            state=self.state,
            base_context=self.base_context,
            on_request_limit=self._on_request_limit,
            event_hub=self.event_hub,
            rate_limiter=self.rate_limiter,
            slot_pool=self.slot_pool,
        )
        ctx.max_requests = self.max_requests
        self.ctx = ctx
        recorder = None
        store = None
        if self.metrics is not None:
            store, region = self.metrics
            if region is not None:
                recorder = MetricsRecorder(ctx, store, region, os.getpid())
                self._recorder = recorder
        self._protocol_factory = protocol_factory(ctx, store, recorder)
        guard = ListenerGuard(loop, self.name) if sockets else None
        for sock in sockets:
            if self.ssl_context is not None:
                # TLS: every connection goes through _adopt, where a handshake failure is seen.
                self._servers.append(TLSAcceptor(loop, sock, self._adopt, self.name))
                continue
            assert guard is not None
            server = await loop.create_server(
                self._protocol_factory, sock=guard.wrap(sock), backlog=self.config.backlog
            )
            self._servers.append(server)
        interval = tick_interval(self.config)
        ticker = loop.call_later(interval, self._tick, interval)
        self.ready.set()
        try:
            await self._stop.wait()
            await self._drain()
        finally:
            ticker.cancel()
            self.ready.clear()
            ctx.unlink_events()
            if recorder is not None:
                recorder.sample()
                recorder.close()
            for cleanup in ctx.cleanups:
                cleanup()

    def _adopt(self, sock: socket.socket) -> None:
        ctx = self.ctx
        loop = self.loop
        factory = self._protocol_factory
        if ctx is None or loop is None or factory is None or (
            ctx.shutting_down and not ctx.linger_idle
        ):
            # Stopping for good, or the retirement's grace is over: nobody will serve it.
            self.adopted += 1
            sock.close()
            return
        # A retiring worker (linger_idle) still serves what was handed to it before it was
        # unpublished: the client gets its answer, with ``Connection: close``.

        ssl_context = self.ssl_context
        if ssl_context is not None:
            # Attached now, before the handshake: a stalled handshake must not look like a
            # hand-off still queued, or a distributor would stop sending this worker anything.
            self.adopted += 1

        async def connect() -> None:
            if ssl_context is None:
                try:
                    await loop.connect_accepted_socket(factory, sock)
                except OSError:
                    sock.close()
                finally:
                    self.adopted += 1
                return
            peer = peer_of(sock)
            timeout = self.config.timeout_ssl_handshake
            try:
                await loop.connect_accepted_socket(
                    factory, sock, ssl=ssl_context,
                    ssl_handshake_timeout=timeout,
                )
            except OSError as exc:
                sock.close()
                log_handshake_failure(exc, peer, timeout)
            except asyncio.CancelledError:
                log_handshake_failure(ConnectionAbortedError("the worker is stopping"), peer, 0)
                raise

        task = loop.create_task(connect())
        pending = self._attaching if ssl_context is None else self._handshakes
        pending.add(task)
        task.add_done_callback(pending.discard)

    def _tick(self, interval: float) -> None:
        self.heartbeat = time.monotonic()
        self._check_deadlines()
        if self._stop is not None and not self._stop.is_set() and self.loop is not None:
            self.loop.call_later(interval, self._tick, interval)

    def _check_deadlines(self) -> None:
        ctx = self.ctx
        loop = self.loop
        assert ctx is not None and loop is not None
        ctx.refresh_date()
        recorder = self._recorder
        if recorder is not None:
            recorder.sample()  # the gauges a scrape reads, at most one tick old
        now = loop.time()
        for conn in list(ctx.connections):
            if conn.deadline <= now:
                conn.on_deadline(now)

    def _on_request_limit(self) -> None:
        if self._on_limit is not None:
            self._on_limit()
            return
        logger.info(
            "%s reached --limit-max-requests (%s); shutting down",
            self.name,
            self.max_requests,
        )
        self._stop_now(False)

    def _stop_now(self, force: bool) -> None:
        self._force = self._force or force
        if self._stop is not None:
            self._stop.set()
        ctx = self.ctx
        if force and ctx is not None:
            for conn in list(ctx.connections):
                conn.force_close()

    async def _drain(self) -> None:
        """Stop accepting, close idle connections, give busy ones until the deadline."""
        ctx = self.ctx
        loop = self.loop
        assert ctx is not None and loop is not None
        ctx.shutting_down = True
        ctx.linger_idle = self._idle_grace > 0
        for server in self._servers:
            server.close()
        interval = tick_interval(self.config)
        grace_end = loop.time() + min(self._idle_grace, self.config.timeout_graceful_shutdown)
        if ctx.linger_idle:
            # Connections the loop's own accept path took just before close() reach
            # connection_made a few callbacks later (asyncio: a task; uvloop: call_soon):
            # let them get there, or the check below would see no connection and end the
            # drain under them, and the loop's end would close them unanswered.
            for _ in range(ATTACH_ROUNDS):
                await asyncio.sleep(0)
        while (
            ctx.connections or self._handshakes or self._attaching or self.inbox_open
        ) and not self._force and loop.time() < grace_end:
            # Connections close after their current/next response (shutting_down is set).
            await asyncio.sleep(min(0.01, interval))
            self._check_deadlines()
        ctx.linger_idle = False
        for task in list(self._handshakes):
            task.cancel()  # closes the transport; no request was started on it
        for conn in list(ctx.connections):
            conn.shutdown()
        deadline = loop.time() + self.config.timeout_graceful_shutdown
        while ctx.connections and not self._force:
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning(
                    "Graceful shutdown timed out after %gs; closing %d connection(s)",
                    self.config.timeout_graceful_shutdown,
                    len(ctx.connections),
                )
                break
            await asyncio.sleep(min(interval, remaining))
            self._check_deadlines()
        for conn in list(ctx.connections):
            conn.force_close()
        # Let cancelled app tasks unwind before the loop goes away.
        await asyncio.sleep(0)
        self._servers.clear()
