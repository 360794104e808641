"""The shared-memory store behind ``--metrics``: one fixed-layout region per worker.

Every figure must cover every worker, in thread and in process mode, whichever process
answers the scrape. So counters do not live in Python objects of one process: they live in one
block of shared memory the supervisor maps before it starts any worker. Forked process workers
inherit the mapping (an anonymous ``MAP_SHARED`` mmap); where workers are spawned the block is
a named :mod:`multiprocessing.shared_memory` segment they attach to by name.

The block holds one *server region*, written only by the supervisor thread (workers alive,
restarts, reloads, dropped events), and ``capacity`` *worker regions*. The supervisor hands a
free region to each worker it starts; that worker's event-loop thread is the only writer of it
for as long as the worker lives, so counters need no lock and no atomic instruction, on a
free-threaded build too (no two threads ever write the same bytes). Readers add the regions
up; an aligned 8-byte store is never seen half-written, and a scrape that reads a counter just
before an increment simply reports the older value.

Everyone uses the one ``memoryview`` made when the block is mapped, at absolute offsets
(:meth:`MetricsStore.region_offset`): no thread ever slices or releases a view of its own, because
on a free-threaded build creating and dropping views of one buffer from several threads races on
the buffer's export count; reading and writing items of an existing view does not touch it.

A region is handed to the next worker only after its previous owner has exited, and it is not
cleared: the newcomer continues from the old values, so the counts of a worker that crashed,
was recycled or was replaced by a reload never vanish and every counter stays monotonic. Only
the gauges (what is open *now*) are zeroed by the supervisor when it takes a region back.

Every value is a float64: Prometheus values are floats anyway, integers stay exact up to
2**53, and one format means one ``memoryview`` for the whole block.
"""

from __future__ import annotations

import contextlib
import mmap
from bisect import bisect_left
from typing import Final, cast

__all__ = [
    "DURATION_BOUNDS",
    "HTTP_VERSIONS",
    "METHODS",
    "QUEUE_WAIT_BOUNDS",
    "REJECTION_REASONS",
    "STATUS_CLASSES",
    "MetricsStore",
    "RegionLayout",
    "ServerFields",
]

#: Request methods counted by name; any other method is counted as ``other`` (a client can
#: send any token as a method, and every label value is a time series kept forever).
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
#: ``other``: no response was started (the client left first), or a status of 600 or more.
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
HTTP_VERSIONS: Final = ("1.0", "1.1", "2", "3")
#: The ``reason`` of ``RequestRejected`` events, as the pipeline spells them (a test checks
#: that every ``REJECTED_*`` constant of ``pounce.pipeline.events`` is here); anything else is
#: counted as ``other``. The exposition writes them with ``_`` for spaces.
REJECTION_REASONS: Final = (
    "rate limited",
    "queue full",
    "queue timeout",
    "malformed",
    "too large",
    "timeout",
    "concurrency limit",
    "method not allowed",
    "not ready",
)

#: Upper bounds (seconds) of the request-duration histogram; one more bucket is ``+Inf``.
DURATION_BOUNDS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Upper bounds (seconds) of the queue-wait histogram.
QUEUE_WAIT_BOUNDS: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)

_DOUBLE = 8


class ServerFields:
    """Offsets of the server region (the supervisor's), in float64s."""

    MAIN_PID: Final = 0
    WORKERS_SERVING: Final = 1
    WORKERS_STARTING: Final = 2
    WORKERS_DRAINING: Final = 3
    RESTARTS_CRASHED: Final = 4
    RESTARTS_RECYCLED: Final = 5
    RELOADS_COMPLETED: Final = 6
    RELOADS_FAILED: Final = 7
    EVENTS_DROPPED: Final = 8
    SIZE: Final = 16  # room to grow without moving the worker regions' arithmetic


class RegionLayout:
    """Offsets inside one worker region, in float64s (class attributes: computed once)."""

    # Header: written when the worker attaches.
    STATE: Final = 0  # 0: never used; 1: a live worker writes it; 2: its worker has exited
    PID: Final = 1
    # Gauges: what is open now. The supervisor zeroes them when it takes the region back.
    IN_FLIGHT: Final = 2
    CONNECTIONS_OPEN: Final = 3
    HTTP2_STREAMS_OPEN: Final = 4
    WEBSOCKETS_OPEN: Final = 5
    QUEUE_DEPTH: Final = 6
    GAUGES: Final = (IN_FLIGHT, CONNECTIONS_OPEN, HTTP2_STREAMS_OPEN, WEBSOCKETS_OPEN, QUEUE_DEPTH)
    # Counters.
    WEBSOCKETS_TOTAL: Final = 7
    BYTES_SENT: Final = 8
    BYTES_RECEIVED: Final = 9
    DURATION_SUM: Final = 10
    DURATION_BUCKETS: Final = 11  # len(DURATION_BOUNDS) + 1 counts, not cumulative
    QUEUE_WAIT_SUM: Final = DURATION_BUCKETS + len(DURATION_BOUNDS) + 1
    QUEUE_WAIT_BUCKETS: Final = QUEUE_WAIT_SUM + 1
    REJECTED: Final = QUEUE_WAIT_BUCKETS + len(QUEUE_WAIT_BOUNDS) + 1  # one per reason + other
    REQUESTS: Final = REJECTED + len(REJECTION_REASONS) + 1
    # requests[method][status class][http version], each with its "other" at the end.
    VERSION_STRIDE: Final = 1
    STATUS_STRIDE: Final = len(HTTP_VERSIONS) + 1
    METHOD_STRIDE: Final = STATUS_STRIDE * len(STATUS_CLASSES)
    SIZE: Final = REQUESTS + METHOD_STRIDE * (len(METHODS) + 1)

    @staticmethod
    def request_index(method: int, status_class: int, version: int) -> int:
        """Offset of one request counter, from the label positions (``other`` = the last)."""
        return (
            RegionLayout.REQUESTS
            + method * RegionLayout.METHOD_STRIDE
            + status_class * RegionLayout.STATUS_STRIDE
            + version
        )


LIVE: Final = 1.0
RETIRED: Final = 2.0


def bucket_of(bounds: tuple[float, ...], value: float) -> int:
    """The histogram bucket *value* falls in (``le`` semantics: a bound includes itself)."""
    return bisect_left(bounds, value)


class MetricsStore:
    """One shared block: the server region, then ``capacity`` worker regions.

    Create it with :meth:`create` in the supervisor's process before any worker starts.
    Writers write :attr:`values` at their region's offset (each region has exactly one writing
    thread); readers take a :meth:`snapshot`.
    """

    def __init__(self, capacity: int, buffer: mmap.mmap | memoryview, name: str | None) -> None:
        self.capacity = capacity
        self._buffer = buffer
        #: The shared-memory segment's name when it is a named one (spawned workers attach).
        self.name = name
        self._shm: object | None = None  # keeps an attached SharedMemory object alive
        self._owner = False  # this process created the named segment (and removes it)
        #: The whole block as float64s, shared by every user in this process (see above).
        self.values: memoryview[float] = memoryview(buffer).cast("d")

    @staticmethod
    def size_for(capacity: int) -> int:
        return (ServerFields.SIZE + capacity * RegionLayout.SIZE) * _DOUBLE

    @classmethod
    def create(cls, capacity: int, *, named: bool = False) -> MetricsStore:
        """A zeroed block for *capacity* workers alive at once.

        *named*: a :mod:`multiprocessing.shared_memory` segment that spawned processes can
        attach to by name; otherwise an anonymous shared mapping that forked children inherit.
        """
        if capacity < 1:
            raise ValueError("the metrics store needs room for at least one worker")
        size = cls.size_for(capacity)
        if named:
            from multiprocessing import shared_memory

            shm = shared_memory.SharedMemory(create=True, size=size)
            buf = shm.buf
            assert buf is not None
            buf[:size] = bytes(size)
            store = cls(capacity, buf[:size], shm.name)
            store._shm = shm
            store._owner = True
            return store
        # mmap(-1, n) is anonymous and MAP_SHARED on Unix: what a forked child writes, the
        # parent and every sibling see. Fresh anonymous pages are zero.
        return cls(capacity, mmap.mmap(-1, size), None)

    @classmethod
    def attach(cls, name: str, capacity: int) -> MetricsStore:
        """Open the named block a spawned worker was given (see :meth:`__reduce__`)."""
        from multiprocessing import shared_memory

        try:  # 3.13+: do not let this process's resource tracker unlink the parent's segment
            shm = shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
        except TypeError:
            shm = shared_memory.SharedMemory(name=name)
        size = cls.size_for(capacity)
        buf = shm.buf
        assert buf is not None
        store = cls(capacity, buf[:size], name)
        store._shm = shm
        return store

    def __reduce__(self) -> tuple[object, tuple[str, int]]:
        # Pickled only to spawned workers; a forked child inherits the object itself.
        if self.name is None:
            raise TypeError(
                "an anonymous metrics store reaches workers by fork only; create it with "
                "named=True for spawned workers"
            )
        return (MetricsStore.attach, (self.name, self.capacity))

    # -- writers ----------------------------------------------------------------------------------

    def region_offset(self, index: int) -> int:
        """Where worker region *index* (0-based) starts in :attr:`values`.

        The server region starts at 0 (offsets of :class:`ServerFields`).
        """
        if not 0 <= index < self.capacity:
            raise IndexError(f"metrics region {index} is outside 0..{self.capacity - 1}")
        return ServerFields.SIZE + index * RegionLayout.SIZE

    def retire(self, index: int) -> None:
        """Take region *index* back after its worker exited: zero its gauges, keep its counts.

        Called by the supervisor thread only once nobody writes the region any more.
        """
        values = self.values
        base = self.region_offset(index)
        for offset in RegionLayout.GAUGES:
            values[base + offset] = 0.0
        if values[base + RegionLayout.STATE] == LIVE:
            values[base + RegionLayout.STATE] = RETIRED

    # -- readers ----------------------------------------------------------------------------------

    def snapshot(self) -> tuple[list[float], list[list[float]]]:
        """The server region and every region ever used, copied (safe from any thread)."""
        copy = cast("list[float]", self.values.tolist())  # one read, no view of its own
        server = copy[: ServerFields.SIZE]
        regions: list[list[float]] = []
        size = RegionLayout.SIZE
        for index in range(self.capacity):
            start = ServerFields.SIZE + index * size
            if copy[start + RegionLayout.STATE] != 0.0:
                regions.append(copy[start : start + size])
        return server, regions

    def close(self) -> None:
        """Let go of the block; the creator of a named segment also removes it.

        Called once every worker of this process has exited. An anonymous mapping is left to
        go away with its last reference: a hung worker thread that was abandoned may still
        hold :attr:`values`, and must not find it released under its feet.
        """
        shm = self._shm
        if shm is None:
            return
        from multiprocessing import shared_memory

        assert isinstance(shm, shared_memory.SharedMemory)
        with contextlib.suppress(BufferError, ValueError):
            self.values.release()
            if isinstance(self._buffer, memoryview):
                self._buffer.release()
            shm.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()


def sum_regions(regions: list[list[float]]) -> list[float]:
    """Add worker regions up, field by field (gauges and counters alike)."""
    if not regions:
        return [0.0] * RegionLayout.SIZE
    if len(regions) == 1:
        return list(regions[0])
    return [sum(column) for column in zip(*regions, strict=True)]
