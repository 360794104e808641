"""Request events from worker processes to the server's subscribers.

Thread workers link their event bus straight to the server's hub. A worker process cannot: its
events are objects in another address space. So each process gets a one-way pipe to its parent,
and three small pieces move events over it:

- the parent publishes which worker-level kinds its subscribers want as a bit mask in one
  shared-memory cell (:class:`WantedKinds`); with no subscriber the mask is 0, the worker's bus
  stays inactive and requests build no event at all;
- in the worker, an :class:`~pounce.pipeline.hub.EventForwarder` collects the wanted events on
  the loop, and every heartbeat hands the batch to an :class:`EventSender` thread, which pickles
  and writes it: a parent slow to read never blocks the worker's loop (batches that do not fit
  the sender's short queue are dropped and counted);
- in the parent, one :class:`EventRelay` thread reads every worker's pipe and publishes the
  events to the hub, whose per-subscriber buffers take it from there.

Events dropped anywhere on the way are added to the hub's ``events_dropped`` count.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.connection
import queue
import threading
from typing import TYPE_CHECKING, Any

from pounce.pipeline.hub import kinds_from_mask, kinds_mask

if TYPE_CHECKING:
    from pounce.pipeline.hub import EventForwarder, EventHub

__all__ = ["EventRelay", "EventSender", "WantedKinds"]

logger = logging.getLogger("pounce.error")

#: Batches waiting for the sender thread; one heartbeat produces one batch.
SENDER_QUEUE = 8
#: How long the relay's wait lasts before it looks for new pipes (and its stop flag).
RELAY_WAIT = 0.2
#: How long a stopping worker waits for its last batches to leave.
FLUSH_TIMEOUT = 1.0


class WantedKinds:
    """The worker-level event kinds the parent's subscribers want, shared with its children.

    A ``RawValue`` lives in shared memory: inherited by forked children and passed to spawned
    ones as a process argument. The parent writes it (from whichever thread subscribes), the
    children read it each heartbeat; a 64-bit store and load need no lock.
    """

    def __init__(self, context: Any) -> None:
        self._cell: Any = context.RawValue("Q", 0)

    def set(self, kinds: frozenset[type]) -> None:
        self._cell.value = kinds_mask(kinds)

    def get(self) -> frozenset[type]:
        return kinds_from_mask(int(self._cell.value))


class EventSender:
    """The worker process's side: pickles and sends event batches from its own thread."""

    def __init__(self, pipe: multiprocessing.connection.Connection) -> None:
        self._pipe = pipe
        self._queue: queue.Queue[tuple[list[Any], int] | None] = queue.Queue(SENDER_QUEUE)
        self._thread: threading.Thread | None = None
        self._dropped = 0  # touched by the loop thread only
        self._broken = False
        self._warned = False

    def offer(self, forwarder: EventForwarder) -> None:
        """Hand over what *forwarder* collected (on the worker's loop; never blocks)."""
        batch, dropped = forwarder.take()
        dropped += self._dropped
        if not batch and not dropped:
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="pounce-event-sender", daemon=True
            )
            self._thread.start()
        try:
            self._queue.put_nowait((batch, dropped))
            self._dropped = 0
        except queue.Full:
            self._dropped = dropped + len(batch)

    def close(self, forwarder: EventForwarder) -> None:
        """Send what is left and stop the thread (the worker is exiting)."""
        self.offer(forwarder)
        thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=FLUSH_TIMEOUT)
        thread.join(FLUSH_TIMEOUT)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._broken:
                return
            try:
                self._pipe.send(item)
            except OSError:
                self._broken = True  # the parent is gone; the heartbeat notices too
            except Exception as exc:  # an event that does not pickle (an app's own value?)
                if not self._warned:
                    self._warned = True
                    logger.warning(
                        "Could not send events to the parent process (%s: %s); they are "
                        "counted as dropped, later failures are not logged",
                        type(exc).__name__,
                        exc,
                    )
                with contextlib.suppress(Exception):
                    self._pipe.send(([], len(item[0]) + item[1]))


class EventRelay:
    """The parent's side: one thread publishing every worker process's events to the hub."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._lock = threading.Lock()
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._stopping = False
        self._warned = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pounce-event-relay", daemon=True)
        self._thread.start()

    def add(self, pipe: multiprocessing.connection.Connection) -> None:
        with self._lock:
            self._pipes.append(pipe)
        self._wake.set()

    def stop(self) -> None:
        """Read what the pipes still hold, then end the thread."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join(FLUSH_TIMEOUT + RELAY_WAIT)

    def _run(self) -> None:
        while True:
            with self._lock:
                pipes = list(self._pipes)
                stopping = self._stopping
            if not pipes:
                if stopping:
                    return
                self._wake.wait(RELAY_WAIT)
                self._wake.clear()
                continue
            ready = multiprocessing.connection.wait(pipes, 0 if stopping else RELAY_WAIT)
            for pipe in ready:
                self._read(pipe)  # type: ignore[arg-type]
            if stopping and not ready:
                return

    def _read(self, pipe: multiprocessing.connection.Connection) -> None:
        try:
            batch, dropped = pipe.recv()
        except (EOFError, OSError):  # the worker exited: its pipe is done
            with self._lock:
                self._pipes.remove(pipe)
            pipe.close()
            return
        except Exception as exc:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "Could not read events from a worker process (%s: %s); such batches "
                    "are lost, later failures are not logged",
                    type(exc).__name__,
                    exc,
                )
            return
        hub = self._hub
        for event in batch:
            hub.publish(event)
        hub.count_dropped(dropped)
