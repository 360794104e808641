"""Surviving ``accept()`` failures when the process runs out of descriptors or memory.

When ``accept()`` fails with EMFILE, ENFILE, ENOBUFS or ENOMEM the listening socket stays
readable: a loop that just retries spins at full CPU, and one that logs every failure floods
the log (asyncio's own accept loop does both: it logs a traceback per attempt, up to
``backlog`` attempts per wake-up). Every accept path in Pounce instead

* stops accepting for a while (connections wait in the kernel backlog, nothing is dropped),
* logs one warning line at most every :data:`WARN_INTERVAL` seconds, with the number of
  failures it did not log, and one line when accepting works again,
* resumes by itself once descriptors are free.

The paths: asyncio's accept loop (``loop.create_server``: :class:`ListenerGuard`), TLS
listeners (:class:`TLSAcceptor`), the accept distributor thread and the process workers'
descriptor hand-off (:class:`AcceptThrottle`).
uvloop handles the condition inside libuv (it accepts and closes the excess connections
quietly), so its listeners are left alone.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Final

logger = logging.getLogger("pounce.error")

#: accept()/recvmsg() errors that mean "out of descriptors or memory": retrying at once fails.
RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: At most one warning per this many seconds per accept path.
WARN_INTERVAL: Final = 5.0
#: First and longest pause before accepting again.
FIRST_PAUSE: Final = 0.05
MAX_PAUSE: Final = 1.0
#: asyncio's own pause after such a failure (``asyncio.constants.ACCEPT_RETRY_DELAY``).
ASYNCIO_RETRY_DELAY: Final = 1.0

_ASYNCIO_MESSAGE: Final = "socket.accept() out of system resource"


def is_resource_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS


class AcceptThrottle:
    """Rate-limited reporting and growing pauses for one accept path.

    Owned by one thread (an event loop's, or the distributor's): no lock.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        #: Failures since accepting last worked (also read by tests).
        self.failures = 0
        self._pause = FIRST_PAUSE
        self._next_warning = 0.0
        self._unreported = 0
        self._warned = False

    def failed(self, exc: OSError, *, pause: float | None = None) -> float:
        """Record a failure; warn if none was logged lately. Returns how long to pause."""
        self.failures += 1
        if pause is None:
            pause = self._pause
            self._pause = min(MAX_PAUSE, self._pause * 2)
        now = time.monotonic()
        if now < self._next_warning:
            self._unreported += 1
            return pause
        unreported = self._unreported
        self._unreported = 0
        self._next_warning = now + WARN_INTERVAL
        self._warned = True
        logger.warning(
            "%s cannot accept connections: %s; they wait in the backlog, retrying in %gs%s. "
            "Raise the open-file limit (ulimit -n) if this persists",
            self.where,
            exc.strerror or exc,
            pause,
            f" ({unreported} more failure(s) since the last warning)" if unreported else "",
        )
        return pause

    def recovered(self) -> None:
        """Accepting works again: say so (once per warning), and start the next pauses short.

        The warning interval is not reset: a server hovering at its limit, failing and
        recovering in turn, still logs at most two lines per interval.
        """
        if self.failures:
            if self._warned:
                self._warned = False
                self._unreported = 0  # the line below counts them
                logger.warning(
                    "%s accepts connections again (%d failed attempt(s))",
                    self.where,
                    self.failures,
                )
            self.failures = 0
            self._pause = FIRST_PAUSE


class _GuardedListener(socket.socket):
    """A listening socket whose ``accept()`` stops asyncio's accept loop after one failure.

    asyncio's ``_accept_connection`` reacts to a resource error by removing the reader and
    retrying after a second -- but then carries on calling ``accept()`` up to ``backlog``
    times in the same wake-up, logging a traceback each time. While this socket rests it
    answers ``BlockingIOError`` instead, which ends that loop quietly.
    """

    throttle: AcceptThrottle
    resting_until: float

    def accept(self) -> tuple[socket.socket, Any]:
        if self.resting_until and time.monotonic() < self.resting_until:
            raise BlockingIOError(errno.EAGAIN, "resting after a resource error")
        try:
            conn, address = super().accept()
        except OSError as exc:
            if exc.errno in RESOURCE_ERRNOS:
                # Shorter than asyncio's own pause, so its retry does try again.
                self.resting_until = time.monotonic() + ASYNCIO_RETRY_DELAY / 2
            raise
        if self.resting_until:
            self.resting_until = 0.0
            self.throttle.recovered()
        return conn, address


class ListenerGuard:
    """Applies the policy above to the listening sockets served by one asyncio loop.

    ``wrap(sock)`` gives the socket to pass to ``loop.create_server(sock=...)``; the guard's
    exception handler replaces asyncio's traceback per failure by the throttle's warning and
    passes every other error on to the handler that was there before.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str) -> None:
        self.loop = loop
        self.throttle = AcceptThrottle(where)
        self._active = isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
        if self._active:
            self._previous = loop.get_exception_handler()
            loop.set_exception_handler(self._handle)

    def wrap(self, sock: socket.socket) -> socket.socket:
        """A guarded duplicate of *sock* (the server closes it; the caller still owns *sock*)."""
        if not self._active:
            return sock
        guarded = _GuardedListener(sock.family, sock.type, sock.proto, fileno=sock.dup().detach())
        guarded.setblocking(False)
        guarded.throttle = self.throttle
        guarded.resting_until = 0.0
        return guarded

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") == _ASYNCIO_MESSAGE and isinstance(exc, OSError):
            self.throttle.failed(exc, pause=ASYNCIO_RETRY_DELAY)
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


class TLSAcceptor:
    """Accepts on one TLS listening socket of a worker and hands each connection to *adopt*.

    Used instead of ``loop.create_server(ssl=...)`` for TLS listeners, so that the handshake
    of every connection runs where its failure is seen (:mod:`pounce.transport.tls`).
    Accepting never waits for a handshake: *adopt* only schedules it. Out of descriptors, it
    pauses and reports like every other accept path (:class:`AcceptThrottle`). ``close()``
    stops accepting and closes the socket, as ``asyncio.Server.close()`` does.
    """

    #: Connections accepted per readiness event before other callbacks get the loop again.
    BATCH: Final = 64

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        adopt: Callable[[socket.socket], None],
        where: str = "TLS listener",
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.adopt = adopt
        self.closed = False
        self._throttle = AcceptThrottle(where)
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(self.BATCH):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in {errno.ECONNABORTED, errno.EPROTO}:
                    continue  # the client gave up before we accepted: nothing to do
                pause = self._throttle.failed(exc)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(pause, self._resume)
                return
            self._throttle.recovered()
            conn.setblocking(False)
            self.adopt(conn)

    def _resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
