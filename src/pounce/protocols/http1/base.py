"""Shared types and validation rules for the HTTP/1.1 request parsers.

Pounce ships two parsers with one interface: :class:`~pounce.protocols.http1.parser.FastParser`
(hand-tuned, the default) and :class:`~pounce.protocols.http1.h11_parser.H11Parser` (backed by
h11). Two parsers that disagree about where a request ends are exactly what request smuggling
exploits, so *every* acceptance rule lives here and both parsers call it:

* :func:`parse_head` is the reference head parser. FastParser only takes its own shortcut for
  inputs it can prove are ordinary; anything unusual is handed to :func:`parse_head`, so error
  statuses are identical by construction. H11Parser runs it as a pre-check before h11 sees bytes.
* :class:`SectionLocator` decides where a head (or trailer section) ends and enforces the
  414/431 limits, including on incomplete input.
* :func:`build_head` turns validated header fields into a :class:`RequestHead`: Host rules,
  request-target forms, message framing (Content-Length / Transfer-Encoding), keep-alive,
  ``Expect`` and ``Upgrade``.
* :func:`parse_chunk_size_line` and :func:`parse_field_lines` cover chunked framing and trailers.

Decisions on ambiguous inputs (documented once, here):

* ``Content-Length: 5, 5`` or two identical Content-Length lines are accepted as 5 (RFC 9110
  §8.6 allows collapsing identical values); the comparison is byte-exact, so ``5, 05`` is 400.
  More than 18 digits is 400 (no real body is an exabyte; it also keeps ints small).
* ``HTTP/1.x`` with x not 0/1 is handled as HTTP/1.1 (RFC 9110 §2.5); major != 1 is 505;
  anything that is not ``HTTP/DIGIT.DIGIT`` is 400.
* Host must be non-empty, even though RFC 9112 §3.2 allows an empty Host for URIs without an
  authority: we only serve ``http``/``https`` whose URIs must have a host (RFC 9110 §4.2.1).
  A port, when present, is 1-5 digits <= 65535 (an empty port is refused). IPv6 zone ids and
  userinfo (``@``) are refused. Absolute-form targets win over the Host header (RFC 9112 §3.2.2):
  the Host header must still be present exactly once and be valid, and its value is replaced
  by the target's authority in the parsed headers, so the app sees the host that was asked for.
* Transfer-Encoding is a list of bare tokens: empty list elements (``chunked ,``), ``chunked``
  applied twice, or a final coding other than ``chunked`` are 400; another coding before the
  final ``chunked`` (``gzip, chunked``) is 501 because we do not decode it.
* Chunk-size lines allow no whitespace at all (not even the BWS that RFC 9112 tolerates before
  ``;``): nobody legitimate sends it and lenient parsers are a classic smuggling vector.
* Up to ``max_leading_empty_lines`` empty lines before a request line are ignored (RFC 9112 §2.2).
* Trailer fields count toward the *same* budgets as the head: head fields + trailer fields
  <= ``max_header_count`` and head bytes + trailer bytes <= ``max_header_size``. Bare LF is never
  accepted in chunked framing or trailers, whatever ``allow_bare_lf`` says.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeAlias

from .errors import ProtocolError, safe_repr

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "EndOfMessage",
    "Event",
    "ParserLimits",
    "RequestHead",
    "RequestParser",
    "SectionLocator",
    "Sentinel",
    "build_head",
    "decide_framing",
    "is_token",
    "is_valid_authority",
    "parse_chunk_size_line",
    "parse_field_lines",
    "parse_head",
    "parse_request_line",
    "split_target",
    "value_has_ctl",
]


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Size limits applied while parsing; exceeding one is a :class:`ProtocolError`.

    ``max_request_line`` excludes the line terminator; ``max_header_size`` counts every head byte
    from the request line up to and including the empty line. ``max_body_size=None`` means no
    limit. ``allow_bare_lf`` accepts LF-only line endings in the head (never in chunk framing).
    """

    max_request_line: int = 8190
    max_header_size: int = 65536
    max_header_count: int = 100
    max_body_size: int | None = None
    max_chunk_extension_size: int = 4096
    allow_bare_lf: bool = False
    max_leading_empty_lines: int = 8

    def __post_init__(self) -> None:
        for name in ("max_request_line", "max_header_size", "max_header_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_body_size is not None and self.max_body_size < 0:
            raise ValueError("max_body_size must be >= 0 or None")
        if self.max_chunk_extension_size < 0 or self.max_leading_empty_lines < 0:
            raise ValueError("limits must be >= 0")


@dataclass(slots=True)
class RequestHead:
    """A parsed request line and header section (see docs/architecture.md)."""

    method: str
    target: bytes
    path: bytes
    query: bytes
    http_version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    expect_continue: bool
    content_length: int | None
    chunked: bool
    upgrade: bytes | None
    host: bytes | None


@dataclass(slots=True)
class EndOfMessage:
    """The request body is complete; ``trailers`` holds chunked trailer fields (lower-cased)."""

    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


class Sentinel(enum.Enum):
    """Non-event results of ``next_event()``; an enum so ``is`` checks narrow for mypy."""

    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.value

    __str__ = __repr__


#: More bytes must be fed before another event can be produced.
NEED_DATA: Final = Sentinel.NEED_DATA
#: The current request is complete; call ``start_next_cycle()`` once its response is sent.
PAUSED: Final = Sentinel.PAUSED

Event: TypeAlias = RequestHead | bytes | EndOfMessage | Sentinel


class RequestParser(Protocol):
    """The interface both parsers implement (see docs/architecture.md)."""

    def feed(self, data: bytes) -> None:
        """Append bytes received from the socket."""

    def next_event(self) -> Event:
        """Return the next event; raise :class:`ProtocolError` on invalid input."""

    def start_next_cycle(self) -> bool:
        """Start parsing the next (pipelined) request after ``EndOfMessage``.

        Returns whether bytes of the next request are already buffered.
        """

    def take_trailing_data(self) -> bytes:
        """Remove and return the buffered bytes not consumed as events (for upgrades)."""


# --------------------------------------------------------------------------------------------
# Character classes (bytes for ``translate(None, delete)``: what remains is what is invalid)
# --------------------------------------------------------------------------------------------

_DIGITS = b"0123456789"
_ALPHA = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: RFC 9110 tchar.
TCHAR: Final = b"!#$%&'*+-.^_`|~" + _DIGITS + _ALPHA
#: field-value bytes: VCHAR, SP, HTAB and obs-text; everything else is a CTL.
VALUE_CHARS: Final = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"
#: request-target bytes: VCHAR except ``#`` (fragments are never sent to a server).
TARGET_CHARS: Final = bytes(c for c in range(0x21, 0x7F) if c != 0x23)
HEXDIG: Final = b"0123456789abcdefABCDEF"
_UNRESERVED = _ALPHA + _DIGITS + b"-._~"
_SUB_DELIMS = b"!$&'()*+,;="
_REG_NAME_CHARS = _UNRESERVED + _SUB_DELIMS + b"%"
_IPVFUTURE_CHARS = _UNRESERVED + _SUB_DELIMS + b":"

#: Names whose values change how the request is framed or handled; see :func:`build_head`.
SPECIAL_HEADERS: Final = frozenset(
    [b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"]
)

#: Longest accepted chunk-size (16 hex digits = 64 bits).
MAX_CHUNK_SIZE_DIGITS: Final = 16
#: Longest accepted Content-Length (digits); see the module docstring.
MAX_CONTENT_LENGTH_DIGITS: Final = 18


def is_token(value: bytes) -> bool:
    """RFC 9110 token: non-empty, only tchar."""
    return bool(value) and not value.translate(None, TCHAR)


def value_has_ctl(value: bytes) -> bool:
    """True if a field value contains a CTL other than HTAB (NUL, CR, LF, DEL, ...)."""
    return bool(value.translate(None, VALUE_CHARS))


def _bad(status: int, reason: str) -> ProtocolError:
    return ProtocolError(status, reason)


# --------------------------------------------------------------------------------------------
# Host / authority
# --------------------------------------------------------------------------------------------

_VALID_AUTHORITIES: set[bytes] = set()
_AUTHORITY_CACHE_MAX: Final = 1024


def _valid_reg_name(host: bytes) -> bool:
    if not host or host.translate(None, _REG_NAME_CHARS):
        return False
    pct = host.find(b"%")
    while pct >= 0:
        digits = host[pct + 1 : pct + 3]
        if len(digits) != 2 or digits.translate(None, HEXDIG):
            return False
        pct = host.find(b"%", pct + 3)
    return True


def _valid_ip_literal(literal: bytes) -> bool:
    if literal[:1] in (b"v", b"V"):
        version, dot, rest = literal[1:].partition(b".")
        return (
            bool(version and dot and rest)
            and not version.translate(None, HEXDIG)
            and not rest.translate(None, _IPVFUTURE_CHARS)
        )
    # ipaddress accepts zone ids ("%eth0"), which are not valid in a URI authority.
    if not literal or not literal.isascii() or b"%" in literal:
        return False
    try:
        ipaddress.IPv6Address(literal.decode("ascii"))
    except ValueError:
        return False
    return True


def _check_authority(value: bytes) -> bool:
    if value[:1] == b"[":
        close = value.find(b"]")
        if close < 0 or not _valid_ip_literal(value[1:close]):
            return False
        rest = value[close + 1 :]
        if not rest:
            return True
        if rest[:1] != b":":
            return False
        port = rest[1:]
    else:
        host, sep, port = value.partition(b":")
        if not _valid_reg_name(host):
            return False
        if not sep:
            return True
    return 0 < len(port) <= 5 and port.isdigit() and int(port) <= 65535


def is_valid_authority(value: bytes) -> bool:
    """``host [":" port]`` with host = reg-name / IPv4 / IP-literal (RFC 3986 §3.2).

    Results are cached (valid ones only, bounded) because every request carries a Host and a
    server sees the same few values over and over.
    """
    if value in _VALID_AUTHORITIES:
        return True
    if not _check_authority(value):
        return False
    if len(_VALID_AUTHORITIES) < _AUTHORITY_CACHE_MAX:
        _VALID_AUTHORITIES.add(value)
    return True


# --------------------------------------------------------------------------------------------
# Request line and target
# --------------------------------------------------------------------------------------------


def parse_request_line(line: bytes) -> tuple[str, bytes, str]:
    """Split ``method SP target SP version``; return ``(method, target, "1.0" | "1.1")``."""
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise _bad(400, "malformed request line")
    method, target, version = parts
    if version == b"HTTP/1.1":
        http_version = "1.1"
    elif version == b"HTTP/1.0":
        http_version = "1.0"
    elif (
        len(version) == 8
        and version[:5] == b"HTTP/"
        and version[6:7] == b"."
        and version[5:6].isdigit()
        and version[7:8].isdigit()
    ):
        if version[5:6] != b"1":
            raise _bad(505, "HTTP version not supported")
        http_version = "1.1"  # HTTP/1.x, x > 1: highest minor version we implement.
    else:
        raise _bad(400, "malformed HTTP version")
    if not is_token(method):
        raise _bad(400, "invalid method")
    if method == b"CONNECT":
        raise _bad(400, "CONNECT is not supported")
    return method.decode("ascii"), target, http_version


def split_target(method: str, target: bytes) -> tuple[bytes, bytes, bytes | None]:
    """Validate the request-target; return ``(path, query, authority or None)``.

    Accepts origin-form, absolute-form with an ``http``/``https`` scheme and (for OPTIONS only)
    asterisk-form. The target may only contain VCHARs, and no ``#``.
    """
    if not target or target.translate(None, TARGET_CHARS):
        raise _bad(400, "invalid character in request target")
    if target[0] == 0x2F:  # "/": origin-form
        path, _, query = target.partition(b"?")
        return path, query, None
    if target == b"*":
        if method != "OPTIONS":
            raise _bad(400, "asterisk-form target is only allowed with OPTIONS")
        return b"*", b"", None
    lowered = target[:8].lower()
    if lowered.startswith(b"http://"):
        rest = target[7:]
    elif lowered == b"https://":
        rest = target[8:]
    else:
        raise _bad(400, "invalid request target")
    end = len(rest)
    for delim in (b"/", b"?"):
        i = rest.find(delim)
        if 0 <= i < end:
            end = i
    authority = rest[:end]
    if not is_valid_authority(authority):
        raise _bad(400, "invalid authority in request target")
    path, _, query = rest[end:].partition(b"?")
    return path or b"/", query, authority


# --------------------------------------------------------------------------------------------
# Framing and semantic headers
# --------------------------------------------------------------------------------------------


def decide_framing(
    http_version: str,
    content_lengths: list[bytes] | None,
    transfer_encodings: list[bytes] | None,
    limits: ParserLimits,
) -> tuple[int | None, bool]:
    """Return ``(content_length, chunked)`` from the raw CL/TE values (RFC 9112 §6)."""
    if transfer_encodings is not None:
        if http_version == "1.0":
            raise _bad(400, "Transfer-Encoding in an HTTP/1.0 request")
        if content_lengths is not None:
            raise _bad(400, "both Content-Length and Transfer-Encoding")
        codings = [
            element.strip(b" \t").lower()
            for value in transfer_encodings
            for element in value.split(b",")
        ]
        if not all(codings):
            raise _bad(400, "empty element in Transfer-Encoding")
        if codings[-1] != b"chunked":
            raise _bad(400, "final transfer coding is not chunked")
        for coding in codings[:-1]:
            name = coding.split(b";", 1)[0].rstrip(b" \t")
            if coding == b"chunked" or not is_token(name):
                raise _bad(400, "invalid Transfer-Encoding")
        if len(codings) > 1:
            raise _bad(501, "unsupported transfer coding")
        return None, True
    if content_lengths is not None:
        value: bytes | None = None
        for raw in content_lengths:
            for element in raw.split(b","):
                part = element.strip(b" \t")
                if not part.isdigit() or len(part) > MAX_CONTENT_LENGTH_DIGITS:
                    raise _bad(400, "invalid Content-Length")
                if value is None:
                    value = part
                elif part != value:
                    raise _bad(400, "conflicting Content-Length values")
        assert value is not None
        length = int(value)
        if limits.max_body_size is not None and length > limits.max_body_size:
            raise _bad(413, "request body too large")
        return length, False
    return None, False


def _tokens(values: list[bytes]) -> list[bytes]:
    return [t.strip(b" \t").lower() for value in values for t in value.split(b",")]


def build_head(
    method: str,
    target: bytes,
    path: bytes,
    query: bytes,
    authority: bytes | None,
    *,
    http_version: str,
    headers: list[tuple[bytes, bytes]],
    special: list[tuple[bytes, bytes]],
    limits: ParserLimits,
) -> RequestHead:
    """Apply the semantic header rules and build the :class:`RequestHead`.

    *special* holds the fields of *headers* whose name is in :data:`SPECIAL_HEADERS`, in
    order; FastParser collects them while splitting so the common request is one pass.
    """
    host: bytes | None = None
    host_count = 0
    content_lengths: list[bytes] | None = None
    transfer_encodings: list[bytes] | None = None
    connection: list[bytes] | None = None
    expect: list[bytes] | None = None
    upgrade_values: list[bytes] | None = None
    for name, value in special:
        if name == b"host":
            host_count += 1
            host = value
        elif name == b"connection":
            if connection is None:
                connection = [value]
            else:
                connection.append(value)
        elif name == b"content-length":
            if content_lengths is None:
                content_lengths = [value]
            else:
                content_lengths.append(value)
        elif name == b"transfer-encoding":
            if transfer_encodings is None:
                transfer_encodings = [value]
            else:
                transfer_encodings.append(value)
        elif name == b"expect":
            if expect is None:
                expect = [value]
            else:
                expect.append(value)
        elif upgrade_values is None:
            upgrade_values = [value]
        else:
            upgrade_values.append(value)

    # RFC 9112 §3.2: 400 for a 1.1 request without Host, for any request with several Host
    # lines or with an invalid Host value.
    if host_count > 1:
        raise _bad(400, "multiple Host headers")
    if host is not None:
        if not is_valid_authority(host):
            raise _bad(400, "invalid Host header")
    elif http_version == "1.1":
        raise _bad(400, "missing Host header")
    if authority is not None and host != authority:
        # RFC 9112 §3.2.2: the target's authority replaces the Host header. Apps route by the
        # Host header, so leaving the client's one in place would let a front end that routed
        # by the target and the app disagree about the host (absolute-URL host confusion).
        host = authority
        for index, (name, _) in enumerate(headers):
            if name == b"host":
                headers[index] = (name, authority)
                break
        else:
            headers.append((b"host", authority))  # HTTP/1.0 may send no Host at all

    content_length, chunked = decide_framing(
        http_version, content_lengths, transfer_encodings, limits
    )

    upgrade: bytes | None = None
    if connection is None:
        keep_alive = http_version == "1.1"
    else:
        if len(connection) == 1 and connection[0] in _SIMPLE_CONNECTION:
            tokens: list[bytes] = _SIMPLE_CONNECTION[connection[0]]
        else:
            tokens = _tokens(connection)
        if b"close" in tokens:
            keep_alive = False
        else:
            keep_alive = http_version == "1.1" or b"keep-alive" in tokens
        if upgrade_values is not None and http_version == "1.1" and b"upgrade" in tokens:
            upgrade = b", ".join(v.lower() for v in upgrade_values) or None
    expect_continue = (
        expect is not None and http_version == "1.1" and b"100-continue" in _tokens(expect)
    )
    return RequestHead(
        method,
        target,
        path,
        query,
        http_version,
        headers,
        keep_alive,
        expect_continue,
        content_length,
        chunked,
        upgrade,
        host,
    )


_SIMPLE_CONNECTION: Final[dict[bytes, list[bytes]]] = {
    b"keep-alive": [b"keep-alive"],
    b"Keep-Alive": [b"keep-alive"],
    b"close": [b"close"],
    b"Close": [b"close"],
    b"upgrade": [b"upgrade"],
    b"Upgrade": [b"upgrade"],
}


# --------------------------------------------------------------------------------------------
# Field lines (headers and trailers)
# --------------------------------------------------------------------------------------------


def parse_field_line(line: bytes) -> tuple[bytes, bytes]:
    """Validate one ``name ":" OWS value OWS`` line; return ``(lower-cased name, value)``."""
    if line[:1] in (b" ", b"\t"):
        raise _bad(400, "obsolete line folding")
    name, sep, value = line.partition(b":")
    if not sep:
        raise _bad(400, "header line without colon")
    if not name:
        raise _bad(400, "empty header name")
    if not is_token(name):
        if name.rstrip(b" \t") != name:
            raise _bad(400, "whitespace between header name and colon")
        raise _bad(400, f"invalid header name {safe_repr(name)}")
    if value_has_ctl(value):
        raise _bad(400, "invalid character in header value")
    return name.lower(), value.strip(b" \t")


def parse_field_lines(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Validate a list of field lines (without line terminators)."""
    return [parse_field_line(line) for line in lines]


def split_section_lines(region: bytes, empty_line: bytes, allow_bare_lf: bool) -> list[bytes]:
    """Split a head/trailer *region* into lines, enforcing CRLF line endings.

    *region* runs from the first line up to (excluding) the LF that ends the last line;
    *empty_line* is the terminating empty line (``b"\\r\\n"`` or ``b"\\n"``).
    """
    parts = region.split(b"\n")
    if allow_bare_lf:
        lines = [p[:-1] if p[-1:] == b"\r" else p for p in parts]
    else:
        if empty_line != b"\r\n" or any(p[-1:] != b"\r" for p in parts):
            raise _bad(400, "bare LF line ending")
        lines = [p[:-1] for p in parts]
    for line in lines:
        if b"\r" in line:
            raise _bad(400, "bare CR in message head")
    return lines


def parse_head(block: bytes, lf: int, limits: ParserLimits) -> tuple[RequestHead, int]:
    """Reference parser for a complete head; return ``(head, number of header fields)``.

    *block* runs from the request line through the terminating empty line; *lf* is the index
    of the LF ending its last line (as found by :class:`SectionLocator`, which already enforced
    the 414/431 size limits).
    """
    lines = split_section_lines(block[:lf], block[lf + 1 :], limits.allow_bare_lf)
    method, target, http_version = parse_request_line(lines[0])
    if len(lines) - 1 > limits.max_header_count:
        raise _bad(431, "too many header fields")
    path, query, authority = split_target(method, target)
    headers = parse_field_lines(lines[1:])
    special = [h for h in headers if h[0] in SPECIAL_HEADERS]
    head = build_head(
        method,
        target,
        path,
        query,
        authority,
        http_version=http_version,
        headers=headers,
        special=special,
        limits=limits,
    )
    return head, len(headers)


# --------------------------------------------------------------------------------------------
# Section boundaries and size limits
# --------------------------------------------------------------------------------------------


#: How much of a request line is checked for a valid method before its end has arrived.
_METHOD_PREFIX: Final = 64


def _check_method_prefix(prefix: bytes | bytearray) -> None:
    """Refuse at once a request line whose method already holds a byte no method can.

    Without this, bytes that are not HTTP at all (a TLS handshake sent to a plain port, a
    scanner's binary probe) would wait for a LF that may never come, until the header timeout.
    Only the first bytes are looked at, and before every other check, so the status is the
    same however the line is split into reads.
    """
    method = prefix.split(b" ", 1)[0]
    if method.translate(None, TCHAR):
        if method[:1] == b"\x16":
            raise _bad(400, "TLS handshake on a plain-HTTP port (an https:// URL for http?)")
        raise _bad(400, "invalid method")


class SectionLocator:
    """Finds where a head or trailer section ends, incrementally, and enforces size limits.

    The end is the first empty line, where a line may end in CRLF *or* bare LF: we locate it
    leniently so a client using bare LF gets a prompt 400 instead of a hang, and the strict
    CRLF rule is applied afterwards by :func:`split_section_lines`. Limits are checked on
    incomplete input too (a request line that is already too long is 414 before its CRLF
    arrives), in an order that gives the same status however the bytes were split into reads.

    State is kept relative to the section start so the caller may compact its buffer.
    """

    __slots__ = ("_first_lf", "_lf_searched", "_searched", "limits")

    def __init__(self, limits: ParserLimits) -> None:
        self.limits = limits
        self.reset()

    def reset(self) -> None:
        """Forget incremental progress (call when a new section starts)."""
        self._searched = 0
        self._lf_searched = 0
        self._first_lf = -1

    def _find_end(self, buf: bytes | bytearray, start: int) -> tuple[int, int]:
        """Return ``(lf, end)`` of the first empty line after *start*, or ``(-1, -1)``."""
        frm = start + max(0, self._searched - 2)
        crlf = buf.find(b"\n\r\n", frm)
        lflf = buf.find(b"\n\n", frm, crlf + 2 if crlf >= 0 else len(buf))
        if lflf >= 0:
            return lflf, lflf + 2
        if crlf >= 0:
            return crlf, crlf + 3
        self._searched = len(buf) - start
        return -1, -1

    def locate_head(self, buf: bytes | bytearray, pos: int) -> tuple[int, int, int] | None:
        """Return ``(start, lf, end)`` of the head beginning at or after *pos* or ``None``.

        ``start`` skips ignorable leading empty lines, ``lf`` is the index of the LF ending the
        last head line and ``end`` the index just after the terminating empty line.
        """
        limits = self.limits
        start = pos
        skipped = 0
        while True:
            two = buf[start : start + 2]
            if two == b"\r\n":
                start += 2
            elif two[:1] == b"\n":
                if not limits.allow_bare_lf:
                    raise _bad(400, "bare LF line ending")
                start += 1
            elif two == b"\r" or not two:
                return None
            else:
                break
            skipped += 1
            if skipped > limits.max_leading_empty_lines:
                raise _bad(400, "too many empty lines before the request line")
        if self._first_lf < 0:
            _check_method_prefix(buf[start : start + _METHOD_PREFIX])
            i = buf.find(b"\n", start + self._lf_searched)
            if i < 0:
                self._lf_searched = len(buf) - start
                length = len(buf) - start - (1 if buf[-1] == 0x0D else 0)
            else:
                self._first_lf = i - start
                length = i - start - (1 if buf[i - 1] == 0x0D else 0)
            if length > limits.max_request_line:
                raise _bad(414, "request line too long")
        lf, end = self._find_end(buf, start)
        if end < 0:
            if len(buf) - start >= limits.max_header_size:
                raise _bad(431, "request header section too large")
            return None
        if end - start > limits.max_header_size:
            raise _bad(431, "request header section too large")
        return start, lf, end

    def locate_trailers(
        self, buf: bytes | bytearray, pos: int, budget: int
    ) -> tuple[int, int] | None:
        """Return ``(lf, end)`` of a trailer section starting at *pos* (``lf=-1`` if empty).

        *budget* is what is left of ``max_header_size`` after the head.
        """
        two = buf[pos : pos + 2]
        if two == b"\r\n":
            return -1, pos + 2
        if two[:1] == b"\n":
            raise _bad(400, "bare LF in chunked framing")
        if len(two) < 2:
            return None
        lf, end = self._find_end(buf, pos)
        if end < 0:
            if len(buf) - pos >= budget:
                raise _bad(431, "trailer section too large")
            return None
        if end - pos > budget:
            raise _bad(431, "trailer section too large")
        return lf, end


def parse_trailers(
    block: bytes, lf: int, fields_before: int, limits: ParserLimits
) -> list[tuple[bytes, bytes]]:
    """Validate a trailer section (same rules as header fields, CRLF only).

    Framing fields are refused in trailers (RFC 9110 §6.5.1: a trailer must not carry what
    frames the message): a Content-Length or Transfer-Encoding arriving after the body can only
    confuse whatever reads the trailers as headers.
    """
    lines = split_section_lines(block[:lf], block[lf + 1 :], False)
    if fields_before + len(lines) > limits.max_header_count:
        raise _bad(431, "too many header fields")
    fields = parse_field_lines(lines)
    for name, _ in fields:
        if name in _FRAMING_FIELDS:
            raise _bad(400, f"{name.decode('ascii')} in trailers")
    return fields


_FRAMING_FIELDS: Final = frozenset([b"content-length", b"transfer-encoding"])


# --------------------------------------------------------------------------------------------
# Chunked framing
# --------------------------------------------------------------------------------------------


def max_chunk_line(limits: ParserLimits) -> int:
    """Longest possible valid chunk-size line, CR included (for incomplete-line checks)."""
    return MAX_CHUNK_SIZE_DIGITS + limits.max_chunk_extension_size + 1


def find_chunk_size_line(buf: bytes | bytearray, pos: int, limits: ParserLimits) -> int:
    """Index of the LF ending the chunk-size line that starts at *pos*; -1 if not all here.

    Raises for a line already longer than any valid one, and for a bare LF: chunk framing
    is never lenient about line endings, whatever ``allow_bare_lf`` says.
    """
    lf = buf.find(b"\n", pos)
    if lf < 0:
        if len(buf) - pos > max_chunk_line(limits):
            raise ProtocolError(400, "chunk size line too long")
        return -1
    if lf == pos or buf[lf - 1] != 0x0D:
        raise ProtocolError(400, "bare LF in chunked framing")
    return lf


def _valid_chunk_extensions(ext: bytes) -> bool:
    """``*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )``."""
    i, n = 0, len(ext)
    ws = b" \t"

    def skip_ws(j: int) -> int:
        while j < n and ext[j] in ws:
            j += 1
        return j

    def token_end(j: int) -> int:
        while j < n and ext[j] in TCHAR:
            j += 1
        return j

    while True:
        i = skip_ws(i)
        if i == n:
            return True
        if ext[i] != 0x3B:  # ";"
            return False
        i = skip_ws(i + 1)
        j = token_end(i)
        if j == i:
            return False
        i = skip_ws(j)
        if i < n and ext[i] == 0x3D:  # "="
            i = skip_ws(i + 1)
            if i < n and ext[i] == 0x22:  # quoted-string
                i += 1
                while True:
                    if i >= n:
                        return False
                    c = ext[i]
                    if c == 0x22:
                        i += 1
                        break
                    if c == 0x5C:  # quoted-pair
                        if i + 1 >= n or ext[i + 1] not in VALUE_CHARS:
                            return False
                        i += 2
                    elif c in VALUE_CHARS:
                        i += 1
                    else:
                        return False
            else:
                j = token_end(i)
                if j == i:
                    return False
                i = j


def parse_chunk_size_line(line: bytes, limits: ParserLimits) -> int:
    """Parse ``chunk-size [chunk-ext]`` (without CRLF); return the size."""
    semi = line.find(b";")
    size = line if semi < 0 else line[:semi]
    if not size or len(size) > MAX_CHUNK_SIZE_DIGITS or size.translate(None, HEXDIG):
        raise _bad(400, "invalid chunk size")
    if semi >= 0:
        ext = line[semi:]
        if len(ext) > limits.max_chunk_extension_size:
            raise _bad(400, "chunk extension too large")
        if not _valid_chunk_extensions(ext):
            raise _bad(400, "invalid chunk extension")
    return int(size, 16)
