"""The HTTP/2 protocol engine: many streams on one connection, each one request on the pipeline.

:class:`HTTP2Engine` feeds what its :class:`~pounce.transport.stream.StreamTransport` reads to
an ``h2`` connection (the frame codec, HPACK, the stream state machines and the RFC 9113 header
checks) and turns the events into pipeline calls: each request stream gets an
:class:`H2Stream`, its :class:`~pounce.pipeline.cycle.ResponseChannel`, and goes through
:meth:`Dispatcher.start_request <pounce.pipeline.dispatcher.Dispatcher.start_request>` like an
HTTP/1.1 request, so limits, admission, filters, events and the access log apply unchanged.

Output is batched: whatever the events of one read or the apps of one loop pass make ``h2``
produce leaves in one transport write (``h2``'s per-frame work is the cost of HTTP/2 in
Python; one write per batch keeps the rest small).

Flow control both ways:

* request bodies: the window a stream may fill is ``--h2-initial-window-size``; the window is
  reopened (WINDOW_UPDATE) only as the app takes the body (``body_consumed``), so a slow app
  bounds what a fast client can make the server hold;
* responses: a body goes out within the peer's stream and connection windows; what does not
  fit waits in the stream and ``send()`` waits (the stream is its own
  :class:`~pounce.pipeline.cycle.FlowControl`). Waiting streams are served round-robin, a
  quantum each, so one large response cannot starve the others. A peer that keeps a window
  shut for ``--timeout-write`` is cut off, as a client that stops reading is on HTTP/1.1.

Abuse (the published HTTP/2 attacks) is counted per connection in ten-second windows: resets
of streams whose app was running (rapid reset), PING, SETTINGS, PRIORITY, WINDOW_UPDATE and
empty DATA frames. Over a threshold the connection gets GOAWAY ENHANCE_YOUR_CALM and is closed.
CONTINUATION floods and HPACK bombs are bounded by ``h2`` itself (at most 64 CONTINUATION
frames; ``--h2-max-header-list-size`` checked on the decoded size).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import deque
from typing import TYPE_CHECKING, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hyperframe.exceptions import InvalidDataError
from hyperframe.frame import GoAwayFrame

from pounce.logs import escape_for_log
from pounce.pipeline.events import (
    CLOSED_KEEP_ALIVE_TIMEOUT,
    CLOSED_MALFORMED,
    CLOSED_WRITE_TIMEOUT,
    REJECTED_MALFORMED,
    REJECTED_TOO_LARGE,
    RequestRejected,
)
from pounce.protocols.http1.response import error_body
from pounce.transport.stream import ENGINE_KINDS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pounce.asgi.types import HeaderFields, Headers
    from pounce.pipeline.cycle import FlowControl, RequestCycle
    from pounce.pipeline.dispatcher import Dispatcher
    from pounce.protocols.http2 import HTTP2Options
    from pounce.protocols.http2.websocket import H2WebSocketStream
    from pounce.protocols.websocket import WebSocketSupport
    from pounce.transport.stream import StreamTransport

__all__ = ["PREFACE", "H2Stream", "HTTP2Engine", "http2_engine_factory"]

logger = logging.getLogger("pounce.error")

#: What every HTTP/2 connection starts with (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# The engine's deadline kinds.
IDLE = ENGINE_KINDS  # no stream open: the keep-alive timeout runs
STALLED = ENGINE_KINDS + 1  # a response waits on a flow-control window the peer keeps shut

#: Bytes a stream may send per turn when several compete for the connection.
QUANTUM = 64 * 1024
#: Files larger than this are read on a thread so a slow disk does not stall the loop.
OFFLOAD_FILE = 1024 * 1024
#: Highest stream id a client can use; near it the server asks for a new connection.
MAX_STREAM_ID = 2**31 - 1
STREAM_ID_MARGIN = 1000

#: The largest HPACK table the server keeps for its responses, whatever the client allows.
MAX_ENCODER_TABLE = 4096
_HEADER_TABLE_SIZE = h2.settings.SettingCodes.HEADER_TABLE_SIZE

#: Abuse counters: the window they count over, and what each may reach within it.
FLOOD_WINDOW = 10.0
MAX_PINGS = 500
MAX_SETTINGS = 500
MAX_EMPTY_DATA = 500
MAX_WINDOW_UPDATES = 20_000
MAX_PRIORITY = 5_000

_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=True,
    normalize_inbound_headers=True,  # cookie crumbs joined into one field, as HTTP/1.1 sends
    # Response fields were validated by the pipeline (lower-case names, no CR/LF), and the
    # framing and connection-specific ones dropped: h2 need not check them again.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)

#: Fields that are meaningless, and forbidden, in HTTP/2 (RFC 9113 §8.2.2); the pipeline
#: already dropped Connection and Transfer-Encoding.
_CONNECTION_FIELDS = frozenset((b"keep-alive", b"proxy-connection", b"upgrade"))

_STATUS = {code: str(code).encode() for code in range(100, 1000)}

_COMMON_METHODS = frozenset(
    (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT")
)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")


#: The header of a GOAWAY without debug data (length 8, type 0x7, stream 0), as h2 queues
#: one on an error.
_GOAWAY_HEAD = b"\0\0\x08\x07\0\0\0\0\0"


def http2_engine_factory(
    dispatcher: Dispatcher, options: HTTP2Options, websocket: WebSocketSupport | None = None
) -> Callable[[StreamTransport], HTTP2Engine]:
    """``transport -> HTTP2Engine`` for a worker."""
    return lambda transport: HTTP2Engine(transport, dispatcher, options, websocket)


class _Counter:
    """Events of one kind in the current window; True once over *limit*."""

    __slots__ = ("count", "limit", "start")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.start = 0.0

    def hit(self, now: float) -> bool:
        if now - self.start > FLOOD_WINDOW:
            self.start = now
            self.count = 0
        self.count += 1
        return self.count > self.limit


class HTTP2Engine:
    """One HTTP/2 connection's protocol state."""

    def __init__(
        self,
        transport: StreamTransport,
        dispatcher: Dispatcher,
        options: HTTP2Options,
        websocket: WebSocketSupport | None = None,
        *,
        upgrade_settings: bytes | None = None,
    ) -> None:
        ctx = transport.ctx
        self.t = transport
        self.ctx = ctx
        self.loop = ctx.loop
        self.info = transport.info
        self.dispatcher = dispatcher
        self.options = options
        #: What serves extended CONNECT (RFC 8441) on this worker; None: WebSocket off.
        self.websocket = websocket
        self.streams: dict[int, H2Stream] = {}
        #: Streams with response data waiting for a window or their turn, in turn order.
        self.sending: deque[H2Stream] = deque()
        #: Apps started on this connection whose coroutine has not returned yet.
        self.running = 0
        self.requests = 0
        self.flush_scheduled = False
        self.pumping = False
        #: The last stream id a GOAWAY promised to serve; None until one is sent.
        self.goaway_id: int | None = None
        self.goaway_sent = False
        self.stalled_since: float | None = None
        self.closed = False
        self.max_running = 2 * options.max_concurrent_streams
        self.resets = _Counter(max(100, 2 * options.max_concurrent_streams))
        self.pings = _Counter(MAX_PINGS)
        self.settings = _Counter(MAX_SETTINGS)
        self.empty_data = _Counter(MAX_EMPTY_DATA)
        self.window_updates = _Counter(MAX_WINDOW_UPDATES)
        self.priority = _Counter(MAX_PRIORITY)
        conn = self.h2 = h2.connection.H2Connection(config=_CONFIG)
        codes = h2.settings.SettingCodes
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: options.max_concurrent_streams,
                codes.INITIAL_WINDOW_SIZE: options.initial_window_size,
                codes.MAX_FRAME_SIZE: options.max_frame_size,
                codes.MAX_HEADER_LIST_SIZE: options.max_header_list_size,
                codes.ENABLE_CONNECT_PROTOCOL: 1 if websocket is not None else 0,
            },
        )
        conn.max_inbound_frame_size = options.max_frame_size
        # The HPACK decoder counts the decoded size: a small block that expands (an HPACK
        # bomb) is refused as soon as it passes the limit.
        conn.decoder.max_header_list_size = options.max_header_list_size
        if upgrade_settings is None:
            conn.initiate_connection()
        else:
            conn.initiate_upgrade_connection(upgrade_settings)
        # The connection window (65535 by default) would cap every upload on the connection
        # far below what --h2-initial-window-size allows one stream.
        extra = min(options.initial_window_size * 4, 2**31 - 1) - 65535
        if extra > 0:
            conn.increment_flow_control_window(extra)
        self._flush()
        transport.set_deadline(IDLE, options.first_request)

    def started(self) -> None:
        """Called after a switch from HTTP/1.1 (which cleared the deadlines)."""
        if not self.requests and not self.closed:
            # Prior knowledge: the preface came, the first stream may not have yet.
            self.t.set_deadline(IDLE, self.options.first_request)
            return
        self._update_idle()

    def start_upgraded(self, method: str, raw_path: bytes, query: bytes, headers: Headers) -> None:
        """Answer the request that carried ``Upgrade: h2c`` as stream 1 (RFC 7540 §3.2)."""
        stream = H2Stream(self, 1, method == "HEAD")
        stream.peer_done = True  # its body (none: upgrades with a body stay HTTP/1.1) is done
        self.streams[1] = stream
        self.ctx.http2_streams += 1
        self.requests += 1
        self.running += 1
        stream.running = True
        self.dispatcher.start_request(
            stream, self.info, "2", method, raw_path, query, headers, False, False, True
        )

    # -- transport events ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._protocol_error(exc)
            return
        pending_block = self.h2.incoming_buffer._headers_buffer
        if pending_block and self._header_block_too_big(pending_block):
            return
        ev = h2.events
        for event in events:
            if self.closed:  # a defence below ended the connection: ignore the rest
                return
            kind = type(event)
            if kind is ev.RequestReceived:
                self._request(event)  # type: ignore[arg-type]
            elif kind is ev.DataReceived:
                self._data(event)  # type: ignore[arg-type]
            elif kind is ev.StreamEnded:
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    stream.ended_by_peer()
            elif kind is ev.WindowUpdated:
                if self.window_updates.hit(self.loop.time()):
                    self._calm_down("WINDOW_UPDATE flood")
                    return
                if self.sending:
                    self._pump()
            elif kind is ev.StreamReset:
                self._reset(event)  # type: ignore[arg-type]
                if self.closed:
                    return
            elif kind is ev.RemoteSettingsChanged:
                if self.settings.hit(self.loop.time()):
                    self._calm_down("SETTINGS flood")
                    return
                if _HEADER_TABLE_SIZE in event.changed_settings:  # type: ignore[attr-defined]
                    self._cap_encoder_table()
                if self.sending:
                    self._pump()  # the initial window may have grown
            elif kind is ev.PingReceived:
                if self.pings.hit(self.loop.time()):
                    self._calm_down("PING flood")
                    return
            elif kind is ev.PriorityUpdated:
                if self.priority.hit(self.loop.time()):
                    self._calm_down("PRIORITY flood")
                    return
            elif kind is ev.ConnectionTerminated:
                self._peer_goaway(event)  # type: ignore[arg-type]
            elif kind is ev.TrailersReceived:
                pass  # ASGI has no request trailers; the stream ends with them
        self._flush()
        t = self.t
        if t.write_paused:
            # The peer is not reading what it asked for (PING and SETTINGS answers included):
            # stop reading until it does, so it cannot grow the write buffer without bound.
            t.pause_reading()

    def _cap_encoder_table(self) -> None:
        """The client may allow a response header table of up to 4 GiB; the server uses no
        more than :data:`MAX_ENCODER_TABLE` (RFC 7541 §4.2 lets the encoder pick any size up
        to the peer's), or every distinct response field (dates, request ids, cookies) would
        stay in memory for the connection's life."""
        encoder = self.h2.encoder
        if encoder.header_table_size > MAX_ENCODER_TABLE:
            encoder.header_table_size = MAX_ENCODER_TABLE
            # Announce only the size actually used (the larger one h2 queued never was).
            encoder.table_size_changes = [
                size for size in encoder.table_size_changes if size <= MAX_ENCODER_TABLE
            ]

    def _header_block_too_big(self, frames: Sequence[object]) -> bool:
        """CONTINUATION flood (CVE-2024-27316): a header block still incomplete after
        more compressed bytes than the whole decoded list may have is refused.

        h2 stops at 64 CONTINUATION frames, but with a large ``--h2-max-frame-size`` those
        could still hold a gigabyte; h2 keeps the frames of an unfinished block in its frame
        buffer (a private list, read here only while a block is pending).
        """
        size = sum(len(getattr(frame, "data", b"")) for frame in frames)
        if size <= self.options.max_header_list_size:
            return False
        self._calm_down("CONTINUATION flood (header block larger than the header list limit)")
        return True

    def eof_received(self) -> bool | None:
        # HTTP/2 has no half-close: a peer that stops sending is gone.
        return None

    def connection_lost(self) -> None:
        self.closed = True
        streams = list(self.streams.values())
        self.ctx.http2_streams -= len(streams)
        self.streams.clear()
        self.sending.clear()
        for stream in streams:
            stream.gone()

    def write_resumed(self) -> None:
        t = self.t
        if t.read_paused and not self.closed:
            t.resume_reading()
        if self.sending:
            self._pump()
        for stream in list(self.streams.values()):
            stream.wake()
        self._flush()

    def on_deadline(self, kind: int) -> None:
        t = self.t
        if kind == IDLE:
            if not self.streams and not self.running:
                self._goaway(ErrorCodes.NO_ERROR)
                self._flush()
                self.closed = True  # a request racing the GOAWAY is not started
                t.close(reason=CLOSED_KEEP_ALIVE_TIMEOUT)
        elif kind == STALLED:
            since = self.stalled_since
            if since is None or not self.sending:
                return
            due = since + self.options.write_timeout
            if self.loop.time() < due:
                t.set_deadline_at(STALLED, due)  # data moved since the deadline was set
                return
            logger.info(
                "Client %s kept its HTTP/2 flow-control window shut for %gs; closing",
                self.info.peer,
                self.options.write_timeout,
            )
            self._goaway(ErrorCodes.FLOW_CONTROL_ERROR)
            self._flush()
            t.abort(CLOSED_WRITE_TIMEOUT)

    def shutdown(self) -> None:
        """Graceful shutdown: GOAWAY now; the streams already open finish, then the close."""
        if self.closed:
            return
        if self.goaway_id is None:
            self._goaway(ErrorCodes.NO_ERROR)
            self._flush()
        for stream in list(self.streams.values()):
            if stream.ws is not None:
                stream.ws.shutdown()  # close 1001, then the stream ends
        self._close_if_done()

    def force_close(self) -> None:
        for stream in list(self.streams.values()):
            stream.cancel_task()
        self.closed = True
        self.t.abort()

    # -- output -------------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.t.write(data)

    def flush_soon(self) -> None:
        """Write what the apps produced once this loop pass is over: one write for them all."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self.flush_scheduled = False
        if not self.closed:
            self._flush()

    def _goaway(self, code: int, last_stream_id: int | None = None) -> None:
        """Serve no stream above *last_stream_id*; say so with GOAWAY once the rest is done.

        Streams the client opens later are refused (REFUSED_STREAM: safe to retry on a new
        connection). The GOAWAY frame itself waits until no stream is in flight: clients built
        on the ``h2`` package (httpx among them) treat any frame after a GOAWAY as a protocol
        error, so sending it first would fail the very responses it promises to finish.
        """
        if last_stream_id is None:
            last_stream_id = self.h2.highest_inbound_stream_id
        if self.goaway_id is None or last_stream_id < self.goaway_id:
            self.goaway_id = last_stream_id
        if code != ErrorCodes.NO_ERROR or not self.streams:
            self._send_goaway(code)

    def _send_goaway(self, code: int = ErrorCodes.NO_ERROR) -> None:
        if self.goaway_sent:
            return
        self.goaway_sent = True
        self._flush()  # h2's queued frames go first
        frame = GoAwayFrame(0, last_stream_id=self.goaway_id or 0, error_code=int(code))
        self.t.write(frame.serialize())

    def _pump(self) -> None:
        """Send waiting response data within the windows, a quantum per stream per turn."""
        if self.pumping:
            return
        self.pumping = True
        try:
            sending = self.sending
            h2conn = self.h2
            t = self.t
            progress = False
            while sending and not t.write_paused and not t.closing:
                if h2conn.outbound_flow_control_window <= 0:
                    break
                moved = False
                for _ in range(len(sending)):
                    stream = sending.popleft()
                    sent = stream.send_queued(QUANTUM)
                    if sent:
                        moved = True
                    if stream.queued_bytes or (stream.end_waiting and not stream.trailers_wanted):
                        sending.append(stream)
                if not moved:
                    break
                progress = True
                self._flush()
            if sending and not t.write_paused and not t.closing:
                # Data waits on a window the peer keeps shut: the write timeout runs.
                if self.stalled_since is None or progress:
                    self.stalled_since = self.loop.time()
                    t.set_deadline_at(STALLED, self.stalled_since + self.options.write_timeout)
            elif self.stalled_since is not None:
                # No longer waiting on the peer's windows (or the socket's own write deadline
                # runs instead): the stall deadline must not outlive the stall.
                self.stalled_since = None
                if t.deadline_kind == STALLED:
                    t.clear_deadline()
                self._update_idle()
        finally:
            self.pumping = False

    # -- input --------------------------------------------------------------------------------

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        conn = self.h2
        if self.goaway_id is not None and stream_id > self.goaway_id:
            # Opened after the GOAWAY: the client retries it elsewhere.
            conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if self.running >= self.max_running:
            # Streams the client reset (or that were answered) whose apps still run do not
            # count against MAX_CONCURRENT_STREAMS in h2; they do here, so a client cannot
            # keep more apps busy than twice the streams it may have open. Refusals count
            # with the resets: a client that keeps provoking them is abusing the server.
            if self.resets.hit(self.loop.time()):
                self._calm_down("rapid reset (streams opened while too many apps run)")
                return
            conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        t = self.t
        t.requests += 1
        self.requests += 1
        method = path = authority = protocol = content_length = expect = None
        headers: list[tuple[bytes, bytes]] = []
        has_host = False
        for name, value in event.headers:
            if name[0] == 58:  # b":"; h2 checked which ones, their order and that none repeats
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                elif name == b":protocol":
                    protocol = value
            else:
                if name == b"host":
                    has_host = True
                elif name == b"content-length":
                    content_length = value
                elif name == b"expect":
                    expect = value
                headers.append((name, value))
        if authority is not None and not has_host:
            # ASGI: the authority is the request's Host.
            headers.insert(0, (b"host", authority))
        assert method is not None
        stream = H2Stream(self, stream_id, method == b"HEAD")
        self.streams[stream_id] = stream
        self.ctx.http2_streams += 1  # the worker's open streams (--metrics)
        if t.deadline_kind == IDLE:
            t.clear_deadline()
        if event.stream_ended is not None:
            stream.peer_done = True
        problem = self._check_request(method, path, headers, content_length)
        if problem is not None:
            status, reason, why = problem
            self._refuse(stream, status, reason, method, path, why)
            return
        if method == b"CONNECT":
            self._connect(stream, protocol, path or b"", headers)
        else:
            assert path is not None
            raw_path, _, query = path.partition(b"?")
            self.running += 1
            stream.running = True
            self.dispatcher.start_request(
                stream,
                self.info,
                "2",
                method.decode("latin-1"),
                raw_path,
                query,
                headers,
                not stream.peer_done,
                # RFC 9110 §10.1.1: the client waits for a 100 before sending the body; the
                # cycle answers it when the app first asks for the body.
                expect is not None and expect.lower() == b"100-continue",
                True,
            )
        options = self.options
        if self.goaway_id is None and (
            stream_id >= MAX_STREAM_ID - STREAM_ID_MARGIN
            or (options.max_requests is not None and self.requests >= options.max_requests)
            or self.ctx.shutting_down
        ):
            # Out of stream ids, at --h2-max-requests, or draining: this stream is the last;
            # the client opens a new connection for more.
            self._goaway(ErrorCodes.NO_ERROR, stream_id)

    def _check_request(
        self,
        method: bytes,
        path: bytes | None,
        headers: list[tuple[bytes, bytes]],
        content_length: bytes | None,
    ) -> tuple[int, str, str] | None:
        """The request-level limits HTTP/1.1's parser applies, for one stream's head.

        h2 checked the RFC 9113 field rules; what is left is what the server allows.
        """
        options = self.options
        if method not in _COMMON_METHODS and not _TOKEN.fullmatch(method):
            return 400, REJECTED_MALFORMED, "the method is not a token"
        if path is not None:
            if path[:1] != b"/" and path != b"*":
                return 400, REJECTED_MALFORMED, ":path is neither origin-form nor *"
            if _BAD_TARGET.search(path) is not None:
                return 400, REJECTED_MALFORMED, ":path has whitespace or control characters"
            if len(path) > options.max_target:
                return 414, REJECTED_TOO_LARGE, "the :path is longer than --limit-request-line"
        if len(headers) > options.max_fields:
            return 431, REJECTED_TOO_LARGE, "more header fields than --limit-request-fields"
        limit = options.max_body
        if (
            limit is not None
            and content_length is not None
            and content_length.isdigit()
            and int(content_length) > limit
        ):
            # Refused before a byte of it is read, as over HTTP/1.1.
            return 413, REJECTED_TOO_LARGE, "the body is larger than --limit-request-body"
        return None

    def _refuse(  # noqa: PLR0917 - one place, called on the error path
        self,
        stream: H2Stream,
        status: int,
        reason: str,
        method: bytes,
        path: bytes | None,
        why: str,
    ) -> None:
        if logger.isEnabledFor(logging.INFO):
            logger.info("Rejected HTTP/2 request from %s: %s (%d)", self.info.peer, why, status)
        events = self.ctx.events
        if events.active and events.wants(RequestRejected):
            events.emit(
                RequestRejected(
                    client=self.info.client,
                    status=status,
                    reason=reason,
                    method=method.decode("latin-1"),
                    path=(path or b"").partition(b"?")[0].decode("latin-1"),
                )
            )
        stream.respond_plain(status)

    def _connect(
        self, stream: H2Stream, protocol: bytes | None, path: bytes, headers: Headers
    ) -> None:
        """CONNECT: extended CONNECT with ``:protocol websocket`` (RFC 8441) or a refusal."""
        websocket = self.websocket
        if protocol == b"websocket" and websocket is not None:
            from pounce.protocols.http2.websocket import open_websocket

            open_websocket(self, stream, path, headers)
            return
        # A tunnel is not an ASGI request: refuse it with a response, not a connection error.
        stream.respond_plain(501 if protocol is None else 400)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        size = event.flow_controlled_length
        data = event.data
        stream = self.streams.get(stream_id)
        if not data and event.stream_ended is None and self.empty_data.hit(self.loop.time()):
            self._calm_down("empty DATA flood")
            return
        if stream is None or not stream.receiving:
            # Nobody will read it (answered, reset): give the window back at once.
            if size:
                self.h2.acknowledge_received_data(size, stream_id)
            return
        stream.receive(data, size)

    def _reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.pop(event.stream_id, None)
        if stream is None:
            return
        self.ctx.http2_streams -= 1
        # A reset of a stream whose app is working: rapid reset (CVE-2023-44487) makes the
        # server start apps and abandon them at the client's pace.
        if stream.running and not stream.response_done and self.resets.hit(self.loop.time()):
            stream.gone()
            self._calm_down("rapid reset (too many streams reset while running)")
            return
        stream.gone()
        self._update_idle()

    def _peer_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """The client says it is done: it opens no new stream; close when the rest is done."""
        if self.goaway_id is None:
            self.goaway_id = self.h2.highest_inbound_stream_id
        self._close_if_done()

    # -- errors -------------------------------------------------------------------------------

    def _protocol_error(self, exc: h2.exceptions.ProtocolError) -> None:
        """The peer broke the protocol: h2 queued GOAWAY; send it and close."""
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "HTTP/2 protocol error from %s: %s; closing the connection",
                self.info.peer,
                escape_for_log(str(exc) or type(exc).__name__),
            )
        code = self._error_code(exc)
        data = self.h2.data_to_send()
        if data[-17:-8] == _GOAWAY_HEAD:
            if code != exc.error_code:
                # h2 chose the code: PROTOCOL_ERROR where RFC 9113 asks for another.
                data = data[:-4] + int(code).to_bytes(4, "big")
        else:
            # h2 queued none: an invalid preface fails before its error handling.
            last = self.h2.highest_inbound_stream_id
            data += GoAwayFrame(0, last_stream_id=last, error_code=code).serialize()
        self.t.write(data)
        self._end(CLOSED_MALFORMED)

    def _error_code(self, exc: h2.exceptions.ProtocolError) -> int:
        """The code RFC 9113 asks for, where h2 says PROTOCOL_ERROR for everything.

        A header block HPACK cannot decode is COMPRESSION_ERROR (RFC 9113 §4.3), and a
        SETTINGS acknowledgement with a payload is FRAME_SIZE_ERROR (§6.5).
        """
        cause = exc.__cause__
        if isinstance(cause, HPACKError) and not isinstance(cause, OversizedHeaderListError):
            # (An oversized list is h2's DenialOfServiceError: ENHANCE_YOUR_CALM stays.)
            return ErrorCodes.COMPRESSION_ERROR
        if isinstance(cause, InvalidDataError):
            # h2 raised before taking the frame out of its buffer: its header is still there.
            header = bytes(self.h2.incoming_buffer._data[:9])
            if (
                len(header) == 9
                and header[3] == 0x4
                and header[4] & 0x1
                and header[:3] != b"\0\0\0"
            ):
                return ErrorCodes.FRAME_SIZE_ERROR
        return int(exc.error_code)

    def _calm_down(self, what: str) -> None:
        logger.warning(
            "Closing the HTTP/2 connection from %s: %s (GOAWAY ENHANCE_YOUR_CALM)",
            self.info.peer,
            what,
        )
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        self._end(CLOSED_MALFORMED)

    def _end(self, reason: str) -> None:
        self._flush()
        self.closed = True
        for stream in list(self.streams.values()):
            stream.gone()
        self.ctx.http2_streams -= len(self.streams)
        self.streams.clear()
        self.sending.clear()
        self.t.close(reason=reason)

    # -- stream bookkeeping -------------------------------------------------------------------

    def stream_closed(self, stream: H2Stream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            self.ctx.http2_streams -= 1
            self._update_idle()

    def app_finished(self) -> None:
        self.running -= 1
        self._update_idle()

    def _update_idle(self) -> None:
        if self.streams or self.running or self.closed:
            return
        if self.goaway_id is not None or self.ctx.shutting_down:
            self._close_if_done()
            return
        t = self.t
        t.set_deadline(IDLE, self.options.keep_alive or 0.01)

    def _close_if_done(self) -> None:
        if self.streams or self.running or self.closed:
            return
        if self.goaway_id is None:
            self.goaway_id = self.h2.highest_inbound_stream_id
        self._send_goaway()
        self._flush()
        self.closed = True
        self.t.close()


class H2Stream:
    """One request stream: the :class:`~pounce.pipeline.cycle.ResponseChannel` of its cycle.

    It is its own :class:`~pounce.pipeline.cycle.FlowControl`: ``send()`` waits while the
    stream has data the peer's windows did not take yet, or the connection's socket is full.
    """

    __slots__ = (
        "_body_timer",
        "_stall_timer",
        "_waiter",
        "body_received",
        "content_left",
        "cycle",
        "end_waiting",
        "engine",
        "head_only",
        "offset",
        "out_done",
        "peer_done",
        "queue",
        "queued_bytes",
        "receiving",
        "response_done",
        "running",
        "stream_id",
        "trailers",
        "trailers_wanted",
        "unacked",
        "ws",
    )

    def __init__(self, engine: HTTP2Engine, stream_id: int, head_only: bool) -> None:
        self.engine = engine
        self.stream_id = stream_id
        self.head_only = head_only
        self.cycle: RequestCycle | None = None
        #: The WebSocket this stream carries (RFC 8441), if any.
        self.ws: H2WebSocketStream | None = None
        self.queue: deque[bytes] = deque()
        self.offset = 0  # bytes of queue[0] already sent
        self.queued_bytes = 0
        #: The body's end is queued behind the data (END_STREAM, or trailers when wanted).
        self.end_waiting = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.trailers_wanted = False
        self.content_left: int | None = None
        self.unacked = 0
        self.peer_done = False  # END_STREAM received
        self.out_done = False  # END_STREAM (or a reset) sent
        self.receiving = True  # request body still goes to the app
        self.response_done = False
        self.running = False
        self._waiter: asyncio.Future[None] | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        #: Runs while this stream's data waits on a window the peer keeps shut; cancelled by
        #: any progress. Other streams moving do not reset it (the connection's own stall
        #: deadline only sees the connection as a whole).
        self._stall_timer: asyncio.TimerHandle | None = None
        self.body_received = 0

    # -- FlowControl --------------------------------------------------------------------------

    @property
    def flow(self) -> FlowControl:
        # A read-only write_paused (computed) is all the cycle uses of FlowControl.
        return cast("FlowControl", self)

    @property
    def write_paused(self) -> bool:
        return bool(self.queued_bytes) or (self.engine.t.write_paused and not self.out_done)

    async def drain(self) -> None:
        while self.write_paused and not self.out_done and not self.engine.closed:
            if self.queued_bytes and self._stall_timer is None:
                engine = self.engine
                self._stall_timer = engine.loop.call_later(
                    engine.options.write_timeout, self._stalled
                )
            waiter = self.engine.loop.create_future()
            self._waiter = waiter
            await waiter

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the response -------------------------------------------------------------------------

    def start_response(
        self,
        status: int,
        fields: HeaderFields,
        content_length: int | None,
        close: bool,
        trailers: bool,
    ) -> None:
        if self.out_done:
            return
        engine = self.engine
        headers = [(b":status", _STATUS[status])]
        for field in fields:
            if field[0] in _CONNECTION_FIELDS:
                continue
            headers.append(field)
        self.trailers_wanted = trailers
        self.content_left = content_length
        end = self.head_only or status in (204, 304)
        try:
            engine.h2.send_headers(self.stream_id, headers, end_stream=end)
        except h2.exceptions.StreamClosedError:
            self._closed_under_us()
            return
        if end:
            self._ended()
        if close and engine.goaway_id is None:
            # Connection: close from the app: no new streams on this connection.
            engine._goaway(ErrorCodes.NO_ERROR)
        engine.flush_soon()

    def write_body(self, data: bytes, more_body: bool) -> None:
        if self.out_done:
            return
        cycle = self.cycle
        size = len(data)
        left = self.content_left
        if left is not None:
            if size > left:
                data = data[:left]
                size = left
                self._queue(data, False)
                if cycle is not None:
                    cycle.bytes_sent += size
                    cycle.protocol_misuse("the response body is longer than its Content-Length")
                return
            self.content_left = left - size
            if not more_body and left - size:
                logger.error(
                    "Response body shorter than its Content-Length (%d bytes missing); "
                    "resetting the stream",
                    left - size,
                )
                # The client must see that the response is incomplete.
                self._reset_stream(ErrorCodes.INTERNAL_ERROR)
                return
        if cycle is not None:
            cycle.bytes_sent += size
        end = not more_body
        engine = self.engine
        conn = engine.h2
        try:
            if (
                not self.queued_bytes
                and size <= conn.max_outbound_frame_size
                and (not end or not self.trailers_wanted)
                and size <= conn.local_flow_control_window(self.stream_id)
            ):
                # The usual case: it fits in one frame and the windows; one send, no queue.
                conn.send_data(self.stream_id, data, end_stream=end)
                if end:
                    self._ended()
                if engine.stalled_since is not None:
                    # Data moves on this connection: its stall deadline starts over (a stream
                    # held at a shut window is timed out on its own, see _stalled).
                    engine.stalled_since = engine.loop.time()
                engine.flush_soon()
                return
        except h2.exceptions.StreamClosedError:
            self._closed_under_us()
            return
        self._queue(data, end)
        engine._pump()

    def _closed_under_us(self) -> None:
        """h2 closed the stream on its own (a stream error it answered): the client is gone
        as far as this response goes."""
        self.gone()
        self.engine.stream_closed(self)
        self.engine.flush_soon()

    def _queue(self, data: bytes, end: bool) -> None:
        if data:
            self.queue.append(data)
            self.queued_bytes += len(data)
        if end:
            self.end_waiting = True
        if self.queued_bytes or self.end_waiting:
            engine = self.engine
            if self not in engine.sending:
                engine.sending.append(self)

    def _stalled(self) -> None:
        """--timeout-write passed without a byte of this stream taken by the peer's window."""
        self._stall_timer = None
        if self.out_done or not self.queued_bytes:
            return
        engine = self.engine
        since = engine.stalled_since
        timeout = engine.options.write_timeout
        if since is not None and engine.loop.time() - since >= timeout * 0.9:
            # Nothing moved on the whole connection either: its own deadline cuts it now.
            return
        logger.info(
            "Client %s kept the flow-control window of HTTP/2 stream %d shut for %gs; "
            "resetting the stream",
            self.engine.info.peer,
            self.stream_id,
            self.engine.options.write_timeout,
        )
        cycle = self.cycle
        if cycle is not None:
            cycle.feed_disconnect()
        self._reset_stream(ErrorCodes.CANCEL)

    def _cancel_stall_timer(self) -> None:
        timer = self._stall_timer
        if timer is not None:
            self._stall_timer = None
            timer.cancel()

    def send_queued(self, budget: int) -> int:
        """Send up to *budget* queued bytes within the windows; returns how many went."""
        if self.out_done:
            self._cancel_stall_timer()
            self.queue.clear()
            self.queued_bytes = 0
            self.end_waiting = False
            return 0
        conn = self.engine.h2
        stream_id = self.stream_id
        try:
            window = conn.local_flow_control_window(stream_id)
        except h2.exceptions.StreamClosedError:
            self.gone()
            return 0
        budget = min(budget, window)
        frame_size = conn.max_outbound_frame_size
        queue = self.queue
        sent = 0
        while queue and budget > 0:
            data = queue[0]
            offset = self.offset
            n = min(len(data) - offset, frame_size, budget)
            piece = data[offset : offset + n] if n != len(data) else data
            offset += n
            last = offset == len(data) and len(queue) == 1
            if offset == len(data):
                queue.popleft()
                offset = 0
            self.offset = offset
            self.queued_bytes -= n
            budget -= n
            sent += n
            end = last and self.end_waiting and not self.trailers_wanted
            try:
                conn.send_data(stream_id, piece, end_stream=end)
            except h2.exceptions.StreamClosedError:
                self._closed_under_us()
                return 1
            if end:
                self.end_waiting = False
                self._ended()
        if sent and self._stall_timer is not None:
            self._cancel_stall_timer()  # the peer took some: the stall starts over
        if not queue and self.end_waiting:
            if not self.trailers_wanted:
                self.end_waiting = False
                try:
                    conn.end_stream(stream_id)
                except h2.exceptions.StreamClosedError:
                    self._closed_under_us()
                    return 1
                self._ended()
            elif self.trailers is not None:
                self._send_trailers()
        if not self.queued_bytes:
            self.wake()
        return sent or (1 if self.out_done else 0)

    async def write_file(self, path: str) -> None:
        cycle = self.cycle
        assert cycle is not None
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed below, after awaits
        except OSError as exc:
            cycle.protocol_misuse(f"'http.response.pathsend' cannot open {path!r}: {exc}")
        loop = self.engine.loop
        try:
            size = os.fstat(file.fileno()).st_size
            offload = size > OFFLOAD_FILE
            sent = 0
            if self.head_only or self.out_done:
                return
            while True:
                # Window-sized pieces: no more is read than the peer is ready to take.
                want = max(QUANTUM, min(self._window(), 1024 * 1024))
                if offload:
                    chunk = await loop.run_in_executor(None, file.read, want)
                else:
                    chunk = file.read(want)
                sent += len(chunk)
                last = not chunk or sent >= size
                self.write_body(chunk, not last)
                if last or self.out_done:
                    return
                if self.write_paused:
                    await self.drain()
        finally:
            file.close()

    def _window(self) -> int:
        try:
            return int(self.engine.h2.local_flow_control_window(self.stream_id))
        except h2.exceptions.StreamClosedError:
            return 0

    def write_trailers(self, headers: Headers, more: bool) -> None:
        if self.trailers is None:
            self.trailers = []
        self.trailers.extend(headers)
        if more or self.out_done:
            return
        if not self.queued_bytes:
            self._send_trailers()
            self.engine.flush_soon()
        # else: sent when the queued body is out (send_queued)

    def _send_trailers(self) -> None:
        self.end_waiting = False
        try:
            self.engine.h2.send_headers(self.stream_id, self.trailers or [], end_stream=True)
        except h2.exceptions.StreamClosedError:
            self._closed_under_us()
            return
        self._ended()

    def write_early_hint(self, links: list[bytes]) -> None:
        if self.out_done:
            return
        headers = [(b":status", b"103")]
        headers.extend((b"link", link) for link in links)
        try:
            self.engine.h2.send_headers(self.stream_id, headers)
        except h2.exceptions.StreamClosedError:
            self._closed_under_us()
            return
        self.engine.flush_soon()

    def write_continue(self) -> None:
        if not self.out_done:
            try:
                self.engine.h2.send_headers(self.stream_id, [(b":status", b"100")])
            except h2.exceptions.StreamClosedError:
                self._closed_under_us()
                return
            self.engine.flush_soon()

    def send_error_response(
        self, status: int, headers: HeaderFields = (), body: bytes | None = None
    ) -> int:
        if self.out_done:
            return 0
        if body is None:
            body = error_body(status)
        fields = [(b":status", _STATUS[status])]
        # A Content-Type among *headers* (the metrics exposition's) replaces the plain-text one.
        if not any(name == b"content-type" for name, _ in headers):
            fields.append((b"content-type", b"text/plain; charset=utf-8"))
        fields.append((b"content-length", b"%d" % len(body)))
        fields.extend(headers)
        ctx = self.engine.ctx
        ctx.add_default_fields(fields, False, False)
        self.trailers_wanted = False
        self.content_left = None
        try:
            if self.head_only or not body:
                self.engine.h2.send_headers(self.stream_id, fields, end_stream=True)
                self._ended()
                self.engine.flush_soon()
                return 0
            self.engine.h2.send_headers(self.stream_id, fields)
        except h2.exceptions.StreamClosedError:
            self._closed_under_us()
            return 0
        cycle = self.cycle
        self.cycle = None  # write_body must not count these bytes twice
        self.write_body(body, False)
        self.cycle = cycle
        return len(body)

    def respond_plain(self, status: int, headers: HeaderFields = ()) -> None:
        """A response of the server's own on a stream that never reaches the app."""
        self.send_error_response(status, headers)
        self.response_done = True
        self._maybe_closed()

    def abort(self) -> None:
        self._reset_stream(ErrorCodes.INTERNAL_ERROR)

    def reset(self, code: int) -> None:
        """End the stream with RST_STREAM *code* (nothing more is sent or read)."""
        self._reset_stream(code)

    def _reset_stream(self, code: int) -> None:
        engine = self.engine
        if not self.out_done and not engine.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                engine.h2.reset_stream(self.stream_id, code)
            engine.flush_soon()
        self._cancel_body_timer()
        self._cancel_stall_timer()
        self.out_done = True
        self.peer_done = True
        self._stop_receiving()
        self.queue.clear()
        self.queued_bytes = 0
        self.end_waiting = False
        self.wake()
        engine.stream_closed(self)

    def _ended(self) -> None:
        """END_STREAM went out."""
        self.out_done = True
        self._cancel_stall_timer()
        self.wake()
        if not self.peer_done and self.ws is None:
            # The response is complete but the client is still sending: it need not
            # (RFC 9113 §8.1); NO_ERROR tells it so, and the rest is not read.
            self._reset_stream(ErrorCodes.NO_ERROR)
            return
        self._maybe_closed()

    def _maybe_closed(self) -> None:
        if self.out_done and self.peer_done:
            self.engine.stream_closed(self)

    # -- the request body ---------------------------------------------------------------------

    def receive(self, data: bytes, size: int) -> None:
        self.unacked += size
        if self._body_timer is not None and data:
            # Progress: the wait starts over.
            self._cancel_body_timer()
            self.waiting_for_body(True)
        cycle = self.cycle
        if cycle is not None:
            limit = self.engine.options.max_body
            if limit is not None:
                self.body_received += len(data)
                if self.body_received > limit:
                    self._body_too_large(cycle)
                    return
            cycle.feed_body(data)
        elif self.ws is not None:
            self.ws.data_received(data)
        else:
            self._stop_receiving()

    def ended_by_peer(self) -> None:
        self.peer_done = True
        self._cancel_body_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.request_complete:
            cycle.feed_end()
        elif self.ws is not None:
            self.ws.eof()
        self._maybe_closed()

    def body_consumed(self) -> None:
        unacked = self.unacked
        if unacked and not self.engine.closed:
            self.unacked = 0
            # h2 sends WINDOW_UPDATE once enough of the window was used, not for every piece.
            self.engine.h2.acknowledge_received_data(unacked, self.stream_id)
            self.engine.flush_soon()

    def _stop_receiving(self) -> None:
        self.receiving = False
        unacked = self.unacked
        if unacked and not self.engine.closed:
            self.unacked = 0
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.engine.h2.acknowledge_received_data(unacked, self.stream_id)

    def waiting_for_body(self, waiting: bool) -> None:
        # A stalled upload holds no more than its window, but it holds the app: after
        # --timeout-request-body without a byte the stream is answered 408 (or reset). A timer
        # per wait, not per request: only a request whose app waits for its body pays it.
        if waiting:
            if self._body_timer is None and not self.peer_done:
                engine = self.engine
                self._body_timer = engine.loop.call_later(
                    engine.options.body_timeout, self._body_timed_out
                )
        else:
            self._cancel_body_timer()

    def _cancel_body_timer(self) -> None:
        timer = self._body_timer
        if timer is not None:
            self._body_timer = None
            timer.cancel()

    def _body_too_large(self, cycle: RequestCycle) -> None:
        """More body than --limit-request-body (no Content-Length said so): 413, or a reset."""
        logger.info(
            "Request body from %s is larger than --limit-request-body (%d bytes); ending the "
            "stream",
            self.engine.info.peer,
            self.engine.options.max_body,
        )
        self._stop_receiving()
        cycle.feed_disconnect()
        if not cycle.response_started:
            cycle.answer_with_error(413)
        else:
            self._reset_stream(ErrorCodes.CANCEL)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or self.out_done:
            return
        logger.info(
            "Request body too slow from %s (HTTP/2 stream %d); ending the stream",
            self.engine.info.peer,
            self.stream_id,
        )
        cycle.feed_disconnect()
        if not cycle.response_started:
            cycle.answer_with_error(408)
        else:
            self._reset_stream(ErrorCodes.CANCEL)

    # -- the end ------------------------------------------------------------------------------

    def response_complete(self) -> None:
        self.response_done = True

    def app_finished(self) -> None:
        self.cycle = None
        if self.running:
            self.running = False
            self.engine.app_finished()
        if not self.response_done and not self.out_done and self.ws is None:
            # The cycle aborts an unfinished response itself; this is the last safety net.
            self._reset_stream(ErrorCodes.INTERNAL_ERROR)

    def gone(self) -> None:
        """The stream was reset by the peer or the connection is gone."""
        self._cancel_body_timer()
        self._cancel_stall_timer()
        self.out_done = True
        self.peer_done = True
        self.receiving = False
        self.queue.clear()
        self.queued_bytes = 0
        self.end_waiting = False
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.feed_disconnect()
        ws = self.ws
        if ws is not None:
            ws.gone()
        self.wake()

    def cancel_task(self) -> None:
        if self.ws is not None:
            self.ws.force_close()
        cycle = self.cycle
        task = cycle.task if cycle is not None else None
        if task is not None and not task.done():
            task.cancel()
