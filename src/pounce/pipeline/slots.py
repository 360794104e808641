"""The slots of the request queue (``--max-concurrency``) and the FIFO of requests waiting.

:class:`SlotPool` is the one structure every thread worker of a server shares (a process
worker has its own, holding its share of the limit: :func:`process_share`). It only counts and
orders; what a waiting request does meanwhile is :mod:`pounce.pipeline.request_queue`'s.

A waiter is a future on its own worker's loop. The thread that frees a slot hands it straight
to the oldest waiter -- the count of requests in the app does not drop and rise again, so a
newcomer cannot overtake the queue -- and wakes it with ``call_soon_threadsafe``. Nothing
relies on the GIL: every change is made under the pool's lock, held for a few attribute
updates, never across a call into another loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["FULL", "SHED_HOLD", "SlotPool", "Slots", "Waiter", "process_share", "resolve"]

#: Readiness stays "not ready" this long after the last shed request (seconds).
SHED_HOLD: Final = 1.0

# Waiter states (changed only under the pool's lock).
WAITING: Final = 0
GRANTED: Final = 1
LEFT: Final = 2


class Waiter:
    """One queued request: a future on its worker's loop, resolved True when given a slot."""

    __slots__ = ("future", "loop", "state", "ticket")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[bool] = loop.create_future()
        self.state = WAITING
        #: Its place in a shared table's server-wide order (SharedSlotTable only).
        self.ticket = 0

    def wake(self) -> bool:
        """Tell the waiter it holds a slot now; False when its loop is gone (nobody to tell)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            resolve(self.future, True)
            return True
        try:
            self.loop.call_soon_threadsafe(resolve, self.future, True)
        except RuntimeError:  # the worker's loop closed meanwhile
            return False
        return True


def resolve(future: asyncio.Future[bool], granted: bool) -> None:
    if not future.done():
        future.set_result(granted)


class _Full:
    """The answer of :meth:`SlotPool.acquire` when the queue is full."""

    __slots__ = ()


FULL: Final = _Full()


class Slots(Protocol):
    """What the request queue needs of its slots: :class:`SlotPool` (threads of one process)
    or :class:`~pounce.pipeline.shared_slots.SharedSlotTable` (worker processes)."""

    limit: int
    max_queue: int

    @property
    def in_flight(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    def acquire(self, loop: asyncio.AbstractEventLoop) -> Waiter | _Full | None: ...

    def release(self) -> None: ...

    def leave(self, waiter: Waiter) -> bool: ...

    def note_shed(self) -> None: ...

    def shedding_now(self) -> bool: ...

    def watch(self, notify: Callable[[], None]) -> Callable[[], None]: ...


class SlotPool:
    """Slots for requests inside the app and the FIFO of requests waiting for one.

    Safe from any thread: every change happens under one lock, held for a few attribute
    updates only. ``in_flight`` and ``waiting`` may be read without it for a hint (an int is
    read whole even without a GIL); decisions are taken under it.
    """

    def __init__(self, limit: int, max_queue: int) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self._lock = threading.Lock()
        #: Requests holding a slot (inside the app, or handed one and about to start).
        self.in_flight = 0
        #: Requests waiting in the queue.
        self.waiting = 0
        self._waiters: deque[Waiter] = deque()
        #: Waiters that left (timed out, disconnected) but are still in the deque.
        self._dead = 0
        #: Requests shed since start (queue full or timed out).
        self.shed_total = 0
        self._last_shed = -SHED_HOLD
        #: True from a shed until :meth:`shedding_now` finds the hold over.
        self.shedding = False
        self._watchers: list[Callable[[], None]] = []

    # -- slots ---------------------------------------------------------------------------------

    def acquire(self, loop: asyncio.AbstractEventLoop) -> Waiter | _Full | None:
        """A slot now (None), a place in the queue (a :class:`Waiter`), or :data:`FULL`."""
        with self._lock:
            if self.in_flight < self.limit:
                self.in_flight += 1
                return None
            if self.waiting < self.max_queue:
                waiter = Waiter(loop)
                self._waiters.append(waiter)
                self.waiting += 1
                return waiter
        self.note_shed()  # outside the lock: it takes it again
        return FULL

    def release(self) -> None:
        """A request left the app: its slot goes to the oldest waiter, or back to the pool."""
        while True:
            with self._lock:
                waiter = None
                waiters = self._waiters
                while waiters:
                    candidate = waiters.popleft()
                    if candidate.state == WAITING:
                        candidate.state = GRANTED
                        self.waiting -= 1
                        waiter = candidate
                        break
                    self._dead -= 1
                if waiter is None:
                    self.in_flight -= 1
                    return
            if waiter.wake():
                return
            # Its worker is gone: the slot is still ours to hand on.

    def leave(self, waiter: Waiter) -> bool:
        """Take *waiter* out of the queue; False when it was handed a slot already.

        Then the waiter's own task holds that slot and must :meth:`release` it. Idempotent.
        """
        with self._lock:
            state = waiter.state
            if state == WAITING:
                waiter.state = LEFT
                self.waiting -= 1
                self._dead += 1
                if self._dead > 64 and self._dead > self.waiting:
                    # Left waiters are dropped when they reach the head of the queue; if
                    # clients keep leaving while no slot frees, compact instead of growing.
                    self._waiters = deque(w for w in self._waiters if w.state == WAITING)
                    self._dead = 0
                return True
            return state == LEFT

    # -- shedding ------------------------------------------------------------------------------

    def would_shed(self) -> bool:
        """A hint, without the lock: all slots busy and the queue full."""
        return self.in_flight >= self.limit and self.waiting >= self.max_queue

    def note_shed(self) -> None:
        """Count a shed request and, if shedding just began, tell every worker."""
        now = time.monotonic()
        with self._lock:
            self.shed_total += 1
            self._last_shed = now
            began = not self.shedding
            self.shedding = True
            watchers = tuple(self._watchers) if began else ()
        for notify in watchers:
            notify()

    def shedding_now(self) -> bool:
        """Whether readiness should still say "not ready" (and clear the flag when not).

        The rule: from a shed request until :data:`SHED_HOLD` seconds passed without another
        one and the queue is no longer full.
        """
        now = time.monotonic()
        with self._lock:
            full = self.in_flight >= self.limit and self.waiting >= self.max_queue
            if full or now - self._last_shed < SHED_HOLD:
                return True
            self.shedding = False
            return False

    def watch(self, notify: Callable[[], None]) -> Callable[[], None]:
        """Call *notify* (from any thread) whenever shedding begins; returns the unwatch."""
        with self._lock:
            self._watchers.append(notify)
            shedding = self.shedding
        if shedding:
            notify()

        def unwatch() -> None:
            with self._lock:
                if notify in self._watchers:
                    self._watchers.remove(notify)

        return unwatch


def process_share(total: int, workers: int, slot: int) -> int:
    """Worker *slot*'s part of *total* split as evenly as can be over *workers* processes."""
    base, extra = divmod(total, workers)
    return base + (1 if slot % workers < extra else 0)
