"""What the supervisor and the distributor need of a worker, whatever it runs as.

A handle is owned by the supervisor thread: only that thread starts, stops and replaces it.
Two other threads read it: the distributor (``load()``, ``adopt()``, its own ``handed`` count)
and whoever asks for statistics (plain int reads). Every field is written by exactly one
thread, so no lock is needed and none is taken on the request path.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from abc import ABC, abstractmethod

#: How long a retired worker lets idle keep-alive connections send one more request.
RETIRE_GRACE = 1.0

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss(pid: int) -> int | None:
    """Resident set size of *pid* in bytes (Linux ``/proc``), or None where unavailable."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def trim_malloc() -> None:
    """Return freed heap pages to the system (glibc ``malloc_trim``); a no-op elsewhere.

    Memory freed by Python goes back to the C allocator, which keeps most of it mapped: RSS
    would not go down after a generation of thread workers is released without this.
    """
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


class WorkerHandle(ABC):
    """One worker (thread or process) as the supervisor sees it."""

    kind: str = "worker"

    def __init__(self, *, name: str, slot: int, generation: int) -> None:
        #: Internal id (``worker-<generation>.<slot>``): thread names, debug lines, stats.
        self.name = name
        #: Position in the pool: a replacement takes the slot (and reuseport socket) it replaces.
        self.slot = slot
        self.generation = generation
        #: Set when the worker accepts connections (after its lifespan start-up).
        self.ready = threading.Event()
        #: Set when the worker has finished (drained, crashed or failed to start).
        self.exited = threading.Event()
        #: Why the worker failed to start or crashed (None after a clean stop).
        self.error: str | None = None
        self.error_details: str | None = None
        #: Connections handed to this worker by the distributor. Written by the distributor
        #: thread only; ``load()`` subtracts what the worker reports as adopted.
        self.handed = 0
        self.started_at = time.monotonic()
        self.stopping = False

    @property
    def label(self) -> str:
        """How log lines name this worker to a person: ``worker 2``, ``worker 2 (pid 4711)``.

        Slots count from 1 as people do; the generation is mentioned once a reload made more
        than one, and a process's pid so it can be found with ``ps``.
        """
        details = self._label_details()
        return f"worker {self.slot + 1}" + (f" ({', '.join(details)})" if details else "")

    def _label_details(self) -> list[str]:
        return [f"generation {self.generation}"] if self.generation > 1 else []

    # -- lifecycle (supervisor thread) --------------------------------------------------------

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def request_stop(self, *, force: bool = False, retire: bool = False) -> None:
        """Drain gracefully (or close everything with *force*). Idempotent.

        *retire*: other workers keep serving (reload, recycling, scale-down), so idle
        keep-alive connections get :data:`RETIRE_GRACE` to send one last request, answered
        with ``Connection: close``, instead of being closed under a client's feet.
        """

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def abandon(self) -> None:
        """Give up on a hung worker: kill it where possible (a process), else detach."""

    def poll(self) -> None:  # noqa: B027 - optional hook, a no-op for thread workers
        """Collect what the worker reported since the last call (process workers)."""

    # -- read by the supervisor and the distributor -------------------------------------------

    @property
    @abstractmethod
    def requests_total(self) -> int: ...

    @property
    @abstractmethod
    def connection_count(self) -> int: ...

    @property
    @abstractmethod
    def adopted(self) -> int: ...

    @property
    @abstractmethod
    def heartbeat(self) -> float:
        """``time.monotonic()`` of the worker loop's last tick."""

    @abstractmethod
    def rss(self) -> int | None:
        """Resident memory attributable to this worker, when it can be measured."""

    @abstractmethod
    def adopt(self, sock: socket.socket) -> bool:
        """Serve an accepted connection (distributor thread).

        False when this worker cannot take it (its process died, its loop is gone): *sock*
        is then still the caller's, to hand to another worker.
        """

    def take_orphans(self) -> list[socket.socket]:
        """Connections handed to this worker that it never took, now that it is gone.

        A killed process leaves those still queued in its hand-off channel; the supervisor
        gives them to the live workers. Thread workers leave none to take back.
        """
        return []

    def load(self) -> int:
        """In-flight connections: open ones plus those handed over but not yet attached."""
        return self.connection_count + max(0, self.handed - self.adopted)
