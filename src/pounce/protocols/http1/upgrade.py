"""Handing an HTTP/1.1 connection over to WebSocket (RFC 6455 §4).

The HTTP/1.1 engine asks :class:`WebSocketUpgrade` about every request carrying ``Connection:
upgrade`` + ``Upgrade: websocket``. When WebSocket is on and the handshake is valid, the
dispatcher admits it like any request (limits, events), and the connection's transport switches
to a :class:`~pounce.protocols.websocket.engine.WebSocketEngine`, with the bytes the parser had
already read past the handshake. :class:`HTTP1Handshake` answers the handshake the HTTP/1.1
way: ``101 Switching Protocols``, or a refusal response after which the connection closes.

This is the one place that knows both HTTP/1.1 and WebSocket.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from pounce.logs import escape_for_log
from pounce.pipeline.events import CLOSED_MALFORMED
from pounce.protocols.http1.response import (
    NO_BODY_STATUSES,
    serialize_fields,
    status_line,
)
from pounce.protocols.websocket import how_to_enable, websocket_support
from pounce.protocols.websocket.handshake import (
    HandshakeError,
    check_http1_upgrade,
    negotiate_deflate,
    parse_subprotocols,
)

if TYPE_CHECKING:
    from pounce.asgi.types import HeaderFields
    from pounce.config import ServerConfig
    from pounce.pipeline.connection import ConnectionInfo
    from pounce.pipeline.context import WorkerContext
    from pounce.pipeline.dispatcher import Dispatcher
    from pounce.pipeline.websocket import WebSocketSession
    from pounce.protocols.http1.base import RequestHead, RequestParser
    from pounce.transport.stream import StreamTransport

logger = logging.getLogger("pounce.error")

#: Fields of a 101 that the server writes itself; an app's own are refused by the session.
_HANDSHAKE_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
    b"sec-websocket-accept: "
)


class HTTP1Connection(Protocol):
    """What an upgrade needs of the HTTP/1.1 engine it takes the connection from."""

    t: StreamTransport
    ctx: WorkerContext
    info: ConnectionInfo
    dispatcher: Dispatcher
    parser: RequestParser
    keep_alive: bool

    def _write_error(
        self,
        status: int,
        headers: HeaderFields = (),
        body: bytes | None = None,
        head: bool = False,
    ) -> int: ...


class WebSocketUpgrade:
    """One worker's policy for upgrade requests (built once per worker)."""

    __slots__ = ("_config", "_warned", "support")

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        #: None when upgrade requests are served as plain HTTP (``--ws none``, no library).
        self.support = websocket_support(config)
        self._warned = False

    def try_upgrade(self, conn: HTTP1Connection, head: RequestHead) -> bool:
        """Take the connection over for a WebSocket, or answer a bad handshake.

        Returns False when the request is to be served as plain HTTP instead (WebSocket off).
        """
        support = self.support
        if support is None:
            self._warn_off()
            return False
        t = conn.t
        try:
            if head.content_length or head.chunked:
                raise HandshakeError(400, "a WebSocket handshake carries no body", [])
            handshake = check_http1_upgrade(head.method, head.http_version, head.headers)
        except HandshakeError as exc:
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "Refused WebSocket handshake from %s: %s",
                    conn.info.peer,
                    escape_for_log(exc.reason),
                )
            conn.keep_alive = False
            conn._write_error(exc.status, exc.headers)
            t.close(reason=CLOSED_MALFORMED)
            return True

        from pounce.protocols.websocket.engine import WebSocketEngine

        deflate = negotiate_deflate(head.headers) if support.per_message_deflate else None
        channel = HTTP1Handshake(
            conn, handshake.accept, deflate.response if deflate is not None else None
        )
        ctx = conn.ctx
        session = conn.dispatcher.open_websocket(
            channel,
            conn.info,
            head.http_version,
            head.path,
            head.query,
            head.headers,
            parse_subprotocols(head.headers),
        )
        if session is None:
            return True  # refused by admission; the channel answered and closes
        engine = WebSocketEngine(ctx.loop, t, session, support.options, deflate)
        session.engine = engine
        if ctx.shutting_down:
            engine.shutdown_requested = True
        t.switch_engine(engine, conn.parser.take_trailing_data())
        conn.dispatcher.run_websocket(session)
        return True

    def _warn_off(self) -> None:
        """Say once per worker that a WebSocket request is served as plain HTTP."""
        if self._warned:
            return
        self._warned = True
        config = self._config
        reason = (
            "--ws none" if config.ws == "none" else "the 'websockets' package is not installed"
        )
        logger.warning(
            "A client asked for a WebSocket but WebSocket support is off (%s); serving the "
            "request as plain HTTP. To turn WebSocket on: %s",
            reason,
            how_to_enable(config),
        )


class HTTP1Handshake:
    """Answers one WebSocket handshake on an HTTP/1.1 connection."""

    __slots__ = ("_chunked", "accept_key", "conn", "deflate_response")

    def __init__(
        self, conn: HTTP1Connection, accept_key: bytes, deflate_response: bytes | None
    ) -> None:
        self.conn = conn
        self.accept_key = accept_key
        self.deflate_response = deflate_response
        # Refusal response framing: chunked unless the app gave a Content-Length.
        self._chunked = False

    def accept(self, subprotocol: str | None, headers: HeaderFields) -> None:
        parts = [_HANDSHAKE_HEAD, self.accept_key, b"\r\n"]
        if subprotocol is not None:
            parts.append(b"sec-websocket-protocol: " + subprotocol.encode("latin-1") + b"\r\n")
        if self.deflate_response is not None:
            parts.append(b"sec-websocket-extensions: " + self.deflate_response + b"\r\n")
        parts.append(serialize_fields(headers))
        parts.append(b"\r\n")
        self.conn.t.write(b"".join(parts))

    def reject(self, status: int, headers: HeaderFields = ()) -> None:
        self.conn._write_error(status, headers)
        self.conn.t.close()

    def reject_start(
        self, status: int, headers: HeaderFields, content_length: int | None
    ) -> None:
        # The session applied the shared response rules; only the framing is HTTP/1.1's, and
        # the connection closes after this response.
        self._chunked = content_length is None and status not in NO_BODY_STATUSES
        framing = b"transfer-encoding: chunked\r\n" if self._chunked else b""
        self.conn.t.write(
            b"".join(
                (
                    status_line(status),
                    serialize_fields(headers),
                    framing,
                    b"connection: close\r\n\r\n",
                )
            )
        )

    def reject_body(self, body: bytes, more_body: bool) -> None:
        if self._chunked:
            out = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                out += b"0\r\n\r\n"
        else:
            out = body
        t = self.conn.t
        if out:
            t.write(out)
        if not more_body:
            t.close()

    def abort(self) -> None:
        self.conn.t.abort()

    def session_finished(self, session: WebSocketSession) -> None:
        pass  # accounting and events are the session's; nothing is left on HTTP/1.1's side
