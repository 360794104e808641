"""Validation of headers that an application hands to the server.

Response splitting happens when a server copies an app's header value containing CR or LF onto
the wire. Every protocol (HTTP/1.1 today, HTTP/2 and WebSocket handshakes later) passes the app's
headers through :func:`validate_response_headers` so there is exactly one place that decides what
may be sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: RFC 9110 token characters: what a field name may consist of.
TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Bytes a field value may contain: HTAB, visible ASCII, space and obs-text. No CR, LF, NUL, CTLs.
FIELD_VALUE_BYTES = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])


#: Names the app sent before that proved valid, mapped to their lower-cased form, and values
#: that proved valid. Bounded, process-wide, only ever holding validated immutable bytes: apps
#: send the same few names and values on every response, and a lookup is several times cheaper
#: than a translate(). Values that are long or may be secret are not kept.
_VALID_NAMES: dict[bytes, bytes] = {}
_VALID_VALUES: set[bytes] = set()
_CACHE_MAX = 1024
_VALUE_CACHE_MAX_LEN = 64
_UNCACHED_VALUE_NAMES = frozenset(
    (b"set-cookie", b"authorization", b"www-authenticate", b"location")
)


class InvalidHeader(ValueError):
    """An application tried to send a header that must never reach the wire."""


def is_token(name: bytes) -> bool:
    """True when *name* is a non-empty RFC 9110 token (valid method or field name)."""
    return bool(name) and not name.translate(None, TOKEN_BYTES)


def is_field_value(value: bytes) -> bool:
    """True when *value* has no CR, LF, NUL or other control characters (HTAB allowed)."""
    return not value.translate(None, FIELD_VALUE_BYTES)


ValidatedHead = tuple[list[tuple[bytes, bytes]], int | None, bool, bool, bool]


def validate_response_headers(raw: Iterable[Any]) -> list[tuple[bytes, bytes]]:
    """Return the app's headers as ``(lower-cased name, value)`` byte pairs, or raise.

    Accepts any iterable of two-item sequences of ``bytes`` (the ASGI form). ``str`` values are
    refused rather than guessed at: the spec says bytes, and a silent encode would hide bugs.
    Used as is for trailers and WebSocket handshake headers; a response head goes through
    :func:`validate_response_head`, which also applies the framing rules.
    """
    return validate_response_head(raw, 0)[0]


def validate_response_head(raw: Iterable[Any], status: int) -> ValidatedHead:
    """Validate a response head's headers and apply the rules every protocol shares.

    Returns ``(fields, content_length, close, has_server, has_date)``:

    * ``Transfer-Encoding`` and ``Connection`` are dropped from *fields*: framing and connection
      management belong to the server and differ per protocol (HTTP/2 forbids both fields);
      ``Connection: close`` sets *close* so HTTP/1.1 closes after the response.
    * ``Content-Length`` is checked (digits, duplicates must agree) and returned as an int; it
      stays in *fields* except on a 204, which must not carry one (RFC 9110 §8.6).
    * *has_server* and *has_date* tell whether the app sent its own, which then win over the
      server's defaults.

    One pass over the headers does all of it: this runs for every response. *status* 0
    means "not a response head": :func:`validate_response_headers` then only validates.
    """
    result: list[tuple[bytes, bytes]] = []
    append = result.append
    content_length: int | None = None
    close = has_server = has_date = False
    try:
        items = iter(raw)
    except TypeError:
        raise InvalidHeader(f"headers must be an iterable of pairs, not {raw!r}") from None
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise InvalidHeader(f"header {item!r} is not a (name, value) pair") from None
        if type(name) is not bytes or type(value) is not bytes:
            if isinstance(name, bytes | bytearray) and isinstance(value, bytes | bytearray):
                name, value = bytes(name), bytes(value)
            else:
                raise InvalidHeader(
                    f"header {item!r} must be a pair of bytes, not "
                    f"({type(name).__name__}, {type(value).__name__})"
                )
        lower = _VALID_NAMES.get(name)
        if lower is None:
            if not name or name.translate(None, TOKEN_BYTES):
                raise InvalidHeader(f"header name {name!r} is not a valid token")
            lower = name.lower()
            if len(_VALID_NAMES) >= _CACHE_MAX:
                _VALID_NAMES.clear()
            _VALID_NAMES[name] = lower
        if value not in _VALID_VALUES:
            if value.translate(None, FIELD_VALUE_BYTES):
                raise InvalidHeader(
                    f"value of header {name!r} contains CR, LF, NUL or another control character"
                )
            if len(value) <= _VALUE_CACHE_MAX_LEN and lower not in _UNCACHED_VALUE_NAMES:
                if len(_VALID_VALUES) >= _CACHE_MAX:
                    _VALID_VALUES.clear()
                _VALID_VALUES.add(value)
        if lower in _FRAMING_NAMES and status:
            if lower == b"content-length":
                if not value.isdigit() or (
                    content_length is not None and int(value) != content_length
                ):
                    raise InvalidHeader(f"invalid Content-Length {value!r}")
                content_length = int(value)
                if status == 204:
                    continue
            elif lower == b"transfer-encoding":
                continue
            elif lower == b"connection":
                if b"close" in value.lower():
                    close = True
                continue
            elif lower == b"server":
                has_server = True
            else:
                has_date = True
        append((lower, value))
    return result, content_length, close, has_server, has_date


#: Names a response head's validation looks at beyond validity (one set lookup per field).
_FRAMING_NAMES = frozenset(
    (b"content-length", b"transfer-encoding", b"connection", b"server", b"date")
)
