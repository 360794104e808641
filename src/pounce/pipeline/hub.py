"""The server's event hub: any number of subscribers, each fed off the request path.

A worker's :class:`~pounce.pipeline.events.EventBus` calls its handlers inline, on the loop
that serves requests: fine for the access log, wrong for user code that may block, sleep or
raise. The hub sits between the two. Publishing an event only appends it to a bounded buffer
per interested subscriber (one short lock, held by no slow code); one dispatcher thread per
server drains the buffers and calls the handlers. A slow handler therefore delays only its own
deliveries, and when its buffer is full new events for it are dropped and counted instead of
slowing requests down.

Everything shared between threads is guarded by the hub's lock, or published as immutable
objects replaced wholesale (the subscriber table read on the publishing fast path): nothing
relies on the GIL.

Worker buses are linked to the hub only while somebody subscribed to a worker-level event
kind, so with no subscriber (and no access log) ``ctx.events.active`` stays False and requests
build no event at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pounce.pipeline.events import EVENT_TYPES, SERVER_EVENT_TYPES, EventBus, EventHandler

__all__ = [
    "ALL_EVENT_TYPES",
    "DEFAULT_BUFFER_SIZE",
    "EventForwarder",
    "EventHub",
    "EventLink",
    "kinds_from_mask",
    "kinds_mask",
]

logger = logging.getLogger("pounce.error")

#: Every event kind a hub subscriber may ask for.
ALL_EVENT_TYPES: tuple[type, ...] = (*SERVER_EVENT_TYPES, *EVENT_TYPES)
#: Events kept per subscriber while its handler is busy; later ones are dropped and counted.
DEFAULT_BUFFER_SIZE = 10_000
#: How long a stopping server waits for handlers to catch up before leaving them behind.
DRAIN_TIMEOUT = 5.0


def kinds_mask(kinds: Iterable[type]) -> int:
    """Worker-level event kinds as a bit mask (bit *i* is ``EVENT_TYPES[i]``).

    A number fits in a shared-memory cell: that is how a parent tells its worker processes
    which events its subscribers want.
    """
    chosen = set(kinds)
    return sum(1 << index for index, kind in enumerate(EVENT_TYPES) if kind in chosen)


def kinds_from_mask(mask: int) -> frozenset[type]:
    return frozenset(kind for index, kind in enumerate(EVENT_TYPES) if mask >> index & 1)


class _Subscriber:
    """One subscription: its handler, the kinds it wants, and its buffer (hub lock held)."""

    __slots__ = ("buffer", "dropped", "failed", "handler", "kinds", "limit")

    def __init__(self, handler: EventHandler, kinds: frozenset[type], limit: int) -> None:
        self.handler = handler
        self.kinds = kinds
        self.limit = limit
        self.buffer: list[Any] = []
        self.dropped = 0
        self.failed = False  # touched by the dispatcher thread only

    def deliver(self, event: Any) -> None:
        try:
            self.handler(event)
        except Exception:
            if not self.failed:
                self.failed = True
                logger.exception(
                    "Event handler %r failed on %s; it keeps receiving events, but later "
                    "failures are not logged",
                    self.handler,
                    type(event).__name__,
                )


class _Sink(Protocol):
    """What a bus link forwards to: the hub, or a worker process's forwarder."""

    @property
    def worker_kinds(self) -> frozenset[type]: ...

    def publish(self, event: Any) -> None: ...


class EventLink(Protocol):
    """Where a worker links its bus: the server's hub, or a worker process's forwarder."""

    def link(self, bus: EventBus, loop: asyncio.AbstractEventLoop) -> Callable[[], None]: ...


class _BusLink:
    """Forwards one worker bus's events to the hub while some subscriber wants them."""

    __slots__ = ("bus", "hub", "kinds", "loop", "unsubscribe")

    def __init__(self, hub: _Sink, bus: EventBus, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.bus = bus
        self.loop = loop
        self.kinds: frozenset[type] = frozenset()
        self.unsubscribe: Callable[[], None] | None = None

    def sync(self) -> None:
        """Match the bus subscription to what the hub wants (on the worker's loop thread)."""
        wanted = self.hub.worker_kinds
        if wanted == self.kinds:
            return
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
        self.kinds = wanted
        if wanted:
            self.unsubscribe = self.bus.subscribe(self.hub.publish, kinds=tuple(wanted))

    def sync_soon(self) -> None:
        """Called from any thread: the bus belongs to its loop, so the change runs there."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to forward
            self.loop.call_soon_threadsafe(self.sync)


class EventHub:
    """Subscribers of one server, their buffers and the thread that feeds them."""

    def __init__(
        self, handlers: Iterable[EventHandler] = (), *, buffer_size: int = DEFAULT_BUFFER_SIZE
    ) -> None:
        if buffer_size < 1:
            raise ValueError("the event buffer needs room for at least one event")
        self._buffer_size = buffer_size
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._subscribers: tuple[_Subscriber, ...] = ()
        #: Published for :meth:`publish` (read without the lock): replaced, never changed.
        self._by_kind: dict[type, tuple[_Subscriber, ...]] = {}
        #: Worker-level kinds some subscriber wants (what linked buses forward).
        self.worker_kinds: frozenset[type] = frozenset()
        self._links: set[_BusLink] = set()
        self._thread: threading.Thread | None = None
        self._started = False
        self._closing = False
        self._idle = False
        self._retired_dropped = 0
        self._watchers: tuple[Callable[[frozenset[type]], None], ...] = ()
        for handler in handlers:
            self.subscribe(handler)

    # -- subscriptions (any thread) -------------------------------------------------------------

    def subscribe(
        self, handler: EventHandler, kinds: Iterable[type] | None = None
    ) -> Callable[[], None]:
        """Call *handler* (in the hub's thread) for every event of *kinds* (all when None).

        Returns a function that ends this subscription; events still buffered for it are
        discarded.
        """
        if not callable(handler):
            raise TypeError(f"an event handler must be callable, not {handler!r}")
        chosen = ALL_EVENT_TYPES if kinds is None else tuple(kinds)
        for kind in chosen:
            if kind not in ALL_EVENT_TYPES:
                raise TypeError(
                    f"{kind!r} is not a Pounce event type; pick from pounce.events"
                )
        subscriber = _Subscriber(handler, frozenset(chosen), self._buffer_size)
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)
            links = self._rebuild()
            if self._started and self._thread is None:
                self._start_thread()
        self._kinds_changed(links)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber not in self._subscribers:
                    return
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)
                self._retired_dropped += subscriber.dropped
                subscriber.buffer = []
                links = self._rebuild()
            self._kinds_changed(links)

        return unsubscribe

    def watch_worker_kinds(
        self, watcher: Callable[[frozenset[type]], None]
    ) -> Callable[[], None]:
        """Call *watcher* with :attr:`worker_kinds` now and whenever it changes.

        For forwarders the hub cannot link directly (worker processes). Returns the function
        that stops watching.
        """
        with self._lock:
            self._watchers = (*self._watchers, watcher)
            kinds = self.worker_kinds
        watcher(kinds)

        def unwatch() -> None:
            with self._lock:
                self._watchers = tuple(w for w in self._watchers if w is not watcher)

        return unwatch

    def _kinds_changed(self, links: list[_BusLink] | None) -> None:
        if links is None:
            return
        for link in links:
            link.sync_soon()
        kinds = self.worker_kinds
        for watcher in self._watchers:
            watcher(kinds)

    def count_dropped(self, count: int) -> None:
        """Add events lost before they reached the hub (a worker process's full buffer)."""
        if count:
            with self._lock:
                self._retired_dropped += count

    def _rebuild(self) -> list[_BusLink] | None:
        """Republish the lookup tables (lock held).

        Returns the buses to resynchronise when the worker-level kinds changed, else None.
        """
        by_kind: dict[type, tuple[_Subscriber, ...]] = {}
        for subscriber in self._subscribers:
            for kind in subscriber.kinds:
                by_kind[kind] = (*by_kind.get(kind, ()), subscriber)
        self._by_kind = by_kind
        worker_kinds = frozenset(kind for kind in by_kind if kind in EVENT_TYPES)
        if worker_kinds == self.worker_kinds:
            return None
        self.worker_kinds = worker_kinds
        return list(self._links)

    @property
    def active(self) -> bool:
        return bool(self._by_kind)

    # -- producers (any thread) -----------------------------------------------------------------

    def publish(self, event: Any) -> None:
        """Buffer *event* for every subscriber that wants it; never blocks on a handler."""
        subscribers = self._by_kind.get(type(event))
        if not subscribers:
            return
        with self._lock:
            for subscriber in subscribers:
                if len(subscriber.buffer) >= subscriber.limit:
                    subscriber.dropped += 1
                else:
                    subscriber.buffer.append(event)
            if self._idle:
                self._wake.notify()

    def link(self, bus: EventBus, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Forward *bus*'s events here (call on *loop*'s thread); returns the unlink function."""
        link = _BusLink(self, bus, loop)
        with self._lock:
            self._links.add(link)
        link.sync()

        def unlink() -> None:
            with self._lock:
                self._links.discard(link)
            if link.unsubscribe is not None:
                link.unsubscribe()
                link.unsubscribe = None

        return unlink

    # -- the dispatcher thread ------------------------------------------------------------------

    def start(self) -> None:
        """Begin delivering (the thread starts with the first subscriber)."""
        with self._lock:
            self._started = True
            self._closing = False
            if self._subscribers and self._thread is None:
                self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._run, name="pounce-events", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Deliver what is buffered (waiting up to *timeout*), then end the thread."""
        with self._lock:
            self._closing = True
            self._started = False
            thread = self._thread
            self._wake.notify()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "Event handlers did not finish within %gs of the server's stop; "
                    "leaving them behind",
                    timeout,
                )
        with self._lock:
            if self._thread is thread:
                self._thread = None

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closing and not any(s.buffer for s in self._subscribers):
                    self._idle = True
                    self._wake.wait()
                    self._idle = False
                batch = [(s, s.buffer) for s in self._subscribers if s.buffer]
                for subscriber, _ in batch:
                    subscriber.buffer = []
                if not batch and self._closing:
                    return
            for subscriber, events in batch:
                for event in events:
                    subscriber.deliver(event)

    # -- statistics -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            subscribers = [
                {"handler": repr(s.handler), "dropped": s.dropped, "queued": len(s.buffer)}
                for s in self._subscribers
            ]
            dropped = self._retired_dropped + sum(s.dropped for s in self._subscribers)
        return {"events_dropped": dropped, "event_subscribers": subscribers}


class EventForwarder:
    """A worker process's stand-in for the server's hub: collects what the parent wants.

    The worker's bus links to it exactly as a thread worker's bus links to the hub; the
    kinds come from the parent (through :meth:`want`), and the collected events leave in
    batches (:meth:`take`) that the process sends to its parent off the loop. Used only from
    the worker's loop thread, so it needs no lock. The buffer is bounded like a hub
    subscriber's: when the parent cannot keep up, events are dropped and counted.
    """

    __slots__ = ("_buffer", "_limit", "_links", "dropped", "worker_kinds")

    def __init__(self, limit: int = DEFAULT_BUFFER_SIZE) -> None:
        self.worker_kinds: frozenset[type] = frozenset()
        self._buffer: list[Any] = []
        self._limit = limit
        self._links: list[_BusLink] = []
        self.dropped = 0

    def publish(self, event: Any) -> None:
        if len(self._buffer) < self._limit:
            self._buffer.append(event)
        else:
            self.dropped += 1

    def link(self, bus: EventBus, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        link = _BusLink(self, bus, loop)
        self._links.append(link)
        link.sync()

        def unlink() -> None:
            if link in self._links:
                self._links.remove(link)
            if link.unsubscribe is not None:
                link.unsubscribe()
                link.unsubscribe = None

        return unlink

    def want(self, kinds: frozenset[type]) -> None:
        """Forward *kinds* from now on (what the parent's subscribers want)."""
        if kinds != self.worker_kinds:
            self.worker_kinds = kinds
            for link in self._links:
                link.sync()
            if not kinds:
                self._buffer = []

    def take(self) -> tuple[list[Any], int]:
        """The events collected since the last call, and how many were dropped."""
        batch, self._buffer = self._buffer, []
        dropped, self.dropped = self.dropped, 0
        return batch, dropped
