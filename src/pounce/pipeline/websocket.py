"""The ASGI WebSocket session: one ``websocket`` scope, whatever protocol carried it.

What :class:`~pounce.pipeline.cycle.RequestCycle` is for HTTP requests, :class:`WebSocketSession`
is for WebSockets: the ASGI ``receive``/``send`` pair and everything the ASGI WebSocket spec
(2.5) asks of a server about the order of messages, the ``websocket.http.response``
extension, application errors and disconnects, written once.

It talks to the wire through two small interfaces, so an HTTP/2 stream (RFC 8441) can carry
it later exactly as an HTTP/1.1 connection does now:

* :class:`HandshakeChannel`, the protocol-specific part: the answer to the handshake request
  (101 on HTTP/1.1, 200 on HTTP/2) or an HTTP response refusing it;
* :class:`~pounce.protocols.websocket.engine.WebSocketEngine`, which frames messages onto the
  byte stream once the app accepted.

Only touched from its worker's event-loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, NoReturn, Protocol, cast

from pounce.asgi.headers import (
    InvalidHeader,
    is_field_value,
    validate_response_head,
    validate_response_headers,
)
from pounce.pipeline.cycle import ClientDisconnected
from pounce.pipeline.events import RequestCompleted, WebSocketClosed, WebSocketOpened

if TYPE_CHECKING:
    from pounce.asgi.types import ASGIApp, HeaderFields, Headers, Message, Scope
    from pounce.pipeline.context import WorkerContext
    from pounce.pipeline.cycle import FlowControl

logger = logging.getLogger("pounce.error")

# Close codes (RFC 6455 §7.4.1).
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
NO_STATUS_RECEIVED = 1005
ABNORMAL_CLOSURE = 1006
INTERNAL_ERROR = 1011

#: ASGI WebSocket spec version advertised in the scope.
WEBSOCKET_SPEC_VERSION = "2.5"

#: Close codes an application may send (RFC 6455 §7.4): the registered ones meant for the
#: wire, and the 3000-4999 ranges for libraries and applications.
_SENDABLE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                             1014))
#: A close frame's payload is at most 125 bytes: 2 for the code, 123 for the reason.
MAX_REASON_BYTES = 123

# Session states.
CONNECTING = 0  # the handshake awaits the app's accept, close or HTTP response
OPEN = 1  # accepted: messages flow
RESPONDING = 2  # refusing with the app's own HTTP response, body under way
CLOSED = 3  # the app closed, refused, or the connection is gone


class HandshakeChannel(Protocol):
    """The protocol-specific half of a WebSocket: answering the handshake request."""

    def accept(self, subprotocol: str | None, headers: Headers) -> None:
        """Write the success answer (HTTP/1.1: 101 with Sec-WebSocket-Accept).

        *headers* are validated and already carry the server's default fields.
        """

    def reject(self, status: int, headers: HeaderFields = ()) -> None:
        """Refuse with a plain response the server writes itself (403, 500) and close."""

    def reject_start(self, status: int, headers: Headers, content_length: int | None) -> None:
        """Start the app's own refusal response (``websocket.http.response.start``).

        *headers* went through the shared response rules (framing fields dropped, the
        server's defaults added); *content_length* is the app's, None to frame it otherwise.
        """

    def reject_body(self, body: bytes, more_body: bool) -> None:
        """A piece of the refusal's body; the connection closes after the last one."""

    def abort(self) -> None:
        """Drop the connection at once (a refusal response the app left unfinished)."""

    def session_finished(self, session: WebSocketSession) -> None:
        """The app's coroutine returned: count the WebSocket as finished."""


class WebSocketWire(Protocol):
    """The frame engine under a session (``pounce.protocols.websocket.engine``)."""

    @property
    def stream(self) -> FlowControl:
        """Write backpressure: ``send()`` waits in its ``drain()`` while it is paused."""

    @property
    def writable(self) -> bool:
        """True while messages can still be sent (open, connection up)."""

    def start(self) -> None:
        """The handshake is answered: frames flow from now on."""

    def send_text(self, text: str) -> None: ...

    def send_bytes(self, data: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def message_consumed(self) -> None:
        """The app took a message off the queue (reading may resume)."""


def websocket_scope(http_scope: Scope, subprotocols: list[str]) -> Scope:
    """Turn an ``http`` scope (built by :func:`pounce.pipeline.scope.http_scope`) into a
    ``websocket`` one: ``ws``/``wss`` scheme (also when a trusted proxy said https), no
    method, the offered subprotocols and the websocket extensions (and ``tls``)."""
    scope = http_scope
    scope["type"] = "websocket"
    scope["asgi"] = {"version": "3.0", "spec_version": WEBSOCKET_SPEC_VERSION}
    scope["scheme"] = "wss" if scope["scheme"] in ("https", "wss") else "ws"
    del scope["method"]
    scope["subprotocols"] = subprotocols
    extensions: dict[str, object] = {"websocket.http.response": {}}
    tls = scope["extensions"].get("tls")
    if tls is not None:
        extensions["tls"] = tls
    scope["extensions"] = extensions
    return scope


class WebSocketSession:
    """One WebSocket's ASGI ``receive``/``send`` and the state machine behind them."""

    def __init__(self, ctx: WorkerContext, channel: HandshakeChannel, scope: Scope) -> None:
        self.ctx = ctx
        self.channel = channel
        self.scope = scope
        self.engine: WebSocketWire | None = None
        self.state = CONNECTING
        self.connect_delivered = False
        #: Set once the WebSocket is over: the code and reason ``websocket.disconnect`` gives.
        self.close_code: int | None = None
        self.close_reason = ""
        self.messages: deque[Message] = deque()
        self.queued = 0
        self.task: asyncio.Task[None] | None = None
        self.status = 0  # the handshake's HTTP status, for the access log
        self._waiter: asyncio.Future[None] | None = None
        # perf_counter, not loop.time(): uvloop's clock only has millisecond resolution.
        self.start_time = (
            perf_counter() if ctx.events.active or ctx.count_request is not None else 0.0
        )
        #: Who ended the WebSocket ("client", "server", "app"), for WebSocketClosed.
        self.initiator = "client"

    # -- fed by the engine (MessageSink) ------------------------------------------------------

    def message_received(self, data: str | bytes) -> None:
        if type(data) is str:
            self.messages.append({"type": "websocket.receive", "text": data})
        else:
            self.messages.append({"type": "websocket.receive", "bytes": data})
        self.queued += 1
        self._wake()

    def connection_closed(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        if self.state in (OPEN, CONNECTING):
            self.state = CLOSED
        self._wake()

    def force_close(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the ASGI callables -------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self.connect_delivered:
            self.connect_delivered = True
            return {"type": "websocket.connect"}
        while True:
            messages = self.messages
            if messages:
                message = messages.popleft()
                self.queued -= 1
                engine = self.engine
                if engine is not None:
                    engine.message_consumed()
                return message
            if self.close_code is not None:
                return {
                    "type": "websocket.disconnect",
                    "code": self.close_code,
                    "reason": self.close_reason,
                }
            waiter = self.ctx.loop.create_future()
            self._waiter = waiter
            await waiter

    async def send(self, message: Message) -> None:
        try:
            kind = message["type"]
        except (KeyError, TypeError):
            self.protocol_misuse(f"send() got {message!r}, which is not an ASGI message")
        state = self.state
        if state == OPEN:
            engine = self.engine
            assert engine is not None
            if kind == "websocket.send":
                if self.close_code is not None or not engine.writable:
                    raise ClientDisconnected("the WebSocket is closed")
                data = message.get("bytes")
                text = message.get("text")
                if data is not None and text is None:
                    if not isinstance(data, bytes | bytearray | memoryview):
                        self.protocol_misuse("'websocket.send' bytes must be bytes")
                    engine.send_bytes(bytes(data))
                elif text is not None and data is None:
                    if type(text) is not str:
                        self.protocol_misuse("'websocket.send' text must be a str")
                    engine.send_text(text)
                else:
                    self.protocol_misuse(
                        "'websocket.send' needs exactly one of 'bytes' and 'text'"
                    )
                stream = engine.stream
                if stream.write_paused:
                    await stream.drain()
            elif kind == "websocket.close":
                code, reason = self._close_args(message)
                self.state = CLOSED
                if self.close_code is None:
                    self.initiator = "app"
                engine.close(code, reason)
            else:
                self.protocol_misuse(f"the app sent {kind!r} on an open WebSocket")
        elif state == CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                # Refused before the handshake completed: 403, as the ASGI spec asks.
                self._close_args(message)
                self.state = CLOSED
                if self.close_code is None:
                    self.status = 403
                    self.channel.reject(403)
                    self._answered(403)
                    self.connection_closed(ABNORMAL_CLOSURE, "")
            elif kind == "websocket.http.response.start":
                self._response_start(message)
            else:
                self.protocol_misuse(
                    f"expected 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start' but the app sent {kind!r}"
                )
        elif state == RESPONDING:
            if kind != "websocket.http.response.body":
                self.protocol_misuse(
                    f"expected 'websocket.http.response.body' but the app sent {kind!r}"
                )
            body = message.get("body", b"")
            if not isinstance(body, bytes | bytearray | memoryview):
                self.protocol_misuse("'websocket.http.response.body' body must be bytes")
            more = bool(message.get("more_body", False))
            if not more:
                self.state = CLOSED
            self.channel.reject_body(bytes(body), more)
        elif kind in ("websocket.send", "websocket.close", "websocket.accept"):
            raise ClientDisconnected("the WebSocket is closed")
        else:
            self.protocol_misuse(f"the app sent {kind!r} after the WebSocket was closed")

    def _accept(self, message: Message) -> None:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and (
            type(subprotocol) is not str
            or not subprotocol
            or not is_field_value(subprotocol.encode("latin-1", "replace"))
        ):
            self.protocol_misuse(f"'websocket.accept' has an invalid subprotocol {subprotocol!r}")
        try:
            headers = validate_response_headers(message.get("headers", ()))
        except InvalidHeader as exc:
            self.protocol_misuse(f"invalid 'websocket.accept' header: {exc}")
        for name, _ in headers:
            if name in (b"sec-websocket-protocol", b"sec-websocket-accept", b"upgrade",
                        b"connection", b"sec-websocket-extensions"):
                self.protocol_misuse(
                    f"'websocket.accept' must not set the {name.decode()!r} header; the "
                    "server writes it (use the 'subprotocol' key for the subprotocol)"
                )
        if self.close_code is not None:
            raise ClientDisconnected("the client went away before the WebSocket was accepted")
        names = {name for name, _ in headers}
        self.ctx.add_default_fields(headers, b"server" in names, b"date" in names)
        self.state = OPEN
        self.status = 101
        self.channel.accept(subprotocol, headers)
        self._answered(101)
        events = self.ctx.events
        if events.active and events.wants(WebSocketOpened):
            scope = self.scope
            events.emit(
                WebSocketOpened(
                    client=scope["client"],
                    path=scope["path"],
                    subprotocol=subprotocol,
                    http_version=scope["http_version"],
                )
            )
        engine = self.engine
        assert engine is not None
        engine.start()

    def _response_start(self, message: Message) -> None:
        status = message.get("status")
        if type(status) is not int or not 200 <= status <= 999:
            self.protocol_misuse(
                f"'websocket.http.response.start' has an invalid status {status!r}"
            )
        try:
            # The rules every response shares, as for an HTTP response (RequestCycle._start).
            headers, content_length, _, has_server, has_date = validate_response_head(
                message.get("headers", ()), status
            )
        except InvalidHeader as exc:
            self.protocol_misuse(f"invalid 'websocket.http.response.start' header: {exc}")
        if self.close_code is not None:
            raise ClientDisconnected("the client went away before the response")
        self.ctx.add_default_fields(headers, has_server, has_date)
        self.state = RESPONDING
        self.status = status
        self.channel.reject_start(status, headers, content_length)
        self._answered(status)

    def _close_args(self, message: Message) -> tuple[int, str]:
        code = message.get("code", NORMAL_CLOSURE)
        if code is None:
            code = NORMAL_CLOSURE
        if type(code) is not int or not (code in _SENDABLE_CODES or 3000 <= code <= 4999):
            self.protocol_misuse(
                f"'websocket.close' has an invalid code {code!r}; use 1000-1014 (not 1004-"
                "1006) or 3000-4999"
            )
        reason = message.get("reason") or ""
        if type(reason) is not str:
            self.protocol_misuse("'websocket.close' reason must be a str")
        encoded = reason.encode("utf-8")
        if len(encoded) > MAX_REASON_BYTES:
            # A close frame has room for 123 bytes of reason: cut at a character boundary.
            reason = encoded[:MAX_REASON_BYTES].decode("utf-8", "ignore")
        return code, reason

    def protocol_misuse(self, problem: str) -> NoReturn:
        """Log *problem*, end the WebSocket (500 before accept, 1011 after), raise it."""
        logger.error("ASGI protocol error: %s; closing the WebSocket", problem)
        self._fail()
        raise _ProtocolMisuse(problem)

    def _fail(self) -> None:
        state = self.state
        self.state = CLOSED
        if state == CONNECTING:
            if self.close_code is None:
                self.status = 500
                self.channel.reject(500)
                self._answered(500)
                self.connection_closed(ABNORMAL_CLOSURE, "")
        elif state == OPEN:
            engine = self.engine
            assert engine is not None
            engine.close(INTERNAL_ERROR, "")
        elif state == RESPONDING:
            self.channel.abort()

    # -- running the app ----------------------------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        try:
            result: object = await cast("Callable[..., Awaitable[object]]", app)(
                self.scope, self.receive, self.send
            )
        except _ProtocolMisuse:
            pass
        except ClientDisconnected:
            if self.ctx.debug_enabled:
                logger.debug("WebSocket client disconnected while the app was sending")
        except asyncio.CancelledError:
            if self.state == RESPONDING:
                self.channel.abort()
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            logger.error("Exception in ASGI application", exc_info=exc)
            self._fail()
        else:
            if result is not None:
                logger.error("ASGI callable returned a value (%r); it should return None", result)
            state = self.state
            if state == CONNECTING:
                if self.close_code is None:
                    logger.error(
                        "ASGI callable returned without accepting or refusing the WebSocket"
                    )
                self._fail()
            elif state == OPEN:
                # The app is done with an open WebSocket: close it normally for it.
                self.state = CLOSED
                engine = self.engine
                assert engine is not None
                engine.close(NORMAL_CLOSURE, "")
            elif state == RESPONDING:
                logger.error("ASGI callable returned without completing its HTTP response")
                self.state = CLOSED
                self.channel.abort()
        finally:
            self._waiter = None
            ctx = self.ctx
            ctx.request_finished()
            events = ctx.events
            if self.status == 101 and events.active and events.wants(WebSocketClosed):
                scope = self.scope
                events.emit(
                    WebSocketClosed(
                        client=scope["client"],
                        path=scope["path"],
                        code=self.close_code if self.close_code is not None else ABNORMAL_CLOSURE,
                        initiator=self.initiator,
                        duration=perf_counter() - self.start_time,
                    )
                )
            self.channel.session_finished(self)

    def refuse(self, status: int, headers: HeaderFields = ()) -> None:
        """Refuse the handshake before the app runs (admission): the server's own answer."""
        self.state = CLOSED
        self.status = status
        self.channel.reject(status, headers)
        self._answered(status)

    def _answered(self, status: int) -> None:
        """The handshake got its answer: one access-log record, as for any request."""
        ctx = self.ctx
        scope = self.scope
        count = ctx.count_request
        if count is not None:
            duration = perf_counter() - self.start_time
            count("GET", status, scope["http_version"], duration, 0, 0, 0.0)
            if not ctx.events.wants(RequestCompleted):
                return
        elif not ctx.events.active:
            return
        ctx.events.emit(
            RequestCompleted(
                client=scope["client"],
                method="GET",
                path=scope["path"],
                query_string=scope["query_string"],
                http_version=scope["http_version"],
                status=status,
                bytes_sent=0,
                duration=perf_counter() - self.start_time,
                request_headers=scope["headers"],
                response_headers=None,
                scheme=scope["scheme"],
            )
        )


class _ProtocolMisuse(RuntimeError):
    """Raised into an app that broke the ASGI WebSocket message order; already logged."""
