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
from typing import Any

from pounce.pipeline.events import EVENT_TYPES, SERVER_EVENT_TYPES, EventBus, EventHandler

__all__ = ["ALL_EVENT_TYPES", "DEFAULT_BUFFER_SIZE", "EventHub"]

logger = logging.getLogger("pounce.error")

#: Every event kind a hub subscriber may ask for.
ALL_EVENT_TYPES: tuple[type, ...] = (*SERVER_EVENT_TYPES, *EVENT_TYPES)
#: Events kept per subscriber while its handler is busy; later ones are dropped and counted.
DEFAULT_BUFFER_SIZE = 10_000
#: How long a stopping server waits for handlers to catch up before leaving them behind.
DRAIN_TIMEOUT = 5.0


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


class _BusLink:
    """Forwards one worker bus's events to the hub while some subscriber wants them."""

    __slots__ = ("bus", "hub", "kinds", "loop", "unsubscribe")

    def __init__(self, hub: EventHub, bus: EventBus, loop: asyncio.AbstractEventLoop) -> None:
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
        for link in links:
            link.sync_soon()

        def unsubscribe() -> None:
            with self._lock:
                if subscriber not in self._subscribers:
                    return
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)
                self._retired_dropped += subscriber.dropped
                subscriber.buffer = []
                links = self._rebuild()
            for link in links:
                link.sync_soon()

        return unsubscribe

    def _rebuild(self) -> list[_BusLink]:
        """Republish the lookup tables (lock held); returns the buses to resynchronise."""
        by_kind: dict[type, tuple[_Subscriber, ...]] = {}
        for subscriber in self._subscribers:
            for kind in subscriber.kinds:
                by_kind[kind] = (*by_kind.get(kind, ()), subscriber)
        self._by_kind = by_kind
        worker_kinds = frozenset(kind for kind in by_kind if kind in EVENT_TYPES)
        if worker_kinds == self.worker_kinds:
            return []
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

    @property
    def dropped(self) -> int:
        """Events dropped so far for subscribers that were full (cheap: for metrics)."""
        with self._lock:
            return self._retired_dropped + sum(s.dropped for s in self._subscribers)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            subscribers = [
                {"handler": repr(s.handler), "dropped": s.dropped, "queued": len(s.buffer)}
                for s in self._subscribers
            ]
            dropped = self._retired_dropped + sum(s.dropped for s in self._subscribers)
        return {"events_dropped": dropped, "event_subscribers": subscribers}
