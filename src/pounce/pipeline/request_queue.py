"""``--max-concurrency``, ``--max-queue``, ``--queue-timeout``: a FIFO queue in front of the app.

At most *N* requests are inside the app at once; the next ones wait, first come first served
across every connection, for a slot to be handed to them. When *M* already wait, or a request
waited ``--queue-timeout``, it is shed: ``503`` with ``Retry-After``, and the app never sees it.
See ``docs/load-shedding.md``.

Three pieces:

* :class:`~pounce.pipeline.slots.SlotPool` (its own module) holds the count of requests inside
  the app and the FIFO of waiters, shared by every thread worker of the server; worker
  processes share :class:`~pounce.pipeline.shared_slots.SharedSlotTable`, the same in shared
  memory, so the limit and the FIFO are server-wide in both.
* :class:`RequestQueue`, one per worker: the last admission hook (it sheds outright when the
  queue is full, so an overloaded server refuses without creating a task) and the readiness
  flag :attr:`~pounce.pipeline.context.WorkerContext.shedding`.
* :class:`QueuedCycle`, the request cycle the dispatcher creates while the queue is on: its
  task first waits for a slot, then runs the app, then releases the slot, once, whatever way
  the request ends. With the queue off the dispatcher creates plain
  :class:`~pounce.pipeline.cycle.RequestCycle` objects and nothing here runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Final

from pounce.pipeline.admission import Rejection
from pounce.pipeline.cycle import RequestCycle
from pounce.pipeline.events import REJECTED_QUEUE_FULL, REJECTED_QUEUE_TIMEOUT, RequestRejected
from pounce.pipeline.slots import SHED_HOLD, Slots, Waiter, resolve

if TYPE_CHECKING:
    from pounce.asgi.types import ASGIApp, Scope
    from pounce.pipeline.connection import ConnectionInfo
    from pounce.pipeline.context import WorkerContext
    from pounce.pipeline.cycle import ResponseChannel

__all__ = ["QueuedCycle", "RequestQueue"]

#: ``Retry-After`` of a shed request, in seconds: soon, since queues drain fast.
RETRY_AFTER: Final = b"1"


class RequestQueue:
    """One worker's side of the queue: the admission hook and the readiness flag."""

    __slots__ = ("_checking", "ctx", "full", "pool", "timed_out", "timeout")

    def __init__(self, ctx: WorkerContext, pool: Slots) -> None:
        self.ctx = ctx
        self.pool = pool
        self.timeout = ctx.config.queue_timeout
        headers = ((b"retry-after", RETRY_AFTER),)
        self.full = Rejection(503, REJECTED_QUEUE_FULL, headers)
        self.timed_out = Rejection(503, REJECTED_QUEUE_TIMEOUT, headers)
        self._checking = False
        loop = ctx.loop
        ctx.cleanups.append(pool.watch(lambda: _call_soon(loop, self._shedding_began)))

    def cycle(
        self,
        ctx: WorkerContext,
        channel: ResponseChannel,
        scope: Scope,
        has_body: bool,
        expect_continue: bool,
    ) -> QueuedCycle:
        """The dispatcher's cycle factory while the queue is on."""
        cycle = QueuedCycle(ctx, channel, scope, has_body, expect_continue)
        # Set here rather than in an __init__ of its own: one frame less per request.
        cycle.queue = self
        cycle.queue_wait = 0.0
        cycle.waiter = None
        return cycle

    def admit(self, scope: Scope, connection: ConnectionInfo) -> Rejection | None:
        """Shed at once when the queue is full; refuse new WebSockets while shedding.

        A WebSocket never takes a slot (a session may last hours and would starve plain
        requests), but an overloaded server takes on no new sessions.
        """
        pool = self.pool
        # pool.would_shed() inlined (a hint without the lock): this runs for every request.
        if pool.in_flight >= pool.limit and pool.waiting >= pool.max_queue:
            pool.note_shed()
            return self.full
        if self.ctx.shedding and scope["type"] == "websocket":
            # Not counted as a shed: clients retrying their WebSocket must not keep the server
            # "not ready" after the overload is over.
            return self.full
        return None

    def expire(self, waiter: Waiter) -> None:
        """``--queue-timeout`` passed for *waiter* (its loop): shed it unless it got a slot."""
        pool = self.pool
        if pool.leave(waiter):
            pool.note_shed()
            resolve(waiter.future, False)

    def leave(self, waiter: Waiter) -> None:
        """The client went away while waiting (its loop)."""
        if self.pool.leave(waiter):
            resolve(waiter.future, False)

    def _shedding_began(self) -> None:
        self.ctx.shedding = True
        if not self._checking:
            self._checking = True
            self.ctx.loop.call_later(SHED_HOLD, self._check)

    def _check(self) -> None:
        if self.pool.shedding_now():
            self.ctx.loop.call_later(SHED_HOLD / 4, self._check)
        else:
            self._checking = False
            self.ctx.shedding = False


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # that worker's loop is closed
        loop.call_soon_threadsafe(callback)


class QueuedCycle(RequestCycle):
    """A request cycle whose app waits for a slot first (only while the queue is on)."""

    __slots__ = ("queue", "queue_wait", "waiter")

    #: The worker's queue (set by :meth:`RequestQueue.cycle`, which creates queued cycles).
    queue: RequestQueue
    #: Seconds spent waiting in the queue (RequestCompleted.queue_wait, Server-Timing).
    queue_wait: float
    #: This request's place in the queue while it waits.
    waiter: Waiter | None

    def feed_disconnect(self) -> None:
        super().feed_disconnect()
        waiter = self.waiter
        if waiter is not None:
            self.queue.leave(waiter)

    def feed_eof(self) -> None:
        if self.waiter is not None:
            # Closed while waiting: over TCP a client that gave up and closed looks just like
            # one that half-closed, and a queue must not keep (then run) requests nobody
            # waits for. The connection is dropped, the app never sees the request.
            self.feed_disconnect()
            return
        super().feed_eof()

    async def run(self, app: ASGIApp) -> None:
        # The slot is taken here, in the task, not in the dispatcher: a task cancelled before
        # its first step never runs this body, and so holds nothing it could leak.
        queue = self.queue
        pool = queue.pool
        ticket = pool.acquire(self.ctx.loop)
        if ticket is not None:
            if type(ticket) is not Waiter:
                self._refuse(queue.full)
                return
            assert isinstance(ticket, Waiter)
            if not await self._wait(queue, ticket):
                return
        try:
            await RequestCycle.run(self, app)  # not super(): per request, it costs a lookup
        finally:
            pool.release()

    async def _wait(self, queue: RequestQueue, waiter: Waiter) -> bool:
        """Wait for a slot; True when the app may run (holding it), else answered already."""
        ctx = self.ctx
        ctx.queue_depth += 1
        self.waiter = waiter
        started = perf_counter()
        timer = ctx.loop.call_later(queue.timeout, queue.expire, waiter)
        try:
            granted = await waiter.future
        except asyncio.CancelledError:
            # A forced close (or the loop going away) while queued.
            if not queue.pool.leave(waiter):
                queue.pool.release()  # handed a slot meanwhile: pass it on
            self._never_ran()
            raise
        finally:
            timer.cancel()
            self.waiter = None
            ctx.queue_depth -= 1
            self.queue_wait = perf_counter() - started
        if granted:
            if not self.disconnected:
                filters = self.filters
                if filters is not None:
                    filters.queue_waited(self.queue_wait)  # a Server-Timing filter reports it
                return True
            queue.pool.release()  # the client left just as its turn came
        if self.disconnected:
            self._never_ran()
        else:
            self._refuse(queue.timed_out)
        return False

    def _refuse(self, rejection: Rejection) -> None:
        """Shed from inside the task (the queue filled between admission and the task)."""
        ctx = self.ctx
        events = ctx.events
        scope = self.scope
        if events.active and events.wants(RequestRejected):
            events.emit(
                RequestRejected(
                    client=scope["client"],
                    status=rejection.status,
                    reason=rejection.reason,
                    method=scope["method"],
                    path=scope["path"],
                )
            )
        try:
            if not (self.disconnected or self.response_complete):
                self.answer_with_error(rejection.status, rejection.headers)
        finally:
            self._never_ran()

    def _never_ran(self) -> None:
        # What RequestCycle.run does when the app returns, for a request it never reached.
        if not self.response_complete:
            self.channel.abort()  # gone or half-closed: the connection has nothing more
        self._end()
