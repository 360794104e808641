"""One HTTP/1.1 connection on an asyncio transport.

The protocol feeds bytes to a sans-IO parser, turns parsed requests into
:class:`~pounce.asgi.cycle.RequestCycle` objects, and implements the cycle's
:class:`~pounce.asgi.cycle.ResponseChannel` by framing the response onto the transport.

Life of a connection, one request at a time (pipelined requests wait in the parser's buffer
until the response before them is complete, so responses always go out in order)::

    waiting for head --(head parsed)--> running app --(response complete)--> waiting for head
          |                                   |
          +--(parse error: 4xx, close)        +--(no keep-alive / shutdown: close)

Timeouts are deadlines checked by the worker's once-per-tick sweep rather than one timer per
connection: setting a float is far cheaper on the hot path than scheduling a timer handle.
"""

from __future__ import annotations

import asyncio
import logging
import os
from time import perf_counter
from typing import TYPE_CHECKING, BinaryIO, cast

from pounce.asgi.cycle import BODY_HIGH_WATER, RequestCycle
from pounce.asgi.headers import InvalidHeader
from pounce.asgi.scope import http_scope
from pounce.logs import AccessInfo, escape_for_log
from pounce.protocols.http1.base import NEED_DATA, PAUSED, EndOfMessage, RequestHead
from pounce.protocols.http1.errors import ProtocolError
from pounce.protocols.http1.response import (
    CHUNKED_END,
    CONTINUE_RESPONSE,
    NO_BODY_STATUSES,
    STATUS_LINES,
    early_hints_response,
    error_response,
    status_line,
    trailer_block,
)
from pounce.server.context import Connection

if TYPE_CHECKING:
    from pounce.asgi.types import Headers
    from pounce.features.proxy_headers import ProxyTrust
    from pounce.server.context import WorkerContext

logger = logging.getLogger("pounce.error")

INFINITY = float("inf")

# What the connection state's deadline currently guards.
NO_DEADLINE = 0
IDLE = 1  # keep-alive: waiting for the first byte of the next request
HEADER = 2  # a request head is arriving (slowloris guard)
BODY = 3  # the app awaits request body that is not arriving
LINGER = 4  # closing: draining what the client still sends so the response is not reset

# How the current response body is framed on the wire.
FRAMING_LENGTH = 1
FRAMING_CHUNKED = 2
FRAMING_CLOSE = 3  # HTTP/1.0 without Content-Length: the body ends when the connection does
FRAMING_NONE = 4  # HEAD, 204, 304: no body bytes go out

#: Unread request body the server will read and discard to keep a connection alive after the
#: app answered without reading it; beyond this, closing is cheaper than reading.
DISCARD_LIMIT = 1024 * 1024
#: How long a closing connection keeps draining the client's bytes before it gives up.
LINGER_SECONDS = 2.0
#: Read size when a file must be copied through user space (no sendfile, TLS, chunked).
FILE_CHUNK = 256 * 1024


class HTTP1Protocol(asyncio.Protocol, Connection):
    """An ``asyncio.Protocol`` serving HTTP/1.x requests to an ASGI app."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.parser = ctx.new_parser()
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.scheme = "http"
        #: The worker's proxy trust when this connection's peer is a trusted proxy, else None.
        self.proxy_trust: ProxyTrust | None = None
        self.cycle: RequestCycle | None = None
        self.task: asyncio.Task[None] | None = None
        self.task_cycle: RequestCycle | None = None
        # Two independent deadlines: the connection state's (header, idle, body, linger) and,
        # while the client is not reading, the write deadline. The worker's tick compares
        # `deadline`, the earlier of the two, so it stays a single float comparison.
        self.deadline = INFINITY
        self.deadline_kind = NO_DEADLINE
        self.state_deadline = INFINITY
        self.write_deadline = INFINITY
        self.keep_alive = True
        self.closed = False
        self.closing = True  # no writes: not connected yet, closing, or closed
        self.peer_eof = False
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.message_done = False  # the parser has emitted the current request's end
        self.discarding = False  # answered early: drop the rest of the request body
        self.discarded = 0
        self.linger_backlog = 0  # write-buffer size when the closing deadline was last armed
        self.processing = False  # inside _process: a finished response must not re-enter it
        self.head_bytes_seen = False
        # Response state of the current cycle.
        self.http_version = "1.1"
        self.head_request = False
        self.head_pending = False
        self.framing = FRAMING_LENGTH
        self.remaining = 0
        self.fields = b""
        self.content_length: int | None = None
        self.trailers_wanted = False
        self.trailers: Headers = []
        config = ctx.config
        self.header_timeout = config.timeout_request_header
        self.keep_alive_timeout = config.timeout_keep_alive

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        transport = cast("asyncio.Transport", transport)
        self.transport = transport
        self.closing = False
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        if isinstance(peer, tuple):
            self.client = (peer[0], peer[1])
        if isinstance(sock, tuple):
            self.server = (sock[0], sock[1])
        elif isinstance(sock, str) and sock:
            self.server = (sock, None)
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        trust = self.ctx.proxy_trust
        if trust is not None and trust.trusts(self.client[0] if self.client else None):
            self.proxy_trust = trust
        self.ctx.connections.add(self)
        self._set_deadline(HEADER, self.ctx.config.timeout_request_header)

    def data_received(self, data: bytes) -> None:
        kind = self.deadline_kind
        if kind == IDLE:
            # _set_deadline(HEADER, ...) inlined: this runs for every request.
            self.deadline_kind = HEADER
            self.state_deadline = deadline = self.loop.time() + self.header_timeout
            write_deadline = self.write_deadline
            self.deadline = deadline if deadline < write_deadline else write_deadline
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
        self.peer_eof = True
        if self.deadline_kind == LINGER:
            return None
        cycle = self.cycle
        if cycle is None:
            if not self.discarding:
                return None  # idle: let the transport close
            # The rest of an answered request's body can never arrive now.
            self.keep_alive = False
            self._close()
            return True
        cycle.feed_eof()
        # Keep the write side open: a client may half-close after sending its request.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closing = True
        self.write_deadline = INFINITY
        self._clear_deadline()
        self.ctx.connections.discard(self)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.feed_disconnect()
        self._wake_drain()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_deadline = self.loop.time() + self.ctx.config.timeout_write
        self.deadline = min(self.state_deadline, self.write_deadline)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = INFINITY
        self.deadline = self.state_deadline
        self._wake_drain()

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
        ended_here = False
        while not self.closed:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                self._reject(exc)
                return
            if event is NEED_DATA:
                if self.peer_eof and self.cycle is None:
                    self._close()
                return
            if event is PAUSED:
                # Bytes arrived after a complete request: a pipelined request waits for the
                # current response. Stop reading so it cannot grow without bound; reading
                # resumes once the response is out. (Right after the end of a message, what
                # is buffered is at most one read, so reading goes on and a disconnect during
                # a long response is still noticed.)
                if not ended_here:
                    self._pause_reading()
                return
            cycle = self.cycle
            event_type = type(event)
            if event_type is RequestHead:
                assert isinstance(event, RequestHead)
                self._start_cycle(event)
            elif event_type is EndOfMessage:
                ended_here = True
                self.message_done = True
                if cycle is not None:
                    if not cycle.request_complete:  # a request without a body already is
                        cycle.feed_end()
                    if self.deadline_kind == BODY:
                        self._clear_deadline()
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
                        self._pause_reading()
                else:
                    self.discarded += len(event)
                    if self.discarded > DISCARD_LIMIT:
                        self.keep_alive = False
                        self._close(linger=False)
                        return
                # Progress: the body timeout runs between two pieces of body, whether the app
                # reads them or they are being dropped after an early response.
                if self.deadline_kind == BODY:
                    self._set_deadline(BODY, self.ctx.config.timeout_request_body)

    def _start_cycle(self, head: RequestHead) -> None:
        ctx = self.ctx
        upgrade = head.upgrade
        if upgrade is not None and b"websocket" in upgrade:
            from pounce.protocols.http1.upgrade import try_websocket_upgrade

            if try_websocket_upgrade(self, head):
                return
        # _clear_deadline() inlined: this runs for every request.
        self.deadline_kind = NO_DEADLINE
        self.state_deadline = INFINITY
        self.deadline = self.write_deadline
        self.head_bytes_seen = False
        self.message_done = False
        self.keep_alive = head.keep_alive and not ctx.shutting_down
        self.http_version = head.http_version
        self.head_request = head.method == "HEAD"
        scope = http_scope(
            ctx,
            head.http_version,
            head.method,
            self.scheme,
            head.path,
            head.query,
            head.headers,
            self.client,
            self.server,
            self.proxy_trust,
        )
        cycle = RequestCycle(
            ctx, self, scope, head.chunked or bool(head.content_length), head.expect_continue
        )
        self.cycle = cycle
        limit = ctx.limit_concurrency
        if limit is not None and ctx.active_requests >= limit:
            cycle.response_started = True
            cycle.status = 503
            self.send_error_response(cycle, 503)
            return
        ctx.request_started()
        self.task_cycle = cycle
        task = ctx.start_task(cycle.run(ctx.app), context=ctx.base_context.copy())
        # An eager task factory (set by the app on the loop) may have finished it already.
        if self.task_cycle is cycle:
            self.task = task

    def _reject(self, exc: ProtocolError) -> None:
        """Answer a request the parser refused, and close: nothing after it is trusted."""
        if logger.isEnabledFor(logging.INFO):
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "unix socket"
            logger.info(
                "Rejected invalid HTTP request from %s: %s (%d)",
                client,
                escape_for_log(exc.reason),
                exc.status,
            )
        self.keep_alive = False
        if self.discarding:
            # The unread body of a request already answered turned out malformed: a second
            # response to one request would be read as the answer to the client's next one
            # (response queue poisoning), so the connection just ends.
            self._close()
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The body of a running request turned out malformed.
            cycle.feed_disconnect()
            if cycle.response_started:
                self._abort()
                return
            cycle.response_started = True
            cycle.status = exc.status
        self._write_error(exc.status)
        self._close()

    # -- ResponseChannel ----------------------------------------------------------------------

    def start_response(
        self, cycle: RequestCycle, status: int, headers: Headers, trailers: bool
    ) -> None:
        ctx = self.ctx
        # A drain that began while the request ran: say so, so the client does not reuse it.
        keep_alive = self.keep_alive and not ctx.shutting_down
        content_length: int | None = None
        has_server = has_date = False
        parts: list[bytes] = []
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit() or (
                    content_length is not None and int(value) != content_length
                ):
                    raise InvalidHeader(f"invalid Content-Length {value!r}")
                content_length = int(value)
                if status == 204:
                    continue
            elif name == b"transfer-encoding":
                continue  # the server frames the body itself
            elif name == b"connection":
                if b"close" in value.lower():
                    keep_alive = False
                continue
            elif name == b"server":
                has_server = True
            elif name == b"date":
                has_date = True
            parts.append(name + b": " + value + b"\r\n")
        if ctx.default_headers:
            names = {name for name, _ in headers}
            for name, value in ctx.default_headers:
                if name not in names:
                    parts.append(name + b": " + value + b"\r\n")
        if not has_server:
            parts.append(ctx.server_line)
        if not has_date:
            parts.append(ctx.date_line)
        self.keep_alive = keep_alive
        self.fields = b"".join(parts)
        self.content_length = content_length
        self.trailers_wanted = trailers
        self.trailers = []
        self.head_pending = True
        # Send the head with the first body chunk (one write), or on its own if the app
        # awaits something else first.
        ctx.flush_head_soon(self, cycle)

    def flush_head_alone(self, cycle: RequestCycle) -> None:
        """Called at the next loop iteration: the app started a response but sent no body."""
        if self.head_pending and self.cycle is cycle and not self.closed:
            self._write(self._build_head(None))

    def _build_head(self, final_body_length: int | None) -> bytes:
        """Decide the body framing and serialise the response head."""
        self.head_pending = False
        cycle = self.cycle
        assert cycle is not None
        status = cycle.status
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
            self.keep_alive = False
        if self.head_request:
            framing = FRAMING_NONE
        self.framing = framing
        if not self.keep_alive:
            connection = b"connection: close\r\n"
        elif self.http_version == "1.0":
            connection = b"connection: keep-alive\r\n"
        else:
            connection = b""
        line = STATUS_LINES.get(status) or status_line(status)
        return b"".join((line, self.fields, framing_field, connection, b"\r\n"))

    def write_body(self, cycle: RequestCycle, data: bytes, more_body: bool) -> None:
        if self.head_pending:
            head = self._build_head(None if more_body else len(data))
        else:
            head = b""
            if more_body and self.framing == FRAMING_CHUNKED and data and not self.closing:
                # The steady state of a streamed response, checked first: one chunk, one write.
                transport = self.transport
                assert transport is not None
                cycle.bytes_sent += len(data)
                transport.write(b"%x\r\n%b\r\n" % (len(data), data))
                return
        framing = self.framing
        if framing == FRAMING_LENGTH:
            size = len(data)
            if size > self.remaining:
                self._write(head + data[: self.remaining])
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
                self.keep_alive = False
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
        if out and not self.closing:
            transport = self.transport
            assert transport is not None
            transport.write(out)

    async def write_file(self, cycle: RequestCycle, path: str) -> None:
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed below, after awaits
        except OSError as exc:
            cycle.protocol_misuse(f"'http.response.pathsend' cannot open {path!r}: {exc}")
            raise  # unreachable: protocol_misuse raises
        try:
            size = os.fstat(file.fileno()).st_size
            if self.head_pending:
                self._write(self._build_head(size))
            framing = self.framing
            if framing == FRAMING_NONE or self.closed:
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
            while sent < size and not self.closed:
                chunk = file.read(min(FILE_CHUNK, size - sent))
                if not chunk:
                    break  # the file shrank while being sent
                sent += len(chunk)
                self.write_body(cycle, chunk, True)
                await self.drain()
            if framing == FRAMING_LENGTH and self.remaining:
                self.keep_alive = False
        finally:
            file.close()

    async def _sendfile(self, file: BinaryIO, size: int) -> int:
        """Zero-copy ``os.sendfile`` where the event loop supports it; 0 bytes otherwise."""
        transport = self.transport
        if transport is None or not size or transport.get_extra_info("sslcontext") is not None:
            return 0
        try:
            return await self.loop.sendfile(transport, file, 0, size, fallback=False)
        except (NotImplementedError, asyncio.SendfileNotAvailableError):
            return 0

    def write_trailers(self, cycle: RequestCycle, headers: Headers, more: bool) -> None:
        self.trailers.extend(headers)
        if more:
            return
        if self.head_pending:
            self._write(self._build_head(None))
        if self.framing == FRAMING_CHUNKED:
            self._write(trailer_block(self.trailers))
        # Other framings cannot carry trailers: they are dropped, as RFC 9110 allows.

    def write_early_hint(self, cycle: RequestCycle, links: list[bytes]) -> None:
        if self.http_version == "1.1":  # HTTP/1.0 clients do not expect 1xx responses
            self._write(early_hints_response(links))

    def write_continue(self, cycle: RequestCycle) -> None:
        self._write(CONTINUE_RESPONSE)

    def send_error_response(self, cycle: RequestCycle, status: int) -> None:
        self.keep_alive = False
        self.head_pending = False
        self._write_error(status)
        cycle.response_complete = True
        self.response_complete(cycle)

    def abort(self, cycle: RequestCycle) -> None:
        if self.cycle is cycle or self.cycle is None:
            self._abort()

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            self.drain_waiter = waiter
            await waiter

    def body_consumed(self, cycle: RequestCycle) -> None:
        if self.read_paused and cycle is self.cycle:
            self._resume_reading()

    def waiting_for_body(self, cycle: RequestCycle, waiting: bool) -> None:
        if cycle is not self.cycle:
            return
        if waiting:
            self._set_deadline(BODY, self.ctx.config.timeout_request_body)
            if self.read_paused:
                self._resume_reading()
        elif self.deadline_kind == BODY:
            self._clear_deadline()

    def response_complete(self, cycle: RequestCycle) -> None:
        if cycle is not self.cycle:
            return
        if self.ctx.access_log.enabled:
            self._log_access(cycle)
        self.cycle = None
        if not self.keep_alive or self.closed:
            self._close()
            return
        if self.message_done:
            self._next_request()
        elif cycle.expect_continue or self.peer_eof:
            # The client still waits for "100 Continue" and may never send the body, or it
            # half-closed before the body was complete: the rest can never come.
            self._close()
        else:
            # Read and drop the rest of the request, then carry on with the next one; a client
            # that stalls meanwhile is closed after --timeout-request-body, as it would be
            # while the app was reading.
            self.discarding = True
            self._set_deadline(BODY, self.ctx.config.timeout_request_body)

    def app_finished(self, cycle: RequestCycle) -> None:
        """The app's coroutine returned (the response may have completed earlier)."""
        self.ctx.request_finished()
        if self.task_cycle is cycle:
            self.task = self.task_cycle = None
        if (
            self.ctx.shutting_down
            and not self.ctx.linger_idle
            and self.cycle is None
            and not self.closed
        ):
            self._close()

    # -- helpers ------------------------------------------------------------------------------

    def _next_request(self) -> None:
        self.discarding = False
        self.discarded = 0
        buffered = self.parser.start_next_cycle()
        ctx = self.ctx
        if ctx.shutting_down and not ctx.linger_idle:
            self._close()
            return
        # _set_deadline(IDLE, ...) inlined: this runs for every request.
        self.deadline_kind = IDLE
        self.state_deadline = deadline = self.loop.time() + self.keep_alive_timeout
        write_deadline = self.write_deadline
        self.deadline = deadline if deadline < write_deadline else write_deadline
        if self.read_paused:
            self._resume_reading()
        if buffered or self.peer_eof:  # a pipelined request to parse, or a close to notice
            self._process()

    def _log_access(self, cycle: RequestCycle) -> None:
        scope = cycle.scope
        self.ctx.access_log.log(
            AccessInfo(
                client=scope["client"],
                method=scope["method"],
                path=scope["path"],
                query_string=scope["query_string"],
                http_version=scope["http_version"],
                status=cycle.status,
                bytes_sent=cycle.bytes_sent,
                duration=perf_counter() - cycle.start_time,
                request_headers=scope["headers"],
                scheme=scope["scheme"],
            )
        )

    def _write(self, data: bytes) -> None:
        if not self.closing:
            transport = self.transport
            assert transport is not None
            transport.write(data)

    def _write_error(self, status: int) -> None:
        """A complete closing response for errors the server answers itself."""
        ctx = self.ctx
        self._write(error_response(status, date_line=ctx.date_line, static_head=ctx.server_line))

    def _set_deadline(self, kind: int, timeout: float) -> None:
        self.deadline_kind = kind
        self.state_deadline = deadline = self.loop.time() + timeout
        write_deadline = self.write_deadline
        self.deadline = deadline if deadline < write_deadline else write_deadline

    def _clear_deadline(self) -> None:
        self.deadline_kind = NO_DEADLINE
        self.state_deadline = INFINITY
        self.deadline = self.write_deadline

    def on_deadline(self, now: float) -> None:
        if now >= self.write_deadline:
            logger.info("Client %s stopped reading the response; aborting", self._peer())
            self._abort()
            return
        kind = self.deadline_kind
        if kind == NO_DEADLINE or now < self.state_deadline:
            return
        self._clear_deadline()
        if kind == IDLE:
            self._close(linger=False)
        elif kind == HEADER:
            if self.head_bytes_seen:
                logger.info("Request head not received in time from %s; closing", self._peer())
                self.keep_alive = False
                self._write_error(408)
            self._close(linger=False)
        elif kind == BODY:
            cycle = self.cycle
            logger.info("Request body stalled from %s; closing", self._peer())
            if cycle is not None and not cycle.response_started:
                cycle.response_started = True
                cycle.status = 408
                cycle.feed_disconnect()
                self.keep_alive = False
                self._write_error(408)
                self._close(linger=False)
            elif cycle is None:
                # Only the unread rest of an answered request was pending: the response is
                # out (or still draining), so close gently instead of resetting.
                self.keep_alive = False
                self._close()
            else:
                self._abort()
        elif kind == LINGER:
            self._linger_expired()

    def _linger_expired(self) -> None:
        """A closing connection's time is up: finish it without cutting off a slow reader."""
        transport = self.transport
        assert transport is not None
        backlog = transport.get_write_buffer_size()
        if backlog and backlog < self.linger_backlog:
            # Still draining, just slowly: give it another period.
            self.linger_backlog = backlog
            self._set_deadline(LINGER, self.ctx.config.timeout_write)
        elif backlog:
            self._abort()  # no progress at all: the client stopped reading
        else:
            transport.close()  # everything is handed to the kernel; a FIN loses nothing

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unix socket"

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _close(self, *, linger: bool = True) -> None:
        """Close after the buffered response is written.

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
        if linger and not self.peer_eof and transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:
                transport.close()
                return
            self._arm_linger(LINGER_SECONDS)
            if self.read_paused:
                self._resume_reading()
            return
        transport.close()
        self._arm_linger(self.ctx.config.timeout_write)

    def _arm_linger(self, timeout: float) -> None:
        transport = self.transport
        assert transport is not None
        self.linger_backlog = transport.get_write_buffer_size()
        # With a response still queued, the client gets at least the write timeout to read it.
        if self.linger_backlog:
            timeout = max(timeout, self.ctx.config.timeout_write)
        self._set_deadline(LINGER, timeout)

    def _abort(self) -> None:
        self.keep_alive = False
        transport = self.transport
        if transport is not None and not self.closed:
            self.closing = True
            transport.abort()

    # -- Connection (worker-facing) -----------------------------------------------------------

    def shutdown(self) -> None:
        self.keep_alive = False
        if self.cycle is None and self.task is None:
            self._close(linger=False)

    def force_close(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel()
        self._abort()
