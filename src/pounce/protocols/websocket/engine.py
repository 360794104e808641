"""The WebSocket frame engine: RFC 6455 on a byte stream, after the opening handshake.

Fed raw bytes by whatever carries the connection (a TCP connection for HTTP/1.1, one HTTP/2
stream for RFC 8441 later), it produces whole messages for the session above it and frame
bytes for the :class:`ByteStream` below it. It owns everything the connection does on its own:
answering pings, the close handshake and its timeout, keepalive pings, the message-size limit,
UTF-8 validation and read backpressure.

Frame codec: the sans-I/O :class:`websockets.protocol.Protocol` of the ``websockets`` package
(with its C masking speedups). Chosen by measurement over ``wsproto``
(``benchmarks/bench_ws_codec.py``; receive one masked client frame + send one reply, CPython
3.11, websockets 17.4, wsproto 1.3.2)::

    16 B text       wsproto   109,292 msg/s   websockets   336,941 msg/s  (3.1x)
    64 KiB binary   wsproto     6,519 msg/s   websockets   159,128 msg/s  (24x)

What that codec leaves to us, done here: reassembling fragmented messages, validating UTF-8
of text messages incrementally (it delivers raw frame payloads), keepalive pings, timeouts,
and the read queue. It checks masking, reserved bits, opcodes, control-frame rules, close
codes and close-reason UTF-8, and the size limit *before* reading a payload or while
inflating one (decompression stops at the limit), failing the connection with 1002, 1007 or
1009 as RFC 6455 §7.4.1 asks.

The engine is driven only from its connection's event-loop thread.
"""

from __future__ import annotations

import codecs
import logging
import struct
from typing import TYPE_CHECKING, Protocol, cast

from websockets.exceptions import PayloadTooBig
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol as FrameProtocol
from websockets.protocol import Side, State

from pounce.pipeline.websocket import (
    ABNORMAL_CLOSURE,
    GOING_AWAY,
    INTERNAL_ERROR,
)
from pounce.transport.stream import ENGINE_KINDS

if TYPE_CHECKING:
    import asyncio

    from pounce.protocols.websocket import EngineOptions
    from pounce.protocols.websocket.handshake import DeflateParams

logger = logging.getLogger("pounce.error")

#: The codec's own logger: it reports every closed connection at INFO and every frame at
#: DEBUG, which is noise in a server's log (Pounce logs what matters itself); its errors stay.
_codec_logger = logging.getLogger("pounce.websocket.codec")
_codec_logger.setLevel(logging.WARNING)

INFINITY = float("inf")
#: The deadline kind the engine asks its transport for (pings, pong and close timeouts).
WEBSOCKET_DEADLINE = ENGINE_KINDS + 4

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_PONG = Opcode.PONG
_CLOSE = Opcode.CLOSE
_OPEN = State.OPEN
_CLOSING = State.CLOSING
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class _ServerFrames(FrameProtocol):
    """The codec, with one RFC 6455 reading it gets wrong for a server.

    §5.4 lets control frames come between the fragments of a message, and Close is a control
    frame: a client may end the connection in the middle of a fragmented message, and the
    server answers that close normally (the unfinished message is dropped) rather than failing
    with 1002 as the codec does.
    """

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is _CLOSE and self.current_size is not None:
            self.current_size = None
        super().recv_frame(frame)


class ByteStream(Protocol):
    """The connection under the engine: a TCP connection, or one HTTP/2 stream."""

    #: True while the stream's write buffer is above its high-water mark.
    write_paused: bool

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None:
        """Close after what is buffered has been written."""

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""

    def set_deadline_at(self, kind: int, when: float) -> None:
        """Have the engine's ``on_deadline(kind)`` called at *when* (``loop.time()``)."""


class MessageSink(Protocol):
    """What the engine reports to (the ASGI session above it)."""

    #: Messages delivered and not yet taken by the application.
    queued: int

    def message_received(self, data: str | bytes) -> None: ...
    def connection_closed(self, code: int, reason: str) -> None:
        """The WebSocket is over: the client's close code, or 1006 when it just went away."""

    def force_close(self) -> None:
        """Stop the application now (graceful-shutdown timeout)."""


class WebSocketEngine:
    """One WebSocket connection's frames, from handshake to closed TCP connection."""

    def __init__(  # noqa: PLR0917 - built in one place, by the transport's hand-over
        self,
        loop: asyncio.AbstractEventLoop,
        stream: ByteStream,
        sink: MessageSink,
        options: EngineOptions,
        deflate: DeflateParams | None,
        buffered: bytes = b"",
    ) -> None:
        self.loop = loop
        self.stream = stream
        self.sink = sink
        self.options = options
        self.protocol = _ServerFrames(
            Side.SERVER, max_size=options.max_size, logger=_codec_logger
        )
        if deflate is not None:
            self.protocol.extensions = [
                PerMessageDeflate(
                    remote_no_context_takeover=deflate.client_no_context_takeover,
                    local_no_context_takeover=deflate.server_no_context_takeover,
                    remote_max_window_bits=deflate.client_max_window_bits,
                    local_max_window_bits=deflate.server_max_window_bits,
                    # memLevel 5: 16 KiB of compressor state instead of 128 KiB.
                    compress_settings={"memLevel": 5},
                )
            ]
        #: The earliest time on_deadline() must run; the transport compares it every tick.
        self.deadline = INFINITY
        self.started = False  # the app accepted: frames flow
        self.finished = False  # connection_closed() was reported to the sink
        self.stream_closed = False  # the TCP connection (or stream) is closing or gone
        self.shutdown_requested = False
        self.read_paused = False
        # Bytes that arrived before the app accepted; the client may send right after the
        # handshake, before it has seen the 101.
        self._early = bytearray(buffered)
        self._fragments: list[bytes] = []
        self._texts: list[str] = []
        self._decoder: codecs.IncrementalDecoder | None = None  # text being reassembled
        self._next_ping = INFINITY
        self._pong_deadline = INFINITY
        self._close_deadline = INFINITY
        self._ping_payload = b""
        self._ping_count = 0

    # -- fed by the transport -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self.started:
            # Before the app accepts, nothing may be parsed: the app may still refuse with an
            # HTTP response. Keep what came and stop reading until then.
            if not self.stream_closed:
                self._early += data
                self._pause_reading()
            return
        try:
            self.protocol.receive_data(data)
        except EOFError:
            return  # bytes after the end of the stream: nothing can use them
        self._process()

    def eof_received(self) -> bool:
        if self.started:
            self.protocol.receive_eof()
            self._process()
        self._close_stream()
        self._finish(ABNORMAL_CLOSURE, "")
        return True  # the engine closes the connection itself, after its last write

    def write_resumed(self) -> None:
        pass  # senders wait on the stream's drain() themselves

    def connection_lost(self) -> None:
        self.stream_closed = True
        self.deadline = self._next_ping = self._pong_deadline = self._close_deadline = INFINITY
        self._finish(ABNORMAL_CLOSURE, "")

    def on_deadline(self, kind: int) -> None:
        now = self.loop.time()
        if now >= self._close_deadline:
            # The client did not answer our close frame (or does not read the last bytes):
            # RFC 6455 §7.1.1 lets the server close the TCP connection itself.
            if logger.isEnabledFor(logging.INFO):
                logger.info("WebSocket client did not complete the close handshake; closing")
            self._abort()
            return
        if now >= self._pong_deadline:
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "WebSocket client did not answer a ping within %gs; closing",
                    self.options.ping_timeout,
                )
            self.close(INTERNAL_ERROR, "keepalive ping timeout")
            self._finish(ABNORMAL_CLOSURE, "")
            self._abort()
            return
        if now >= self._next_ping and self.protocol.state is _OPEN:
            self._ping_count += 1
            self._ping_payload = struct.pack("!I", self._ping_count)
            self.protocol.send_ping(self._ping_payload)
            self._flush()
            interval = self.options.ping_interval
            assert interval is not None
            self._next_ping = now + interval
            timeout = self.options.ping_timeout
            if timeout is not None and self._pong_deadline == INFINITY:
                self._pong_deadline = now + timeout
        self._update_deadline()

    def shutdown(self) -> None:
        """Graceful shutdown: close with 1001 (going away), or as soon as the app accepts."""
        self.shutdown_requested = True
        if self.started:
            self._close_for_shutdown()

    def force_close(self) -> None:
        self.sink.force_close()
        self._abort()

    # -- used by the session ------------------------------------------------------------------

    def start(self) -> None:
        """The app accepted (the 101 is written): parse what came early, start pinging."""
        self.started = True
        interval = self.options.ping_interval
        if interval is not None:
            self._next_ping = self.loop.time() + interval
            self._update_deadline()
        early = self._early
        self._early = bytearray()
        if self.shutdown_requested:
            self._close_for_shutdown()
            return
        if early:
            self.protocol.receive_data(bytes(early))
            self._process()
        self._maybe_resume_reading()

    def send_text(self, text: str) -> None:
        if self.protocol.state is _OPEN:
            self.protocol.send_text(text.encode("utf-8"))
            self._flush()

    def send_bytes(self, data: bytes) -> None:
        if self.protocol.state is _OPEN:
            self.protocol.send_binary(data)
            self._flush()

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake; the client's answer (or a timeout) ends it."""
        if self.protocol.state is not _OPEN or self.stream_closed:
            return
        self.protocol.send_close(code, reason)
        self._flush()
        self._arm_close_deadline()

    def _close_for_shutdown(self) -> None:
        self.close(GOING_AWAY, "server shutting down")
        limit = self.loop.time() + self.options.graceful_shutdown / 2
        if self._close_deadline > limit:
            self._close_deadline = limit
            self._update_deadline()

    def message_consumed(self) -> None:
        """The app took a message off the queue: maybe read again."""
        if self.read_paused:
            self._maybe_resume_reading()

    @property
    def writable(self) -> bool:
        return self.protocol.state is _OPEN and not self.stream_closed

    # -- internals ----------------------------------------------------------------------------

    def _process(self) -> None:
        protocol = self.protocol
        sink = self.sink
        # After the handshake the codec only produces frames.
        for frame in cast("list[Frame]", protocol.events_received()):
            opcode = frame.opcode
            if opcode is _TEXT or opcode is _BINARY:
                if frame.fin:
                    if opcode is _TEXT:
                        try:
                            sink.message_received(bytes(frame.data).decode("utf-8"))
                        except UnicodeDecodeError:
                            self._fail_invalid_utf8()
                            return
                    else:
                        sink.message_received(bytes(frame.data))
                    continue
                if opcode is _TEXT:
                    # Text is decoded fragment by fragment, so invalid UTF-8 fails the
                    # connection as soon as it arrives rather than at the end of the message.
                    self._decoder = decoder = _Utf8Decoder()
                    try:
                        self._texts = [decoder.decode(frame.data)]
                    except UnicodeDecodeError:
                        self._fail_invalid_utf8()
                        return
                else:
                    self._decoder = None
                    self._fragments = [bytes(frame.data)]
            elif opcode is _CONT:
                pending = self._decoder
                if pending is not None:
                    try:
                        self._texts.append(pending.decode(frame.data, final=frame.fin))
                    except UnicodeDecodeError:
                        self._fail_invalid_utf8()
                        return
                    if frame.fin:
                        text = "".join(self._texts)
                        self._texts = []
                        self._decoder = None
                        sink.message_received(text)
                else:
                    self._fragments.append(bytes(frame.data))
                    if frame.fin:
                        data = b"".join(self._fragments)
                        self._fragments = []
                        sink.message_received(data)
            elif opcode is _PONG:
                if frame.data == self._ping_payload:
                    self._pong_deadline = INFINITY
                    self._update_deadline()
            elif opcode is _CLOSE:
                received = protocol.close_rcvd
                if received is not None:
                    self._finish(received.code, received.reason)
        failure = protocol.parser_exc
        if isinstance(failure, PayloadTooBig) and (getattr(failure, "size", 0) or 0) >= 1 << 63:
            # A 64-bit length with its top bit set is not a large frame but an invalid one
            # (§5.2): 1002, where the codec says 1009.
            self._replace_failure_close(1002, "invalid frame length")
        if failure is not None and not self.finished and not isinstance(failure, EOFError):
            sent = protocol.close_sent
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "WebSocket protocol error from the client (%s); closing with %s",
                    failure,
                    sent.code if sent is not None else ABNORMAL_CLOSURE,
                )
            self._finish(sent.code if sent is not None else ABNORMAL_CLOSURE, "")
        self._flush()
        if self.sink.queued >= self.options.max_queue:
            self._pause_reading()

    def _replace_failure_close(self, code: int, reason: str) -> None:
        """Change the close frame the codec queued when it failed the connection."""
        protocol = self.protocol
        writes = protocol.writes
        for index in range(len(writes) - 1, -1, -1):
            if writes[index][:1] == b"\x88":  # an unmasked, final close frame
                close = Close(code, reason)
                writes[index] = Frame(_CLOSE, close.serialize()).serialize(mask=False)
                protocol.close_sent = close
                return

    def _fail_invalid_utf8(self) -> None:
        protocol = self.protocol
        protocol.fail(1007, "invalid UTF-8 in a text message")
        protocol.parser_exc = ValueError("invalid UTF-8 in a text message")
        if logger.isEnabledFor(logging.INFO):
            logger.info("WebSocket client sent invalid UTF-8 in a text message; closing (1007)")
        self._finish(1007, "")
        self._flush()

    def _flush(self) -> None:
        writes = self.protocol.data_to_send()
        if not writes or self.stream_closed:
            return
        eof = writes[-1] == b""
        if eof:
            writes.pop()
        if writes:
            self.stream.write(writes[0] if len(writes) == 1 else b"".join(writes))
        if eof:
            # The close handshake is complete (or failed): the server closes TCP first.
            self._close_stream()

    def _close_stream(self) -> None:
        if not self.stream_closed:
            self.stream_closed = True
            self.stream.close()
            # A client that does not read our last bytes must not hold the connection open.
            self._arm_close_deadline()

    def _abort(self) -> None:
        self.stream_closed = True
        self._finish(ABNORMAL_CLOSURE, "")
        self.stream.abort()

    def _finish(self, code: int, reason: str) -> None:
        if not self.finished:
            self.finished = True
            self._next_ping = self._pong_deadline = INFINITY
            self._update_deadline()
            self.sink.connection_closed(code, reason)

    def _arm_close_deadline(self) -> None:
        if self._close_deadline == INFINITY:
            self._close_deadline = self.loop.time() + self.options.close_timeout
        # Once closing, the close handshake's bound replaces keepalive pings.
        self._next_ping = self._pong_deadline = INFINITY
        self._update_deadline()

    def _update_deadline(self) -> None:
        self.deadline = deadline = min(self._next_ping, self._pong_deadline, self._close_deadline)
        if not self.stream_closed:
            # Once the stream is closing, the transport's own closing deadline bounds it.
            self.stream.set_deadline_at(WEBSOCKET_DEADLINE, deadline)

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.stream_closed:
            self.read_paused = True
            self.stream.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self.read_paused
            and self.started
            and not self.stream_closed
            and self.sink.queued < self.options.max_queue
        ):
            self.read_paused = False
            self.stream.resume_reading()
