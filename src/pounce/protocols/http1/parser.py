"""FastParser: Pounce's built-in sans-IO HTTP/1.1 request parser.

This runs for every request, so the common case -- a whole head in one read, CRLF line endings,
a known method, origin-form target, header names we have seen before -- is one straight line of
C-implemented ``bytes`` operations:

* one ``find(b"\\r\\n\\r\\n")`` for the end of the head and one ``split(b"\\r\\n")`` into lines;
* one C-level ``map`` of the lines over a bounded cache of header lines already validated and
  parsed: browsers and API clients repeat most lines verbatim, so most lines cost one lookup;
* the lines that miss are validated one by one: a ``translate`` that deletes every acceptable
  byte must leave nothing (no NUL/CTL, no bare CR or LF), and the name is looked up in a bounded
  cache of names already validated as tokens, which returns the lower-cased name;
* lines whose values differ between requests (Cookie, Referer, Authorization...) are kept out of
  the process-wide caches and remembered per connection instead, in a small memo that a client
  repeating its Cookie on a keep-alive connection hits (HPACK's reasoning, for HTTP/1.1);
* a single valid Host, a simple Connection and a plain Content-Length are understood inline;
  anything else that shapes the request (Transfer-Encoding, Expect, Upgrade, duplicates) goes
  to the shared :func:`~pounce.protocols.http1.base.build_head`.

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
    MAX_CONTENT_LENGTH_DIGITS,
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
#: Volatile lines are remembered per connection instead (see ``FastParser._memo``): a client
#: repeats its Cookie on every request of a keep-alive connection, the way HTTP/2's HPACK keeps
#: a connection-scoped table for the same reason. Bounded in entries and in line length, and
#: gone with the connection.
_MEMO_MAX: Final = 8
_MEMO_MAX_LEN: Final = 4096
#: Request line -> (method, target, path, query, version) for origin-form lines seen before.
_REQUEST_LINES: dict[bytes, tuple[str, bytes, bytes, bytes, str]] = {}
#: What the fast path learns from a Host, Connection or Content-Length line: None for a Host
#: whose value is a valid authority, the single lower-cased token of a Connection line, or the
#: length of a Content-Length line that is one plain number.
_Meaning = bytes | int | None
#: Such a line -> ((name, value), meaning). Only lines the fast path can fully decide.
_SPECIAL_LINES: dict[bytes, tuple[tuple[bytes, bytes], _Meaning]] = {}


def _classify_special(
    line: bytes, item: tuple[bytes, bytes]
) -> tuple[tuple[bytes, bytes], _Meaning] | None:
    """Decide whether a Host/Connection/Content-Length line is simple enough for the fast path
    (and cache it).

    Returns None for anything needing the full rules of ``build_head`` (an invalid Host,
    a multi-token Connection, a list-valued Content-Length, Transfer-Encoding, Expect,
    Upgrade...).
    """
    name, value = item
    entry: tuple[tuple[bytes, bytes], _Meaning]
    if name is _HOST and is_valid_authority(value):
        entry = (item, None)
    elif name is _CONNECTION and value in _SIMPLE_CONNECTION:
        entry = (item, _SIMPLE_CONNECTION[value][0])
    elif name is _CONTENT_LENGTH and value.isdigit() and len(value) <= MAX_CONTENT_LENGTH_DIGITS:
        entry = (item, int(value))
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
_CONTENT_LENGTH: Final = _CANONICAL[b"content-length"]
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
        "_memo",
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
        # Only the slow path and trailers need a locator: made when first needed, dropped
        # when a section starts, so the common request neither builds nor resets one.
        self._locator: SectionLocator | None = None
        #: This connection's volatile header lines already parsed: line -> (name, value).
        self._memo: dict[bytes, tuple[bytes, bytes]] | None = None

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
        self._locator = None
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
                end = len(buf) - 4
            else:
                lines = None
        if lines is None:
            end = buf.find(b"\r\n\r\n", pos)
            if end <= pos:
                return NEED_DATA if pos >= len(buf) else self._slow_head()
            head = buf[pos:end] if type(buf) is bytes else bytes(buf[pos:end])
            lines = head.split(b"\r\n")
            nlines = len(lines)
        limits = self._limits
        rl = lines[0]
        if (
            nlines > limits.max_header_count + 1
            or end + 4 - pos > limits.max_header_size
            or len(rl) > limits.max_request_line
        ):
            return self._slow_head()
        # Every line is proved free of CTLs and of bare CR or LF before it is used: the request
        # line by its exact shape (a known method, a target of TARGET_CHARS, a fixed version),
        # header lines by a translate() that must delete every byte. Lines found in a cache
        # passed those checks when they were cached, so only the lines not seen before pay.
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
        del lines[0]
        # Look every header line up in the line cache in one C-level pass; only the misses
        # (Host, Connection, lines never seen, volatile ones such as Cookie) run Python code.
        headers: list[tuple[bytes, bytes]] = list(map(_LINES.get, lines))  # type: ignore[arg-type]
        host: bytes | None = None
        host_count = 0
        connection: bytes | None = None  # the single token of a simple Connection header
        content_length: int | None = None
        other_special = False
        memo = self._memo
        i = -1
        index = headers.index
        for _ in range(headers.count(None)):  # type: ignore[arg-type]
            i = index(None, i + 1)  # type: ignore[arg-type]
            line = lines[i]
            special = _SPECIAL_LINES.get(line)
            if special is None:
                if memo is not None:
                    item = memo.get(line)
                    if item is not None:
                        headers[i] = item
                        continue
                if line.translate(None, _HEAD_CHARS):
                    return self._slow_head()  # a CTL or a bare CR or LF: let it diagnose
                name, sep, value = line.partition(b":")
                if not sep:
                    return self._slow_head()
                lname = _NAMES.get(name)
                if lname is not None:
                    # strip() may strip all ASCII whitespace: translate() just proved that
                    # the only whitespace in the line is SP and HTAB.
                    item = headers[i] = (lname, value.strip())
                    if lname in _VOLATILE:
                        if len(line) <= _MEMO_MAX_LEN:
                            if memo is None:
                                memo = self._memo = {}
                            elif len(memo) >= _MEMO_MAX:
                                memo.clear()
                            memo[line] = item
                    elif len(line) <= _LINE_CACHE_MAX_LEN:
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
                    headers[i] = item
                    other_special = True
                    continue
            item, meaning = special
            headers[i] = item
            if meaning is None:
                host = item[1]
                host_count += 1
            elif type(meaning) is int:
                if content_length is None:
                    content_length = meaning
                else:
                    other_special = True
            elif connection is None:
                connection = meaning  # type: ignore[assignment]
            else:
                other_special = True
        end += 4
        # Common case inline: one valid Host, at most one single-token Connection and one
        # plain Content-Length within the limit, no Transfer-Encoding/Expect/Upgrade.
        # Everything else goes through the shared build_head(), which also diagnoses.
        if (
            other_special
            or host_count != 1
            or (
                content_length is not None
                and limits.max_body_size is not None
                and content_length > limits.max_body_size
            )
        ):
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
        if content_length:
            self._state = _BODY
            self._remaining = content_length
        else:
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
            content_length,
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

    def _section_locator(self) -> SectionLocator:
        locator = self._locator
        if locator is None:
            locator = self._locator = SectionLocator(self._limits)
        return locator

    def _slow_head(self) -> RequestHead | Event:
        """Reference path: exact boundaries, limits and diagnosis for anything unusual."""
        buf = self._buf
        located = self._section_locator().locate_head(buf, self._pos)
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
                    self._locator = None
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
            located = self._section_locator().locate_trailers(
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
