"""Cleartext HTTP/2 (``h2c``) out of a connection the HTTP/1.1 engine started on.

Two ways in (RFC 9113 §3.3 and RFC 7540 §3.2):

* prior knowledge: the client's first bytes are the HTTP/2 preface. The HTTP/1.1 parser reads
  ``PRI * HTTP/2.0`` as a request line of an unsupported version and raises 505; only then,
  on the error path, is the preface recognised, so HTTP/1.1 requests pay nothing for it.
  Any other first line is HTTP/1.1's to answer (400 for garbage): on a port that serves
  both, bytes that are neither the preface nor HTTP/1.x cannot be told apart from a broken
  HTTP/1.x client, and a 400 is what such a client can read.
* ``Upgrade: h2c`` with ``HTTP2-Settings`` on a request without a body: ``101 Switching
  Protocols``, and the request is answered as stream 1 of the new HTTP/2 connection.

Without the ``h2`` package (or with ``--http fast``/``h11``) a preface gets one log line per
worker saying how to turn HTTP/2 on, and the connection is closed; an ``Upgrade: h2c`` is
ignored and the request served as HTTP/1.1, as RFC 9110 allows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pounce.pipeline.events import CLOSED_MALFORMED
from pounce.protocols.http2 import HTTP2Options, how_to_enable, http2_enabled

if TYPE_CHECKING:
    from pounce.config import ServerConfig
    from pounce.pipeline.dispatcher import Dispatcher
    from pounce.protocols.http1.base import RequestHead
    from pounce.protocols.http1.upgrade import HTTP1Connection
    from pounce.protocols.websocket import WebSocketSupport

__all__ = ["H2CHandoff"]

logger = logging.getLogger("pounce.error")

#: The part of the preface an HTTP/1.1 parser reads as a request head before it gives up.
_PREFACE_HEAD = b"PRI * HTTP/2.0\r\n\r\n"
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
#: Fields of the upgrading request that were about the HTTP/1.1 hop, not the request.
_HOP_FIELDS = frozenset((b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"te"))


def _settings_problem(value: bytes) -> str | None:
    """Why h2 would refuse this ``HTTP2-Settings`` value, or None (only upgrades pay this)."""
    import h2.config
    import h2.connection

    probe = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    try:
        probe.initiate_upgrade_connection(value)
    except Exception as exc:  # binascii.Error, a frame error, an invalid setting value...
        return str(exc) or type(exc).__name__
    return None


class H2CHandoff:
    """One worker's policy for cleartext HTTP/2 on its HTTP/1.1 connections."""

    __slots__ = ("_config", "_warned", "dispatcher", "enabled", "options", "websocket")

    def __init__(
        self,
        dispatcher: Dispatcher,
        config: ServerConfig,
        websocket: WebSocketSupport | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self._config = config
        self.enabled = http2_enabled(config)
        self.options = HTTP2Options.from_config(config)
        self.websocket = websocket
        self._warned = False

    def prior_knowledge(self, conn: HTTP1Connection) -> bool:
        """The first request failed as HTTP/1.1 with 505: True if it was an HTTP/2 preface
        (the connection now belongs to HTTP/2, or was closed when HTTP/2 is off)."""
        data = conn.parser.take_trailing_data()
        if not data.startswith(_PREFACE_HEAD):
            return False
        t = conn.t
        if not self.enabled:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "A client (%s) spoke HTTP/2 (prior knowledge) but HTTP/2 is off; closing "
                    "such connections. To serve HTTP/2: %s",
                    conn.info.peer,
                    how_to_enable(self._config),
                )
            t.close(linger=False, reason=CLOSED_MALFORMED)
            return True
        from pounce.protocols.http2.engine import HTTP2Engine

        engine = HTTP2Engine(t, self.dispatcher, self.options, self.websocket)
        t.switch_engine(engine, data)
        engine.started()
        return True

    def upgrade(self, conn: HTTP1Connection, head: RequestHead) -> bool:
        """``Upgrade: h2c``: True when the connection became HTTP/2 with this request on it."""
        if not self.enabled or conn.info.tls is not None:
            return False  # h2c is cleartext only; over TLS ALPN decides
        if head.content_length or head.chunked:
            return False  # the body would have to be read first: serve it as HTTP/1.1
        settings = [value for name, value in head.headers if name == b"http2-settings"]
        if len(settings) != 1:
            return False
        connection = b",".join(value for name, value in head.headers if name == b"connection")
        if b"http2-settings" not in connection.lower():
            return False
        from pounce.protocols.http2.engine import HTTP2Engine

        problem = _settings_problem(settings[0])
        if problem is not None:
            # Checked before the 101: the request is still answered, as HTTP/1.1 (a server
            # may ignore Upgrade), rather than a connection cut right after switching.
            logger.info(
                "Ignored an h2c upgrade from %s: bad HTTP2-Settings (%s); answering over HTTP/1.1",
                conn.info.peer,
                problem,
            )
            return False
        t = conn.t
        t.write(_SWITCHING)
        try:
            engine = HTTP2Engine(
                t, self.dispatcher, self.options, self.websocket, upgrade_settings=settings[0]
            )
        except Exception as exc:  # h2 refused what the check above let through
            logger.info("Refused h2c upgrade from %s: bad HTTP2-Settings (%s)", conn.info.peer, exc)
            t.abort(CLOSED_MALFORMED)
            return True
        headers = [(name, value) for name, value in head.headers if name not in _HOP_FIELDS]
        t.switch_engine(engine, conn.parser.take_trailing_data())
        engine.start_upgraded(head.method, head.path, head.query, headers)
        engine.started()
        return True
