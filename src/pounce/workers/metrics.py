"""The supervisor's side of ``--metrics``: regions for workers, server figures, ``--metrics-bind``.

:class:`SupervisorMetrics` belongs to the supervisor thread. It hands each worker it starts a
free region of the shared store (:mod:`pounce.features.metrics_store`), takes the region back
once that worker has exited (its counts stay; see the store's docstring), and writes the
server region: workers by state, restarts, reloads and the events the hub dropped.

:class:`MetricsListener` serves ``--metrics-bind``: a small HTTP server in a thread of the
supervisor's process, so the figures are reachable on a private address and never on the
public port, in thread and process mode alike (the store is shared with every worker).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pounce.config import parse_bind
from pounce.errors import StartupError
from pounce.features.metrics import Exposition, wants_openmetrics
from pounce.features.metrics_store import MetricsStore, ServerFields
from pounce.pipeline.events import ReloadCompleted, ReloadFailed, WorkerCrashed, WorkerRecycled

if TYPE_CHECKING:
    from pounce.pipeline.hub import EventHub
    from pounce.workers.handle import WorkerHandle

__all__ = ["MetricsListener", "SupervisorMetrics", "store_capacity"]

logger = logging.getLogger("pounce.error")

#: How long a ``--metrics-bind`` connection may take to send its request.
LISTENER_TIMEOUT = 10.0


def store_capacity(workers: int) -> int:
    """Worker regions to allocate: workers alive at once, with room for reloads.

    During a rolling reload the old generation drains while the new one serves, and a slow
    drain can overlap the next reload; four times the pool (and at least 8) covers that.
    """
    return max(8, 4 * workers + 4)


class SupervisorMetrics:
    """Region bookkeeping and the server region; used by the supervisor thread only."""

    def __init__(self, store: MetricsStore, hub: EventHub | None) -> None:
        self.store = store
        self._hub = hub
        # The server region starts at offset 0 of the block; this thread alone writes it.
        self._server = store.values
        self._server[ServerFields.MAIN_PID] = float(os.getpid())
        self._free = list(range(store.capacity - 1, -1, -1))  # pop() hands out 0 first
        self._owners: dict[WorkerHandle, int] = {}
        self._warned = False

    def take_region(self) -> int | None:
        """A free region for a worker about to start; None (and one warning) if none is left."""
        if self._free:
            return self._free.pop()
        if not self._warned:
            self._warned = True
            logger.warning(
                "Every metrics region is in use (%d workers alive at once); the next workers "
                "serve without being counted until old ones exit",
                self.store.capacity,
            )
        return None

    def bind(self, handle: WorkerHandle, region: int | None) -> None:
        """*handle* writes *region* from now until it has exited."""
        if region is not None:
            self._owners[handle] = region

    def sweep(self, serving: int, starting: int, draining: int) -> None:
        """Take back regions of exited workers; refresh the server gauges (each poll)."""
        for handle, region in list(self._owners.items()):
            if handle.exited.is_set() or not handle.alive():
                del self._owners[handle]
                self.store.retire(region)
                self._free.append(region)
        server = self._server
        server[ServerFields.WORKERS_SERVING] = serving
        server[ServerFields.WORKERS_STARTING] = starting
        server[ServerFields.WORKERS_DRAINING] = draining
        hub = self._hub
        if hub is not None:
            server[ServerFields.EVENTS_DROPPED] = hub.dropped

    def on_event(self, event: object) -> None:
        """Count the supervisor's own events (called where it emits them)."""
        server = self._server
        if isinstance(event, WorkerCrashed):
            server[ServerFields.RESTARTS_CRASHED] += 1
        elif isinstance(event, WorkerRecycled):
            server[ServerFields.RESTARTS_RECYCLED] += 1
        elif isinstance(event, ReloadCompleted):
            server[ServerFields.RELOADS_COMPLETED] += 1
        elif isinstance(event, ReloadFailed):
            server[ServerFields.RELOADS_FAILED] += 1


class _Handler(BaseHTTPRequestHandler):
    """One scrape on the ``--metrics-bind`` listener."""

    server: _MetricsHTTPServer
    server_version = "pounce"
    timeout = LISTENER_TIMEOUT

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _refuse(self) -> None:
        self._plain(405, b"Method Not Allowed", (("Allow", "GET, HEAD"),))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _answer(self, *, head: bool) -> None:
        if urlsplit(self.path).path != self.server.metrics_path:
            self._plain(404, b"Not Found", (), head=head)
            return
        accept = ",".join(self.headers.get_all("accept") or ()).encode("latin-1")
        content_type, body = self.server.exposition.render(wants_openmetrics(accept))
        self.send_response(200)
        self.send_header("Content-Type", content_type.decode("ascii"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _plain(
        self, status: int, body: bytes, headers: tuple[tuple[str, str], ...], head: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Scrapes every few seconds would drown the log; problems show on the scraper's side.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("metrics listener: %s", format % args)


class _MetricsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    exposition: Exposition
    metrics_path: str


class _MetricsHTTPServer6(_MetricsHTTPServer):
    address_family = socket.AF_INET6


class MetricsListener:
    """``--metrics-bind``: the exposition on its own address, served by a thread here.

    Bound when created (so a taken port is a start-up error), serving after :meth:`start`.
    """

    def __init__(self, address: str, store: MetricsStore, path: str) -> None:
        spec = parse_bind(address)
        assert spec.host is not None and spec.port is not None
        kind = _MetricsHTTPServer6 if ":" in spec.host else _MetricsHTTPServer
        try:
            self._httpd = kind((spec.host, spec.port), _Handler)
        except OSError as exc:
            raise StartupError(
                f"cannot listen for metrics on {address} (--metrics-bind): {exc.strerror}; "
                "pick a free address"
            ) from None
        self._httpd.exposition = Exposition(store)
        self._httpd.metrics_path = path
        host, port = self._httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{host}]" if ":" in host else host
        #: Where the metrics are, e.g. ``http://127.0.0.1:9100/metrics``.
        self.url = f"http://{shown}:{port}{path}"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
            name="pounce-metrics", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(2.0)
            self._thread = None
        with contextlib.suppress(OSError):
            self._httpd.server_close()
