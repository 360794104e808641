"""The request queue's slots shared by worker *processes*: one server-wide ``--max-concurrency``.

Thread workers share one :class:`~pounce.pipeline.slots.SlotPool` in memory; processes share
nothing unless they map the same pages. :class:`SharedSlotTable` keeps the same counts and the
same FIFO in such pages, with the technique of ``--rate-limit``'s table
(:mod:`pounce.features.rate_limit`): an anonymous shared ``mmap`` made before the supervisor
forks, or a ``multiprocessing.shared_memory`` block attached by name where workers are spawned,
read and written as 8-byte integers through a ``memoryview``, every change under one
process-shared lock held for a few integer updates.

What is shared:

* the slots in use (``IN_USE``) and the requests waiting (``WAITING``), server-wide;
* a ticket counter and a ring of ``(ticket, cell)`` entries: every waiter of every process takes
  the next ticket and appends itself, so the ring *is* the server's FIFO. A released slot goes
  to the ring's head -- the oldest waiter of the server, whatever process it waits in;
* per *cell* (one per worker process, handed out by the supervisor): the slots it holds, the
  slots granted to it that it has not yet handed to its waiters, and its live ring entries.

Each cell has a wake-up descriptor (an ``eventfd``, or a pipe where there is none) created by
the supervisor before any fork, so every process can wake every other. A process that grants a
slot to another cell bumps the count and writes to that cell's descriptor; the owner's event
loop reads it (``add_reader``, no polling) and gives the granted slots to its oldest waiters,
which are exactly the ring entries granted, since a waiter that leaves (timeout, disconnect,
cancellation) takes its entry out of the ring under the same lock.

Dead workers: the supervisor calls :meth:`SharedSlotTable.reclaim` when it sees a worker exit;
the cell's entries leave the ring and the slots it held or was granted go to the next waiters.
A lock a killed process left held is taken over by the supervisor: the lock records its holder
(its cell), and a lock held for :data:`LOCK_TIMEOUT` by a cell that is dead (or by nobody
recorded) is treated as the supervisor's own, repaired (``IN_USE`` recomputed from the cells)
and released. Workers meanwhile keep waiting for it, logging once per timeout.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import mmap
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable
from multiprocessing import reduction, shared_memory
from typing import Any, Final, Literal

from pounce.pipeline.slots import FULL, GRANTED, LEFT, SHED_HOLD, WAITING, Waiter, _Full

__all__ = ["LOCK_TIMEOUT", "SharedSlotTable"]

logger = logging.getLogger("pounce.error")

#: How long anyone waits for the table's lock before suspecting a dead holder.
LOCK_TIMEOUT: Final = 0.5

# Header fields (8-byte integers).
_IN_USE: Final = 0
_WAITING: Final = 1
_NEXT_TICKET: Final = 2
_HEAD: Final = 3  # ring index of the oldest entry (live or left)
_TAIL: Final = 4  # ring index one past the newest entry
_OWNER: Final = 5  # cell + 1 of the process holding the lock (0: nobody recorded)
_SHED_TOTAL: Final = 6
_LAST_SHED: Final = 7  # monotonic nanoseconds (CLOCK_MONOTONIC is system-wide)
_SHEDDING: Final = 8
_SHED_EPOCH: Final = 9  # bumped each time shedding begins: other processes notice it
_HEADER: Final = 16
# Per-cell fields.
_HELD: Final = 0  # slots this cell holds, granted ones included (sum over cells == IN_USE)
_GRANTED: Final = 1  # granted by someone, not yet handed to one of its waiters
_ENTRIES: Final = 2  # its live entries in the ring
_ALIVE: Final = 3  # 1 while a worker process owns the cell
_CELL_FIELDS: Final = 4
#: Timeouts after which the supervisor takes the lock over whoever is recorded as its holder.
_TAKE_OVER_AFTER: Final = 4
#: An entry of the ring whose waiter left.
_GONE: Final = -1

Sharing = Literal["fork", "spawn"]


class SharedSlotTable:
    """Slots and FIFO for every worker process of a server (see the module docstring).

    Made by the supervisor before it starts workers, with *cells* wake-up descriptors (one per
    worker process that may run at once: a generation, the one draining, replacements). A
    worker process calls :meth:`bind` on its loop with the cell the supervisor gave it; from
    then on the table has :class:`~pounce.pipeline.slots.SlotPool`'s interface.
    """

    def __init__(
        self, limit: int, max_queue: int, *, cells: int, sharing: Sharing = "fork"
    ) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.cells = cells
        self.sharing: Sharing = sharing
        #: Ring length: twice the queue, so compaction (left entries dropped) is rare.
        self._ring = 2 * max_queue + 16
        self._cells_at = _HEADER
        self._tickets_at = _HEADER + cells * _CELL_FIELDS
        self._cells_of_ring_at = self._tickets_at + self._ring
        self._size = 8 * (self._cells_of_ring_at + self._ring)
        self._lock: Any = multiprocessing.get_context(sharing).Lock()
        self._owner = True
        self._shm: Any = None
        if sharing == "spawn":
            self._shm = shared_memory.SharedMemory(create=True, size=self._size)
            self._mmap: Any = _own_mapping(self._shm, self._size)
        else:
            self._mmap = mmap.mmap(-1, self._size)  # anonymous, MAP_SHARED: forks see it
        self._map()
        #: Per cell: (read end, write end); one eventfd serves as both.
        self._wake: list[tuple[int, int]] = [_wake_pair() for _ in range(cells)]
        self._free = list(range(cells))  # the supervisor's: cells no worker owns
        self._reset_local()

    def _map(self) -> None:
        self._ints: memoryview[int] = memoryview(self._mmap).cast("q")

    def _reset_local(self) -> None:
        """This process's own side: none until :meth:`bind`."""
        self._me = -1
        self._me_at = 0
        self._tag = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[Waiter] = deque()
        self._dead = 0
        self._watchers: list[Callable[[], None]] = []
        self._epoch_seen = 0
        self._lock_lost_logged = False

    # -- hints, read without the lock (an aligned 8-byte read is whole) --------------------

    @property
    def in_flight(self) -> int:
        """Requests holding a slot, server-wide."""
        return self._ints[_IN_USE]

    @property
    def waiting(self) -> int:
        """Requests waiting in the queue, server-wide."""
        return self._ints[_WAITING]

    @property
    def shed_total(self) -> int:
        return self._ints[_SHED_TOTAL]

    @property
    def shedding(self) -> bool:
        return bool(self._ints[_SHEDDING])

    def held_by(self, cell: int) -> int:
        """Slots *cell* holds (its requests in the app and slots granted to it)."""
        return self._ints[self._cells_at + cell * _CELL_FIELDS + _HELD]

    # -- a worker process's side ---------------------------------------------------------

    def bind(self, cell: int, loop: asyncio.AbstractEventLoop) -> None:
        """Serve *cell*'s waiters on *loop* (the worker's); wake-ups arrive by ``add_reader``."""
        self._me = cell
        self._me_at = self._cells_at + cell * _CELL_FIELDS
        self._tag = cell + 1
        self._loop = loop
        self._epoch_seen = self._ints[_SHED_EPOCH]
        loop.add_reader(self._wake[cell][0], self._on_wake)

    def unbind(self) -> None:
        loop = self._loop
        if loop is not None and self._me >= 0:
            with contextlib.suppress(Exception):
                loop.remove_reader(self._wake[self._me][0])
        self._loop = None

    def _enter(self) -> memoryview[int]:
        lock = self._lock
        if not lock.acquire(True, LOCK_TIMEOUT):
            self._wait_for_lock()
        ints = self._ints
        ints[_OWNER] = self._tag
        return ints

    def _exit(self, ints: memoryview[int]) -> None:
        ints[_OWNER] = 0
        self._lock.release()

    def _wait_for_lock(self) -> None:
        while not self._lock.acquire(True, LOCK_TIMEOUT):
            if not self._lock_lost_logged:
                self._lock_lost_logged = True
                logger.error(
                    "Request queue: its lock has been held for %.1f s, presumably by a worker "
                    "process killed while holding it; waiting for the supervisor to take it "
                    "back (it does when it sees the worker gone)",
                    LOCK_TIMEOUT,
                )
        self._lock_lost_logged = False

    def acquire(self, loop: asyncio.AbstractEventLoop) -> Waiter | _Full | None:
        """A slot now (None), a place in the server's queue (a :class:`Waiter`), or FULL."""
        # The path of every request while slots are free, so _enter/_exit are inlined; none
        # of these integer updates can raise.
        lock = self._lock
        if not lock.acquire(False) and not lock.acquire(True, LOCK_TIMEOUT):
            self._wait_for_lock()
        ints = self._ints
        ints[_OWNER] = self._tag
        if ints[_IN_USE] < self.limit:
            ints[_IN_USE] += 1
            ints[self._me_at] += 1  # _HELD is field 0
            ints[_OWNER] = 0
            lock.release()
            return None
        try:
            if ints[_WAITING] < self.max_queue:
                waiter = Waiter(loop)
                waiter.ticket = ticket = ints[_NEXT_TICKET]
                ints[_NEXT_TICKET] = ticket + 1
                self._append_locked(ints, ticket)
                ints[_WAITING] += 1
                ints[self._me_at + _ENTRIES] += 1
                self._waiters.append(waiter)
                return waiter
        finally:
            self._exit(ints)
        self.note_shed()
        return FULL

    def release(self) -> None:
        """A request of this process left the app: its slot goes to the server's oldest waiter."""
        lock = self._lock
        if not lock.acquire(False) and not lock.acquire(True, LOCK_TIMEOUT):
            self._wait_for_lock()
        ints = self._ints
        if not ints[_WAITING]:  # nobody waits anywhere: the slot is simply free again
            ints[self._me_at] -= 1
            ints[_IN_USE] -= 1
            lock.release()
            return
        ints[_OWNER] = self._tag
        try:
            target = self._pass_on_locked(ints, self._me)
            woken = self._take_grants_locked(ints) if target == self._me else None
        finally:
            self._exit(ints)
        if woken:
            self._wake_waiters(woken)
        elif target >= 0 and target != self._me:
            self._signal(target)

    def leave(self, waiter: Waiter) -> bool:
        """Take *waiter* out of the queue; False when a slot was granted to it (it holds it)."""
        ints = self._enter()
        try:
            woken = self._take_grants_locked(ints)  # a grant may be waiting to be seen
            state = waiter.state
            if state == WAITING:
                waiter.state = LEFT
                self._remove_entry_locked(ints, waiter.ticket)
                ints[_WAITING] -= 1
                ints[self._me_at + _ENTRIES] -= 1
                self._dead += 1
                if self._dead > 64 and self._dead > len(self._waiters) // 2:
                    self._waiters = deque(w for w in self._waiters if w.state == WAITING)
                    self._dead = 0
        finally:
            self._exit(ints)
        if woken:
            self._wake_waiters(woken)
        return state != GRANTED

    def _on_wake(self) -> None:
        """Our descriptor was written: slots were granted to us, or shedding began."""
        read_end = self._wake[self._me][0]
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(read_end, 4096)  # an eventfd's counter (8 bytes), or a pipe's bytes
        ints = self._enter()
        try:
            woken = self._take_grants_locked(ints)
            epoch = ints[_SHED_EPOCH]
        finally:
            self._exit(ints)
        if woken:
            self._wake_waiters(woken)
        if epoch != self._epoch_seen:
            self._epoch_seen = epoch
            for notify in tuple(self._watchers):
                notify()

    # -- under the lock --------------------------------------------------------------------

    def _append_locked(self, ints: memoryview[int], ticket: int) -> None:
        tail = ints[_TAIL]
        if tail == self._ring:
            tail = self._compact_locked(ints)
        ints[self._tickets_at + tail] = ticket
        ints[self._cells_of_ring_at + tail] = self._me
        ints[_TAIL] = tail + 1

    def _compact_locked(self, ints: memoryview[int]) -> int:
        """Drop left entries, moving the live ones to the front; the new tail."""
        tickets, owners = self._tickets_at, self._cells_of_ring_at
        kept = 0
        for index in range(ints[_HEAD], ints[_TAIL]):
            cell = ints[owners + index]
            if cell != _GONE:
                ints[tickets + kept] = ints[tickets + index]
                ints[owners + kept] = cell
                kept += 1
        ints[_HEAD] = 0
        ints[_TAIL] = kept
        return kept

    def _remove_entry_locked(self, ints: memoryview[int], ticket: int) -> None:
        # Tickets increase along the ring: a binary search finds the entry.
        tickets = self._tickets_at
        index = bisect.bisect_left(ints, ticket, tickets + ints[_HEAD], tickets + ints[_TAIL])
        ints[self._cells_of_ring_at + index - tickets] = _GONE

    def _pass_on_locked(self, ints: memoryview[int], cell: int) -> int:
        """*cell* gives up one slot: granted to the ring's head's cell (returned), or freed (-1)."""
        ints[self._cells_at + cell * _CELL_FIELDS + _HELD] -= 1
        if ints[_WAITING] == 0:
            ints[_IN_USE] -= 1
            return -1
        owners = self._cells_of_ring_at
        head = ints[_HEAD]
        target = ints[owners + head]
        while target == _GONE:
            head += 1
            target = ints[owners + head]
        head += 1
        if head == ints[_TAIL]:
            ints[_HEAD] = ints[_TAIL] = 0
        else:
            ints[_HEAD] = head
        ints[_WAITING] -= 1
        at = self._cells_at + target * _CELL_FIELDS
        ints[at + _ENTRIES] -= 1
        ints[at + _HELD] += 1
        ints[at + _GRANTED] += 1
        return int(target)

    def _take_grants_locked(self, ints: memoryview[int]) -> list[Waiter] | None:
        """Hand the slots granted to this process to its oldest waiters (to wake after)."""
        at = self._me_at + _GRANTED
        granted = ints[at]
        if not granted:
            return None
        ints[at] = 0
        woken: list[Waiter] = []
        waiters = self._waiters
        while granted and waiters:
            waiter = waiters.popleft()
            if waiter.state == WAITING:
                waiter.state = GRANTED
                woken.append(waiter)
                granted -= 1
            else:
                self._dead -= 1
        while granted:
            # Nobody here to take it (cannot happen while the ring and our waiters agree):
            # the slot goes on rather than being lost.
            granted -= 1
            target = self._pass_on_locked(ints, self._me)
            if target >= 0:
                self._signal(target)
        return woken

    # -- waking -----------------------------------------------------------------------------

    def _signal(self, cell: int) -> None:
        if cell >= len(self._wake):
            return  # closed: the server is gone
        try:
            os.write(self._wake[cell][1], _ONE)
        except (BlockingIOError, InterruptedError):
            pass  # a pipe full of wake-ups: one is pending anyway
        except OSError:
            logger.debug("request queue: could not wake cell %d", cell, exc_info=True)

    @staticmethod
    def _wake_waiters(woken: list[Waiter]) -> None:
        for waiter in woken:
            waiter.wake()

    # -- shedding ------------------------------------------------------------------------

    def note_shed(self) -> None:
        """Count a shed request; if shedding just began, tell every worker of the server."""
        now = time.monotonic_ns()
        ints = self._enter()
        try:
            ints[_SHED_TOTAL] += 1
            ints[_LAST_SHED] = now
            began = not ints[_SHEDDING]
            if began:
                ints[_SHEDDING] = 1
                ints[_SHED_EPOCH] += 1
                self._epoch_seen = ints[_SHED_EPOCH]
                alive = [
                    cell
                    for cell in range(self.cells)
                    if cell != self._me and ints[self._cells_at + cell * _CELL_FIELDS + _ALIVE]
                ]
        finally:
            self._exit(ints)
        if began:
            for cell in alive:
                self._signal(cell)
            for notify in tuple(self._watchers):
                notify()

    def shedding_now(self) -> bool:
        """Whether readiness should still say "not ready" (see SlotPool.shedding_now)."""
        now = time.monotonic_ns()
        ints = self._enter()
        try:
            full = ints[_IN_USE] >= self.limit and ints[_WAITING] >= self.max_queue
            if full or now - ints[_LAST_SHED] < SHED_HOLD * 1e9:
                return True
            ints[_SHEDDING] = 0
            return False
        finally:
            self._exit(ints)

    def watch(self, notify: Callable[[], None]) -> Callable[[], None]:
        """Call *notify* (on this process's loop) whenever shedding begins server-wide."""
        self._watchers.append(notify)
        if self._ints[_SHEDDING]:
            notify()

        def unwatch() -> None:
            if notify in self._watchers:
                self._watchers.remove(notify)

        return unwatch

    # -- the supervisor's side ------------------------------------------------------------

    def allocate(self) -> int | None:
        """A free cell for a new worker process (None when all are taken)."""
        if not self._free:
            return None
        cell = self._free.pop(0)
        read_end = self._wake[cell][0]
        with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
            os.set_blocking(read_end, False)
            os.read(read_end, 4096)  # a wake-up meant for the previous owner
        ints = self._enter()
        try:
            at = self._cells_at + cell * _CELL_FIELDS
            ints[at + _HELD] = ints[at + _GRANTED] = ints[at + _ENTRIES] = 0
            ints[at + _ALIVE] = 1
        finally:
            self._exit(ints)
        return cell

    def reclaim(self, cell: int) -> int:
        """*cell*'s worker is gone: its queue entries leave, its slots go on; slots returned.

        Called by the supervisor once it sees the process exit (whatever way). Then the cell
        is free for another worker. Idempotent.
        """
        ints = self._take_over(cell)
        targets: list[int] = []
        try:
            at = self._cells_at + cell * _CELL_FIELDS
            owners = self._cells_of_ring_at
            live = 0
            for index in range(ints[_HEAD], ints[_TAIL]):
                owner = ints[owners + index]
                if owner == cell:
                    ints[owners + index] = _GONE
                elif owner != _GONE:
                    live += 1
            ints[_WAITING] = live  # recounted: the dead process may have died mid-update
            ints[at + _ENTRIES] = 0
            ints[at + _GRANTED] = 0
            ints[at + _ALIVE] = 0
            held = ints[at + _HELD]
            for _ in range(held):
                target = self._pass_on_locked(ints, cell)
                if target >= 0:
                    targets.append(target)
            ints[at + _HELD] = 0
            cells_at = self._cells_at
            ints[_IN_USE] = sum(
                ints[cells_at + other * _CELL_FIELDS + _HELD] for other in range(self.cells)
            )
        finally:
            self._exit(ints)
        for target in targets:
            self._signal(target)
        if cell not in self._free:
            self._free.append(cell)
            self._free.sort()
        return held

    def _take_over(self, dead: int) -> memoryview[int]:
        """The lock, even from a process killed while holding it (a semaphore: anyone may post)."""
        ints = self._ints
        tries = 0
        while not self._lock.acquire(True, LOCK_TIMEOUT):
            tries += 1
            owner = ints[_OWNER] - 1
            alive = owner >= 0 and ints[self._cells_at + owner * _CELL_FIELDS + _ALIVE]
            # Held by another worker that died too and is not reclaimed yet: no live
            # process holds this lock for seconds, so after a few timeouts it is taken.
            if owner == dead or not alive or tries >= _TAKE_OVER_AFTER:
                logger.warning(
                    "Request queue: taking back its lock, left held by a worker process that "
                    "died; the queue's counts are recomputed"
                )
                break
        ints[_OWNER] = 0
        return ints

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the wake-up descriptors (the supervisor, at shutdown)."""
        for read_end, write_end in self._wake:
            with contextlib.suppress(OSError):
                os.close(read_end)
            if write_end != read_end:
                with contextlib.suppress(OSError):
                    os.close(write_end)
        self._wake = []
        self.unlink()

    def unlink(self) -> None:
        """Remove the shared-memory block's name (spawn only; in the process that made it)."""
        if self._shm is not None and self._owner:
            self._owner = False
            self._shm.unlink()

    def __getstate__(self) -> dict[str, Any]:
        if self.sharing != "spawn":
            raise TypeError("a slot table shared by forked workers cannot be pickled")
        keep = ("limit", "max_queue", "cells", "sharing", "_ring", "_cells_at")
        state = {name: self.__dict__[name] for name in keep}
        state.update(
            _tickets_at=self._tickets_at,
            _cells_of_ring_at=self._cells_of_ring_at,
            _size=self._size,
            _lock=self._lock,
            _shm_name=self._shm.name,
            # Passed to the spawned process with it (only while spawning).
            # (An eventfd is its own write end: passed once.)
            _wake=[
                (reduction.DupFd(r), None if w == r else reduction.DupFd(w)) for r, w in self._wake
            ],
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        name = state.pop("_shm_name")
        wake = state.pop("_wake")
        self.__dict__.update(state)
        self._owner = False
        self._free = []
        self._shm = shared_memory.SharedMemory(name=name)
        self._mmap = _own_mapping(self._shm, self._size)
        self._map()
        self._wake = []
        for read_dup, write_dup in wake:
            read_end = read_dup.detach()
            write_end = read_end if write_dup is None else write_dup.detach()
            self._wake.append((read_end, write_end))
        self._reset_local()


_ONE: Final = (1).to_bytes(8, "little")  # what an eventfd takes; a pipe takes any bytes


def _wake_pair() -> tuple[int, int]:
    """A non-blocking wake-up descriptor: an eventfd (Linux), else a pipe."""
    eventfd = getattr(os, "eventfd", None)
    if eventfd is not None:
        fd = eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    return read_end, write_end


def _own_mapping(shm: shared_memory.SharedMemory, size: int) -> Any:
    """A mapping of *shm* the table owns (see rate_limit._own_mapping for why)."""
    fd = getattr(shm, "_fd", -1)
    if fd < 0:
        return shm.buf
    own = mmap.mmap(fd, size)
    shm.close()
    return own
