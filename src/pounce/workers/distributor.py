"""The accept distributor: one accept path hands each connection to exactly one worker.

Without it every worker would poll the same listening socket and all of them would wake for
each new connection (the thundering herd), and the kernel would favour whichever worker
happened to be waiting, leaving others idle. The distributor thread accepts, picks the worker
with the fewest in-flight connections (ties broken round-robin) and hands the socket over with
``loop.call_soon_threadsafe``. Hand-offs per worker are bounded: when every worker has
:data:`HANDOFF_LIMIT` connections accepted but not yet attached, the distributor stops
accepting and new connections wait in the kernel backlog instead of piling up in memory.

``--limit-concurrency`` is not enforced here: as in every other mode, each worker answers
503 to a *request* beyond the limit. Counting connections here would let clients that have
sent nothing (idle keep-alive connections, or a slow-loris crowd) lock out clients that have
a request, with no answer at all until a header timeout closes the idle ones.

When ``accept()`` fails for lack of descriptors or memory the distributor pauses (growing
from 50 ms to 1 s) and logs one warning per few seconds (:mod:`pounce.server.accept`).

TLS handshakes (when TLS is configured) happen in the worker's loop, after the hand-off, so a
slow client can never stall the accept path.

Thread-safety: the set of target workers is an immutable tuple replaced wholesale by the
supervisor (a single reference store); ``handed`` counters are written only by this thread;
workers' ``adopted``/connection counts are written only by their own loops. Nothing here takes
a lock that a worker's request path also takes.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pounce.server.accept import AcceptThrottle

if TYPE_CHECKING:
    from pounce.workers.handle import WorkerHandle

logger = logging.getLogger("pounce.error")

#: Accepted connections queued for one worker before it attaches them.
HANDOFF_LIMIT = 128
#: Connections accepted in one go before the selector is consulted again.
ACCEPT_BATCH = 64
#: How often a saturated distributor re-checks for room (connections wait in the backlog).
FULL_RECHECK = 0.002


class Distributor:
    """Accepts on the listening sockets in a thread of its own and hands connections out."""

    def __init__(self, sockets: Sequence[socket.socket]) -> None:
        self._sockets = list(sockets)
        self._targets: tuple[int, tuple[WorkerHandle, ...]] = (0, ())
        self._applied = 0
        self._synced = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._rr = 0
        #: Targets whose ``adopt()`` refused a connection (a thread worker whose loop is gone,
        #: a process worker whose channel is closed), not unpublished yet: skipped until the
        #: supervisor publishes new targets.
        self._unreachable: set[WorkerHandle] = set()
        self._unreachable_version = 0
        #: Connections given back by the supervisor (a dead worker's unread hand-offs), for
        #: this thread to hand out again; the lock is the supervisor's and this thread's only.
        self._returned: list[socket.socket] = []
        self._returned_lock = threading.Lock()
        #: Connections accepted in total (distributor thread only).
        self.accepted = 0
        self.throttle = AcceptThrottle("the accept distributor")
        self._resting_until = 0.0

    # -- supervisor side ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pounce-distributor", daemon=True)
        self._thread.start()

    def set_targets(self, workers: Sequence[WorkerHandle], *, wait: float = 5.0) -> None:
        """Route new connections to *workers* only; returns once no hand-off to others can occur.

        The supervisor calls this before draining workers, so a connection is never handed to
        a worker that is already closing (which would drop it).
        """
        version = self._targets[0] + 1
        self._targets = (version, tuple(workers))
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._applied = version
            return
        with self._synced:
            self._synced.wait_for(lambda: self._applied >= version or self._stopping, wait)

    def hand_out_again(self, connections: Sequence[socket.socket]) -> None:
        """Serve *connections* (accepted, never read by the worker they went to) elsewhere."""
        if not connections:
            return
        with self._returned_lock:
            self._returned.extend(connections)

    @property
    def targets(self) -> tuple[WorkerHandle, ...]:
        return self._targets[1]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting; connections not yet accepted stay in the kernel backlog."""
        self._stopping = True
        with self._synced:
            self._synced.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- distributor thread -----------------------------------------------------------------

    def _pick(self, targets: tuple[WorkerHandle, ...]) -> WorkerHandle | None:
        """Least in-flight connections, ties round-robin; None when every worker is full."""
        count = len(targets)
        if count == 0:
            return None
        best: WorkerHandle | None = None
        best_load = 0
        start = self._rr % count
        for i in range(count):
            worker = targets[(start + i) % count]
            if worker in self._unreachable:
                continue
            pending = worker.handed - worker.adopted
            if pending >= HANDOFF_LIMIT:
                continue
            load = worker.connection_count + max(0, pending)
            if best is None or load < best_load:
                best, best_load = worker, load
        self._rr = start + 1
        return best

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for sock in self._sockets:
            selector.register(sock, selectors.EVENT_READ)
        try:
            while not self._stopping:
                version, targets = self._targets
                self._mark_applied(version)
                if self._unreachable and version != self._unreachable_version:
                    self._unreachable.clear()
                if self._resting_until:
                    # Out of descriptors: let them free up (connections wait in the backlog).
                    remaining = self._resting_until - time.monotonic()
                    if remaining > 0:
                        time.sleep(min(remaining, 0.05))
                        continue
                    self._resting_until = 0.0
                if self._returned:
                    self._hand_out_returned(targets)
                if self._pick(targets) is None:
                    # Full (or no workers yet): leave connections in the kernel backlog.
                    time.sleep(FULL_RECHECK)
                    continue
                for key, _ in selector.select(timeout=0.05):
                    listener = key.fileobj
                    assert isinstance(listener, socket.socket)
                    self._accept_batch(listener, targets)
        except Exception:
            logger.exception("The accept distributor failed")
        finally:
            selector.close()
            with self._returned_lock:
                returned, self._returned = self._returned, []
            for conn in returned:
                conn.close()
            with self._synced:
                self._stopping = True
                self._synced.notify_all()

    def _mark_applied(self, version: int) -> None:
        if self._applied != version:
            with self._synced:
                self._applied = version
                self._synced.notify_all()

    def _accept_batch(self, listener: socket.socket, targets: tuple[WorkerHandle, ...]) -> None:
        for _ in range(ACCEPT_BATCH):
            worker = self._pick(targets)
            if worker is None:
                return
            try:
                conn, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued: nothing to do
            except OSError as exc:
                # EMFILE/ENFILE/ENOBUFS/ENOMEM (or worse): retrying at once would spin and
                # flood the log; pause, warn at most every few seconds.
                pause = self.throttle.failed(exc)
                self._resting_until = time.monotonic() + pause
                return
            if self.throttle.failures:
                self.throttle.recovered()
            conn.setblocking(False)
            self.accepted += 1
            self._hand_over(conn, worker, targets)

    def _hand_out_returned(self, targets: tuple[WorkerHandle, ...]) -> None:
        with self._returned_lock:
            returned, self._returned = self._returned, []
        for index, conn in enumerate(returned):
            worker = self._pick(targets)
            if worker is None:  # full: the rest waits for room
                with self._returned_lock:
                    self._returned[:0] = returned[index:]
                return
            self._hand_over(conn, worker, targets)

    def _hand_over(
        self, conn: socket.socket, worker: WorkerHandle, targets: tuple[WorkerHandle, ...]
    ) -> None:
        """Give *conn* to *worker*, or to the next best when that one cannot take it.

        A worker that died stays a target until the supervisor sees it gone. A thread
        worker's closed loop, or a process worker's closed channel, refuses the connection at
        once: it goes to a live worker instead of being closed unanswered. (A killed process
        worker's channel still takes hand-offs, as the supervisor holds its end: those are
        taken back and come here again through :meth:`hand_out_again`.)
        """
        while True:
            worker.handed += 1
            if worker.adopt(conn):
                return
            worker.handed -= 1
            self._unreachable.add(worker)
            self._unreachable_version = self._targets[0]
            next_worker = self._pick(targets)
            if next_worker is None:
                # Every target refused: no worker is left to serve it.
                conn.close()
                return
            worker = next_worker
