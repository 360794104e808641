"""``--metrics``: the Prometheus exposition of the shared metrics store.

Whoever answers a scrape -- a worker on the main port, or the supervisor's own listener with
``--metrics-bind`` -- reads the same shared block (:mod:`pounce.features.metrics_store`), adds
the worker regions up and writes them in the Prometheus text format (0.0.4), or in OpenMetrics
1.0 when the scraper's ``Accept`` asks for ``application/openmetrics-text`` (Prometheus does).
Both formats are written here by hand: they are simple, and the server then needs no client
library at run time.

Process figures (CPU seconds, resident memory, open descriptors) are read at scrape time from
``/proc`` for the supervisor's process and for every live worker process, so workers spend
nothing on them. Where ``/proc`` is missing (macOS), only the answering process's CPU time is
known (``resource.getrusage``).
"""

from __future__ import annotations

import os
from typing import Final

from pounce.features.metrics_store import (
    DURATION_BOUNDS,
    HTTP_VERSIONS,
    LIVE,
    METHODS,
    QUEUE_WAIT_BOUNDS,
    REJECTION_REASONS,
    STATUS_CLASSES,
    MetricsStore,
    RegionLayout,
    ServerFields,
    sum_regions,
)

__all__ = [
    "OPENMETRICS_CONTENT_TYPE",
    "PROMETHEUS_CONTENT_TYPE",
    "Exposition",
    "process_stats",
    "wants_openmetrics",
]

PROMETHEUS_CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE: Final = b"application/openmetrics-text; version=1.0.0; charset=utf-8"

_OPENMETRICS = b"application/openmetrics-text"

try:
    _CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not a POSIX system
    _CLOCK_TICKS, _PAGE = 100, 4096


def wants_openmetrics(accept: bytes | None) -> bool:
    """True when an ``Accept`` value asks for OpenMetrics (with a q-value above zero)."""
    if not accept or _OPENMETRICS not in accept.lower():
        return False
    for item in accept.lower().split(b","):
        media, _, params = item.partition(b";")
        if media.strip() != _OPENMETRICS:
            continue
        for param in params.split(b";"):
            name, _, value = param.partition(b"=")
            if name.strip() == b"q":
                try:
                    if float(value.strip()) <= 0:
                        break
                except ValueError:
                    break
        else:
            return True
    return False


def process_stats(pid: int) -> tuple[float, int | None, int | None] | None:
    """CPU seconds (user + system), resident bytes and open descriptors of *pid*.

    None when the process cannot be read (gone, or no ``/proc`` and not this process).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The command name (field 2) may hold spaces and parentheses: split after it.
            fields = f.read().rpartition(b")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        if pid != os.getpid():
            return None
        try:
            import resource
        except ImportError:  # pragma: no cover - Windows
            return None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime, None, None
    rss: int | None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            rss = int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        rss = None
    fds: int | None
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = None
    return cpu, rss, fds


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _bound(value: float) -> str:
    # OpenMetrics wants canonical floats in ``le`` ("1.0", not "1"); Prometheus reads both.
    return repr(float(value))


class _Writer:
    """Accumulates one exposition in either format."""

    __slots__ = ("lines", "openmetrics")

    def __init__(self, openmetrics: bool) -> None:
        self.openmetrics = openmetrics
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help: str) -> None:
        """Start a family; *name* of a counter ends in ``_total`` (the sample name)."""
        if kind == "counter" and self.openmetrics:
            name = name.removesuffix("_total")
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: str, value: float) -> None:
        if labels:
            self.lines.append(f"{name}{{{labels}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")

    def histogram(
        self, name: str, help: str, bounds: tuple[float, ...], counts: list[float], total: float
    ) -> None:
        self.family(name, "histogram", help)
        running = 0.0
        for bound, count in zip(bounds, counts, strict=False):
            running += count
            self.sample(f"{name}_bucket", f'le="{_bound(bound)}"', running)
        running += counts[len(bounds)]
        self.sample(f"{name}_bucket", 'le="+Inf"', running)
        self.sample(f"{name}_count", "", running)
        self.sample(f"{name}_sum", "", total)

    def text(self) -> bytes:
        if self.openmetrics:
            self.lines.append("# EOF")
        self.lines.append("")
        return "\n".join(self.lines).encode("utf-8")


class Exposition:
    """Renders the store; built once per answering thread, used for every scrape."""

    def __init__(self, store: MetricsStore) -> None:
        self.store = store

    def render(self, openmetrics: bool = False) -> tuple[bytes, bytes]:
        """The content type and body of one scrape."""
        server, regions = self.store.snapshot()
        totals = sum_regions(regions)
        out = _Writer(openmetrics)
        self._requests(out, totals)
        self._gauges(out, totals)
        self._server(out, server)
        self._processes(out, server, regions)
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else PROMETHEUS_CONTENT_TYPE
        return content_type, out.text()

    def _requests(self, out: _Writer, totals: list[float]) -> None:
        layout = RegionLayout
        out.family(
            "pounce_requests_total",
            "counter",
            "HTTP requests answered (WebSocket handshakes included), by method, status class "
            "and HTTP version.",
        )
        methods = (*METHODS, "other")
        classes = STATUS_CLASSES
        versions = (*HTTP_VERSIONS, "other")
        for m, method in enumerate(methods):
            for s, status in enumerate(classes):
                for v, version in enumerate(versions):
                    count = totals[layout.request_index(m, s, v)]
                    if count:
                        out.sample(
                            "pounce_requests_total",
                            f'method="{method}",status="{status}",http_version="{version}"',
                            count,
                        )
        start = layout.DURATION_BUCKETS
        out.histogram(
            "pounce_request_duration_seconds",
            "Time from a request's start to the end of its response.",
            DURATION_BOUNDS,
            totals[start : start + len(DURATION_BOUNDS) + 1],
            totals[layout.DURATION_SUM],
        )
        start = layout.QUEUE_WAIT_BUCKETS
        out.histogram(
            "pounce_queue_wait_seconds",
            "Time requests that waited in the request queue spent there.",
            QUEUE_WAIT_BOUNDS,
            totals[start : start + len(QUEUE_WAIT_BOUNDS) + 1],
            totals[layout.QUEUE_WAIT_SUM],
        )
        out.family(
            "pounce_requests_rejected_total",
            "counter",
            "Requests the server refused before the app saw them, by reason (shed load: "
            "queue_full and queue_timeout).",
        )
        for index, reason in enumerate((*REJECTION_REASONS, "other")):
            out.sample(
                "pounce_requests_rejected_total",
                f'reason="{reason.replace(" ", "_")}"',
                totals[layout.REJECTED + index],
            )
        out.family(
            "pounce_request_body_bytes_total",
            "counter",
            "Request body bytes received.",
        )
        out.sample("pounce_request_body_bytes_total", "", totals[layout.BYTES_RECEIVED])
        out.family(
            "pounce_response_body_bytes_total",
            "counter",
            "Response body bytes sent.",
        )
        out.sample("pounce_response_body_bytes_total", "", totals[layout.BYTES_SENT])
        out.family("pounce_websockets_total", "counter", "WebSocket sessions accepted.")
        out.sample("pounce_websockets_total", "", totals[layout.WEBSOCKETS_TOTAL])

    def _gauges(self, out: _Writer, totals: list[float]) -> None:
        layout = RegionLayout
        for name, offset, help in (
            ("pounce_requests_in_flight", layout.IN_FLIGHT,
             "Requests and WebSocket sessions the app is handling now."),
            ("pounce_connections_open", layout.CONNECTIONS_OPEN, "Client connections open now."),
            ("pounce_http2_streams_open", layout.HTTP2_STREAMS_OPEN, "HTTP/2 streams open now."),
            ("pounce_websockets_open", layout.WEBSOCKETS_OPEN, "WebSocket sessions open now."),
            ("pounce_queue_depth", layout.QUEUE_DEPTH,
             "Requests waiting in the request queue now."),
        ):
            out.family(name, "gauge", help)
            out.sample(name, "", totals[offset])

    def _server(self, out: _Writer, server: list[float]) -> None:
        fields = ServerFields
        out.family("pounce_workers", "gauge", "Workers by state.")
        for state, offset in (
            ("serving", fields.WORKERS_SERVING),
            ("starting", fields.WORKERS_STARTING),
            ("draining", fields.WORKERS_DRAINING),
        ):
            out.sample("pounce_workers", f'state="{state}"', server[offset])
        out.family(
            "pounce_worker_restarts_total",
            "counter",
            "Workers replaced: crashed (or hung), or recycled by --limit-max-requests or "
            "--limit-max-rss.",
        )
        out.sample(
            "pounce_worker_restarts_total", 'reason="crashed"', server[fields.RESTARTS_CRASHED]
        )
        out.sample(
            "pounce_worker_restarts_total", 'reason="recycled"', server[fields.RESTARTS_RECYCLED]
        )
        out.family("pounce_reloads_total", "counter", "Rolling reloads, by result.")
        out.sample("pounce_reloads_total", 'result="completed"', server[fields.RELOADS_COMPLETED])
        out.sample("pounce_reloads_total", 'result="failed"', server[fields.RELOADS_FAILED])
        out.family(
            "pounce_events_dropped_total",
            "counter",
            "Lifecycle events dropped because a subscriber's buffer was full.",
        )
        out.sample("pounce_events_dropped_total", "", server[fields.EVENTS_DROPPED])

    def _processes(self, out: _Writer, server: list[float], regions: list[list[float]]) -> None:
        main = int(server[ServerFields.MAIN_PID]) or os.getpid()
        pids: list[tuple[str, int]] = [("main", main)]
        seen = {main}
        for region in regions:
            pid = int(region[RegionLayout.PID])
            if region[RegionLayout.STATE] == LIVE and pid and pid not in seen:
                seen.add(pid)
                pids.append(("worker", pid))
        stats = [(role, pid, process_stats(pid)) for role, pid in pids]
        for name, kind, help, field in (
            ("process_cpu_seconds_total", "counter", "User and system CPU time of the process.",
             0),
            ("process_resident_memory_bytes", "gauge", "Resident memory of the process.", 1),
            ("process_open_fds", "gauge", "File descriptors the process has open.", 2),
        ):
            out.family(name, kind, help)
            for role, pid, figures in stats:
                value = figures[field] if figures is not None else None
                if value is not None:
                    out.sample(name, f'process="{role}",pid="{pid}"', value)
