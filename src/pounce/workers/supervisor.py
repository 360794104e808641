"""The supervisor: starts the workers, watches them, replaces, recycles, scales and reloads.

It runs in the thread that called :meth:`Server.serve` (the main thread under the CLI, where
signal handlers only enqueue an action). All of its own state is touched by that thread only;
other threads talk to it through a ``queue.SimpleQueue`` (safe even from signal handlers).
What other threads read -- the current workers, for statistics and for the distributor -- is
published as immutable tuples replaced wholesale.

Worker life cycle::

    starting --ready--> serving --(recycle | reload | scale down | shutdown)--> draining --> gone
        \\--exit before ready: start-up failure (retried with backoff, fatal after N in a row)
    serving --exit without being asked: crash (replaced with backoff)
    serving --no heartbeat for --timeout-worker-healthcheck: hung (replaced, then killed/abandoned)

Replacements for recycling start first and take over before the old worker drains, one worker
at a time, so capacity never drops and no request fails.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import random
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pounce.errors import StartupError
from pounce.features.rate_limit import store_from_config
from pounce.pipeline.events import (
    ReloadCompleted,
    ReloadFailed,
    ReloadStarted,
    ServerStopping,
    WorkerCrashed,
    WorkerRecycled,
    WorkerStarted,
    WorkerStopped,
)
from pounce.pipeline.shared_slots import SharedSlotTable
from pounce.pipeline.slots import SlotPool, process_share
from pounce.workers.distributor import Distributor
from pounce.workers.handle import WorkerHandle, process_rss, trim_malloc
from pounce.workers.heap import HeapFreezer
from pounce.workers.processes import ProcessWorker, mp_context
from pounce.workers.relay import EventRelay, WantedKinds
from pounce.workers.threads import ThreadWorker

if TYPE_CHECKING:
    from pounce.asgi.types import ASGIApp
    from pounce.config import ServerConfig
    from pounce.pipeline.hub import EventHub
    from pounce.workers.metrics import SupervisorMetrics
    from pounce.workers.model import WorkerModel
    from pounce.workers.reload import AppLoader

logger = logging.getLogger("pounce.error")

#: Consecutive start-up failures of one worker slot that stop the server.
MAX_START_FAILURES = 5
#: Supervisor poll period: bounds how late a crash, a limit or a signal is noticed.
POLL = 0.05
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: A process worker is not recycled for memory before it is this old.
RSS_RECYCLE_MIN_AGE = 5.0
#: Thread workers: a generation is not rolled for memory before it is this old.
MEMORY_ROLL_MIN_AGE = 1.0
#: Thread workers: after a failed memory roll (the app's code no longer imports), wait this long.
MEMORY_ROLL_RETRY = 30.0


class WorkerFailure(StartupError):
    """Workers kept failing to start; the server stops with the last error."""


class Supervisor:
    """Owns the worker pool for one server."""

    def __init__(
        self,
        config: ServerConfig,
        model: WorkerModel,
        loader: AppLoader,
        app: ASGIApp,
        sockets: list[socket.socket],
        *,
        close_listeners: Callable[[], None] | None = None,
        event_hub: EventHub | None = None,
        metrics: SupervisorMetrics | None = None,
    ) -> None:
        self.config = config
        #: ``--metrics``: regions of the shared store for the workers, and the server figures.
        self._metrics = metrics
        #: The server's event subscribers: thread workers forward request events to it, and
        #: the supervisor publishes the worker and reload life cycle there.
        self._event_hub = event_hub
        self.model = model
        self._loader = loader
        self._app = app
        self._sockets = sockets
        #: Closes the shared listening sockets at shutdown, so new connections are refused at
        #: once instead of waiting in a backlog nobody will accept from.
        self._close_listeners = close_listeners
        self._slot_sockets: dict[int, list[socket.socket]] = {}
        self._actions: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        #: The serving generation, published for readers in other threads.
        self.workers: tuple[WorkerHandle, ...] = ()
        #: Workers finishing their last requests (published like ``workers``).
        self.draining: tuple[WorkerHandle, ...] = ()
        self._starting: dict[WorkerHandle, WorkerHandle | None] = {}  # new -> the one it replaces
        self._draining: list[WorkerHandle] = []
        #: Hung workers given up on: a killed process must still be waited for (reaped), or
        #: it stays a zombie until multiprocessing happens to collect it at the next start.
        self._abandoned: list[WorkerHandle] = []
        self._retry: dict[int, float] = {}  # slot -> when to start it again
        self._failures: dict[int, int] = {}
        self._limits: dict[WorkerHandle, int] = {}
        self._generation = 0
        self._stopping = False
        self._force = False
        self.fatal: StartupError | None = None
        #: Requests served by workers that are gone (merged into :meth:`stats`).
        self.retired_requests = 0
        self.distributor: Distributor | None = None
        self.reloads = 0
        self.failed_reloads = 0
        self.recycles = 0
        self.replacements = 0
        self._heap = HeapFreezer(config.gc_freeze)
        self._refreeze = False  # once workers stopped coming and going
        self._busy = False
        self._deferred: list[tuple[str, Any]] = []
        # Thread workers and --limit-max-rss (see _check_process_memory).
        self._memory_roll_pending = False
        #: The process's highest RSS while a memory roll drains (see _release_memory).
        self._memory_peak = 0
        #: Rolls in a row that gave little memory back (see _release_memory).
        self._weak_releases = 0
        self._memory_floor = 0
        self._memory_not_before = 0.0
        # Process workers: their request events reach the hub's subscribers through pipes.
        self._event_relay: EventRelay | None = None
        self._wanted_events: WantedKinds | None = None
        self._unwatch_events: Callable[[], None] | None = None
        #: ``--rate-limit``'s bucket table, made before any worker so that every worker of
        #: every generation shares it: one limit for the whole server.
        self.rate_limiter = store_from_config(
            config,
            "thread" if model.kind == "thread" else mp_context().get_start_method(),
        )
        #: ``--max-concurrency`` with thread workers: one pool of slots for all of them, of
        #: every generation. Process workers share a table in shared memory instead, made
        #: before any fork with a cell (and a wake-up descriptor) per worker process that may
        #: run at once: a generation, the one draining after a reload, replacements, SIGTTIN.
        self._slot_pool: SlotPool | None = None
        self._slot_table: SharedSlotTable | None = None
        if config.max_concurrency is not None:
            if model.kind == "thread":
                self._slot_pool = SlotPool(config.max_concurrency, config.max_queue)
            else:
                self._slot_table = SharedSlotTable(
                    config.max_concurrency,
                    config.max_queue,
                    cells=3 * model.count + 8,
                    sharing=mp_context().get_start_method(),
                )

    # -- requests from any thread (and signal handlers) -----------------------------------------

    def request_stop(self, *, force: bool = False) -> None:
        self._actions.put(("stop", force))

    def request_reload(self) -> None:
        self._actions.put(("reload", None))

    def request_scale(self, delta: int) -> None:
        self._actions.put(("scale", delta))

    def stats(self) -> dict[str, Any]:
        """Per-worker counters, merged (safe from any thread: reads published snapshots)."""
        workers = [
            {
                "name": w.name,
                "kind": w.kind,
                "generation": w.generation,
                "requests": w.requests_total,
                "connections": w.connection_count,
            }
            for w in self.workers
        ]
        return {
            "model": self.model.describe(),
            "workers": workers,
            "requests_total": self.retired_requests
            + sum(w.requests_total for w in (*self.workers, *self.draining)),
            "generation": self._generation,
            **({"rate_limit": self.rate_limiter.stats()} if self.rate_limiter else {}),
        }

    # -- events -------------------------------------------------------------------------------

    def _emit(self, event: object) -> None:
        metrics = self._metrics
        if metrics is not None:
            metrics.on_event(event)
        hub = self._event_hub
        if hub is not None:
            hub.publish(event)

    def _worker_started(self, handle: WorkerHandle) -> None:
        self._emit(
            WorkerStarted(
                name=handle.name, kind=handle.kind, slot=handle.slot, generation=handle.generation
            )
        )

    def _worker_stopped(self, handle: WorkerHandle) -> None:
        self._emit(
            WorkerStopped(
                name=handle.name,
                kind=handle.kind,
                slot=handle.slot,
                generation=handle.generation,
                requests=handle.requests_total,
            )
        )

    def _worker_crashed(self, handle: WorkerHandle, error: str) -> None:
        self._emit(
            WorkerCrashed(
                name=handle.name,
                kind=handle.kind,
                slot=handle.slot,
                generation=handle.generation,
                error=error,
            )
        )

    # -- running (supervisor thread) ------------------------------------------------------------

    def run(self, on_started: Callable[[], None]) -> None:
        """Start the first generation, supervise until stopped, then drain everything."""
        if (
            self.model.kind == "thread"
            and self.config.limit_max_rss is not None
            and not self._loader.reloadable
        ):
            raise StartupError(
                "--limit-max-rss with thread workers needs the application as an import "
                "string ('module:app'): the threads share this process's memory, and only a "
                "fresh import of the app's modules releases what it holds; pass the app by "
                "name, or use --worker-type process"
            )
        try:
            if self.model.accept == "distributor":
                self.distributor = Distributor(self._sockets)
                self.distributor.start()
            if self.model.kind == "process":
                self._relay_events()
                # Before forking: children share the frozen pages instead of copying them.
                self._heap.freeze()
            first = self._start_generation(self._app, self.model.count)
            if isinstance(first, StartupError):
                raise first
            if first is None:  # stopped during start-up
                return
            self._publish(first)
            # This frame lives as long as the server: holding the first generation here would
            # keep its workers, and after a reload its app and modules, alive for ever.
            del first
            if self.model.kind == "thread":
                # After the workers' lifespans, so what they set up is frozen too. (Process
                # workers froze the heap before forking and freeze their own after start-up.)
                self._heap.freeze()
            on_started()
            while not self._stopping:
                self._handle_actions(POLL)
                if self._stopping:
                    break
                self._supervise()
                self._sweep_metrics()
            if self.fatal is not None:
                raise self.fatal
        finally:
            self._shutdown()

    def _handle_actions(self, timeout: float) -> None:
        try:
            action, arg = self._actions.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._do(action, arg)
            try:
                action, arg = self._actions.get_nowait()
            except queue.Empty:
                return

    def _do(self, action: str, arg: Any) -> None:
        if self._busy and action != "stop":
            self._deferred.append((action, arg))  # after the generation being started
            return
        if action == "stop":
            self._stopping = True
            self._force = self._force or bool(arg)
        elif action == "reload" and not self._stopping:
            self._reload()
        elif action == "scale" and not self._stopping:
            self._scale(int(arg))

    # -- worker creation ----------------------------------------------------------------------

    def _listen_for(self, slot: int) -> list[socket.socket]:
        accept = self.model.accept
        if accept == "distributor":
            return []
        if accept == "reuseport" and slot > 0:
            # Slot 0 serves the sockets bound at start-up (with SO_REUSEPORT set); every
            # other slot gets a twin bound to the same address.
            sockets = self._slot_sockets.get(slot)
            if sockets is None:
                sockets = [_reuseport_twin(sock, self.config.backlog) for sock in self._sockets]
                self._slot_sockets[slot] = sockets
            return sockets
        return self._sockets

    def _sweep_metrics(self) -> None:
        metrics = self._metrics
        if metrics is not None:
            metrics.sweep(len(self.workers), len(self._starting), len(self._draining))
    def _queue_share(self, slot: int) -> tuple[int, int] | None:
        """A process worker's own part of ``--max-concurrency`` and ``--max-queue``.

        Only when the shared table has no free cell (more worker processes at once than it
        was sized for): that worker then queues on its own, with an even share of the limit.
        """
        config = self.config
        if config.max_concurrency is None:
            return None
        count = self.model.count
        return (
            max(1, process_share(config.max_concurrency, count, slot)),
            process_share(config.max_queue, count, slot),
        )

    def _slot_cell(self, slot: int) -> tuple[int | None, tuple[int, int] | None]:
        """A new process worker's cell in the shared slot table, or its fallback share."""
        table = self._slot_table
        if table is None:
            return None, None
        cell = table.allocate()
        if cell is None:
            logger.error(
                "Request queue: more worker processes at once than the %d it was sized for; "
                "worker %d queues on its own with a share of --max-concurrency (the limit is "
                "no longer exact until some workers are gone)",
                table.cells,
                slot + 1,
            )
            return None, self._queue_share(slot)
        return cell, None

    def _spawn(self, slot: int, app: ASGIApp, generation: int) -> WorkerHandle:
        name = f"worker-{generation}.{slot}"
        handle: WorkerHandle
        metrics = self._metrics
        region = metrics.take_region() if metrics is not None else None
        assigned = (metrics.store, region) if metrics is not None else None
        if self.model.kind == "thread":
            handle = ThreadWorker(
                app=app,
                config=self.config,
                listen=self._listen_for(slot),
                name=name,
                slot=slot,
                generation=generation,
                max_requests=False,
                event_hub=self._event_hub,
                metrics=assigned,
                rate_limiter=self.rate_limiter,
                slot_pool=self._slot_pool,
            )
        else:
            cell, share = self._slot_cell(slot)
            handle = ProcessWorker(
                app=app,
                config=self.config,
                listen=self._listen_for(slot),
                distributed=self.model.accept == "distributor",
                name=name,
                slot=slot,
                generation=generation,
                max_requests=None,
                metrics=assigned,
                event_relay=self._event_relay,
                wanted_events=self._wanted_events,
                rate_limiter=self.rate_limiter,
                queue_share=share,
                slot_table=self._slot_table if cell is not None else None,
                slot_cell=cell,
            )
        limit = self.config.limit_max_requests
        if limit is not None:
            jitter = self.config.limit_max_requests_jitter
            self._limits[handle] = limit + (random.randint(0, jitter) if jitter else 0)
        if metrics is not None:
            metrics.bind(handle, region)
        handle.start()
        return handle

    def _start_generation(
        self, app: ASGIApp, count: int
    ) -> tuple[WorkerHandle, ...] | StartupError | None:
        """Start *count* workers and wait until all serve; an error, or None if stopped."""
        self._busy = True
        try:
            return self._start_generation_now(app, count)
        finally:
            self._busy = False
            for item in self._deferred:
                self._actions.put(item)
            self._deferred.clear()

    def _start_generation_now(
        self, app: ASGIApp, count: int
    ) -> tuple[WorkerHandle, ...] | StartupError | None:
        generation = self._generation + 1
        handles = [self._spawn(slot, app, generation) for slot in range(count)]
        deadline = time.monotonic() + self.config.timeout_startup + 5.0
        error: StartupError | None = None
        while True:
            for handle in handles:
                handle.poll()
                if not handle.ready.is_set() and not handle.alive():
                    handle.poll()
                    error = StartupError(
                        f"{handle.label} failed to start: {handle.error or 'it exited'}",
                        details=handle.error_details,
                    )
            if error is not None or all(h.ready.is_set() for h in handles):
                break
            if time.monotonic() >= deadline:
                error = StartupError(
                    f"workers did not start within {self.config.timeout_startup:g}s "
                    "(raise --timeout-startup if the app needs longer)"
                )
                break
            self._handle_actions(POLL / 5)
            if self._stopping:
                break
        if error is not None or self._stopping:
            for handle in handles:
                handle.request_stop(force=True)
            for handle in handles:
                if not _join(handle, 5.0):
                    handle.abandon()
                self._limits.pop(handle, None)
            return error
        self._generation = generation
        for handle in handles:
            self._worker_started(handle)
        return tuple(handles)

    def _publish(self, workers: tuple[WorkerHandle, ...]) -> None:
        self.workers = tuple(sorted(workers, key=lambda w: w.slot))
        if self.distributor is not None:
            self.distributor.set_targets(self.workers)

    def _retire(self, handle: WorkerHandle, *, force: bool = False) -> None:
        """Stop routing to *handle* (already unpublished) and let it drain."""
        self._thaw_heap()
        handle.request_stop(force=force, retire=True)
        self._limits.pop(handle, None)
        self._draining.append(handle)
        self.draining = tuple(self._draining)

    # -- supervision --------------------------------------------------------------------------

    def _supervise(self) -> None:
        now = time.monotonic()
        config = self.config
        for handle in self.workers:
            handle.poll()
            if not handle.alive():
                self._unpublish(handle)
                self._hand_out_orphans(handle)
                self._account(handle)
                self.replacements += 1
                logger.error(
                    "%s died unexpectedly (%s); replacing it",
                    handle.label,
                    handle.error or "no error reported",
                )
                self._worker_crashed(handle, handle.error or "it exited")
                self._schedule_retry(handle.slot, now)
                self._thaw_heap()
                continue
            if now - handle.heartbeat > config.timeout_worker_healthcheck:
                logger.error(
                    "%s missed its heartbeat for %.1fs (--timeout-worker-healthcheck); "
                    "replacing it",
                    handle.label,
                    now - handle.heartbeat,
                )
                self._unpublish(handle)
                self._account(handle)
                handle.abandon()
                self._abandoned.append(handle)
                self._worker_crashed(handle, "missed its heartbeat")
                self.replacements += 1
                self._schedule_retry(handle.slot, now, immediately=True)
                self._thaw_heap()
                continue
        self._check_process_memory(now)
        if not self._starting:
            victim = self._recycle_candidate(now)
            if victim is not None:
                self.recycles += 1
                self._starting[self._spawn(victim.slot, self._app, victim.generation)] = victim
        for slot, when in list(self._retry.items()):
            if now >= when:
                del self._retry[slot]
                self._starting[self._spawn(slot, self._app, self._generation)] = None
        self._check_starting(now)
        self._reap()
        if self._memory_roll_pending:
            if self._draining:
                # The highest the process got while the old generation drains: what the
                # release is measured against (its memory may go by reference counting
                # before _release_memory runs).
                rss = process_rss(os.getpid())
                if rss is not None and rss > self._memory_peak:
                    self._memory_peak = rss
            else:
                # Not inside _reap() either: the old generation must be unreferenced first.
                self._memory_roll_pending = False
                self._release_memory()
        if self._refreeze and not (self._draining or self._starting or self._retry):
            # Not inside _reap(): its locals still reference the retired workers (and so the
            # old app) until it returns.
            self._refreeze = False
            self._heap.freeze()

    def _thaw_heap(self) -> None:
        """Workers are coming and going: what they leave behind must stay collectable.

        A thread worker's event loop, its lifespan state and, after a reload, the old app were
        alive when the heap was frozen; frozen, they would never be collected once they become
        garbage. The heap is frozen again when no worker is starting or draining.
        """
        self._heap.thaw()
        self._refreeze = True

    def _recycle_candidate(self, now: float) -> WorkerHandle | None:
        limit_rss = self.config.limit_max_rss
        for handle in self.workers:
            limit = self._limits.get(handle)
            if limit is not None and handle.requests_total >= limit:
                logger.info(
                    "%s served %d requests (--limit-max-requests %d); recycling it",
                    handle.label,
                    handle.requests_total,
                    limit,
                )
                self._emit(WorkerRecycled(name=handle.name, reason="max requests"))
                return handle
        if limit_rss is not None and self.model.kind == "process":
            candidates = [w for w in self.workers if now - w.started_at >= RSS_RECYCLE_MIN_AGE]
            for handle in sorted(candidates, key=lambda w: w.started_at):
                rss = handle.rss()
                if rss is not None and rss > limit_rss:
                    logger.info(
                        "%s uses %d MiB of memory (--limit-max-rss %d MiB); recycling it",
                        handle.label,
                        rss >> 20,
                        limit_rss >> 20,
                    )
                    self._emit(WorkerRecycled(name=handle.name, reason="max rss"))
                    return handle
        return None

    def _check_process_memory(self, now: float) -> None:
        """``--limit-max-rss`` for thread workers: roll a generation with a fresh import.

        Threads share the process's memory, so recycling one thread frees nothing the app
        holds (its module globals, caches, leaks). A new generation with the app's modules
        imported again does: once the old generation has drained, its modules, app and
        lifespan state are garbage, and :meth:`_release_memory` hands the pages back.
        Memory held outside the app's modules (an installed library) is not released; then
        the next roll waits until the process grew by another tenth of the limit.
        """
        limit = self.config.limit_max_rss
        if (
            limit is None
            or self.model.kind != "thread"
            or self._starting
            or self._draining
            or self._retry
            or self._memory_roll_pending
            or now < self._memory_not_before
            or not self.workers
            or any(now - w.started_at < MEMORY_ROLL_MIN_AGE for w in self.workers)
        ):
            return
        rss = process_rss(os.getpid())
        threshold = max(limit, self._memory_floor + limit // 10)
        if rss is None or rss <= threshold:
            return
        logger.info(
            "The process uses %d MiB of memory (--limit-max-rss %d MiB); starting a new "
            "generation of workers with a fresh import of the app",
            rss >> 20,
            limit >> 20,
        )
        self._emit(WorkerRecycled(name=f"generation {self._generation}", reason="max rss"))
        if self._reload(counted=False):
            self.recycles += 1
            self._memory_roll_pending = True
            self._memory_peak = rss
        else:
            self._memory_not_before = now + MEMORY_ROLL_RETRY

    def _release_memory(self) -> None:
        """The old generation is gone: collect it and return the freed pages to the system."""
        limit = self.config.limit_max_rss
        assert limit is not None
        gc.collect()
        trim_malloc()
        rss = process_rss(os.getpid())
        # Still over the limit is only a sign of memory held outside the app when the roll
        # gave little back since the process's peak: a busy leaking app may have refilled the
        # new generation past the limit while the old one drained, which the next roll handles.
        freed = self._memory_peak - rss if rss is not None else 0
        self._memory_peak = 0
        if rss is None or rss <= limit or freed >= limit // 4:
            self._weak_releases = 0
            self._memory_floor = 0
            return
        # One roll that gave little back proves nothing: the old generation may have held
        # little (a roll soon after the last one) while the new one leaked on. Two in a row do.
        self._weak_releases += 1
        if self._weak_releases >= 2:
            logger.warning(
                "The process still uses %d MiB after a fresh generation (--limit-max-rss "
                "%d MiB): the memory is not held by the app's own modules; the next roll "
                "waits until it grows by %d MiB",
                rss >> 20,
                limit >> 20,
                (limit // 10) >> 20,
            )
            self._memory_floor = rss

    def _check_starting(self, now: float) -> None:
        for new, old in list(self._starting.items()):
            new.poll()
            if new.ready.is_set():
                del self._starting[new]
                self._failures.pop(new.slot, None)
                self._worker_started(new)
                previous = self.workers
                # The replacement serves before the worker it replaces starts draining.
                self._publish((*[w for w in previous if w is not old], new))
                if old is not None and old in previous:
                    self._retire(old)
            elif not new.alive():
                del self._starting[new]
                self._limits.pop(new, None)
                failures = self._failures.get(new.slot, 0) + 1
                self._failures[new.slot] = failures
                logger.error(
                    "%s failed to start: %s (%d in a row)",
                    new.label,
                    new.error or "it exited",
                    failures,
                )
                if new.error_details:
                    logger.error("%s", new.error_details.rstrip())
                if failures >= MAX_START_FAILURES:
                    self.fatal = WorkerFailure(
                        f"a worker failed to start {failures} times in a row; stopping: "
                        f"{new.error or 'it exited'}",
                        details=new.error_details,
                    )
                    self._stopping = True
                    return
                if old is not None and old.alive():
                    continue  # recycling failed: the old worker keeps serving
                self._schedule_retry(new.slot, now, failures=failures)

    def _schedule_retry(
        self, slot: int, now: float, *, failures: int | None = None, immediately: bool = False
    ) -> None:
        count = self._failures.get(slot, 0) if failures is None else failures
        delay = 0.0 if immediately else min(BACKOFF_MAX, BACKOFF_FIRST * (2**count))
        self._retry[slot] = now + delay

    def _hand_out_orphans(self, handle: WorkerHandle) -> None:
        """A gone worker's unread hand-offs go to the live workers (after it was unpublished)."""
        orphans = handle.take_orphans()
        if not orphans:
            return
        if self.distributor is not None and not self._stopping:
            self.distributor.hand_out_again(orphans)
        else:
            for sock in orphans:
                sock.close()

    def _unpublish(self, handle: WorkerHandle) -> None:
        self._publish(tuple(w for w in self.workers if w is not handle))

    def _account(self, handle: WorkerHandle) -> None:
        """Fold a departing worker's count into the retired total (read once, at departure)."""
        self.retired_requests += handle.requests_total
        self._limits.pop(handle, None)

    def _reap(self) -> None:
        if self._abandoned:
            alive = [w for w in self._abandoned if _alive(w)]
            for handle in self._abandoned:
                if handle not in alive:
                    self._hand_out_orphans(handle)
            self._abandoned = alive
        if self._draining:
            gone = [w for w in self._draining if not _alive(w)]
            if gone:
                # Counted only once it has exited: a draining worker still finishes requests.
                self._draining = [w for w in self._draining if w not in gone]
                self.retired_requests += sum(w.requests_total for w in gone)
                self.draining = tuple(self._draining)
                for handle in gone:
                    self._hand_out_orphans(handle)
                    self._worker_stopped(handle)

    # -- reload and scaling -------------------------------------------------------------------

    def _reload(self, *, counted: bool = True) -> bool:
        """Roll a new generation with freshly imported code; False if it could not start."""
        if counted:
            logger.info("Reloading: starting a new generation of workers")
            self._emit(ReloadStarted(generation=self._generation))
        self._thaw_heap()  # the old generation's app is about to become garbage
        try:
            app = self._loader.reload()
        except StartupError as exc:
            self.failed_reloads += 1
            logger.error("Reload failed, the current workers keep serving: %s", exc.message)
            if exc.details:
                logger.error("%s", exc.details.rstrip())
            self._reload_failed(counted, exc.message)
            return False
        except Exception as exc:
            self.failed_reloads += 1
            logger.exception("Reload failed, the current workers keep serving", exc_info=exc)
            self._reload_failed(counted, f"{type(exc).__name__}: {exc}")
            return False
        result = self._start_generation(app, max(1, len(self.workers)))
        if not isinstance(result, tuple):
            self.failed_reloads += 1
            if result is not None:
                logger.error(
                    "Reload failed, the current workers keep serving: %s", result.message
                )
                if result.details:
                    logger.error("%s", result.details.rstrip())
            self._reload_failed(
                counted, result.message if result is not None else "stopped during the reload"
            )
            return False
        old = [*self.workers, *self._starting]
        self._starting.clear()
        self._retry.clear()
        self._app = app
        self._publish(result)
        for handle in old:
            self._retire(handle)
        if counted:
            self.reloads += 1
            self._emit(ReloadCompleted(generation=self._generation))
        logger.info("Reload complete: generation %d serving", self._generation)
        return True

    def _reload_failed(self, counted: bool, error: str) -> None:
        if counted:
            self._emit(ReloadFailed(error=error))

    def _scale(self, delta: int) -> None:
        if delta > 0:
            used = {w.slot for w in (*self.workers, *self._starting)} | set(self._retry)
            slot = next(i for i in range(len(used) + 1) if i not in used)
            logger.info("Adding a worker (SIGTTIN): worker %d", slot + 1)
            self._starting[self._spawn(slot, self._app, self._generation)] = None
        elif delta < 0:
            if len(self.workers) <= 1:
                logger.info("SIGTTOU ignored: at least one worker keeps serving")
                return
            victim = max(self.workers, key=lambda w: w.slot)
            logger.info("Removing a worker (SIGTTOU): %s", victim.label)
            self._unpublish(victim)
            self._retire(victim)
            sockets = self._slot_sockets.pop(victim.slot, None)
            for sock in sockets or ():
                sock.close()

    def _relay_events(self) -> None:
        hub = self._event_hub
        if hub is None:
            return
        wanted = WantedKinds(mp_context())
        self._wanted_events = wanted
        self._event_relay = EventRelay(hub)
        self._unwatch_events = hub.watch_worker_kinds(wanted.set)

    # -- shutdown -----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self._emit(ServerStopping(force=self._force))
        if self.distributor is not None:
            self.distributor.stop()
        everyone = [*self.workers, *self._starting, *self._draining]
        for handle in everyone:
            handle.request_stop(force=self._force)
        for sockets in self._slot_sockets.values():
            for sock in sockets:
                sock.close()
        self._slot_sockets.clear()
        if self._close_listeners is not None:
            self._close_listeners()
        grace = self.config.timeout_graceful_shutdown + 5.0
        deadline = time.monotonic() + grace
        forced = self._force
        while any(_alive(w) for w in everyone) and time.monotonic() < deadline:
            try:
                action, arg = self._actions.get(timeout=POLL)
            except queue.Empty:
                continue
            if action == "stop" and arg and not forced:
                forced = True
                for handle in everyone:
                    handle.request_stop(force=True)
        for handle in everyone:
            if _alive(handle):
                logger.warning("%s did not stop in time; abandoning it", handle.label)
                handle.abandon()
                _join(handle, 1.0)
        for handle in self._abandoned:
            _join(handle, 1.0)  # reap killed processes; a hung thread is a daemon, left alone
        for handle in (*everyone, *self._abandoned):
            for sock in handle.take_orphans():
                sock.close()  # stopping: nobody is left to serve them
        self._abandoned.clear()
        for handle in (*self.workers, *self._draining):
            if not handle.alive():  # abandoned ones never reported that they stopped
                self._worker_stopped(handle)
        self.retired_requests += sum(w.requests_total for w in (*self.workers, *self._draining))
        self.workers = ()
        self.draining = ()
        self._draining.clear()
        if self._unwatch_events is not None:
            self._unwatch_events()
        if self._event_relay is not None:
            self._event_relay.stop()  # after the workers: their last events are in the pipes
        self._heap.thaw()
        if self.rate_limiter is not None:
            self.rate_limiter.unlink()
        if self._slot_table is not None:
            self._slot_table.close()


def _alive(handle: WorkerHandle) -> bool:
    handle.poll()
    return handle.alive()


def _join(handle: WorkerHandle, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(handle):
        if time.monotonic() >= deadline:
            return False
        handle.exited.wait(0.01)
    return True


def _reuseport_twin(sock: socket.socket, backlog: int) -> socket.socket:
    """Another listening socket on *sock*'s address with ``SO_REUSEPORT`` (one per worker)."""
    twin = socket.socket(sock.family, sock.type, sock.proto)
    try:
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        twin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        twin.bind(sock.getsockname())
        twin.listen(backlog)
        twin.setblocking(False)
    except OSError:
        twin.close()
        raise
    return twin
