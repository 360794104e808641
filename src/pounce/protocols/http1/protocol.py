"""The HTTP/1.1 protocol engine: framing, keep-alive and pipelining over one connection.

The engine feeds the bytes its :class:`~pounce.transport.stream.StreamTransport` receives to a
sans-IO parser, hands every parsed request to the worker's
:class:`~pounce.pipeline.dispatcher.Dispatcher`, and frames each response through an
:class:`HTTP1Stream`, the request's :class:`~pounce.pipeline.cycle.ResponseChannel`. It never
touches a socket: everything it does to the connection goes through the transport's small
interface (``write``, ``pause_reading``, ``set_deadline``, ``close`` ...), so it is tested with a
fake transport as well as through sockets.

Life of a connection, one request at a time (pipelined requests wait in the parser's buffer
until the response before them is complete, so responses always go out in order)::

    waiting for head --(head parsed)--> running app --(response complete)--> waiting for head
          |                                   |
          +--(parse error: 4xx, close)        +--(no keep-alive / shutdown: close)

A complete response does not start the next pipelined request while the client is not reading:
the next one waits until the transport's write buffer drains below its low-water mark, and the
socket is not read meanwhile, so what one connection can make the server hold is bounded by the
buffer limits whatever the client sends or fails to read.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, BinaryIO, Protocol

from pounce.logs import escape_for_log
from pounce.pipeline.events import (
    CLOSED_BODY_TIMEOUT,
    CLOSED_HEADER_TIMEOUT,
    CLOSED_KEEP_ALIVE_TIMEOUT,
    CLOSED_MALFORMED,
    REJECTED_MALFORMED,
    REJECTED_TIMEOUT,
    RequestRejected,
)
from pounce.protocols.http1.base import (
    NEED_DATA,
    PAUSED,
    EndOfMessage,
    ParserLimits,
    RequestHead,
)
from pounce.protocols.http1.errors import ProtocolError
from pounce.protocols.http1.response import (
    CHUNKED_END,
    CONTINUE_RESPONSE,
    JOIN_FIELD,
    NO_BODY_STATUSES,
    STATUS_LINES,
    early_hints_response,
    error_body,
    error_response,
    status_line,
    trailer_block,
)
from pounce.protocols.http1.upgrade import WebSocketUpgrade
from pounce.transport.stream import ENGINE_KINDS, INFINITY, LINGER, NO_DEADLINE

if TYPE_CHECKING:
    from collections.abc import Callable

    from pounce.asgi.types import HeaderFields, Headers
    from pounce.config import ServerConfig
    from pounce.pipeline.cycle import RequestCycle
    from pounce.pipeline.dispatcher import Dispatcher
    from pounce.protocols.http1.base import RequestParser
    from pounce.transport.stream import StreamTransport

logger = logging.getLogger("pounce.error")

# The engine's deadline kinds (the transport keeps its own below ENGINE_KINDS).
IDLE = ENGINE_KINDS  # keep-alive: waiting for the first byte of the next request
HEADER = ENGINE_KINDS + 1  # a request head is arriving (slowloris guard)
BODY = ENGINE_KINDS + 2  # the app awaits request body that is not arriving fast enough

# How the current response body is framed on the wire.
FRAMING_LENGTH = 1
FRAMING_CHUNKED = 2
FRAMING_CLOSE = 3  # HTTP/1.0 without Content-Length: the body ends when the connection does
FRAMING_NONE = 4  # HEAD, 204, 304: no body bytes go out

#: Unread request body the server will read and discard to keep a connection alive after the
#: app answered without reading it; beyond this, closing is cheaper than reading.
DISCARD_LIMIT = 1024 * 1024
#: Read size when a file must be copied through user space (no sendfile, TLS, chunked).
FILE_CHUNK = 256 * 1024
#: Above this many buffered request-body bytes the engine stops reading from the socket until
#: the app consumes them: a fast client must not make the server buffer an upload without bound.
BODY_HIGH_WATER = 256 * 1024


class HTTP1Engine:
    """One HTTP/1.x connection's protocol state."""

    __slots__ = (
        "body_credit",
        "body_rate",
        "body_timeout",
        "body_wait_start",
        "ctx",
        "cycle",
        "discarded",
        "discarding",
        "dispatcher",
        "drain_pending",
        "h2c",
        "head_bytes_seen",
        "header_timeout",
        "info",
        "keep_alive",
        "keep_alive_timeout",
        "loop",
        "message_done",
        "parser",
        "processing",
        "stream",
        "t",
        "task_cycle",
        "upgrades",
    )

    def __init__(
        self,
        transport: StreamTransport,
        dispatcher: Dispatcher,
        parser: RequestParser,
        upgrades: WebSocketUpgrade | None = None,
        h2c: H2CPolicy | None = None,
    ) -> None:
        ctx = transport.ctx
        self.t = transport
        self.ctx = ctx
        self.loop = ctx.loop
        self.info = transport.info
        self.dispatcher = dispatcher
        self.parser = parser
        #: Decides what an ``Upgrade: websocket`` request becomes (per worker).
        self.upgrades = upgrades
        #: Decides what an HTTP/2 preface or ``Upgrade: h2c`` becomes (per worker).
        self.h2c = h2c
        #: The request being answered (its stream is the response channel), or None.
        self.stream: HTTP1Stream | None = None
        self.cycle: RequestCycle | None = None
        #: The request whose app task still runs (it may outlive its response).
        self.task_cycle: RequestCycle | None = None
        self.keep_alive = True
        self.message_done = False  # the parser has emitted the current request's end
        self.discarding = False  # answered early: drop the rest of the request body
        self.discarded = 0
        self.processing = False  # inside _process: a finished response must not re-enter it
        self.head_bytes_seen = False
        #: A response is complete but the client has not read it: the next request waits.
        self.drain_pending = False
        config = ctx.config
        self.header_timeout = config.timeout_request_header
        self.keep_alive_timeout = config.timeout_keep_alive
        self.body_timeout = config.timeout_request_body
        self.body_rate = config.min_request_body_rate
        # The body deadline is a budget, not a timer reset by every byte: waiting for the
        # client spends it, body bytes earn it back at --min-request-body-rate, up to the body
        # timeout. A client trickling one byte a second runs out; a slow app spends nothing.
        self.body_credit = self.body_timeout
        self.body_wait_start = 0.0
        transport.set_deadline(HEADER, self.header_timeout)

    # -- transport events ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        t = self.t
        kind = t.deadline_kind
        if kind == IDLE:
            # t.set_deadline(HEADER, ...) inlined: this runs for every request.
            t.deadline_kind = HEADER
            t.state_deadline = deadline = self.loop.time() + self.header_timeout
            write_deadline = t.write_deadline
            t.deadline = deadline if deadline < write_deadline else write_deadline
        elif kind == LINGER:
            return
        self.head_bytes_seen = True
        self.parser.feed(data)
        # _process() inlined: this runs for every read.
        if self.processing:
            return
        self.processing = True
        try:
            self._process_events()
        finally:
            self.processing = False

    def eof_received(self) -> bool | None:
        cycle = self.cycle
        if cycle is None:
            if not self.discarding:
                return None  # idle: let the transport close
            # The rest of an answered request's body can never arrive now.
            self.keep_alive = False
            self.t.close()
            return True
        cycle.feed_eof()
        # Keep the write side open: a client may half-close after sending its request.
        return True

    def connection_lost(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.feed_disconnect()

    def write_resumed(self) -> None:
        if self.drain_pending:
            self.drain_pending = False
            self._next_request()

    def on_deadline(self, kind: int) -> None:
        t = self.t
        if kind == IDLE:
            t.close(linger=False, reason=CLOSED_KEEP_ALIVE_TIMEOUT)
        elif kind == HEADER:
            if self.head_bytes_seen:
                logger.info("Request head not received in time from %s; closing", self.info.peer)
                self.keep_alive = False
                self._write_error(408)
                self._rejected(408, REJECTED_TIMEOUT)
            t.close(linger=False, reason=CLOSED_HEADER_TIMEOUT)
        elif kind == BODY:
            cycle = self.cycle
            logger.info("Request body too slow from %s; closing", self.info.peer)
            self.keep_alive = False
            if cycle is not None and not cycle.response_started:
                cycle.feed_disconnect()
                cycle.answer_with_error(408)
                t.close(linger=False, reason=CLOSED_BODY_TIMEOUT)
            elif cycle is None:
                # Only the unread rest of an answered request was pending: the response is
                # out (or still draining), so close gently instead of resetting.
                t.close(reason=CLOSED_BODY_TIMEOUT)
            else:
                t.abort(CLOSED_BODY_TIMEOUT)

    def shutdown(self) -> None:
        self.keep_alive = False
        if self.cycle is None and self.task_cycle is None:
            self.t.close(linger=False)

    def force_close(self) -> None:
        running = self.task_cycle
        if running is not None:
            task = running.task
            if task is not None and not task.done():
                task.cancel()
        self.keep_alive = False
        self.t.abort()

    # -- parsing ------------------------------------------------------------------------------

    def _process(self) -> None:
        """Turn everything the parser can produce now into cycle events."""
        if self.processing:
            return  # the running _process loop picks up what is new
        self.processing = True
        try:
            self._process_events()
        finally:
            self.processing = False

    def _process_events(self) -> None:
        parser = self.parser
        t = self.t
        ended_here = False
        while not t.closed:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                self._reject(exc)
                return
            if event is NEED_DATA:
                if self.cycle is None:
                    if t.peer_eof:
                        t.close()
                    elif t.read_paused:
                        # Between requests, with what was buffered used up: read again.
                        t.resume_reading()
                return
            if event is PAUSED:
                # Bytes arrived after a complete request: a pipelined request waits for the
                # current response. Stop reading so it cannot grow without bound; reading
                # resumes once the response is out. (Right after the end of a message, what
                # is buffered is at most one read, so reading goes on and a disconnect during
                # a long response is still noticed.)
                if not ended_here:
                    t.pause_reading()
                return
            cycle = self.cycle
            event_type = type(event)
            if event_type is RequestHead:
                assert isinstance(event, RequestHead)
                if self._start_request(event):
                    return  # the connection now belongs to another engine
            elif event_type is EndOfMessage:
                ended_here = True
                self.message_done = True
                if cycle is not None:
                    if not cycle.request_complete:  # a request without a body already is
                        cycle.feed_end()
                    if t.deadline_kind == BODY:
                        self._waiting_for_body(False)
                    if self.cycle is cycle:
                        # The response is still to come; the parser has nothing more to say
                        # until it is out (what arrived meanwhile is at most this one read).
                        return
                elif self.discarding:
                    # The response went out before the request was fully read; now it has
                    # been, and the connection can carry the next request.
                    self._next_request()
            else:
                assert isinstance(event, bytes | bytearray | memoryview)
                if cycle is not None:
                    cycle.feed_body(bytes(event))
                    if cycle.buffered_body > BODY_HIGH_WATER:
                        t.pause_reading()
                else:
                    self.discarded += len(event)
                    if self.discarded > DISCARD_LIMIT:
                        self.keep_alive = False
                        t.close(linger=False)
                        return
                # Progress earns body credit, whether the app reads the pieces or they are
                # being dropped after an early response.
                if t.deadline_kind == BODY:
                    self._body_progress(len(event))

    def _start_request(self, head: RequestHead) -> bool:
        """Hand the request to the dispatcher; True when the connection was upgraded."""
        t = self.t
        # t.clear_deadline() inlined: this runs for every request.
        t.deadline_kind = NO_DEADLINE
        t.state_deadline = INFINITY
        t.deadline = t.write_deadline
        t.requests += 1
        self.head_bytes_seen = False
        self.message_done = False
        self.keep_alive = head.keep_alive and not self.ctx.shutting_down
        if head.upgrade is not None and self._upgrade(head):
            return True
        has_body = head.chunked or bool(head.content_length)
        if has_body:
            self.body_credit = self.body_timeout
        http_version = head.http_version
        stream = HTTP1Stream(self, http_version, head.method == "HEAD")
        self.stream = stream
        cycle = self.dispatcher.start_request(
            stream,
            self.info,
            http_version,
            head.method,
            head.path,
            head.query,
            head.headers,
            has_body,
            head.expect_continue,
            # HTTP/1.0 clients expect neither trailers nor informational responses.
            http_version == "1.1",
        )
        if self.stream is stream:  # not already answered (admission, an eager task)
            self.cycle = cycle
        if cycle.task is not None:
            self.task_cycle = cycle
        return False

    def _upgrade(self, head: RequestHead) -> bool:
        """An ``Upgrade`` request: True when another engine took the connection over."""
        upgrade = head.upgrade or b""
        upgrades = self.upgrades
        if upgrades is not None and b"websocket" in upgrade:
            return upgrades.try_upgrade(self, head)
        h2c = self.h2c
        if h2c is not None and b"h2c" in upgrade:
            return h2c.upgrade(self, head)
        return False

    def _reject(self, exc: ProtocolError) -> None:
        """Answer a request the parser refused, and close: nothing after it is trusted."""
        h2c = self.h2c
        # Perhaps no HTTP/1.x at all but the HTTP/2 preface: checked only here, on the error
        # path, so HTTP/1.1 requests pay nothing for cleartext HTTP/2.
        if (
            exc.status == 505
            and self.t.requests == 0
            and h2c is not None
            and h2c.prior_knowledge(self)
        ):
            return
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "Rejected invalid HTTP request from %s: %s (%d)",
                self.info.peer,
                escape_for_log(exc.reason),
                exc.status,
            )
        t = self.t
        self.keep_alive = False
        if self.discarding:
            # The unread body of a request already answered turned out malformed: a second
            # response to one request would be read as the answer to the client's next one
            # (response queue poisoning), so the connection just ends.
            t.close(reason=CLOSED_MALFORMED)
            return
        self._rejected(exc.status, REJECTED_MALFORMED)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The body of a running request turned out malformed.
            cycle.feed_disconnect()
            if cycle.response_started:
                t.abort(CLOSED_MALFORMED)
                return
            cycle.response_started = True
            cycle.status = exc.status
        self._write_error(exc.status)
        t.close(reason=CLOSED_MALFORMED)

    def _rejected(self, status: int, reason: str) -> None:
        events = self.ctx.events
        if events.active and events.wants(RequestRejected):
            events.emit(RequestRejected(client=self.info.client, status=status, reason=reason))

    # -- request body timing ------------------------------------------------------------------

    def _waiting_for_body(self, waiting: bool) -> None:
        t = self.t
        if waiting:
            self.body_wait_start = self.loop.time()
            t.set_deadline(BODY, self.body_credit)
        elif t.deadline_kind == BODY:
            self.body_credit -= self.loop.time() - self.body_wait_start
            t.clear_deadline()

    def _body_progress(self, size: int) -> None:
        now = self.loop.time()
        rate = self.body_rate
        if rate is None:
            credit = self.body_timeout  # no minimum rate: every piece restarts the timeout
        else:
            credit = self.body_credit - (now - self.body_wait_start) + size / rate
            credit = min(credit, self.body_timeout)
        self.body_credit = credit
        self.body_wait_start = now
        self.t.set_deadline(BODY, credit)

    # -- the end of a response ----------------------------------------------------------------

    def _next_request(self) -> None:
        self.discarding = False
        self.discarded = 0
        ctx = self.ctx
        t = self.t
        if ctx.shutting_down and not ctx.linger_idle:
            t.close()
            return
        if t.write_paused:
            # The client is not reading its responses: the next request must not start until
            # it does, or a pipelining client that never reads could make the server buffer
            # responses without bound. The parser stays paused, so bytes that arrive
            # meanwhile stop the reading (_process_events); a client that just reads its
            # response costs no pause and resume. The write deadline runs; write_resumed()
            # comes back here.
            self.drain_pending = True
            return
        buffered = self.parser.start_next_cycle()
        # t.set_deadline(IDLE, ...) inlined: this runs for every request.
        t.deadline_kind = IDLE
        t.state_deadline = deadline = self.loop.time() + self.keep_alive_timeout
        write_deadline = t.write_deadline
        t.deadline = deadline if deadline < write_deadline else write_deadline
        if buffered or t.peer_eof:  # a pipelined request to parse, or a close to notice
            # Reading stays paused while buffered requests remain: a client pipelining faster
            # than it is answered must not grow the buffer by a read per request served.
            self._process()
        elif t.read_paused:
            t.resume_reading()

    def _write_error(
        self,
        status: int,
        headers: HeaderFields = (),
        body: bytes | None = None,
        head: bool = False,
    ) -> int:
        """Write a complete closing response the server answers itself; returns its body size."""
        ctx = self.ctx
        self.t.write(
            error_response(
                status,
                date_line=ctx.date_line,
                static_head=ctx.server_line,
                headers=headers,
                body=body,
                head=head,
            )
        )
        if head:
            return 0
        return len(error_body(status) if body is None else body)


class HTTP1Stream:
    """One request's response on an HTTP/1.x connection: its framing and its channel."""

    __slots__ = (
        "conn",
        "content_length",
        "cycle",
        "fields",
        "flow",
        "framing",
        "head_pending",
        "head_request",
        "http_version",
        "remaining",
        "status",
        "trailers",
        "trailers_wanted",
    )

    def __init__(self, conn: HTTP1Engine, http_version: str, head_request: bool) -> None:
        self.conn = conn
        self.flow: StreamTransport = conn.t
        self.cycle: RequestCycle | None = None
        self.http_version = http_version
        self.head_request = head_request
        self.head_pending = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        # status, fields, content_length and trailers_wanted are set by start_response and
        # framing and remaining by _build_head, before anything reads them: one request's
        # worth of attribute stores saved.
        self.status: int
        self.fields: HeaderFields
        self.content_length: int | None
        self.trailers_wanted: bool
        self.framing: int
        self.remaining: int

    # -- the response head --------------------------------------------------------------------

    def start_response(
        self,
        status: int,
        fields: HeaderFields,
        content_length: int | None,
        close: bool,
        trailers: bool,
    ) -> None:
        conn = self.conn
        # A drain that began while the request ran: say so, so the client does not reuse it.
        if close or conn.ctx.shutting_down:
            conn.keep_alive = False
        self.status = status
        self.fields = fields
        self.content_length = content_length
        self.trailers_wanted = trailers
        self.head_pending = True
        # Send the head with the first body chunk (one write), or on its own if the app
        # awaits something else first.
        conn.ctx.flush_head_soon(self)

    def flush_head_alone(self) -> None:
        """Called at the next loop iteration: the app started a response but sent no body."""
        if self.head_pending and self.conn.stream is self and not self.flow.closed:
            self.flow.write(self._build_head(None))

    def _build_head(self, final_body_length: int | None) -> bytes:
        """Decide the body framing and serialise the response head."""
        self.head_pending = False
        conn = self.conn
        status = self.status
        framing_field = b""
        if status in NO_BODY_STATUSES:
            framing = FRAMING_NONE
        elif self.content_length is not None:
            framing = FRAMING_LENGTH
            self.remaining = self.content_length
        elif final_body_length is not None and not self.trailers_wanted:
            framing = FRAMING_LENGTH
            self.remaining = final_body_length
            framing_field = b"content-length: %d\r\n" % final_body_length
        elif self.http_version == "1.1":
            framing = FRAMING_CHUNKED
            framing_field = b"transfer-encoding: chunked\r\n"
        else:
            framing = FRAMING_CLOSE
            conn.keep_alive = False
        if self.head_request:
            framing = FRAMING_NONE
        self.framing = framing
        if not conn.keep_alive:
            connection = b"connection: close\r\n"
        elif self.http_version == "1.0":
            connection = b"connection: keep-alive\r\n"
        else:
            connection = b""
        line = STATUS_LINES.get(status) or status_line(status)
        # serialize_fields() inlined: this runs for every response.
        lines = b"\r\n".join(map(JOIN_FIELD, self.fields))
        return b"".join(
            (line, lines, b"\r\n" if lines else b"", framing_field, connection, b"\r\n")
        )

    # -- the body -----------------------------------------------------------------------------

    def write_body(self, data: bytes, more_body: bool) -> None:
        flow = self.flow
        cycle = self.cycle
        assert cycle is not None
        if self.head_pending:
            head = self._build_head(None if more_body else len(data))
        elif more_body and self.framing == FRAMING_CHUNKED and data and not flow.closing:
            # The steady state of a streamed response, checked first: one chunk, one write.
            cycle.bytes_sent += len(data)
            flow.transport.write(b"%x\r\n%b\r\n" % (len(data), data))  # type: ignore[union-attr]
            return
        else:
            head = b""
        framing = self.framing
        if framing == FRAMING_LENGTH:
            size = len(data)
            if size > self.remaining:
                flow.write(head + data[: self.remaining])
                cycle.bytes_sent += self.remaining
                self.remaining = 0
                cycle.protocol_misuse("the response body is longer than its Content-Length")
            self.remaining -= size
            cycle.bytes_sent += size
            out = head + data if data else head
            if not more_body and self.remaining:
                logger.error(
                    "Response body shorter than its Content-Length (%d bytes missing); "
                    "closing the connection",
                    self.remaining,
                )
                self.conn.keep_alive = False
        elif framing == FRAMING_CHUNKED:
            if data:
                cycle.bytes_sent += len(data)
                out = b"%b%x\r\n%b\r\n" % (head, len(data), data)
            else:
                out = head
            if not more_body and not self.trailers_wanted:
                out += CHUNKED_END
        elif framing == FRAMING_CLOSE:
            cycle.bytes_sent += len(data)
            out = head + data
        else:
            out = head
        if out and not flow.closing:
            transport = flow.transport
            assert transport is not None
            transport.write(out)

    async def write_file(self, path: str) -> None:
        cycle = self.cycle
        assert cycle is not None
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed below, after awaits
        except OSError as exc:
            cycle.protocol_misuse(f"'http.response.pathsend' cannot open {path!r}: {exc}")
        try:
            size = os.fstat(file.fileno()).st_size
            flow = self.flow
            if self.head_pending:
                flow.write(self._build_head(size))
            framing = self.framing
            if framing == FRAMING_NONE or flow.closed:
                return
            if framing == FRAMING_LENGTH:
                size = min(size, self.remaining)
            sent = 0
            if framing != FRAMING_CHUNKED:
                sent = await self._sendfile(file, size)
                cycle.bytes_sent += sent
                if framing == FRAMING_LENGTH:
                    self.remaining -= sent
            # What zero-copy could not send (chunked framing, TLS, uvloop) goes the slow way.
            file.seek(sent)
            while sent < size and not flow.closed:
                chunk = file.read(min(FILE_CHUNK, size - sent))
                if not chunk:
                    break  # the file shrank while being sent
                sent += len(chunk)
                self.write_body(chunk, True)
                await flow.drain()
            if framing == FRAMING_LENGTH and self.remaining:
                self.conn.keep_alive = False
        finally:
            file.close()

    async def _sendfile(self, file: BinaryIO, size: int) -> int:
        """Zero-copy ``os.sendfile`` where the event loop supports it; 0 bytes otherwise."""
        transport = self.flow.transport
        if transport is None or not size or transport.get_extra_info("sslcontext") is not None:
            return 0
        try:
            return await self.conn.loop.sendfile(transport, file, 0, size, fallback=False)
        except (NotImplementedError, asyncio.SendfileNotAvailableError):
            return 0

    def write_trailers(self, headers: Headers, more: bool) -> None:
        if self.trailers is None:
            self.trailers = []
        self.trailers.extend(headers)
        if more:
            return
        if self.head_pending:
            self.flow.write(self._build_head(None))
        if self.framing == FRAMING_CHUNKED:
            self.flow.write(trailer_block(self.trailers))
        # Other framings cannot carry trailers: they are dropped, as RFC 9110 allows.

    def write_early_hint(self, links: list[bytes]) -> None:
        if self.http_version == "1.1":  # HTTP/1.0 clients do not expect 1xx responses
            self.flow.write(early_hints_response(links))

    def write_continue(self) -> None:
        self.flow.write(CONTINUE_RESPONSE)

    def send_error_response(
        self, status: int, headers: HeaderFields = (), body: bytes | None = None
    ) -> int:
        conn = self.conn
        conn.keep_alive = False
        self.head_pending = False
        if conn.stream is not self:
            return 0
        return conn._write_error(status, headers, body, self.head_request)

    def abort(self) -> None:
        conn = self.conn
        if conn.stream is self or conn.stream is None:
            conn.keep_alive = False
            conn.t.abort()

    # -- the request body ---------------------------------------------------------------------

    def body_consumed(self) -> None:
        conn = self.conn
        if self.flow.read_paused and conn.stream is self:
            self.flow.resume_reading()

    def waiting_for_body(self, waiting: bool) -> None:
        conn = self.conn
        if conn.stream is not self:
            return
        conn._waiting_for_body(waiting)
        if waiting:
            self.flow.resume_reading()

    # -- the end ------------------------------------------------------------------------------

    def response_complete(self) -> None:
        conn = self.conn
        if conn.stream is not self:
            return
        conn.stream = None
        conn.cycle = None
        t = self.flow
        if not conn.keep_alive or t.closed:
            t.close()
        elif conn.message_done:
            conn._next_request()
        elif (self.cycle is not None and self.cycle.expect_continue) or t.peer_eof:
            # The client still waits for "100 Continue" and may never send the body, or it
            # half-closed before the body was complete: the rest can never come.
            t.close()
        else:
            # Read and drop the rest of the request, then carry on with the next one; a client
            # that stalls meanwhile is closed when its body credit runs out, as it would be
            # while the app was reading.
            conn.discarding = True
            conn._waiting_for_body(True)
            t.resume_reading()

    def app_finished(self) -> None:
        conn = self.conn
        cycle = self.cycle
        # The cycle's last call: drop the stream <-> cycle reference loop now, so both go with
        # their last reference instead of waiting for (and feeding) the garbage collector.
        self.cycle = None
        if conn.task_cycle is cycle:
            conn.task_cycle = None
        ctx = conn.ctx
        if ctx.shutting_down and not ctx.linger_idle and conn.cycle is None:
            self.flow.close()  # a no-op when it is closed already


def http1_engine_factory(
    dispatcher: Dispatcher, h2c: H2CPolicy | None = None
) -> Callable[[StreamTransport], HTTP1Engine]:
    """``transport -> HTTP1Engine`` for a worker, with the parser chosen once.

    *h2c* decides what an HTTP/2 preface or ``Upgrade: h2c`` on one of its connections
    becomes (``pounce.protocols.http2.handoff``).
    """
    config = dispatcher.ctx.config
    new_parser = parser_factory(config)
    upgrades = WebSocketUpgrade(config)
    return lambda transport: HTTP1Engine(transport, dispatcher, new_parser(), upgrades, h2c)


class H2CPolicy(Protocol):
    """Cleartext HTTP/2 on an HTTP/1.1 connection (``pounce.protocols.http2.handoff``)."""

    def prior_knowledge(self, conn: HTTP1Engine) -> bool:
        """The first request was refused with 505: True if it was the HTTP/2 preface and
        the connection was taken over (or closed)."""

    def upgrade(self, conn: HTTP1Engine, head: RequestHead) -> bool:
        """``Upgrade: h2c``: True if the connection became HTTP/2 with this request."""


def parser_factory(config: ServerConfig) -> Callable[[], RequestParser]:
    """Pick the HTTP/1.1 parser implementation once, at start-up."""
    limits = ParserLimits(
        max_request_line=config.limit_request_line,
        max_header_size=config.h11_max_incomplete_event_size or config.limit_request_header_size,
        max_header_count=config.limit_request_fields,
        max_body_size=config.limit_request_body,
        allow_bare_lf=config.allow_bare_lf,
    )
    if config.http == "h11":
        from pounce.protocols.http1.h11_parser import H11Parser

        return lambda: H11Parser(limits)
    from pounce.protocols.http1.parser import FastParser

    return lambda: FastParser(limits)
