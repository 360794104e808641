"""WebSocket over one HTTP/2 stream (RFC 8441): extended CONNECT with ``:protocol websocket``.

The ASGI session (:class:`~pounce.pipeline.websocket.WebSocketSession`) and the frame engine
(:class:`~pounce.protocols.websocket.engine.WebSocketEngine`) are the ones HTTP/1.1 uses; what
differs is only the handshake's answer (``:status 200`` instead of 101, no
``Sec-WebSocket-Accept``) and the byte stream under the engine: the stream's DATA frames, with
the stream's flow control as backpressure both ways. The engine writes through the stream's
send window (``send()`` waits while it is shut), and received bytes are acknowledged
(WINDOW_UPDATE) only while the engine reads, so a client cannot queue more than the stream's
window while the app falls behind.

This is the one place that knows both HTTP/2 and WebSocket.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, cast

from h2.errors import ErrorCodes

from pounce.logs import escape_for_log
from pounce.protocols.websocket.engine import WebSocketEngine
from pounce.protocols.websocket.handshake import (
    HandshakeError,
    check_version,
    negotiate_deflate,
    parse_subprotocols,
)

if TYPE_CHECKING:
    import asyncio

    import h2.connection

    from pounce.asgi.types import HeaderFields, Headers
    from pounce.pipeline.connection import ConnectionInfo
    from pounce.pipeline.context import WorkerContext
    from pounce.pipeline.dispatcher import Dispatcher
    from pounce.pipeline.websocket import WebSocketSession
    from pounce.protocols.websocket import WebSocketSupport
    from pounce.protocols.websocket.engine import ByteStream


class Connection(Protocol):
    """What a WebSocket needs of the HTTP/2 engine (``engine.HTTP2Engine``)."""

    websocket: WebSocketSupport | None
    info: ConnectionInfo
    dispatcher: Dispatcher
    loop: asyncio.AbstractEventLoop
    ctx: WorkerContext
    running: int
    h2: h2.connection.H2Connection

    def flush_soon(self) -> None: ...
    def app_finished(self) -> None: ...


class Stream(Protocol):
    """What a WebSocket needs of its HTTP/2 stream (``engine.H2Stream``)."""

    stream_id: int
    out_done: bool
    running: bool
    ws: H2WebSocketStream | None

    @property
    def engine(self) -> Connection: ...
    @property
    def write_paused(self) -> bool: ...
    async def drain(self) -> None: ...
    def write_body(self, data: bytes, more_body: bool) -> None: ...
    def start_response(
        self,
        status: int,
        fields: HeaderFields,
        content_length: int | None,
        close: bool,
        trailers: bool,
    ) -> None: ...
    def respond_plain(self, status: int, headers: HeaderFields = ()) -> None: ...
    def abort(self) -> None: ...
    def reset(self, code: int) -> None: ...
    def body_consumed(self) -> None: ...


__all__ = ["H2Handshake", "H2WebSocketStream", "open_websocket"]

logger = logging.getLogger("pounce.error")


def open_websocket(engine: Connection, stream: Stream, path: bytes, headers: Headers) -> None:
    """Serve an extended CONNECT for ``websocket`` on *stream*."""
    support = engine.websocket
    assert support is not None
    try:
        check_version(list(headers))
    except HandshakeError as exc:
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "Refused WebSocket handshake from %s: %s",
                engine.info.peer,
                escape_for_log(exc.reason),
            )
        stream.respond_plain(exc.status, exc.headers)
        return
    raw_path, _, query = path.partition(b"?")
    deflate = negotiate_deflate(list(headers)) if support.per_message_deflate else None
    channel = H2Handshake(stream, deflate.response if deflate is not None else None)
    dispatcher = engine.dispatcher
    session = dispatcher.open_websocket(
        channel, engine.info, "2", raw_path, query, headers, parse_subprotocols(list(headers))
    )
    if session is None:
        return  # refused by admission; the channel answered
    byte_stream = H2WebSocketStream(engine, stream)
    # Its write_paused is computed (read-only): all the frame engine does is read it.
    ws = WebSocketEngine(
        engine.loop, cast("ByteStream", byte_stream), session, support.options, deflate
    )
    byte_stream.ws = ws
    stream.ws = byte_stream
    session.engine = ws
    if engine.ctx.shutting_down:
        ws.shutdown_requested = True
    engine.running += 1
    stream.running = True
    dispatcher.run_websocket(session)


class H2Handshake:
    """Answers one WebSocket handshake on an HTTP/2 stream."""

    __slots__ = ("deflate_response", "stream")

    def __init__(self, stream: Stream, deflate_response: bytes | None) -> None:
        self.stream = stream
        self.deflate_response = deflate_response

    def accept(self, subprotocol: str | None, headers: Headers) -> None:
        stream = self.stream
        if stream.out_done:
            return
        fields: list[tuple[bytes, bytes]] = [(b":status", b"200")]
        if subprotocol is not None:
            fields.append((b"sec-websocket-protocol", subprotocol.encode("latin-1")))
        if self.deflate_response is not None:
            fields.append((b"sec-websocket-extensions", self.deflate_response))
        fields.extend(headers)
        engine = stream.engine
        engine.h2.send_headers(stream.stream_id, fields)
        engine.flush_soon()

    def reject(self, status: int, headers: HeaderFields = ()) -> None:
        self.stream.respond_plain(status, headers)

    def reject_start(self, status: int, headers: Headers, content_length: int | None) -> None:
        self.stream.start_response(status, headers, content_length, False, False)

    def reject_body(self, body: bytes, more_body: bool) -> None:
        self.stream.write_body(body, more_body)

    def abort(self) -> None:
        self.stream.abort()

    def session_finished(self, session: WebSocketSession) -> None:
        stream = self.stream
        if stream.running:
            stream.running = False
            stream.engine.app_finished()


class H2WebSocketStream:
    """One HTTP/2 stream as the frame engine's :class:`ByteStream`."""

    __slots__ = ("_timer", "engine", "paused", "stream", "ws")

    def __init__(self, engine: Connection, stream: Stream) -> None:
        self.engine = engine
        self.stream = stream
        self.ws: WebSocketEngine | None = None
        self.paused = False
        self._timer: asyncio.TimerHandle | None = None

    # -- ByteStream ---------------------------------------------------------------------------

    @property
    def write_paused(self) -> bool:
        return self.stream.write_paused

    def write(self, data: bytes) -> None:
        self.stream.write_body(data, True)

    async def drain(self) -> None:
        await self.stream.drain()

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self.stream.body_consumed()

    def close(self) -> None:
        """END_STREAM after the last frame; the peer's END_STREAM (or a reset) follows."""
        stream = self.stream
        if not stream.out_done:
            stream.write_body(b"", False)

    def abort(self) -> None:
        self._cancel_timer()
        self.stream.reset(ErrorCodes.CANCEL)

    def set_deadline_at(self, kind: int, when: float) -> None:
        # One timer per WebSocket (long-lived, few): the connection's single deadline slot
        # belongs to the HTTP/2 engine.
        self._cancel_timer()
        if when != float("inf"):
            self._timer = self.engine.loop.call_at(when, self._deadline, kind)

    def _deadline(self, kind: int) -> None:
        self._timer = None
        ws = self.ws
        if ws is not None:
            ws.on_deadline(kind)

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    # -- fed by the HTTP/2 stream -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if ws is not None and data:
            ws.data_received(data)
        if not self.paused:
            self.stream.body_consumed()  # the window reopens as the engine reads

    def eof(self) -> None:
        ws = self.ws
        if ws is not None:
            ws.eof_received()

    def gone(self) -> None:
        self._cancel_timer()
        ws = self.ws
        if ws is not None:
            ws.connection_lost()

    def shutdown(self) -> None:
        ws = self.ws
        if ws is not None:
            ws.shutdown()

    def force_close(self) -> None:
        ws = self.ws
        if ws is not None:
            ws.force_close()
