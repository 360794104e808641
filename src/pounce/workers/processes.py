"""Process workers: the supervisor binds the sockets once and forks the workers.

On Linux workers are forked after the app was imported, so its code and read-only data are
shared copy-on-write; where fork is unsafe (macOS, Windows) they are spawned and import the app
themselves. A worker either listens on the inherited sockets (``--accept listen`` / its own
``reuseport`` socket) or receives accepted connections from the supervisor's distributor over
a ``SOCK_SEQPACKET`` pair (``SCM_RIGHTS`` file-descriptor passing).

A worker reports to the supervisor through a pipe, from its event loop: ``ready`` once it
serves, then a heartbeat every :data:`REPORT_INTERVAL` with its counters. Because the
heartbeat is sent by the loop itself, a loop blocked by the app stops sending and the
supervisor replaces the worker (``--timeout-worker-healthcheck``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pounce.errors import StartupError
from pounce.pipeline.hub import EventForwarder
from pounce.pipeline.slots import SlotPool, Slots
from pounce.server.accept import AcceptThrottle, is_resource_error
from pounce.server.loops import loop_factory
from pounce.workers.handle import RETIRE_GRACE, WorkerHandle, process_rss
from pounce.workers.heap import HeapFreezer
from pounce.workers.relay import EventSender
from pounce.workers.threads import make_worker, run_worker

if TYPE_CHECKING:
    import ssl

    from pounce.asgi.lifespan import Lifespan
    from pounce.asgi.types import ASGIApp
    from pounce.config import ServerConfig
    from pounce.features.metrics_store import MetricsStore
    from pounce.features.rate_limit import RateLimitStore
    from pounce.pipeline.shared_slots import SharedSlotTable
    from pounce.server.worker import Worker
    from pounce.workers.relay import EventRelay, WantedKinds

logger = logging.getLogger("pounce.error")

REPORT_INTERVAL = 0.1
EXIT_STARTUP_FAILED = 3


def mp_context() -> Any:
    """fork on Linux (shares the imported app copy-on-write), spawn where fork is unsafe."""
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method)


@dataclass(slots=True)
class ChildSpec:
    """Everything a worker process needs (inherited by fork, pickled by spawn)."""

    app: ASGIApp | None
    config: ServerConfig
    listen: list[socket.socket]
    channel: socket.socket | None
    name: str
    max_requests: int | None
    parent_pid: int
    #: ``--metrics``: the shared store (inherited by fork, attached by name when spawned)
    #: and the region this worker writes.
    metrics: tuple[MetricsStore, int | None] | None = None
    #: Where request events go to the parent's subscribers, and which ones they want.
    events: multiprocessing.connection.Connection | None = None
    wanted: WantedKinds | None = None
    #: ``--rate-limit``'s table: inherited with the fork, or attached by name when spawned.
    rate_limiter: RateLimitStore | None = None
    #: ``--max-concurrency``'s server-wide table and this process's cell in it.
    slot_table: SharedSlotTable | None = None
    slot_cell: int | None = None
    #: Only when the table had no cell free: this process's own share of the limit.
    queue_share: tuple[int, int] | None = None


def _child_main(spec: ChildSpec, report: multiprocessing.connection.Connection) -> None:
    """Entry point of a worker process."""
    # The supervisor owns SIGINT (a terminal sends it to the whole process group) and SIGHUP.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Until the loop installs its handlers, a retire request means plain termination.
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        if spec.app is None:
            from pounce.importer import load_app

            spec.app = load_app(spec.config)
        app = spec.app
        with asyncio.Runner(loop_factory=loop_factory(spec.config.loop)) as runner:
            runner.run(_child_serve(spec, app, report))
    except StartupError as exc:
        with contextlib.suppress(OSError):
            report.send(("failed", exc.message, exc.details))
        os._exit(EXIT_STARTUP_FAILED)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            report.send(("failed", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        os._exit(1)
    with contextlib.suppress(OSError):
        report.send(("exit",))
    # Skip the parent's atexit handlers and inherited buffered state: this is a fork.
    logging.shutdown()
    os._exit(0)


async def _child_serve(
    spec: ChildSpec, app: ASGIApp, report: multiprocessing.connection.Connection
) -> None:
    loop = asyncio.get_running_loop()
    holder: list[Worker] = []
    forced = [False]
    wanted = spec.wanted
    forwarder: EventForwarder | None = None
    sender: EventSender | None = None
    if spec.events is not None and wanted is not None:
        forwarder = EventForwarder()
        forwarder.want(wanted.get())
        sender = EventSender(spec.events)

    pool: Slots | None = None
    table = spec.slot_table
    if table is not None and spec.slot_cell is not None:
        table.bind(spec.slot_cell, loop)
        pool = table
    elif spec.queue_share is not None:
        pool = SlotPool(*spec.queue_share)

    def factory(lifespan: Lifespan, ssl_context: ssl.SSLContext | None) -> Worker:
        return make_worker(
            app,
            spec.config,
            lifespan,
            name=spec.name,
            max_requests=False,  # the supervisor watches the count and recycles
            on_request_limit=None,
            ssl_context=ssl_context,
            metrics=spec.metrics,
            event_hub=forwarder,
            rate_limiter=spec.rate_limiter,
            slot_pool=pool,
        )

    def attach(worker: Worker) -> None:
        holder.append(worker)
        loop.add_signal_handler(signal.SIGTERM, worker.request_stop)
        loop.add_signal_handler(signal.SIGQUIT, lambda: _force(worker))
        grace = min(RETIRE_GRACE, spec.config.timeout_keep_alive)
        loop.add_signal_handler(signal.SIGUSR1, lambda: worker.request_stop(idle_grace=grace))
        if spec.channel is not None:
            worker.inbox_open = True  # until the supervisor's end-of-file
            throttle = AcceptThrottle(spec.name)
            loop.add_reader(spec.channel.fileno(), _receive_fds, spec.channel, worker, throttle)

    def _force(worker: Worker) -> None:
        forced[0] = True
        worker.request_stop(force=True)

    def on_ready() -> None:
        # This process's own start-up objects (its lifespan's) join the inherited frozen heap.
        HeapFreezer(spec.config.gc_freeze).freeze()
        report.send(("ready",))
        loop.call_later(REPORT_INTERVAL, heartbeat)

    def heartbeat() -> None:
        worker = holder[0]
        if forwarder is not None and sender is not None and wanted is not None:
            forwarder.want(wanted.get())
            sender.offer(forwarder)
        if worker.ready.is_set():
            try:
                report.send(
                    ("hb", worker.requests_total, worker.connection_count, worker.adopted)
                )
            except OSError:
                worker.request_stop()  # the supervisor is gone
                return
            if os.getppid() != spec.parent_pid:
                worker.request_stop()
                return
            loop.call_later(REPORT_INTERVAL, heartbeat)

    try:
        await run_worker(
            factory, app, spec.config, spec.listen, attach, on_ready, lambda: forced[0]
        )
    finally:
        if table is not None:
            table.unbind()
        if forwarder is not None and sender is not None:
            sender.close(forwarder)  # the last requests' events


def _receive_fds(channel: socket.socket, worker: Worker, throttle: AcceptThrottle) -> None:
    """Adopt every connection the supervisor's distributor has sent (worker's loop).

    Out of descriptors, the kernel cannot install a passed one: it is dropped and the message
    comes flagged ``MSG_CTRUNC``. The worker then stops reading for a while (the next
    hand-offs wait in the channel, then the distributor's bound holds them in the backlog)
    and, before reading again, checks that a descriptor is free, so at most one connection is
    lost per episode and the log gets one warning per few seconds.
    """
    if throttle.failures and not _descriptor_free(channel):
        _rest(channel, worker, throttle, OSError(errno.EMFILE, os.strerror(errno.EMFILE)))
        return
    while True:
        try:
            msg, fds, flags, _addr = socket.recv_fds(channel, 16, 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if is_resource_error(exc):
                _rest(channel, worker, throttle, exc)
            return
        if not fds and not msg:
            # The supervisor closed its end: no more connections will come.
            worker.inbox_open = False
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(channel.fileno())
            return
        for fd in fds:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            worker._adopt(sock)
        if flags & socket.MSG_CTRUNC:
            problem = f"{os.strerror(errno.EMFILE)} (a handed-over connection was lost)"
            _rest(channel, worker, throttle, OSError(errno.EMFILE, problem))
            return
        if throttle.failures:
            throttle.recovered()


def _descriptor_free(channel: socket.socket) -> bool:
    try:
        os.close(os.dup(channel.fileno()))
    except OSError:
        return False
    return True


def _rest(channel: socket.socket, worker: Worker, throttle: AcceptThrottle, exc: OSError) -> None:
    """Stop reading hand-offs for a growing pause, then resume (worker's loop)."""
    loop = asyncio.get_running_loop()
    fd = channel.fileno()
    loop.remove_reader(fd)
    pause = throttle.failed(exc)

    def resume() -> None:
        if channel.fileno() != -1:
            loop.add_reader(fd, _receive_fds, channel, worker, throttle)

    loop.call_later(pause, resume)


class ProcessWorker(WorkerHandle):
    """A worker running in a child process."""

    kind = "process"

    def __init__(
        self,
        *,
        app: ASGIApp | None,
        config: ServerConfig,
        listen: list[socket.socket],
        distributed: bool,
        name: str,
        slot: int,
        generation: int,
        max_requests: int | None,
        metrics: tuple[MetricsStore, int | None] | None = None,
        event_relay: EventRelay | None = None,
        wanted_events: WantedKinds | None = None,
        rate_limiter: RateLimitStore | None = None,
        queue_share: tuple[int, int] | None = None,
        slot_table: SharedSlotTable | None = None,
        slot_cell: int | None = None,
    ) -> None:
        super().__init__(name=name, slot=slot, generation=generation)
        #: Given back (what the process held reclaimed) once the process is seen gone.
        self._slot_table = slot_table
        self._slot_cell = slot_cell
        self.config = config
        ctx = mp_context()
        self._reader, writer = ctx.Pipe(duplex=False)
        self._event_relay = event_relay
        self._events_reader: multiprocessing.connection.Connection | None = None
        events_writer: multiprocessing.connection.Connection | None = None
        if event_relay is not None and wanted_events is not None:
            self._events_reader, events_writer = ctx.Pipe(duplex=False)
        self._channel: socket.socket | None = None
        child_channel: socket.socket | None = None
        if distributed:
            self._channel, child_channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._channel.settimeout(1.0)
            child_channel.setblocking(False)
        self.pid: int | None = None
        spec = ChildSpec(
            app=app if ctx.get_start_method() == "fork" or config.app is None else None,
            config=config,
            listen=list(listen),
            channel=child_channel,
            name=self.label,
            max_requests=max_requests,
            parent_pid=os.getpid(),
            metrics=metrics,
            events=events_writer,
            wanted=wanted_events if events_writer is not None else None,
            rate_limiter=rate_limiter,
            queue_share=queue_share,
            slot_table=slot_table,
            slot_cell=slot_cell,
        )
        self._writer = writer
        self._events_writer = events_writer
        self._child_channel = child_channel
        self._process: Any = ctx.Process(
            target=_child_main, args=(spec, writer), name=f"pounce-{name}", daemon=False
        )
        self._requests = 0
        self._connections = 0
        self._adopted = 0
        self._orphans: list[socket.socket] = []
        self._heartbeat = time.monotonic()

    def _label_details(self) -> list[str]:
        details = super()._label_details()
        if self.pid is not None:
            details.append(f"pid {self.pid}")
        return details

    def start(self) -> None:
        try:
            self._process.start()
        except BaseException:
            self._give_back_cell()  # never ran: nothing to reclaim but the cell itself
            raise
        self.pid = self._process.pid
        self._heartbeat = time.monotonic()
        # The child holds its ends now.
        self._writer.close()
        if self._events_writer is not None and self._events_reader is not None:
            self._events_writer.close()
            assert self._event_relay is not None
            self._event_relay.add(self._events_reader)
        # The child's end of the hand-off channel stays open here too (nothing is read from
        # it while the child lives): if the child dies (kill -9), the connections queued in
        # it, which it never read, are not lost with it but taken back (reclaim()).

    def poll(self) -> None:
        try:
            while self._reader.poll():
                message = self._reader.recv()
                self._handle(message)
        except (EOFError, OSError):
            pass

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            self._heartbeat = time.monotonic()
            self.ready.set()
        elif kind == "hb":
            self._heartbeat = time.monotonic()
            self._requests, self._connections, self._adopted = message[1:4]
        elif kind == "failed":
            self.error, self.error_details = message[1], message[2]

    def request_stop(self, *, force: bool = False, retire: bool = False) -> None:
        self.stopping = True
        pid = self.pid
        if pid is None or not self.alive():
            return
        sig = signal.SIGQUIT if force else signal.SIGUSR1 if retire else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if self._channel is not None and not force:
            # No more connections for this worker: its reader sees end-of-file.
            with contextlib.suppress(OSError):
                self._channel.shutdown(socket.SHUT_WR)

    def alive(self) -> bool:
        alive = bool(self._process.is_alive())
        if not alive and not self.exited.is_set():
            self.poll()
            code = self._process.exitcode
            if code not in (0, None) and self.error is None:
                self.error = (
                    f"killed by signal {signal.Signals(-code).name}"
                    if code < 0
                    else f"exited with status {code}"
                )
            self._orphans = self._reclaim()
            self._close()
            self._give_back_cell()
            self.exited.set()
        return alive

    def _reclaim(self) -> list[socket.socket]:
        """The connections still queued for this (now exited) process, which it never read."""
        channel = self._child_channel
        orphans: list[socket.socket] = []
        if channel is None:
            return orphans
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(channel, 16, 16)
            except OSError:  # BlockingIOError: none left
                break
            if not fds and not msg:
                break
            for fd in fds:
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                orphans.append(sock)
        if orphans:
            logger.info(
                "%s left %d handed-over connection(s) unread; given to the other workers",
                self.label,
                len(orphans),
            )
        return orphans

    def take_orphans(self) -> list[socket.socket]:
        orphans, self._orphans = self._orphans, []
        return orphans

    def _give_back_cell(self) -> None:
        """The process is gone: what it held of the request queue goes to the next waiters."""
        table, cell = self._slot_table, self._slot_cell
        if table is not None and cell is not None:
            self._slot_cell = None
            held = table.reclaim(cell)
            if held:
                logger.info(
                    "%s left %d request-queue slot(s) behind; given to the next requests",
                    self.label,
                    held,
                )

    def _close(self) -> None:
        with contextlib.suppress(OSError):
            self._reader.close()
        for channel in (self._channel, self._child_channel):
            if channel is not None:
                with contextlib.suppress(OSError):
                    channel.close()

    def abandon(self) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def join(self, timeout: float) -> bool:
        self._process.join(timeout)
        return not self.alive()

    @property
    def requests_total(self) -> int:
        return self._requests

    @property
    def connection_count(self) -> int:
        return self._connections

    @property
    def adopted(self) -> int:
        return self._adopted

    @property
    def heartbeat(self) -> float:
        return self._heartbeat

    def rss(self) -> int | None:
        return process_rss(self.pid) if self.pid is not None else None

    def adopt(self, sock: socket.socket) -> bool:
        channel = self._channel
        if channel is None:
            return False
        try:
            socket.send_fds(channel, [b"c"], [sock.fileno()])
        except OSError as exc:
            # The process died (EPIPE) or stopped reading: the caller hands it elsewhere.
            logger.debug("hand-off to %s failed: %s", self.name, exc)
            return False
        sock.close()  # the worker has its own descriptor now
        return True


