"""The shared slot table of worker processes: one limit and one FIFO across forked processes.

Children are forked with the table inherited (as the supervisor's workers are); each binds its
own cell on its own event loop and reports over a pipe. Nothing here polls: a waiter in one
process is woken by a release in another through its cell's wake-up descriptor.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest

from pounce.pipeline.shared_slots import SharedSlotTable
from pounce.pipeline.slots import FULL, Waiter

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def table() -> Iterator[SharedSlotTable]:
    table = SharedSlotTable(1, 4, cells=4)
    yield table
    table.close()


def _wait_for(conn: Connection, expected: str, timeout: float = 10.0) -> Any:
    assert conn.poll(timeout), f"no {expected!r} from the child"
    message = conn.recv()
    assert message[0] == expected, message
    return message


def test_one_process_fifo_full_leave_and_counts(table: SharedSlotTable) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        cell = table.allocate()
        assert cell == 0
        table.bind(cell, loop)
        try:
            assert table.acquire(loop) is None
            waiters = [table.acquire(loop) for _ in range(4)]
            assert all(isinstance(w, Waiter) for w in waiters)
            assert table.acquire(loop) is FULL
            assert table.shed_total == 1 and table.waiting == 4
            first, second, third, fourth = waiters
            assert isinstance(second, Waiter) and isinstance(first, Waiter)
            assert table.leave(second)  # left before its turn: out of the order
            table.release()
            assert await asyncio.wait_for(first.future, 5)
            assert not table.leave(first)  # granted: it holds the slot now
            table.release()
            assert isinstance(third, Waiter) and await asyncio.wait_for(third.future, 5)
            table.release()
            assert isinstance(fourth, Waiter) and await asyncio.wait_for(fourth.future, 5)
            table.release()
            assert (table.in_flight, table.waiting, table.held_by(cell)) == (0, 0, 0)
        finally:
            table.unbind()

    asyncio.run(main())


def test_left_entries_are_compacted_away(table: SharedSlotTable) -> None:
    # Many waiters leaving while the slot stays busy must not exhaust the ring.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        cell = table.allocate()
        assert cell is not None
        table.bind(cell, loop)
        try:
            assert table.acquire(loop) is None
            for _ in range(200):
                waiter = table.acquire(loop)
                assert isinstance(waiter, Waiter)
                keep = table.acquire(loop)
                assert isinstance(keep, Waiter)
                assert table.leave(waiter)
                assert table.leave(keep)
            last = table.acquire(loop)
            assert isinstance(last, Waiter)
            table.release()
            assert await asyncio.wait_for(last.future, 5)
            table.release()
            assert (table.in_flight, table.waiting) == (0, 0)
        finally:
            table.unbind()

    asyncio.run(main())


def _queue_in_child(table: SharedSlotTable, cell: int, conn: Connection) -> None:
    """Child: queue one request, report it, then report the grant and release after a pause."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        table.bind(cell, loop)
        shed = asyncio.Event()
        table.watch(shed.set)
        waiter = table.acquire(loop)
        assert isinstance(waiter, Waiter)
        conn.send(("queued",))
        granted = await asyncio.wait_for(waiter.future, 10)
        conn.send(("granted", granted, time.monotonic()))
        await asyncio.sleep(0.3)
        conn.send(("releasing", time.monotonic()))
        table.release()
        await asyncio.wait_for(shed.wait(), 10)  # the parent's shed, told through the wake-up
        conn.send(("shed seen",))

    try:
        asyncio.run(main())
    except BaseException as exc:
        conn.send(("failed", repr(exc)))
    os._exit(0)


def test_fifo_across_two_processes_and_the_wake_up(table: SharedSlotTable) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        mine, theirs = table.allocate(), table.allocate()
        assert mine is not None and theirs is not None
        table.bind(mine, loop)
        parent_end, child_end = FORK.Pipe()
        try:
            assert table.acquire(loop) is None  # the only slot, held here
            child = FORK.Process(target=_queue_in_child, args=(table, theirs, child_end))
            child.start()
            _wait_for(parent_end, "queued")
            own = table.acquire(loop)  # queued after the child's request
            assert isinstance(own, Waiter)
            assert table.waiting == 2
            table.release()  # the oldest waiter is the child's, in another process
            await asyncio.sleep(0.1)
            assert not own.future.done()
            _, granted, _ = await loop.run_in_executor(None, _wait_for, parent_end, "granted")
            assert granted is True
            _, released_at = await loop.run_in_executor(None, _wait_for, parent_end, "releasing")
            assert await asyncio.wait_for(own.future, 10)  # woken by the child's release
            assert time.monotonic() >= released_at
            assert table.held_by(theirs) == 0 and table.held_by(mine) == 1
            # Queue full: a shed here reaches the child's watcher through its descriptor.
            for _ in range(4):
                assert isinstance(table.acquire(loop), Waiter)
            assert table.acquire(loop) is FULL
            await loop.run_in_executor(None, _wait_for, parent_end, "shed seen")
            child.join(10)
            table.reclaim(theirs)
        finally:
            table.unbind()

    asyncio.run(main())


def _hold_and_hang(table: SharedSlotTable, cell: int, conn: Connection, take_lock: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        table.bind(cell, loop)
        assert table.acquire(loop) is None
        if take_lock:
            table._enter()  # and never leave it
        conn.send(("holding",))
        await asyncio.sleep(60)

    asyncio.run(main())


@pytest.mark.parametrize("take_lock", [False, True], ids=["slot", "slot and lock"])
def test_a_killed_process_gives_its_slot_and_lock_back(
    table: SharedSlotTable, take_lock: bool
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        mine, theirs = table.allocate(), table.allocate()
        assert mine is not None and theirs is not None
        parent_end, child_end = FORK.Pipe()
        child = FORK.Process(target=_hold_and_hang, args=(table, theirs, child_end, take_lock))
        child.start()
        await loop.run_in_executor(None, _wait_for, parent_end, "holding")
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(10)
        assert table.held_by(theirs) == 1 and table.in_flight == 1
        # What the supervisor does when it sees the worker gone (it may hold the lock).
        began = time.monotonic()
        assert table.reclaim(theirs) == 1
        assert time.monotonic() - began < 5
        assert (table.in_flight, table.held_by(theirs)) == (0, 0)
        table.bind(mine, loop)
        try:
            assert table.acquire(loop) is None  # the lock works again, the slot is free
            table.release()
        finally:
            table.unbind()

    asyncio.run(main())


def test_a_slot_held_by_a_dead_process_goes_to_the_next_waiter(table: SharedSlotTable) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        mine, theirs = table.allocate(), table.allocate()
        assert mine is not None and theirs is not None
        parent_end, child_end = FORK.Pipe()
        child = FORK.Process(target=_hold_and_hang, args=(table, theirs, child_end, False))
        child.start()
        await loop.run_in_executor(None, _wait_for, parent_end, "holding")
        table.bind(mine, loop)
        try:
            waiter = table.acquire(loop)
            assert isinstance(waiter, Waiter)
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(10)
            table.reclaim(theirs)  # the supervisor's call: the slot is granted to us ...
            assert await asyncio.wait_for(waiter.future, 5)  # ... and our loop is woken
            assert table.held_by(mine) == 1 and table.in_flight == 1
            table.release()
            assert table.in_flight == 0
        finally:
            table.unbind()

    asyncio.run(main())


def test_reclaim_drops_a_dead_process_from_the_order(table: SharedSlotTable) -> None:
    # A dead process's waiters leave the FIFO: the slot skips them.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        mine, theirs = table.allocate(), table.allocate()
        assert mine is not None and theirs is not None
        table.bind(mine, loop)
        parent_end, child_end = FORK.Pipe()
        try:
            assert table.acquire(loop) is None
            child = FORK.Process(target=_queue_in_child, args=(table, theirs, child_end))
            child.start()
            await loop.run_in_executor(None, _wait_for, parent_end, "queued")
            own = table.acquire(loop)
            assert isinstance(own, Waiter)
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(10)
            assert table.reclaim(theirs) == 0
            assert table.waiting == 1
            table.release()
            assert await asyncio.wait_for(own.future, 5)
            table.release()
            assert (table.in_flight, table.waiting) == (0, 0)
        finally:
            table.unbind()

    asyncio.run(main())


def _spawned_child(table: SharedSlotTable, cell: int, conn: Connection) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        table.bind(cell, loop)
        assert table.acquire(loop) is None  # the second of two slots
        conn.send(("holding",))
        waiter = table.acquire(loop)
        assert isinstance(waiter, Waiter)
        conn.send(("queued",))
        assert await asyncio.wait_for(waiter.future, 10)  # woken by the parent's release
        table.release()
        table.release()
        conn.send(("done",))

    asyncio.run(main())


def test_spawned_processes_attach_by_name_and_get_their_wake_up() -> None:
    table = SharedSlotTable(2, 4, cells=4, sharing="spawn")
    try:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            mine, theirs = table.allocate(), table.allocate()
            assert mine is not None and theirs is not None
            table.bind(mine, loop)
            spawn = multiprocessing.get_context("spawn")
            parent_end, child_end = spawn.Pipe()
            try:
                assert table.acquire(loop) is None
                child = spawn.Process(target=_spawned_child, args=(table, theirs, child_end))
                child.start()
                await loop.run_in_executor(None, _wait_for, parent_end, "holding")
                await loop.run_in_executor(None, _wait_for, parent_end, "queued")
                assert table.in_flight == 2 and table.waiting == 1
                table.release()
                await loop.run_in_executor(None, _wait_for, parent_end, "done")
                child.join(10)
                assert (table.in_flight, table.waiting) == (0, 0)
            finally:
                table.unbind()

        asyncio.run(main())
    finally:
        table.close()


def _hammer(table: SharedSlotTable, cell: int, inside: Any, conn: Connection) -> None:
    """Child: 150 requests with random holds, waits, timeouts and sheds; counts what got in."""


    async def one(loop: asyncio.AbstractEventLoop, rng: random.Random) -> str:
        ticket = table.acquire(loop)
        if ticket is FULL:
            return "shed"
        if isinstance(ticket, Waiter):
            try:
                granted = await asyncio.wait_for(asyncio.shield(ticket.future), rng.random() / 50)
            except TimeoutError:
                if table.leave(ticket):
                    return "timed out"
                granted = await ticket.future  # granted in the very moment it gave up
            assert granted
        with inside.get_lock():
            inside.value += 1
            over = inside.value > table.limit
        await asyncio.sleep(rng.random() / 500)
        with inside.get_lock():
            inside.value -= 1
        table.release()
        return "over" if over else "served"

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        table.bind(cell, loop)
        rng = random.Random(cell)
        tasks = []
        for _ in range(150):
            tasks.append(asyncio.ensure_future(one(loop, rng)))
            await asyncio.sleep(rng.random() / 2000)
        return list(await asyncio.gather(*tasks))

    try:
        conn.send(("done", asyncio.run(main())))
    except BaseException as exc:
        conn.send(("failed", repr(exc)))
    os._exit(0)


def test_three_processes_never_exceed_the_limit_and_give_every_slot_back() -> None:
    table = SharedSlotTable(3, 6, cells=4)
    inside = FORK.Value("i", 0)
    try:
        children = []
        for _ in range(3):
            cell = table.allocate()
            assert cell is not None
            parent_end, child_end = FORK.Pipe()
            child = FORK.Process(target=_hammer, args=(table, cell, inside, child_end))
            child.start()
            children.append((child, parent_end))
        outcomes: list[str] = []
        for child, parent_end in children:
            _, results = _wait_for(parent_end, "done", timeout=60)
            outcomes += results
            child.join(10)
        assert "over" not in outcomes
        assert outcomes.count("served") >= 3
        assert {"shed", "timed out"} & set(outcomes)  # the queue was really contended
        assert (table.in_flight, table.waiting) == (0, 0)
        assert all(table.held_by(cell) == 0 for cell in range(4))
    finally:
        table.close()


def test_a_lock_left_by_another_dead_process_is_taken_over_too() -> None:
    # Two workers die; the one holding the lock is reclaimed second. The first reclaim must
    # not wait for ever on a lock whose holder is recorded as alive (not yet reclaimed).
    table = SharedSlotTable(2, 4, cells=4)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        first, second = table.allocate(), table.allocate()
        assert first is not None and second is not None
        children = []
        for cell, take_lock in ((first, False), (second, True)):
            parent_end, child_end = FORK.Pipe()
            child = FORK.Process(target=_hold_and_hang, args=(table, cell, child_end, take_lock))
            child.start()
            await loop.run_in_executor(None, _wait_for, parent_end, "holding")
            children.append(child)
        for child in children:
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(10)
        began = time.monotonic()
        assert table.reclaim(first) == 1
        assert time.monotonic() - began < 10
        assert table.reclaim(second) == 1
        assert table.in_flight == 0

    try:
        asyncio.run(main())
    finally:
        table.close()
