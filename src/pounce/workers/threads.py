"""Thread workers: N event loops in N threads of one process, sharing one app and one config.

Each thread runs its own asyncio loop, its own copy of the app's lifespan (so loop-bound
resources such as database pools are created on the loop that uses them) and its own
:class:`~pounce.server.worker.Worker`. The app object and the frozen :class:`ServerConfig`
are shared read-only. On a free-threaded build the threads run Python code in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from pounce.asgi.lifespan import Lifespan
from pounce.errors import StartupError
from pounce.features.proxy_headers import ProxyTrust
from pounce.logs import AccessLogger
from pounce.server.loops import loop_factory
from pounce.server.worker import Worker
from pounce.transport.tls import create_ssl_context
from pounce.workers.handle import RETIRE_GRACE, WorkerHandle, process_rss

if TYPE_CHECKING:
    from pounce.asgi.types import ASGIApp
    from pounce.config import ServerConfig
    from pounce.features.metrics_store import MetricsStore
    from pounce.features.rate_limit import RateLimitStore
    from pounce.pipeline.hub import EventLink
    from pounce.pipeline.slots import Slots

logger = logging.getLogger("pounce.error")


async def run_worker(  # noqa: PLR0917 - internal, called from two places
    worker_factory: Callable[[Lifespan, ssl.SSLContext | None], Worker],
    app: ASGIApp,
    config: ServerConfig,
    sockets: list[socket.socket],
    on_worker: Callable[[Worker], None],
    on_ready: Callable[[], None],
    forced: Callable[[], bool],
) -> None:
    """Lifespan start-up, serve until stopped, lifespan shutdown -- on the running loop.

    Shared by thread and process workers so both behave the same way. The TLS context is built
    here, in the worker, before the app starts: it cannot be pickled to a process, and a worker
    of a new generation (rolling reload) must read renewed certificate files.
    """
    ssl_context = create_ssl_context(config) if config.ssl_enabled else None
    lifespan = Lifespan(
        app,
        config.lifespan,
        startup_timeout=config.timeout_startup,
        shutdown_timeout=config.timeout_graceful_shutdown,
    )
    await lifespan.startup()
    worker = worker_factory(lifespan, ssl_context)
    on_worker(worker)
    try:
        serving = asyncio.get_running_loop().create_task(worker.serve(sockets))
        while not worker.ready.is_set() and not serving.done():
            await asyncio.sleep(0)
        if worker.ready.is_set():
            on_ready()
        await serving
    finally:
        if not forced():
            await lifespan.shutdown()


def make_worker(
    app: ASGIApp,
    config: ServerConfig,
    lifespan: Lifespan,
    *,
    name: str,
    max_requests: int | bool | None,
    on_request_limit: Callable[[], None] | None,
    ssl_context: ssl.SSLContext | None = None,
    event_hub: EventLink | None = None,
    metrics: tuple[MetricsStore, int | None] | None = None,
    rate_limiter: RateLimitStore | None = None,
    slot_pool: Slots | None = None,
) -> Worker:
    return Worker(
        app=app,
        config=config,
        access_log=AccessLogger.from_config(config),
        proxy_trust=ProxyTrust.from_config(config) if config.proxy_headers else None,
        state=lifespan.state,
        base_context=None if config.reset_contextvars else lifespan.context,
        name=name,
        max_requests=max_requests,
        on_request_limit=on_request_limit,
        ssl_context=ssl_context,
        event_hub=event_hub,
        metrics=metrics,
        rate_limiter=rate_limiter,
        slot_pool=slot_pool,
    )


class ThreadWorker(WorkerHandle):
    """A worker running in a thread of this process."""

    kind = "thread"

    def __init__(
        self,
        *,
        app: ASGIApp,
        config: ServerConfig,
        listen: list[socket.socket],
        name: str,
        slot: int,
        generation: int,
        max_requests: int | bool | None = True,
        on_request_limit: Callable[[], None] | None = None,
        event_hub: EventLink | None = None,
        rate_limiter: RateLimitStore | None = None,
        metrics: tuple[MetricsStore, int | None] | None = None,
        slot_pool: Slots | None = None,
    ) -> None:
        super().__init__(name=name, slot=slot, generation=generation)
        self._event_hub = event_hub
        self._rate_limiter = rate_limiter
        self._metrics = metrics
        self._slot_pool = slot_pool
        self.app = app
        self.config = config
        # Each worker closes its listeners when it drains; it gets duplicates so the shared
        # sockets (owned by the server, reused by the next generation) stay open.
        self._listen = [sock.dup() for sock in listen]
        for sock in self._listen:
            sock.setblocking(False)
        self._max_requests = max_requests
        self._on_request_limit = on_request_limit
        self._worker: Worker | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested: bool | None = None  # None = not requested, else force flag
        self._lock = threading.Lock()  # start/stop hand-shake only, never on the request path
        self._forced = False
        self._serving = False
        self._retire = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"pounce-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=loop_factory(self.config.loop)) as runner:
                runner.run(
                    run_worker(
                        self._factory,
                        self.app,
                        self.config,
                        self._listen,
                        self._attach,
                        self._on_ready,
                        lambda: self._forced,
                    )
                )
        except BaseException as exc:
            if isinstance(exc, StartupError):
                self.error = exc.message
                self.error_details = exc.details
            else:
                self.error = f"{type(exc).__name__}: {exc}"
                self.error_details = traceback.format_exc()
                logger.error("%s crashed", self.label, exc_info=exc)
        finally:
            for sock in self._listen:
                sock.close()
            self.exited.set()

    def _factory(self, lifespan: Lifespan, ssl_context: ssl.SSLContext | None) -> Worker:
        return make_worker(
            self.app,
            self.config,
            lifespan,
            name=self.label,
            max_requests=self._max_requests,
            on_request_limit=self._on_request_limit,
            ssl_context=ssl_context,
            event_hub=self._event_hub,
            metrics=self._metrics,
            rate_limiter=self._rate_limiter,
            slot_pool=self._slot_pool,
        )

    def _attach(self, worker: Worker) -> None:
        self._worker = worker

    def _on_ready(self) -> None:
        with self._lock:
            self._serving = True
            pending = self._stop_requested
        self.ready.set()
        if pending is not None and self._worker is not None:
            # A stop was asked for during lifespan start-up; honour it now the loop serves.
            self._worker.request_stop(force=pending, idle_grace=self._grace())

    def request_stop(self, *, force: bool = False, retire: bool = False) -> None:
        self.stopping = True
        self._retire = self._retire or retire
        if force:
            self._forced = True
        with self._lock:
            self._stop_requested = force or bool(self._stop_requested)
            worker = self._worker if self._serving else None
        if worker is not None:
            worker.request_stop(force=force, idle_grace=self._grace())

    def _grace(self) -> float:
        return min(RETIRE_GRACE, self.config.timeout_keep_alive) if self._retire else 0.0

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def abandon(self) -> None:
        # A thread cannot be killed: ask it to stop (it will when the app lets go of the loop)
        # and forget it. It is a daemon thread, so it does not keep the process alive.
        self.request_stop(force=True)

    def join(self, timeout: float) -> bool:
        return self.exited.wait(timeout)

    @property
    def requests_total(self) -> int:
        worker = self._worker
        return worker.requests_total if worker is not None else 0

    @property
    def connection_count(self) -> int:
        worker = self._worker
        return worker.connection_count if worker is not None else 0

    @property
    def adopted(self) -> int:
        worker = self._worker
        return worker.adopted if worker is not None else 0

    @property
    def heartbeat(self) -> float:
        worker = self._worker
        return worker.heartbeat if worker is not None else self.started_at

    def rss(self) -> int | None:
        # Threads share one address space: per-thread memory is not measurable, so RSS limits
        # apply to the process (the supervisor recycles thread workers one at a time).
        return process_rss(os.getpid())

    def adopt(self, sock: socket.socket) -> bool:
        worker = self._worker
        if worker is None or worker.loop is None:
            return False
        try:
            worker.adopt(sock)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    """Poll *predicate* until true or *timeout*; for supervisor hand-shakes, not the hot path."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        with contextlib.suppress(Exception):
            time.sleep(step)
    return True
