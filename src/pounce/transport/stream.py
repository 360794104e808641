"""One accepted connection: socket I/O, backpressure, deadlines and closing.

:class:`StreamTransport` is the ``asyncio.Protocol`` the event loop talks to. It owns everything
about a connection that does not depend on the protocol spoken over it: the connection's
:class:`~pounce.pipeline.connection.ConnectionInfo`, read pausing, write backpressure (it is the
:class:`~pounce.pipeline.cycle.FlowControl` of its streams), the deadlines the worker's tick
checks, and closing without losing a response (lingering) or without waiting for ever (aborting).

What the bytes mean is up to its protocol *engine* (HTTP/1.1, WebSocket, HTTP/2), which receives
``data_received``/``eof_received`` and answers through the methods below. An engine can hand the
live connection to another engine with :meth:`StreamTransport.switch_engine`, together with the
bytes it already read past its own protocol (an HTTP/1.1 Upgrade to WebSocket or to ``h2c``).

Deadlines are floats checked by the worker's once-per-tick sweep rather than one timer per
connection: setting a float is far cheaper on the hot path than scheduling a timer handle. Two
run at once: the engine's (header, idle, body: one at a time, by kind) and, while the client does
not read, the write deadline. :attr:`deadline` is the earlier of the two, so the sweep does a
single comparison per connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol, cast

from pounce.pipeline.connection import ConnectionInfo
from pounce.pipeline.events import (
    CLOSED_BY_CLIENT,
    CLOSED_SERVER,
    CLOSED_WRITE_TIMEOUT,
    ConnectionClosed,
    ConnectionOpened,
)
from pounce.transport.tls import tls_extension

if TYPE_CHECKING:
    from collections.abc import Callable

    from pounce.pipeline.context import WorkerContext

__all__ = ["Engine", "StreamTransport"]

logger = logging.getLogger("pounce.error")

INFINITY = float("inf")

# Deadline kinds. The transport handles LINGER itself; every other kind belongs to the engine.
NO_DEADLINE = 0
LINGER = 1  # closing: draining what the client still sends so the response is not reset
#: First kind an engine may use for its own deadlines.
ENGINE_KINDS = 8

#: How long a closing connection keeps draining the client's bytes before it gives up.
LINGER_SECONDS = 2.0


class Engine(Protocol):
    """A protocol engine: what a connection's bytes mean."""

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None:
        """The peer half-closed; True keeps the write side open."""

    def connection_lost(self) -> None: ...

    def on_deadline(self, kind: int) -> None:
        """A deadline of the engine's own *kind* expired (it is already cleared)."""

    def write_resumed(self) -> None:
        """The client read enough of what was written: writing may go on."""

    def shutdown(self) -> None:
        """Graceful shutdown: close now if idle, else after the work in hand."""

    def force_close(self) -> None: ...


class _Unconnected:
    """The engine of a transport before ``connection_made``: nothing to do."""

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self) -> None:
        pass

    def on_deadline(self, kind: int) -> None:
        pass

    def write_resumed(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_close(self) -> None:
        pass


_UNCONNECTED_INFO = ConnectionInfo(client=None, server=None)
#: The engine of every connection that is gone: late calls (a task finishing) do nothing.
_GONE = _Unconnected()


class StreamTransport(asyncio.Protocol):
    """An accepted stream connection, carrying one protocol engine at a time."""

    def __init__(
        self,
        ctx: WorkerContext,
        engine_factory: Callable[[StreamTransport], Engine],
    ) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.transport: asyncio.Transport | None = None
        self.info = _UNCONNECTED_INFO
        self.engine: Engine = _GONE
        self._engine_factory = engine_factory
        self.deadline = INFINITY
        self.deadline_kind = NO_DEADLINE
        self.state_deadline = INFINITY
        self.write_deadline = INFINITY
        self.closed = False
        self.closing = True  # no writes: not connected yet, closing, or closed
        self.peer_eof = False
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.linger_backlog = 0  # write-buffer size when the closing deadline was last armed
        #: Why the connection ends, for the ConnectionClosed event.
        self.close_reason = CLOSED_BY_CLIENT
        #: Requests and WebSocket sessions carried, counted by the engines.
        self.requests = 0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        transport = cast("asyncio.Transport", transport)
        self.transport = transport
        self.closing = False
        ctx = self.ctx
        info = self.info = connection_info(transport, ctx)
        ctx.connections.add(self)
        # The engine factory may look at info.alpn (HTTP/2 will be chosen that way).
        self._attach(self._engine_factory(self))
        events = ctx.events
        if events.active and events.wants(ConnectionOpened):
            events.emit(ConnectionOpened(connection=info))

    def data_received(self, data: bytes) -> None:
        # Replaced per instance by the engine's own method (see _attach): one call less for
        # every read. This is only reached before an engine is attached.
        self.engine.data_received(data)

    def eof_received(self) -> bool | None:
        self.peer_eof = True
        if self.deadline_kind == LINGER:
            return None
        return self.engine.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closing = True
        self.write_deadline = INFINITY
        self.clear_deadline()
        ctx = self.ctx
        ctx.connections.discard(self)
        engine = self.engine
        # Let go of the engine (which points back here) so the pair is freed by reference
        # counting, not left to the garbage collector once per connection.
        self.engine = _GONE
        self.__dict__.pop("data_received", None)
        engine.connection_lost()
        self._wake_drain()
        events = ctx.events
        if events.active and events.wants(ConnectionClosed):
            events.emit(
                ConnectionClosed(
                    connection=self.info, reason=self.close_reason, requests=self.requests
                )
            )

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_deadline = self.loop.time() + self.ctx.config.timeout_write
        self.deadline = min(self.state_deadline, self.write_deadline)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = INFINITY
        self.deadline = self.state_deadline
        self._wake_drain()
        self.engine.write_resumed()

    # -- engines ------------------------------------------------------------------------------

    def _attach(self, engine: Engine) -> None:
        self.engine = engine
        # The loop calls data_received for every read: bind the engine's method straight onto
        # this instance so the call goes there directly. uvloop caches the bound method when
        # the protocol is set, so it is told again.
        self.data_received = engine.data_received  # type: ignore[method-assign]
        transport = self.transport
        if transport is not None and not self.closed:
            transport.set_protocol(self)

    def switch_engine(self, engine: Engine, buffered: bytes = b"") -> None:
        """Hand the connection to *engine*, with bytes already read that belong to it."""
        self.clear_deadline()
        self._attach(engine)
        if buffered:
            engine.data_received(buffered)

    # -- what engines call --------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closing:
            transport = self.transport
            assert transport is not None
            transport.write(data)

    async def drain(self) -> None:
        """Wait until the client has read enough of what was written (or is gone)."""
        if self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            self.drain_waiter = waiter
            await waiter

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def set_deadline(self, kind: int, timeout: float) -> None:
        """Arm the engine's deadline *kind* to expire *timeout* seconds from now."""
        self.deadline_kind = kind
        self.state_deadline = deadline = self.loop.time() + timeout
        write_deadline = self.write_deadline
        self.deadline = deadline if deadline < write_deadline else write_deadline

    def set_deadline_at(self, kind: int, when: float) -> None:
        """Arm the engine's deadline *kind* for the ``loop.time()`` *when* (inf clears it)."""
        if when == INFINITY:
            self.clear_deadline()
            return
        self.deadline_kind = kind
        self.state_deadline = when
        write_deadline = self.write_deadline
        self.deadline = when if when < write_deadline else write_deadline

    def clear_deadline(self) -> None:
        self.deadline_kind = NO_DEADLINE
        self.state_deadline = INFINITY
        self.deadline = self.write_deadline

    def close(self, *, linger: bool = True, reason: str = CLOSED_SERVER) -> None:
        """Close after the buffered output is written.

        With *linger*, the write side is shut first and what the client still sends is read
        and dropped for a moment: closing a socket with unread input makes the kernel send a
        reset, which can destroy the response before the client reads it. Either way a
        deadline follows, so a client that never reads cannot keep a closing connection (and
        its buffered response) alive.
        """
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return
        self.closing = True
        self.close_reason = reason
        if linger and not self.peer_eof and transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:
                transport.close()
                return
            self._arm_linger(LINGER_SECONDS)
            self.resume_reading()
            return
        transport.close()
        self._arm_linger(self.ctx.config.timeout_write)

    def abort(self, reason: str = CLOSED_SERVER) -> None:
        """Drop the connection at once, buffered output and all."""
        transport = self.transport
        if transport is not None and not self.closed:
            if not self.closing:
                self.close_reason = reason
            self.closing = True
            transport.abort()

    # -- worker-facing (pounce.pipeline.context.Connection) ---------------------------------

    def on_deadline(self, now: float) -> None:
        if now >= self.write_deadline:
            logger.info("Client %s stopped reading the response; aborting", self.info.peer)
            self.abort(CLOSED_WRITE_TIMEOUT)
            return
        kind = self.deadline_kind
        if kind == NO_DEADLINE or now < self.state_deadline:
            return
        self.clear_deadline()
        if kind == LINGER:
            self._linger_expired()
        else:
            self.engine.on_deadline(kind)

    def shutdown(self) -> None:
        self.engine.shutdown()

    def force_close(self) -> None:
        self.engine.force_close()
        self.abort()

    # -- internals ----------------------------------------------------------------------------

    def _arm_linger(self, timeout: float) -> None:
        transport = self.transport
        assert transport is not None
        self.linger_backlog = transport.get_write_buffer_size()
        # With a response still queued, the client gets at least the write timeout to read it.
        if self.linger_backlog:
            timeout = max(timeout, self.ctx.config.timeout_write)
        self.set_deadline(LINGER, timeout)

    def _linger_expired(self) -> None:
        """A closing connection's time is up: finish it without cutting off a slow reader."""
        transport = self.transport
        assert transport is not None
        backlog = transport.get_write_buffer_size()
        if backlog and backlog < self.linger_backlog:
            # Still draining, just slowly: give it another period.
            self.linger_backlog = backlog
            self.set_deadline(LINGER, self.ctx.config.timeout_write)
        elif backlog:
            self.abort(CLOSED_WRITE_TIMEOUT)  # no progress at all: the client stopped reading
        else:
            transport.close()  # everything is handed to the kernel; a FIN loses nothing

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)


def connection_info(transport: asyncio.BaseTransport, ctx: WorkerContext) -> ConnectionInfo:
    """Everything fixed about a new connection, asked of its transport once."""
    peer = transport.get_extra_info("peername")
    sock = transport.get_extra_info("sockname")
    client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
    server: tuple[str, int | None] | None = None
    if isinstance(sock, tuple):
        server = (sock[0], sock[1])
    elif isinstance(sock, str) and sock:
        server = (sock, None)
    trust = ctx.proxy_trust
    host = client[0] if client else None
    proxy_trust = trust if trust is not None and trust.trusts(host) else None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return ConnectionInfo(client=client, server=server, proxy_trust=proxy_trust)
    return ConnectionInfo(
        client=client,
        server=server,
        scheme="https",
        proxy_trust=proxy_trust,
        tls=tls_extension(ssl_object, getattr(ssl_object.context, "server_cert_pem", None)),
        alpn=ssl_object.selected_alpn_protocol(),
    )
