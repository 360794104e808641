"""The request queue without sockets: FIFO slots, shedding, and a slot released exactly once.

Driven through the real dispatcher (``tests.pipeline.fakes``); every path a queued request can
take ends with the pool's counts back where they started.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests.pipeline.fakes import INFO, make_context, settle, start

from pounce.asgi.types import Scope
from pounce.pipeline import request_queue, slots
from pounce.pipeline.admission import HealthProbes
from pounce.pipeline.context import WorkerContext
from pounce.pipeline.cycle import RequestCycle
from pounce.pipeline.events import (
    REJECTED_QUEUE_FULL,
    REJECTED_QUEUE_TIMEOUT,
    RequestCompleted,
    RequestRejected,
)
from pounce.pipeline.request_queue import QueuedCycle, RequestQueue
from pounce.pipeline.slots import FULL, SlotPool, Waiter, process_share

RETRY = ((b"retry-after", b"1"),)


class Gate:
    """An app whose requests wait until the test opens their path's gate."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.fail: set[str] = set()

    def open(self, path: str) -> None:
        self.gates.setdefault(path, asyncio.Event()).set()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope["path"]
        self.entered.append(path)
        await self.gates.setdefault(path, asyncio.Event()).wait()
        if path in self.fail:
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": path.encode()})


def queued_context(
    loop: asyncio.AbstractEventLoop, app: Any, events: list[Any] | None = None, **options: Any
) -> WorkerContext:
    options.setdefault("max_concurrency", 1)
    options.setdefault("max_queue", 2)
    return make_context(loop, app, events=events, **options)


def pool_of(ctx: WorkerContext) -> SlotPool:
    assert ctx.slot_pool is not None
    return ctx.slot_pool


def test_off_means_plain_cycles_and_no_hook(loop: asyncio.AbstractEventLoop) -> None:
    ctx = make_context(loop, Gate())
    assert ctx.slot_pool is None
    assert ctx.dispatcher.queue is None  # type: ignore[attr-defined]
    assert ctx.dispatcher.admission == ()  # type: ignore[attr-defined]
    cycle, _ = start(ctx)
    assert type(cycle) is RequestCycle


def test_the_queue_is_the_last_hook(loop: asyncio.AbstractEventLoop) -> None:
    ctx = queued_context(loop, Gate(), ready_path="/ready", limit_concurrency=50)
    hooks = ctx.dispatcher.admission  # type: ignore[attr-defined]
    assert isinstance(hooks[0], HealthProbes)
    assert isinstance(hooks[-1], RequestQueue)


def test_fifo_and_shed_when_full(loop: asyncio.AbstractEventLoop) -> None:
    app = Gate()
    events: list[Any] = []
    ctx = queued_context(loop, app, events)
    first, _ = start(ctx, raw_path=b"/a")
    settle(loop)
    second, second_channel = start(ctx, raw_path=b"/b")
    third, _ = start(ctx, raw_path=b"/c")
    settle(loop)
    assert app.entered == ["/a"]
    assert ctx.queue_depth == 2
    assert (pool_of(ctx).in_flight, pool_of(ctx).waiting) == (1, 2)
    # The queue is full: the fourth is shed by the admission hook, without a task.
    shed, shed_channel = start(ctx, raw_path=b"/d")
    assert shed.task is None
    assert shed_channel.errors == [(503, RETRY)]
    assert ctx.shedding is False  # raised on the loop, by the pool's notice
    settle(loop)
    assert ctx.shedding is True
    app.open("/a")
    settle(loop)
    assert app.entered == ["/a", "/b"]  # first come, first served
    app.open("/b")
    app.open("/c")
    settle(loop)
    assert app.entered == ["/a", "/b", "/c"]
    assert second_channel.body_bytes == b"/b"
    assert (pool_of(ctx).in_flight, pool_of(ctx).waiting, ctx.queue_depth) == (0, 0, 0)
    assert ctx.active_requests == 0
    assert all(c.finished for c in (first, second, third))
    rejected = [e for e in events if isinstance(e, RequestRejected)]
    assert [(e.status, e.reason, e.path) for e in rejected] == [(503, REJECTED_QUEUE_FULL, "/d")]
    waits = {e.path: e.queue_wait for e in events if isinstance(e, RequestCompleted)}
    assert waits["/a"] == 0.0
    assert waits["/b"] > 0.0 and waits["/c"] > 0.0
    assert isinstance(second, QueuedCycle) and second.queue_wait == waits["/b"]


def test_queue_timeout_sheds_without_calling_the_app(loop: asyncio.AbstractEventLoop) -> None:
    app = Gate()
    events: list[Any] = []
    ctx = queued_context(loop, app, events, queue_timeout=0.05)
    start(ctx, raw_path=b"/a")
    waiting, channel = start(ctx, raw_path=b"/b")
    loop.run_until_complete(asyncio.sleep(0.15))
    assert app.entered == ["/a"]
    assert channel.errors == [(503, RETRY)]
    assert channel.calls[-1] == "app_finished"
    assert waiting.finished and waiting.task is None
    assert pool_of(ctx).waiting == 0 and ctx.queue_depth == 0
    assert ctx.active_requests == 1
    (rejected,) = [e for e in events if isinstance(e, RequestRejected)]
    assert (rejected.reason, rejected.path) == (REJECTED_QUEUE_TIMEOUT, "/b")
    (completed,) = [e for e in events if isinstance(e, RequestCompleted)]
    assert completed.status == 503 and completed.queue_wait >= 0.04
    app.open("/a")
    settle(loop)
    assert pool_of(ctx).in_flight == 0 and ctx.active_requests == 0


def test_disconnect_while_queued_leaves_the_queue(loop: asyncio.AbstractEventLoop) -> None:
    app = Gate()
    ctx = queued_context(loop, app)
    start(ctx, raw_path=b"/a")
    gone, channel = start(ctx, raw_path=b"/gone")
    later, _ = start(ctx, raw_path=b"/later")
    settle(loop)
    gone.feed_disconnect()
    settle(loop)
    assert channel.errors == [] and channel.calls[-1] == "app_finished"
    assert gone.finished
    assert (pool_of(ctx).waiting, ctx.queue_depth) == (1, 1)
    app.open("/a")
    app.open("/later")
    settle(loop)
    assert app.entered == ["/a", "/later"]  # the slot skipped the one that left
    assert later.finished
    assert (pool_of(ctx).in_flight, pool_of(ctx).waiting, ctx.active_requests) == (0, 0, 0)


def test_a_client_closing_while_queued_is_gone(loop: asyncio.AbstractEventLoop) -> None:
    # Over TCP a client that closed looks like one that half-closed: either way it leaves.
    app = Gate()
    ctx = queued_context(loop, app)
    start(ctx, raw_path=b"/a")
    closed, channel = start(ctx, raw_path=b"/closed")
    settle(loop)
    closed.feed_eof()
    settle(loop)
    assert closed.disconnected and closed.finished
    assert channel.aborts == 1 and channel.calls[-1] == "app_finished"
    assert (pool_of(ctx).waiting, ctx.queue_depth) == (0, 0)
    app.open("/a")
    settle(loop)
    assert app.entered == ["/a"]
    assert (pool_of(ctx).in_flight, ctx.active_requests) == (0, 0)


def test_disconnect_just_as_the_slot_arrives(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Gate()
    ctx = queued_context(loop, app)
    pool = pool_of(ctx)
    start(ctx, raw_path=b"/a")
    gone, _ = start(ctx, raw_path=b"/gone")
    settle(loop)
    release = pool.release

    def release_then_disconnect() -> None:
        monkeypatch.setattr(pool, "release", release)  # once
        release()  # hands the slot to /gone, whose task has not resumed yet
        assert pool.in_flight == 1 and pool.waiting == 0
        gone.feed_disconnect()

    monkeypatch.setattr(pool, "release", release_then_disconnect)
    app.open("/a")
    settle(loop)
    assert app.entered == ["/a"]
    assert (pool.in_flight, ctx.active_requests) == (0, 0)


def test_app_error_releases_the_slot(loop: asyncio.AbstractEventLoop) -> None:
    app = Gate()
    app.fail.add("/a")
    ctx = queued_context(loop, app)
    _, failing = start(ctx, raw_path=b"/a")
    start(ctx, raw_path=b"/b")
    settle(loop)
    app.open("/a")
    settle(loop)
    assert failing.errors == [(500, ())]
    assert app.entered == ["/a", "/b"]
    app.open("/b")
    settle(loop)
    assert (pool_of(ctx).in_flight, pool_of(ctx).waiting) == (0, 0)


def test_cancelled_while_queued(loop: asyncio.AbstractEventLoop) -> None:
    app = Gate()
    ctx = queued_context(loop, app)
    start(ctx, raw_path=b"/a")
    queued, channel = start(ctx, raw_path=b"/b")
    settle(loop)
    assert queued.task is not None
    queued.task.cancel()  # a forced close
    settle(loop)
    assert channel.aborts == 1 and channel.calls[-1] == "app_finished"
    assert (pool_of(ctx).in_flight, pool_of(ctx).waiting, ctx.queue_depth) == (1, 0, 0)
    app.open("/a")
    settle(loop)
    assert app.entered == ["/a"]
    assert (pool_of(ctx).in_flight, ctx.active_requests) == (0, 0)


def test_cancelled_after_the_slot_was_handed_over(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Gate()
    ctx = queued_context(loop, app)
    pool = pool_of(ctx)
    start(ctx, raw_path=b"/a")
    queued, _ = start(ctx, raw_path=b"/b")
    settle(loop)
    release = pool.release

    def release_then_cancel() -> None:
        monkeypatch.setattr(pool, "release", release)  # once
        release()
        assert queued.task is not None
        queued.task.cancel()  # before it resumed with its slot

    monkeypatch.setattr(pool, "release", release_then_cancel)
    app.open("/a")
    settle(loop)
    assert app.entered == ["/a"]
    assert pool.in_flight == 0


def test_cancelled_inside_the_app_and_before_the_first_step(
    loop: asyncio.AbstractEventLoop,
) -> None:
    app = Gate()
    ctx = queued_context(loop, app)
    running, _ = start(ctx, raw_path=b"/a")
    settle(loop)
    assert running.task is not None
    running.task.cancel()
    settle(loop)
    assert pool_of(ctx).in_flight == 0
    # Cancelled before it ever ran: it took no slot, so it holds none.
    unstarted, _ = start(ctx, raw_path=b"/b")
    assert unstarted.task is not None
    unstarted.task.cancel()
    settle(loop)
    assert app.entered == ["/a"]
    assert (pool_of(ctx).in_flight, pool_of(ctx).waiting) == (0, 0)


def test_readiness_while_shedding(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slots, "SHED_HOLD", 0.05)
    monkeypatch.setattr(request_queue, "SHED_HOLD", 0.05)
    app = Gate()
    ctx = queued_context(loop, app, max_queue=0, ready_path="/ready", health_path="/health")
    start(ctx, raw_path=b"/a")
    settle(loop)
    _, shed = start(ctx, raw_path=b"/b")
    assert shed.errors == [(503, RETRY)]
    settle(loop)
    # Probes bypass the queue: answered at once, readiness says "not ready".
    _, ready = start(ctx, raw_path=b"/ready")
    _, health = start(ctx, raw_path=b"/health")
    assert ready.errors[0][0] == 503 and ready.error_bodies == [b"not ready"]
    assert health.errors[0][0] == 200
    # Every slot still busy (and no queue): the queue counts as full, so still not ready.
    loop.run_until_complete(asyncio.sleep(0.15))
    assert ctx.shedding
    app.open("/a")
    loop.run_until_complete(asyncio.sleep(0.15))
    assert not ctx.shedding
    _, ready = start(ctx, raw_path=b"/ready")
    assert ready.errors[0][0] == 200


def test_websockets_take_no_slot_but_are_refused_while_shedding(
    loop: asyncio.AbstractEventLoop,
) -> None:
    ctx = queued_context(loop, Gate(), max_queue=0)
    queue = ctx.dispatcher.queue  # type: ignore[attr-defined]
    scope: Scope = {"type": "websocket", "path": "/ws"}
    assert queue.admit(scope, INFO) is None
    assert pool_of(ctx).in_flight == 0
    start(ctx, raw_path=b"/a")
    settle(loop)
    refusal = queue.admit(scope, INFO)
    assert refusal is not None and (refusal.status, refusal.reason) == (503, REJECTED_QUEUE_FULL)


def test_refused_websockets_do_not_prolong_shedding(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slots, "SHED_HOLD", 0.1)
    monkeypatch.setattr(request_queue, "SHED_HOLD", 0.1)
    app = Gate()
    ctx = queued_context(loop, app, max_queue=0)
    queue = ctx.dispatcher.queue  # type: ignore[attr-defined]
    start(ctx, raw_path=b"/a")
    settle(loop)
    start(ctx, raw_path=b"/shed")
    app.open("/a")
    settle(loop)
    assert ctx.shedding and pool_of(ctx).in_flight == 0
    scope: Scope = {"type": "websocket", "path": "/ws"}
    assert queue.admit(scope, INFO) is not None  # refused while shedding
    refused = 1
    while queue.admit(scope, INFO) is not None:  # a client retrying every 30 ms
        refused += 1
        assert refused < 40, "the retries kept the server shedding"
        loop.run_until_complete(asyncio.sleep(0.03))
    assert not ctx.shedding


def test_the_full_race_is_shed_from_the_task(loop: asyncio.AbstractEventLoop) -> None:
    # Both pass admission in the same loop pass; the queue fills before the second's task runs.
    app = Gate()
    events: list[Any] = []
    ctx = queued_context(loop, app, events, max_queue=0)
    start(ctx, raw_path=b"/a")
    late, channel = start(ctx, raw_path=b"/b")
    assert late.task is not None
    settle(loop)
    assert channel.errors == [(503, RETRY)] and channel.calls[-1] == "app_finished"
    assert late.finished and ctx.active_requests == 1
    assert [e.reason for e in events if isinstance(e, RequestRejected)] == [REJECTED_QUEUE_FULL]
    app.open("/a")
    settle(loop)
    assert pool_of(ctx).in_flight == 0


def test_a_waiter_whose_loop_closed_passes_its_slot_on(loop: asyncio.AbstractEventLoop) -> None:
    pool = SlotPool(1, 5)
    assert pool.acquire(loop) is None
    dead_loop = asyncio.new_event_loop()
    orphan = pool.acquire(dead_loop)
    dead_loop.close()
    heir = pool.acquire(loop)
    assert isinstance(orphan, Waiter) and isinstance(heir, Waiter)

    async def release() -> None:
        pool.release()

    loop.run_until_complete(release())
    assert heir.future.done() and heir.future.result() is True
    assert (pool.in_flight, pool.waiting) == (1, 0)


def test_left_waiters_do_not_pile_up(loop: asyncio.AbstractEventLoop) -> None:
    pool = SlotPool(1, 10)
    assert pool.acquire(loop) is None
    for _ in range(1000):
        waiter = pool.acquire(loop)
        assert isinstance(waiter, Waiter)
        assert pool.leave(waiter)
        assert pool.leave(waiter)  # idempotent
    assert pool.waiting == 0
    assert len(pool._waiters) <= 65
    assert pool.acquire(loop) is not FULL


def test_process_share_adds_up() -> None:
    for total in range(0, 20):
        for workers in range(1, 6):
            shares = [process_share(total, workers, slot) for slot in range(workers)]
            assert sum(shares) == total and max(shares) - min(shares) <= 1


@pytest.fixture
def fast_switching() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.usefixtures("fast_switching")
def test_threads_share_one_pool_without_losing_a_slot() -> None:
    """Four loops in four threads hammer one pool; the limit holds and every slot comes back."""
    limit, threads, per_thread = 3, 4, 400
    pool = SlotPool(limit, 8)
    inside = [0]
    peak = [0]
    count_lock = threading.Lock()
    outcomes: list[str] = []

    async def one(rng: random.Random) -> str:
        loop = asyncio.get_running_loop()
        ticket = pool.acquire(loop)
        if ticket is FULL:
            return "shed"
        if isinstance(ticket, Waiter):
            timer = loop.call_later(rng.choice((0.0005, 0.05)), _leave, ticket)
            try:
                granted = await ticket.future
            finally:
                timer.cancel()
            if not granted:
                return "timeout"
        with count_lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            await asyncio.sleep(rng.random() / 2000)
        finally:
            with count_lock:
                inside[0] -= 1
            pool.release()
        return "served"

    def _leave(waiter: Waiter) -> None:
        if pool.leave(waiter):
            slots.resolve(waiter.future, False)

    def run(seed: int) -> None:
        async def main() -> list[str]:
            rng = random.Random(seed)
            return list(await asyncio.gather(*(one(rng) for _ in range(per_thread))))

        result = asyncio.run(main())
        with count_lock:
            outcomes.extend(result)

    workers = [threading.Thread(target=run, args=(seed,)) for seed in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not any(worker.is_alive() for worker in workers)
    assert len(outcomes) == threads * per_thread
    # Every way through was taken: served after waiting or not, timed out, shed.
    assert {"served", "timeout", "shed"} <= set(outcomes)
    assert peak[0] <= limit
    assert (pool.in_flight, pool.waiting) == (0, 0)
