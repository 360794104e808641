"""Handing an HTTP/1.1 connection over to WebSocket (RFC 6455 §4).

The HTTP/1.1 protocol calls :func:`try_websocket_upgrade` for a request carrying
``Connection: upgrade`` + ``Upgrade: websocket``. When WebSocket is on and the handshake is
valid, the transport is switched (``transport.set_protocol``) to a
:class:`WebSocketConnection`, which from then on receives the connection's bytes and
implements the engine's :class:`~pounce.protocols.websocket.engine.ByteStream` and the
session's :class:`~pounce.pipeline.websocket.HandshakeChannel` over the asyncio transport.

This is the one place that knows both HTTP/1.1 and WebSocket; when the transport layer gains
a generic ``switch_engine``, this adapter becomes that call.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import TYPE_CHECKING

from pounce.asgi.scope import http_scope
from pounce.logs import AccessInfo
from pounce.protocols.http1.response import error_response, status_line
from pounce.protocols.websocket.handshake import (
    HandshakeError,
    check_http1_upgrade,
    negotiate_deflate,
    parse_subprotocols,
)
from pounce.server.context import Connection

if TYPE_CHECKING:
    from pounce.asgi.types import Headers
    from pounce.pipeline.websocket import WebSocketSession
    from pounce.protocols.http1.base import RequestHead
    from pounce.protocols.http1.protocol import HTTP1Protocol
    from pounce.protocols.websocket.engine import WebSocketEngine
    from pounce.server.context import WorkerContext

logger = logging.getLogger("pounce.error")

INFINITY = float("inf")


def try_websocket_upgrade(protocol: HTTP1Protocol, head: RequestHead) -> bool:
    """Take the connection over for a WebSocket, or answer a bad handshake.

    Returns False when the request is to be served as plain HTTP instead (WebSocket off,
    or the concurrency limit is reached and the normal path answers 503).
    """
    ctx = protocol.ctx
    support = ctx.websocket
    if support is None:
        ctx.warn_websocket_off()
        return False
    limit = ctx.limit_concurrency
    if limit is not None and ctx.active_requests >= limit:
        return False
    transport = protocol.transport
    assert transport is not None
    try:
        if head.content_length or head.chunked:
            raise HandshakeError(400, "a WebSocket handshake carries no body", [])
        handshake = check_http1_upgrade(head.method, head.http_version, head.headers)
    except HandshakeError as exc:
        if logger.isEnabledFor(logging.INFO):
            logger.info("Refused WebSocket handshake from %s: %s", protocol._peer(), exc.reason)
        protocol.keep_alive = False
        extra = b"".join(name + b": " + value + b"\r\n" for name, value in exc.headers)
        response = error_response(exc.status, date_line=ctx.date_line, static_head=ctx.server_line)
        if extra:
            line_end = response.index(b"\r\n") + 2
            response = response[:line_end] + extra + response[line_end:]
        protocol._write(response)
        protocol._close()
        return True

    from pounce.pipeline.websocket import WebSocketSession, websocket_scope
    from pounce.protocols.websocket.engine import WebSocketEngine

    scope = http_scope(
        ctx,
        head.http_version,
        head.method,
        protocol.scheme,
        head.path,
        head.query,
        head.headers,
        protocol.client,
        protocol.server,
        protocol.proxy_trust,
    )
    ws_scope = websocket_scope(scope, parse_subprotocols(head.headers))
    deflate = negotiate_deflate(head.headers) if support.per_message_deflate else None
    connection = WebSocketConnection(ctx, transport, handshake.accept, deflate_response=(
        deflate.response if deflate is not None else None
    ))
    connection.client = protocol.client
    connection.write_paused = protocol.write_paused
    connection.read_paused = protocol.read_paused
    session = WebSocketSession(ctx, connection, ws_scope)
    engine = WebSocketEngine(
        ctx.loop,
        connection,
        session,
        support.options,
        deflate,
        protocol.parser.take_trailing_data(),
    )
    session.engine = engine
    connection.engine = engine
    connection.session = session
    # The HTTP/1.1 protocol object goes quiet: no more callbacks reach it, and it must not
    # touch the transport (its parse loop stops because it counts as closed).
    protocol.closed = protocol.closing = True
    protocol.deadline = INFINITY
    ctx.connections.discard(protocol)
    ctx.connections.add(connection)
    transport.set_protocol(connection)
    if ctx.shutting_down:
        engine.shutdown_requested = True
    ctx.request_started()
    connection.start_time = perf_counter() if ctx.access_log.enabled else 0.0
    session.task = ctx.start_task(session.run(ctx.app), context=ctx.base_context.copy())
    return True


class WebSocketConnection(asyncio.Protocol, Connection):
    """A TCP connection carrying one WebSocket, after the HTTP/1.1 request that opened it."""

    def __init__(
        self,
        ctx: WorkerContext,
        transport: asyncio.Transport,
        accept_key: bytes,
        deflate_response: bytes | None,
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.accept_key = accept_key
        self.deflate_response = deflate_response
        self.engine: WebSocketEngine | None = None
        self.session: WebSocketSession | None = None
        self.client: tuple[str, int] | None = None
        self.write_paused = False
        self.read_paused = False
        self.closed = False  # connection_lost() ran
        self.closing = False  # no more writes
        self.write_deadline = INFINITY
        self.drain_waiter: asyncio.Future[None] | None = None
        self.start_time = 0.0
        # Refusal response framing: chunked unless the app gave a Content-Length.
        self._chunked = False

    # -- the worker's view (Connection) -------------------------------------------------------

    @property
    def deadline(self) -> float:  # type: ignore[override]  # computed, never assigned
        engine = self.engine
        engine_deadline = engine.deadline if engine is not None else INFINITY
        write_deadline = self.write_deadline
        return write_deadline if write_deadline < engine_deadline else engine_deadline

    def on_deadline(self, now: float) -> None:
        if now >= self.write_deadline:
            logger.info("WebSocket client stopped reading; aborting")
            self.abort()
            return
        engine = self.engine
        if engine is not None:
            engine.on_deadline(now)

    def shutdown(self) -> None:
        engine = self.engine
        if engine is not None:
            engine.shutdown()

    def force_close(self) -> None:
        engine = self.engine
        if engine is not None:
            engine.force_close()
        else:
            self.abort()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        engine = self.engine
        if engine is not None and not self.closed:
            engine.data_received(data)

    def eof_received(self) -> bool | None:
        engine = self.engine
        if engine is not None:
            engine.eof_received()
        return True  # the engine closes the transport itself, after its last write

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closing = True
        self.write_deadline = INFINITY
        self.ctx.connections.discard(self)
        self._wake_drain()
        engine = self.engine
        if engine is not None:
            engine.connection_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_deadline = self.ctx.loop.time() + self.ctx.config.timeout_write

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = INFINITY
        self._wake_drain()

    # -- ByteStream (for the engine) ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.transport.write(data)

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            waiter = self.ctx.loop.create_future()
            self.drain_waiter = waiter
            await waiter

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closing:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closing:
            self.read_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closing = True
            self.transport.abort()

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- HandshakeChannel (for the session) ---------------------------------------------------

    def accept(self, subprotocol: str | None, headers: Headers) -> None:
        ctx = self.ctx
        parts = [
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: ",
            self.accept_key,
            b"\r\n",
        ]
        if subprotocol is not None:
            parts.append(b"sec-websocket-protocol: " + subprotocol.encode("latin-1") + b"\r\n")
        if self.deflate_response is not None:
            parts.append(b"sec-websocket-extensions: " + self.deflate_response + b"\r\n")
        names = set()
        for name, value in headers:
            names.add(name)
            parts.append(name + b": " + value + b"\r\n")
        for name, value in ctx.default_headers:
            if name not in names:
                parts.append(name + b": " + value + b"\r\n")
        if b"server" not in names:
            parts.append(ctx.server_line)
        if b"date" not in names:
            parts.append(ctx.date_line)
        parts.append(b"\r\n")
        self.write(b"".join(parts))
        self._log_access(101)

    def reject(self, status: int) -> None:
        ctx = self.ctx
        self.write(error_response(status, date_line=ctx.date_line, static_head=ctx.server_line))
        self._log_access(status)
        self.close()

    def reject_start(self, status: int, headers: Headers) -> None:
        ctx = self.ctx
        parts = [status_line(status)]
        has_length = False
        names = set()
        for name, value in headers:
            if name in (b"transfer-encoding", b"connection"):
                continue  # the server frames the body and closes afterwards
            if name == b"content-length":
                has_length = True
            names.add(name)
            parts.append(name + b": " + value + b"\r\n")
        for name, value in ctx.default_headers:
            if name not in names:
                parts.append(name + b": " + value + b"\r\n")
        if b"server" not in names:
            parts.append(ctx.server_line)
        if b"date" not in names:
            parts.append(ctx.date_line)
        self._chunked = not has_length and status not in (204, 304)
        if self._chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"connection: close\r\n\r\n")
        self.write(b"".join(parts))
        self._log_access(status)

    def reject_body(self, body: bytes, more_body: bool) -> None:
        if self._chunked:
            out = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                out += b"0\r\n\r\n"
        else:
            out = body
        if out:
            self.write(out)
        if not more_body:
            self.close()

    def session_finished(self, session: WebSocketSession) -> None:
        self.ctx.request_finished()

    def _log_access(self, status: int) -> None:
        ctx = self.ctx
        session = self.session
        if not ctx.access_log.enabled or session is None:
            return
        scope = session.scope
        ctx.access_log.log(
            AccessInfo(
                client=scope["client"],
                method="GET",
                path=scope["path"],
                query_string=scope["query_string"],
                http_version=scope["http_version"],
                status=status,
                bytes_sent=0,
                duration=perf_counter() - self.start_time,
                request_headers=scope["headers"],
                scheme=scope["scheme"],
            )
        )
