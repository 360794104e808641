"""FastParser: Pounce's built-in sans-IO HTTP/1.1 request parser.

This runs for every request, so the common case -- a whole head in one read, CRLF line endings,
a known method, origin-form target, header names we have seen before -- is one straight line of
C-implemented ``bytes`` operations:

* one ``find(b"\\r\\n\\r\\n")`` for the end of the head and one ``split(b"\\r\\n")`` into lines;
* one ``translate`` over the whole head that deletes every acceptable byte: what remains must be
  exactly the CR/LF pairs that ``split`` consumed, which proves in a single pass that there is
  no NUL/CTL anywhere and no bare CR or LF;
* header names are looked up in a bounded cache of names already validated as tokens, which
  returns the lower-cased name (validation + lower-casing for the price of one dict lookup);
* Host/Connection/Content-Length/... are collected on the way and handed to the shared
  :func:`~pounce.protocols.http1.base.build_head`.

Whenever the shortcut sees anything it cannot vouch for (unknown method or header name,
unusual version, leading empty lines, any CTL, limits reached...), it does not try to diagnose:
it hands the head to the shared reference parser
:func:`~pounce.protocols.http1.base.parse_head`, which is the single source of truth for what is
accepted and with which error status. The shortcut must only ever accept a subset of what the
reference accepts, with identical results; the differential tests check that.

Buffering: the common case feeds one ``bytes`` object that is parsed in place, without copying.
When a message spans reads the pending bytes are accumulated in a ``bytearray`` (amortised
O(1) appends, O(1) deletion from the front) so slow clients cannot trigger quadratic copying.
"""

from __future__ import annotations

from typing import Final

from .base import (
    _SIMPLE_CONNECTION,
    NEED_DATA,
    PAUSED,
    SPECIAL_HEADERS,
    TARGET_CHARS,
    TCHAR,
    EndOfMessage,
    Event,
    ParserLimits,
    RequestHead,
    SectionLocator,
    build_head,
    find_chunk_size_line,
    is_valid_authority,
    parse_chunk_size_line,
    parse_head,
    parse_trailers,
)
from .errors import ProtocolError

__all__ = ["FastParser"]

# Parser states (small ints: compared on every call).
_HEAD: Final = 0
_END: Final = 1  # body complete, EndOfMessage pending
_PAUSED: Final = 2
_BODY: Final = 3  # Content-Length body
_CHUNK_SIZE: Final = 4
_CHUNK_DATA: Final = 5
_CHUNK_CRLF: Final = 6
_TRAILERS: Final = 7
_ERROR: Final = 8

#: The end of every request without trailers: one shared, never-mutated instance, since a
#: request without a body would otherwise allocate one for nothing.
_END_WITHOUT_TRAILERS: Final = EndOfMessage([])

#: Bytes acceptable somewhere in a head apart from CR/LF: VCHAR, SP, HTAB, obs-text.
_HEAD_CHARS: Final = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"

#: Known methods -> interned ``str``. CONNECT is deliberately absent (the reference rejects it).
_METHODS: Final[dict[bytes, str]] = {
    m.encode("ascii"): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE")
}

_COMMON_NAMES: Final = [
    "Host", "User-Agent", "Accept", "Accept-Language", "Accept-Encoding", "Accept-Charset",
    "Referer", "Connection", "Cookie", "Upgrade-Insecure-Requests", "Cache-Control", "Pragma",
    "Content-Type", "Content-Length", "Transfer-Encoding", "Authorization", "Origin",
    "If-None-Match", "If-Modified-Since", "Range", "DNT", "TE", "Sec-Fetch-Dest", "Sec-Fetch-Mode",
    "Sec-Fetch-Site", "Sec-Fetch-User", "Sec-CH-UA", "Sec-CH-UA-Mobile", "Sec-CH-UA-Platform",
    "Sec-GPC", "Priority", "Expect", "Upgrade", "Keep-Alive", "X-Forwarded-For",
    "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-IP", "X-Requested-With", "Forwarded", "Via",
    "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Protocol",
]

#: Raw (validated) header name -> lower-cased name, for names that are not special.
_NAMES: dict[bytes, bytes] = {}
#: Raw (validated) header name -> lower-cased name, for names in SPECIAL_HEADERS.
_SPECIAL_NAMES: dict[bytes, bytes] = {}
#: Bound on each cache: a client sending random names only pushes itself onto the slow path.
_NAME_CACHE_MAX: Final = 2048


#: Whole header line -> parsed ``(name, value)`` for lines seen before (non-special names only).
#: Browsers repeat most lines verbatim (User-Agent, Accept*, Sec-Fetch-*...), and one dict
#: lookup is far cheaper than partition + lookup + strip + tuple. Entries are only added after
#: the line passed validation; the whole cache is dropped when full (cheap, adapts to traffic,
#: and a client sending unique lines only costs itself the normal path).
_LINES: dict[bytes, tuple[bytes, bytes]] = {}
_LINE_CACHE_MAX: Final = 4096
_LINE_CACHE_MAX_LEN: Final = 256


#: Lower-case name -> one canonical bytes object, so that equal names are the *same* object:
#: the fast path recognises Host/Connection by identity and dict lookups hit the cached hash.
_CANONICAL: dict[bytes, bytes] = {}


#: Names whose values usually differ from request to request (caching them would only churn
#: the cache) or carry credentials (which a process-wide cache should not retain).
_VOLATILE: Final = frozenset(
    [
        b"cookie",
        b"referer",
        b"authorization",
        b"if-none-match",
        b"if-modified-since",
        b"x-request-id",
        b"traceparent",
        b"tracestate",
        b"sec-websocket-key",
    ]
)
#: Request line -> (method, target, path, query, version) for origin-form lines seen before.
_REQUEST_LINES: dict[bytes, tuple[str, bytes, bytes, bytes, str]] = {}
#: Host / Connection line -> ((name, value), None for a Host whose value is a valid authority,
#: else the single lower-cased Connection token). Only lines the fast path can fully decide.
_SPECIAL_LINES: dict[bytes, tuple[tuple[bytes, bytes], bytes | None]] = {}


def _classify_special(
    line: bytes, item: tuple[bytes, bytes]
) -> tuple[tuple[bytes, bytes], bytes | None] | None:
    """Decide whether a Host/Connection line is simple enough for the fast path (and cache it).

    Returns None for anything needing the full rules of ``build_head`` (an invalid Host,
    a multi-token Connection, Content-Length, Transfer-Encoding, Expect, Upgrade...).
    """
    name, value = item
    entry: tuple[tuple[bytes, bytes], bytes | None]
    if name is _HOST and is_valid_authority(value):
        entry = (item, None)
    elif name is _CONNECTION and value in _SIMPLE_CONNECTION:
        entry = (item, _SIMPLE_CONNECTION[value][0])
    else:
        return None
    if len(line) <= _LINE_CACHE_MAX_LEN:
        if len(_SPECIAL_LINES) >= _LINE_CACHE_MAX:
            _SPECIAL_LINES.clear()
        _SPECIAL_LINES[line] = entry
    return entry


def _remember_name(raw: bytes) -> None:
    """Cache a header name already known to be a valid token."""
    lower = raw.lower()
    cache = _SPECIAL_NAMES if lower in SPECIAL_HEADERS else _NAMES
    if len(cache) < _NAME_CACHE_MAX:
        canonical = _CANONICAL.get(lower)
        if canonical is None:
            canonical = _CANONICAL.setdefault(lower, lower)
        cache[raw] = canonical


for _name in _COMMON_NAMES:
    _remember_name(_name.encode("ascii"))
    _remember_name(_name.lower().encode("ascii"))

_HOST: Final = _CANONICAL[b"host"]
_CONNECTION: Final = _CANONICAL[b"connection"]
_DEFAULT_LIMITS: Final = ParserLimits()


class FastParser:
    """Incremental HTTP/1.1 request parser (see ``base.RequestParser`` for the interface)."""

    __slots__ = (
        "_body_total",
        "_buf",
        "_error",
        "_fields",
        "_head_size",
        "_limits",
        "_locator",
        "_pos",
        "_remaining",
        "_state",
    )

    def __init__(self, limits: ParserLimits | None = None) -> None:
        self._limits = limits if limits is not None else _DEFAULT_LIMITS
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._state = _HEAD
        self._remaining = 0
        self._body_total = 0
        self._fields = 0
        self._head_size = 0
        self._error: ProtocolError | None = None
        self._locator = SectionLocator(self._limits)

    # -- buffer management -------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append *data*; in the common case (nothing pending) it is adopted without a copy."""
        if not data:
            return
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
        elif type(buf) is bytearray:
            if pos:
                del buf[:pos]
                self._pos = 0
            buf += data
        else:
            pending = bytearray(buf[pos:])
            pending += data
            self._buf = pending
            self._pos = 0

    def take_trailing_data(self) -> bytes:
        """Remove and return every buffered byte not yet consumed as an event."""
        data = bytes(self._buf[self._pos :])
        self._buf = b""
        self._pos = 0
        return data

    def start_next_cycle(self) -> bool:
        """Allow the next pipelined request to be parsed (only valid after EndOfMessage).

        Returns whether bytes of a next request are already buffered, so the caller can skip
        asking for an event that would only be ``NEED_DATA``.
        """
        if self._state != _PAUSED:
            raise RuntimeError("start_next_cycle() called before the request was complete")
        self._state = _HEAD
        self._locator.reset()
        return self._pos < len(self._buf)

    # -- events ------------------------------------------------------------------------------

    def next_event(self) -> Event:
        """Return the next event; raises :class:`ProtocolError` (again) after invalid input."""
        state = self._state
        try:
            if state == _HEAD:
                return self._head()
            if state == _END:
                self._state = _PAUSED
                return _END_WITHOUT_TRAILERS
            if state == _PAUSED:
                return PAUSED
            if state == _BODY:
                return self._body()
            if state == _ERROR:
                assert self._error is not None
                raise self._error
            return self._chunked()
        except ProtocolError as exc:
            self._state = _ERROR
            self._error = exc
            raise

    def _head(self) -> Event:
        """The common case in one straight line; anything unusual goes to ``_slow_head``."""
        buf = self._buf
        pos = self._pos
        lines: list[bytes] | None = None
        if pos == 0 and buf[-4:] == b"\r\n\r\n" and len(buf) <= 16384 and type(buf) is bytes:
            # Most common of all: the read holds exactly one head and nothing else. Split the
            # whole buffer (no find, no copy) and check its first empty line is the final one.
            lines = buf.split(b"\r\n")
            nlines = len(lines) - 2
            if lines.index(b"") == nlines:
                del lines[nlines:]
                head = buf
                end = len(buf) - 4
                separators = 2 * nlines + 2  # CR/LF bytes expected in `head`
            else:
                lines = None
        if lines is None:
            end = buf.find(b"\r\n\r\n", pos)
            if end <= pos:
                return NEED_DATA if pos >= len(buf) else self._slow_head()
            head = buf[pos:end] if type(buf) is bytes else bytes(buf[pos:end])
            lines = head.split(b"\r\n")
            nlines = len(lines)
            separators = 2 * nlines - 2
        limits = self._limits
        rl = lines[0]
        if rl[:1] <= b" ":  # empty (leading CRLF) or starting with whitespace/CTL
            return self._slow_head()
        # translate() deletes every byte allowed in a head except CR and LF; if what is left is
        # exactly the CR/LF pairs we split on, there is no CTL and no bare CR or LF anywhere.
        if (
            len(head.translate(None, _HEAD_CHARS)) != separators
            or nlines > limits.max_header_count + 1
            or end + 4 - pos > limits.max_header_size
            or len(rl) > limits.max_request_line
        ):
            return self._slow_head()
        cached = _REQUEST_LINES.get(rl)
        if cached is None:
            if rl.endswith(b" HTTP/1.1"):
                http_version = "1.1"
            elif rl.endswith(b" HTTP/1.0"):
                http_version = "1.0"
            else:
                return self._slow_head()
            sp = rl.find(b" ")
            method = _METHODS.get(rl[:sp])
            target = rl[sp + 1 : -9]
            if method is None or target[:1] != b"/" or target.translate(None, TARGET_CHARS):
                return self._slow_head()
            path, _, query = target.partition(b"?")
            # Query strings often carry tokens: they are not kept in a process-wide cache.
            if len(rl) <= _LINE_CACHE_MAX_LEN and not query:
                if len(_REQUEST_LINES) >= _LINE_CACHE_MAX:
                    _REQUEST_LINES.clear()
                _REQUEST_LINES[rl] = (method, target, path, query, http_version)
        else:
            method, target, path, query, http_version = cached
        headers: list[tuple[bytes, bytes]] = []
        append = headers.append
        get_line = _LINES.get
        get_special_line = _SPECIAL_LINES.get
        host: bytes | None = None
        host_count = 0
        connection: bytes | None = None  # the single token of a simple Connection header
        other_special = False
        it = iter(lines)
        next(it)
        for line in it:
            item = get_line(line)
            if item is not None:
                append(item)
                continue
            special = get_special_line(line)
            if special is None:
                name, sep, value = line.partition(b":")
                if not sep:
                    return self._slow_head()
                lname = _NAMES.get(name)
                if lname is not None:
                    # strip() may strip all ASCII whitespace: the translate check proved that
                    # the only whitespace left in the head is SP and HTAB.
                    item = (lname, value.strip())
                    append(item)
                    if len(line) <= _LINE_CACHE_MAX_LEN and lname not in _VOLATILE:
                        if len(_LINES) >= _LINE_CACHE_MAX:
                            _LINES.clear()
                        _LINES[line] = item
                    continue
                lname = _SPECIAL_NAMES.get(name)
                if lname is None:
                    return self._slow_head()
                item = (lname, value.strip())
                special = _classify_special(line, item)
                if special is None:
                    append(item)
                    other_special = True
                    continue
            item, token = special
            append(item)
            if token is None:
                host = item[1]
                host_count += 1
            elif connection is None:
                connection = token
            else:
                other_special = True
        end += 4
        # Common case inline: one valid Host, at most one single-token Connection, no
        # framing/Expect/Upgrade headers. Everything else goes through the shared build_head().
        if other_special or host_count != 1:
            request = build_head(
                method,
                target,
                path,
                query,
                None,
                http_version=http_version,
                headers=headers,
                special=[h for h in headers if h[0] in SPECIAL_HEADERS],
                limits=limits,
            )
            return self._finish_head(request, end, nlines - 1, end - pos)
        self._pos = end
        self._fields = nlines - 1
        self._head_size = end - pos
        if connection is None:
            keep_alive = http_version == "1.1"
        else:
            keep_alive = connection != b"close" and (
                http_version == "1.1" or connection == b"keep-alive"
            )
        self._state = _END
        return RequestHead(
            method,
            target,
            path,
            query,
            http_version,
            headers,
            keep_alive,
            False,
            None,
            False,
            None,
            host,
        )

    def _finish_head(self, head: RequestHead, end: int, fields: int, size: int) -> RequestHead:
        self._pos = end
        self._fields = fields
        self._head_size = size
        if head.chunked:
            self._state = _CHUNK_SIZE
            self._body_total = 0
        elif head.content_length:
            self._state = _BODY
            self._remaining = head.content_length
        else:
            self._state = _END
        return head

    def _slow_head(self) -> RequestHead | Event:
        """Reference path: exact boundaries, limits and diagnosis for anything unusual."""
        buf = self._buf
        located = self._locator.locate_head(buf, self._pos)
        if located is None:
            return NEED_DATA
        start, lf, end = located
        block = buf[start:end]
        if type(block) is not bytes:
            block = bytes(block)
        head, fields = parse_head(block, lf - start, self._limits)
        for line in block.split(b"\n")[1:]:
            _maybe_remember(line.partition(b":")[0])
        return self._finish_head(head, end, fields, end - start)

    # -- bodies ------------------------------------------------------------------------------

    def _take(self, count: int) -> bytes:
        """Consume up to *count* buffered bytes (the caller checked at least one is there)."""
        buf = self._buf
        pos = self._pos
        end = pos + count
        if pos == 0 and end >= len(buf) and type(buf) is bytes:
            self._pos = len(buf)
            return buf
        chunk = buf[pos:end]
        self._pos = pos + len(chunk)
        return chunk if type(chunk) is bytes else bytes(chunk)

    def _body(self) -> Event:
        remaining = self._remaining
        if remaining == 0:
            self._state = _PAUSED
            return _END_WITHOUT_TRAILERS
        if self._pos >= len(self._buf):
            return NEED_DATA
        chunk = self._take(remaining)
        remaining -= len(chunk)
        self._remaining = remaining
        if remaining == 0:
            self._state = _END
        return chunk

    def _chunked(self) -> Event:
        limits = self._limits
        while True:
            state = self._state
            buf = self._buf
            pos = self._pos
            if state == _CHUNK_DATA:
                if pos >= len(buf):
                    return NEED_DATA
                chunk = self._take(self._remaining)
                self._remaining -= len(chunk)
                if self._remaining == 0:
                    self._state = _CHUNK_CRLF
                return chunk
            if state == _CHUNK_SIZE:
                lf = find_chunk_size_line(buf, pos, limits)
                if lf < 0:
                    return NEED_DATA
                line = buf[pos : lf - 1]
                size = parse_chunk_size_line(
                    line if type(line) is bytes else bytes(line), limits
                )
                self._pos = lf + 1
                if size == 0:
                    self._state = _TRAILERS
                    self._locator.reset()
                    continue
                total = self._body_total + size
                if limits.max_body_size is not None and total > limits.max_body_size:
                    raise ProtocolError(413, "request body too large")
                self._body_total = total
                self._remaining = size
                self._state = _CHUNK_DATA
                continue
            if state == _CHUNK_CRLF:
                two = buf[pos : pos + 2]
                if two == b"\r\n":
                    self._pos = pos + 2
                    self._state = _CHUNK_SIZE
                    continue
                if two and two != b"\r":
                    raise ProtocolError(400, "missing CRLF after chunk data")
                return NEED_DATA
            # _TRAILERS
            located = self._locator.locate_trailers(
                buf, pos, limits.max_header_size - self._head_size
            )
            if located is None:
                return NEED_DATA
            lf, end = located
            trailers: list[tuple[bytes, bytes]] = []
            if lf >= 0:
                block = buf[pos:end]
                trailers = parse_trailers(
                    block if type(block) is bytes else bytes(block), lf - pos, self._fields, limits
                )
            self._pos = end
            self._state = _PAUSED
            return EndOfMessage(trailers)


def _maybe_remember(raw: bytes) -> None:
    """Cache a header name the reference parser accepted, so the next request is fast."""
    if raw not in _NAMES and raw not in _SPECIAL_NAMES and raw and not raw.translate(None, TCHAR):
        _remember_name(raw)
