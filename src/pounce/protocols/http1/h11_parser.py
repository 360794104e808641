"""H11Parser: the :class:`~pounce.protocols.http1.base.RequestParser` interface backed by h11.

Why a second parser: h11 is a widely deployed, independently written HTTP/1.1 implementation,
which makes it a useful reference (differential tests run every input through both parsers)
and a conservative fallback for users who prefer it.

Why it is not *just* h11: h11 is more lenient than our rules in places (it folds obs-fold
lines, allows CTLs such as ``\\x01`` in values, accepts BWS and 20 hex digits in chunk sizes,
any bytes in chunk extensions, bare LF in trailers, and it rejects leading empty lines that RFC
9112 tells servers to ignore). Two parsers that disagree are a smuggling risk, so every byte is
first checked with the *same* shared validators FastParser uses (``base.SectionLocator``,
``base.parse_head``, ``base.parse_chunk_size_line``, ``base.parse_trailers``) and only bytes
that passed are handed to h11. Both parsers therefore accept and reject exactly the same inputs
with the same status codes.

Design choices:

* A fresh ``h11.Connection(h11.SERVER)`` per request, fed exactly that request's bytes: we never
  have to fake a response to move h11 to its next cycle, and pipelined bytes stay in our buffer
  (so ``take_trailing_data`` is exact).
* Method and target come from h11's ``Request`` and are cross-checked against the pre-check.
  Header fields come from the pre-check because h11 normalises them (it drops duplicate
  ``Content-Length`` lines and rewrites ``5, 5`` to ``5``), while the contract promises the
  original order with duplicates kept.
* Body bytes and the end of the message come from h11's ``Data``/``EndOfMessage`` events.
"""

from __future__ import annotations

from typing import Final

import h11

from .base import (
    NEED_DATA,
    PAUSED,
    EndOfMessage,
    Event,
    ParserLimits,
    RequestHead,
    SectionLocator,
    find_chunk_size_line,
    parse_chunk_size_line,
    parse_head,
    parse_trailers,
)
from .errors import ProtocolError, safe_repr

__all__ = ["H11Parser"]

_HEAD: Final = 0
_BODY: Final = 1
_PAUSED: Final = 2
_ERROR: Final = 3

# Chunked pre-check states.
_SIZE: Final = 0
_DATA: Final = 1
_CRLF: Final = 2
_TRAILERS: Final = 3
_DONE: Final = 4


class H11Parser:
    """HTTP/1.1 request parser delegating to h11 after the shared strict pre-checks."""

    __slots__ = (
        "_body_total",
        "_buf",
        "_chunk_left",
        "_chunk_state",
        "_chunked",
        "_conn",
        "_error",
        "_fields",
        "_head_size",
        "_limits",
        "_locator",
        "_remaining",
        "_state",
        "_trailers",
    )

    def __init__(self, limits: ParserLimits | None = None) -> None:
        self._limits = limits if limits is not None else ParserLimits()
        self._buf = bytearray()
        self._state = _HEAD
        self._conn: h11.Connection | None = None
        self._error: ProtocolError | None = None
        self._locator = SectionLocator(self._limits)
        self._chunked = False
        self._remaining = 0
        self._chunk_state = _SIZE
        self._chunk_left = 0
        self._body_total = 0
        self._fields = 0
        self._head_size = 0
        self._trailers: list[tuple[bytes, bytes]] = []

    def feed(self, data: bytes) -> None:
        """Append bytes received from the socket."""
        self._buf += data

    def take_trailing_data(self) -> bytes:
        """Remove and return every buffered byte not yet consumed as an event."""
        pending = b""
        if self._conn is not None:
            pending = bytes(self._conn.trailing_data[0])
            self._conn = None
        data = pending + bytes(self._buf)
        self._buf.clear()
        return data

    def start_next_cycle(self) -> bool:
        """Allow the next pipelined request to be parsed (only valid after EndOfMessage).

        Returns whether bytes of a next request are already buffered.
        """
        if self._state != _PAUSED:
            raise RuntimeError("start_next_cycle() called before the request was complete")
        self._state = _HEAD
        self._conn = None
        self._locator.reset()
        return bool(self._buf)

    def next_event(self) -> Event:
        """Return the next event; raises :class:`ProtocolError` (again) after invalid input."""
        if self._state == _ERROR:
            assert self._error is not None
            raise self._error
        try:
            return self._next()
        except ProtocolError as exc:
            self._fail(exc)
            raise
        except h11.ProtocolError as exc:
            # Only reachable if h11 is stricter than the shared pre-check somewhere.
            reason = "rejected by h11: " + safe_repr(str(exc).encode("utf-8", "replace"), 80)
            error = ProtocolError(exc.error_status_hint, reason)
            self._fail(error)
            raise error from exc

    def _fail(self, exc: ProtocolError) -> None:
        self._state = _ERROR
        self._error = exc
        self._conn = None

    def _next(self) -> Event:
        state = self._state
        if state == _PAUSED:
            return PAUSED
        if state == _HEAD:
            return self._read_head()
        conn = self._conn
        assert conn is not None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if not self._advance(conn):
                    return NEED_DATA
                continue
            if type(event) is h11.Data:
                if event.data:
                    return bytes(event.data)
                continue
            if type(event) is h11.EndOfMessage:
                self._state = _PAUSED
                trailers, self._trailers = self._trailers, []
                return EndOfMessage(trailers)
            raise ProtocolError(400, f"unexpected h11 event {type(event).__name__}")

    def _read_head(self) -> Event:
        limits = self._limits
        buf = self._buf
        located = self._locator.locate_head(buf, 0)
        if located is None:
            return NEED_DATA
        start, lf, end = located
        block = bytes(buf[start:end])
        checked, fields = parse_head(block, lf - start, limits)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_size + 1)
        conn.receive_data(block)
        event = conn.next_event()
        if type(event) is not h11.Request:
            raise ProtocolError(400, "h11 did not parse a request")
        method = event.method.decode("ascii")
        target = bytes(event.target)
        if method != checked.method or target != checked.target:
            raise ProtocolError(400, "parsers disagree on the request line")
        del buf[:end]
        self._conn = conn
        self._state = _BODY
        self._fields = fields
        self._head_size = end - start
        self._chunked = checked.chunked
        self._remaining = checked.content_length or 0
        self._chunk_state = _SIZE
        self._body_total = 0
        self._trailers = []
        return RequestHead(
            method,
            target,
            checked.path,
            checked.query,
            checked.http_version,
            checked.headers,
            checked.keep_alive,
            checked.expect_continue,
            checked.content_length,
            checked.chunked,
            checked.upgrade,
            checked.host,
        )

    def _advance(self, conn: h11.Connection) -> bool:
        """Validate more buffered body bytes and pass them to h11; False if none could be."""
        buf = self._buf
        if not buf:
            return False
        if not self._chunked:
            count = min(len(buf), self._remaining)
            if count == 0:
                return False
            conn.receive_data(bytes(buf[:count]))
            del buf[:count]
            self._remaining -= count
            return True
        validated = self._validate_chunked()
        if validated == 0:
            return False
        conn.receive_data(bytes(buf[:validated]))
        del buf[:validated]
        return True

    def _validate_chunked(self) -> int:
        """Run the shared chunked-framing checks; return how many bytes are now validated."""
        limits = self._limits
        buf = self._buf
        pos = 0
        while True:
            state = self._chunk_state
            if state == _DATA:
                count = min(len(buf) - pos, self._chunk_left)
                if count == 0:
                    return pos
                pos += count
                self._chunk_left -= count
                if self._chunk_left == 0:
                    self._chunk_state = _CRLF
                # Hand the data to h11 now: like FastParser, body bytes are delivered before
                # framing further on is examined.
                return pos
            elif state == _SIZE:
                lf = find_chunk_size_line(buf, pos, limits)
                if lf < 0:
                    return pos
                size = parse_chunk_size_line(bytes(buf[pos : lf - 1]), limits)
                pos = lf + 1
                if size == 0:
                    self._chunk_state = _TRAILERS
                    self._locator.reset()
                    continue
                total = self._body_total + size
                if limits.max_body_size is not None and total > limits.max_body_size:
                    raise ProtocolError(413, "request body too large")
                self._body_total = total
                self._chunk_left = size
                self._chunk_state = _DATA
            elif state == _CRLF:
                two = bytes(buf[pos : pos + 2])
                if two == b"\r\n":
                    pos += 2
                    self._chunk_state = _SIZE
                elif two and two != b"\r":
                    raise ProtocolError(400, "missing CRLF after chunk data")
                else:
                    return pos
            elif state == _TRAILERS:
                located = self._locator.locate_trailers(
                    buf, pos, limits.max_header_size - self._head_size
                )
                if located is None:
                    return pos
                lf, end = located
                if lf >= 0:
                    self._trailers = parse_trailers(
                        bytes(buf[pos:end]), lf - pos, self._fields, limits
                    )
                self._chunk_state = _DONE
                return end
            else:
                return pos
