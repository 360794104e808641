"""The WebSocket opening handshake: what a request must carry and what the answer says.

Two layers, because HTTP/2 (RFC 8441 extended CONNECT) will reuse the second:

* :func:`check_http1_upgrade` holds the HTTP/1.1-only rules of RFC 6455 §4.2.1 (the
  ``Upgrade``/``Connection`` pair, ``Sec-WebSocket-Key``) and computes
  ``Sec-WebSocket-Accept``;
* :func:`check_version`, :func:`parse_subprotocols` and :func:`negotiate_deflate` apply to
  every transport: the version, the offered subprotocols and permessage-deflate (RFC 7692).

Nothing here raises on what a client sends: every header may hold any bytes (non-ASCII,
empty list items, stray whitespace), and a malformed offer is declined, not an error. Origin
checks are the application's business (it sees ``origin`` in the scope's headers).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from pounce.asgi.headers import is_token

#: RFC 6455 §1.3: appended to the client's key before hashing.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: The only protocol version RFC 6455 defines.
SUPPORTED_VERSION = b"13"

#: The server's own compression window (2**12 bytes = 4 KiB) whatever the client allows: the
#: compressor's memory is per connection, and a bigger window gains little on messages.
SERVER_MAX_WINDOW_BITS = 12


class HandshakeError(Exception):
    """The request cannot become a WebSocket: answer it with *status* and *headers*."""

    def __init__(self, status: int, reason: str, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """Agreed permessage-deflate parameters, from the server's point of view."""

    #: The server resets its compressor after each message (``server_no_context_takeover``).
    server_no_context_takeover: bool
    #: The client resets its compressor after each message (``client_no_context_takeover``).
    client_no_context_takeover: bool
    #: Window of the server's compressor (8-15).
    server_max_window_bits: int
    #: Window the client compresses with, thus what the server's decompressor needs (8-15).
    client_max_window_bits: int
    #: The ``Sec-WebSocket-Extensions`` value of the response.
    response: bytes


@dataclass(frozen=True, slots=True)
class Http1Handshake:
    """A valid HTTP/1.1 WebSocket upgrade request."""

    #: ``Sec-WebSocket-Accept`` of the 101 response.
    accept: bytes


def header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


def split_list(values: list[bytes]) -> list[bytes]:
    """RFC 9110 §5.6.1 list items of every field line, empty items and OWS dropped."""
    items: list[bytes] = []
    for value in values:
        for raw in value.split(b","):
            item = raw.strip(b" \t")
            if item:
                items.append(item)
    return items


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())


def check_version(headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse every version but 13 with 426 and the version the server speaks (§4.4)."""
    versions = header_values(headers, b"sec-websocket-version")
    if len(versions) != 1 or versions[0].strip(b" \t") != SUPPORTED_VERSION:
        raise HandshakeError(
            426,
            "unsupported Sec-WebSocket-Version (only 13 is)",
            [(b"sec-websocket-version", SUPPORTED_VERSION)],
        )


def check_http1_upgrade(
    method: str, http_version: str, headers: list[tuple[bytes, bytes]]
) -> Http1Handshake:
    """Validate an HTTP/1.1 upgrade to WebSocket (RFC 6455 §4.2.1) or raise HandshakeError.

    The caller has seen ``Connection: upgrade`` and ``Upgrade: websocket`` already (the HTTP/1
    parser reports them); the checks here are the WebSocket-specific rest.
    """
    if method != "GET":
        raise HandshakeError(400, "a WebSocket handshake must be a GET request", [])
    if http_version != "1.1":
        raise HandshakeError(400, "a WebSocket handshake needs HTTP/1.1", [])
    upgrades = [item.lower() for item in split_list(header_values(headers, b"upgrade"))]
    if b"websocket" not in upgrades:
        raise HandshakeError(400, "missing 'Upgrade: websocket'", [])
    connection = [item.lower() for item in split_list(header_values(headers, b"connection"))]
    if b"upgrade" not in connection:
        raise HandshakeError(400, "missing 'Connection: upgrade'", [])
    check_version(headers)
    keys = header_values(headers, b"sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError(400, "a WebSocket handshake needs one Sec-WebSocket-Key", [])
    key = keys[0].strip(b" \t")
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes in base64", [])
    return Http1Handshake(accept=accept_key(key))


def parse_subprotocols(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """The offered subprotocols, in order, for the scope's ``subprotocols``.

    Decoded as latin-1 (every byte maps to one character, so nothing can fail); an app that
    picks one gets exactly those bytes back in the response.
    """
    return [
        item.decode("latin-1")
        for item in split_list(header_values(headers, b"sec-websocket-protocol"))
    ]


def _parse_offer(offer: bytes) -> tuple[bytes, dict[bytes, bytes | None]] | None:
    """``name; param; param=value`` as (name, params); None when malformed or repeated."""
    parts = offer.split(b";")
    name = parts[0].strip(b" \t").lower()
    params: dict[bytes, bytes | None] = {}
    for raw in parts[1:]:
        part = raw.strip(b" \t")
        if not part:
            return None
        key, sep, value = part.partition(b"=")
        key = key.strip(b" \t").lower()
        if key in params or not is_token(key):
            return None
        if sep:
            value = value.strip(b" \t")
            if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
                value = value[1:-1]
            params[key] = value
        else:
            params[key] = None
    return name, params


def _window_bits(value: bytes | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def negotiate_deflate(headers: list[tuple[bytes, bytes]]) -> DeflateParams | None:
    """Accept the first valid permessage-deflate offer (RFC 7692 §7.1), or None.

    Offers with unknown, repeated or out-of-range parameters are declined, as §7.1 asks. An
    offer that limits the server's window to 8 bits is declined too: zlib cannot produce a
    raw deflate stream with a 256-byte window.
    """
    for item in split_list(header_values(headers, b"sec-websocket-extensions")):
        parsed = _parse_offer(item)
        if parsed is None or parsed[0] != b"permessage-deflate":
            continue
        params = parsed[1]
        if set(params) - {
            b"server_no_context_takeover",
            b"client_no_context_takeover",
            b"server_max_window_bits",
            b"client_max_window_bits",
        }:
            continue
        if params.get(b"server_no_context_takeover", None) is not None:
            continue
        if params.get(b"client_no_context_takeover", None) is not None:
            continue
        server_bits = SERVER_MAX_WINDOW_BITS
        if b"server_max_window_bits" in params:
            offered = _window_bits(params[b"server_max_window_bits"])
            if offered is None or offered == 8:
                continue
            server_bits = min(offered, SERVER_MAX_WINDOW_BITS)
        client_bits = 15
        client_bits_reply = b""
        if b"client_max_window_bits" in params:
            value = params[b"client_max_window_bits"]
            if value is not None:
                offered = _window_bits(value)
                if offered is None:
                    continue
                # The client announced its window: decompress with just that much memory.
                client_bits = offered
                client_bits_reply = b"; client_max_window_bits=%d" % offered
        server_reset = b"server_no_context_takeover" in params
        client_reset = b"client_no_context_takeover" in params
        response = b"permessage-deflate" + (
            b"; server_no_context_takeover" if server_reset else b""
        ) + (b"; client_no_context_takeover" if client_reset else b"") + (
            b"; server_max_window_bits=%d" % server_bits
        ) + client_bits_reply
        return DeflateParams(
            server_no_context_takeover=server_reset,
            client_no_context_takeover=client_reset,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
            response=response,
        )
    return None
