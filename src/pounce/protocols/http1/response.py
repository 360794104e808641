"""Bytes of HTTP/1.1 responses: status lines, error responses, informational responses.

Pre-encoded once at import so the hot path only joins ready-made pieces.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

STATUS_LINES: dict[int, bytes] = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("ascii")
    for status in HTTPStatus
}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``; unknown codes get an empty reason phrase."""
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    return line


#: Statuses whose responses never have a body (RFC 9110 §6.4.1).
NO_BODY_STATUSES = frozenset({204, 304})

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNKED_END = b"0\r\n\r\n"


def serialize_fields(fields: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``name: value\\r\\n`` lines for validated fields (empty when there are none)."""
    lines = b"\r\n".join(map(JOIN_FIELD, fields))
    return lines + b"\r\n" if lines else b""


#: ``b": ".join``: a C-level callable, so map() serialises a head without a Python frame.
JOIN_FIELD = b": ".join


def error_body(status: int) -> bytes:
    """The plain-text body of a response the server answers itself: the reason phrase."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Error"


def error_response(
    status: int,
    *,
    date_line: bytes = b"",
    static_head: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes | None = None,
    head: bool = False,
) -> bytes:
    """A complete, closing plain-text response the server answers itself.

    *headers* are extra fields (``Retry-After`` on a 429 or 503, say), already validated;
    a ``content-type`` among them replaces ``text/plain``.
    *body* replaces the reason phrase (a health probe's ``ok``); with *head* (the answer to a
    HEAD request) the head announces the body's length but the body is left out.
    """
    if body is None:
        body = error_body(status)
    extra = serialize_fields(headers)
    # A Content-Type among *headers* (the metrics exposition's) replaces the plain-text one.
    own_type = extra.startswith(b"content-type:") or b"\r\ncontent-type:" in extra
    return b"".join(
        (
            status_line(status),
            b"" if own_type else b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
            extra,
            date_line,
            static_head,
            b"\r\n",
            b"" if head else body,
        )
    )


def early_hints_response(links: list[bytes]) -> bytes:
    """A ``103 Early Hints`` response carrying one ``link`` field per link."""
    fields = (b"link: " + link + b"\r\n" for link in links)
    return b"".join((b"HTTP/1.1 103 Early Hints\r\n", *fields, b"\r\n"))


def trailer_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The last chunk plus trailer fields that end a chunked response."""
    fields = (name + b": " + value + b"\r\n" for name, value in headers)
    return b"".join((b"0\r\n", *fields, b"\r\n"))
