"""Typed lifecycle events and the per-worker bus that delivers them.

Every event is a frozen, slotted object: cheap to build, impossible to alter on the way, and safe
to hand to another thread. Events are only built when someone listens: the pipeline checks
:attr:`EventBus.active` (one attribute read) before constructing anything, so a server with no
subscriber pays nothing per request.

The access log is a subscriber like any other: it formats :class:`RequestCompleted`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from pounce.pipeline.connection import ConnectionInfo

__all__ = [
    "ClientDisconnected",
    "ConnectionClosed",
    "ConnectionOpened",
    "Event",
    "EventBus",
    "EventHandler",
    "ReloadCompleted",
    "ReloadFailed",
    "ReloadStarted",
    "RequestCompleted",
    "RequestRejected",
    "RequestStarted",
    "ServerStarted",
    "ServerStopped",
    "ServerStopping",
    "WebSocketClosed",
    "WebSocketOpened",
    "WorkerCrashed",
    "WorkerRecycled",
    "WorkerStarted",
    "WorkerStopped",
]

logger = logging.getLogger("pounce.error")

Headers = Sequence[tuple[bytes, bytes]]

# Why a connection ended (ConnectionClosed.reason).
CLOSED_BY_CLIENT: Final = "client closed"
CLOSED_KEEP_ALIVE_TIMEOUT: Final = "keep-alive timeout"
CLOSED_HEADER_TIMEOUT: Final = "request head timeout"
CLOSED_BODY_TIMEOUT: Final = "request body timeout"
CLOSED_WRITE_TIMEOUT: Final = "client stopped reading"
CLOSED_MALFORMED: Final = "malformed request"
CLOSED_SERVER: Final = "closed by server"
CLOSED_SHUTDOWN: Final = "server shutting down"
CLOSED_ABORTED: Final = "aborted"

# Why a request was refused before the app saw it (RequestRejected.reason).
REJECTED_CONCURRENCY: Final = "concurrency limit"
REJECTED_MALFORMED: Final = "malformed"
REJECTED_TOO_LARGE: Final = "too large"
REJECTED_TIMEOUT: Final = "timeout"
REJECTED_METHOD: Final = "method not allowed"
#: A readiness probe while the worker drains or sheds load (``--ready-path``).
REJECTED_NOT_READY: Final = "not ready"
#: Over ``--rate-limit`` for this client (429).
REJECTED_RATE_LIMITED: Final = "rate limited"
#: The request queue (``--max-queue``) was full: shed without waiting (503).
REJECTED_QUEUE_FULL: Final = "queue full"
#: Waited ``--queue-timeout`` in the request queue without getting a slot (503).
REJECTED_QUEUE_TIMEOUT: Final = "queue timeout"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionOpened:
    connection: ConnectionInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed:
    connection: ConnectionInfo
    #: One of the ``CLOSED_*`` strings of this module.
    reason: str
    #: Requests (and WebSocket sessions) the connection carried.
    requests: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestStarted:
    client: tuple[str, int] | None
    method: str
    path: str
    http_version: str
    scheme: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCompleted:
    """One finished request: everything an access log, a metric or a trace needs.

    The attribute names match what :class:`pounce.logs.AccessLogger` formats.
    """

    client: tuple[str, int] | str | None
    method: str
    path: str
    query_string: bytes
    http_version: str
    status: int
    #: Response body bytes handed to the transport (not counting the head).
    bytes_sent: int
    #: Seconds from the request's start to the end of its response.
    duration: float
    request_headers: Headers
    response_headers: Headers | None
    scheme: str
    #: False when the response was cut off (write timeout, client gone, app error mid-body).
    complete: bool = True
    #: Seconds the request waited in the request queue (``--max-concurrency``) before the
    #: app was called; 0.0 when it did not wait.
    queue_wait: float = 0.0
    #: Request body bytes received from the client (as far as it was read).
    bytes_received: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRejected:
    """A request the server answered itself, before (or instead of) calling the app."""

    client: tuple[str, int] | None
    status: int
    #: One of the ``REJECTED_*`` strings of this module.
    reason: str
    #: Empty when the request could not even be parsed.
    method: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSocketOpened:
    client: tuple[str, int] | None
    path: str
    subprotocol: str | None
    http_version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSocketClosed:
    client: tuple[str, int] | None
    path: str
    #: The close code sent or received (1006 when the connection just dropped).
    code: int
    #: Who ended it: ``"client"``, ``"server"`` or ``"app"``.
    initiator: str
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientDisconnected:
    """The client went away while its request was still being answered.

    Emitted once per request, at the moment the connection is seen gone; the request's
    :class:`RequestCompleted` (with ``complete=False``) follows when the app lets go.
    """

    client: tuple[str, int] | str | None
    method: str
    path: str
    #: True when part of the response was already sent.
    response_started: bool


Event = (
    ConnectionOpened
    | ConnectionClosed
    | RequestStarted
    | RequestCompleted
    | RequestRejected
    | WebSocketOpened
    | WebSocketClosed
    | ClientDisconnected
)
EventHandler = Callable[[Any], None]


EVENT_TYPES: tuple[type, ...] = (
    ConnectionOpened,
    ConnectionClosed,
    RequestStarted,
    RequestCompleted,
    RequestRejected,
    WebSocketOpened,
    WebSocketClosed,
    ClientDisconnected,
)


# -- server-level events: emitted by the supervisor, seen only through the server's hub --------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStarted:
    #: The bound addresses, e.g. ``("http://127.0.0.1:8000",)``.
    addresses: tuple[str, ...]
    #: The worker model, as the start-up log line describes it.
    model: str
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStopping:
    #: True when the stop does not wait for requests to finish.
    force: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStopped:
    #: Requests served over the server's whole life.
    requests_total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStarted:
    name: str
    #: ``"thread"`` or ``"process"``.
    kind: str
    slot: int
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStopped:
    name: str
    kind: str
    slot: int
    generation: int
    #: Requests the worker served.
    requests: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerCrashed:
    """A worker exited without being asked, or stopped answering its heartbeat (replaced)."""

    name: str
    kind: str
    slot: int
    generation: int
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRecycled:
    """A worker (or, for thread workers and ``--limit-max-rss``, a generation) is replaced."""

    name: str
    #: What triggered it: ``"max requests"`` or ``"max rss"``.
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadStarted:
    #: The generation serving now.
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadCompleted:
    #: The new generation, now serving.
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadFailed:
    """The new code did not import or its workers did not start; the old ones keep serving."""

    error: str


#: Events the supervisor emits (never through a worker's bus).
SERVER_EVENT_TYPES: tuple[type, ...] = (
    ServerStarted,
    ServerStopping,
    ServerStopped,
    WorkerStarted,
    WorkerStopped,
    WorkerCrashed,
    WorkerRecycled,
    ReloadStarted,
    ReloadCompleted,
    ReloadFailed,
)


def _quick_init(kind: type) -> None:
    """Give the frozen event *kind* a constructor that sets its slots through their descriptors.

    A frozen dataclass's generated ``__init__`` goes through ``object.__setattr__`` once per
    field (its own ``__setattr__`` refuses); calling each slot's descriptor directly stores the
    same values in about half the time. That matters for :class:`RequestCompleted`, built once
    per request whenever anyone listens (the access log, ``--metrics``). Same keyword-only
    signature and defaults; the instances stay frozen, comparable and dataclasses.
    """
    fields = dataclasses.fields(kind)
    namespace: dict[str, Any] = {}
    params: list[str] = []
    body: list[str] = []
    for f in fields:
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        else:
            assert f.default_factory is dataclasses.MISSING, (kind, f.name)
            params.append(f.name)
        namespace[f"_set_{f.name}"] = kind.__dict__[f.name].__set__
        body.append(f"    _set_{f.name}(self, {f.name})")
    source = f"def __init__(self, *, {', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    exec(source, namespace)  # as dataclasses itself builds __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{kind.__qualname__}.__init__"
    init.__module__ = kind.__module__
    kind.__init__ = init  # type: ignore[misc]


for _kind in (*EVENT_TYPES, *SERVER_EVENT_TYPES):
    _quick_init(_kind)


class EventBus:
    """Delivers events to subscribers, in order, on the worker's event-loop thread.

    One bus per worker, touched only from its loop's thread, so it needs no lock. Handlers are
    kept per event type, so emitting costs one dict lookup and only interested handlers run.
    A handler that raises is logged once and keeps receiving later events: a broken subscriber
    must not break requests.
    """

    __slots__ = ("_by_kind", "_failed", "active")

    def __init__(self, handlers: Sequence[EventHandler] = ()) -> None:
        self._by_kind: dict[type, tuple[EventHandler, ...]] = {}
        self._failed: set[int] = set()
        #: True when at least one handler listens. Producers check it before building events.
        self.active = False
        for handler in handlers:
            self.subscribe(handler)

    def subscribe(
        self, handler: EventHandler, kinds: Sequence[type] | None = None
    ) -> Callable[[], None]:
        """Call *handler* for every event of *kinds* (all kinds when None).

        Returns a function that removes the subscription again.
        """
        chosen = tuple(kinds) if kinds is not None else EVENT_TYPES
        for kind in chosen:
            if kind not in EVENT_TYPES:
                raise TypeError(f"{kind!r} is not a Pounce event type")
            self._by_kind[kind] = (*self._by_kind.get(kind, ()), handler)
        self.active = True

        def unsubscribe() -> None:
            # Removes this subscription only: the same handler may be subscribed twice.
            for kind in chosen:
                handlers = list(self._by_kind.get(kind, ()))
                for index, h in enumerate(handlers):
                    if h is handler:
                        del handlers[index]
                        break
                if handlers:
                    self._by_kind[kind] = tuple(handlers)
                else:
                    self._by_kind.pop(kind, None)
            self.active = bool(self._by_kind)

        return unsubscribe

    def wants(self, kind: type) -> bool:
        """True when some handler listens to *kind* (to skip building costly events)."""
        return kind in self._by_kind

    def emit(self, event: Event) -> None:
        for handler in self._by_kind.get(type(event), ()):
            try:
                handler(event)
            except Exception:
                if id(handler) not in self._failed:
                    self._failed.add(id(handler))
                    logger.exception(
                        "Event handler %r failed on %s; it keeps receiving events, but later "
                        "failures are not logged",
                        handler,
                        type(event).__name__,
                    )
