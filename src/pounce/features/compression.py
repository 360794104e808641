"""Response compression: gzip and zstd, negotiated from ``Accept-Encoding``.

A response filter (see :mod:`pounce.pipeline.filters`). The factory runs for every request while
the option is on, so it does as little as it can: one scan of the request headers for
``Accept-Encoding``, and nothing more when there is none (benchmark tools and most API clients
send none). The negotiated coding of each distinct ``Accept-Encoding`` value is remembered per
worker: browsers send the same few values over and over.

What is compressed is decided when the response starts, from its head: a compressible media
type, a body large enough to be worth it (when its size is known), and nothing the app or a
cache asked us to leave alone (``Content-Encoding`` already set, ``Cache-Control:
no-transform``, partial content, HEAD, statuses without a body).

A piece of body of 256 KiB or more is compressed on a small shared thread pool
(:func:`pounce.pipeline.filters.filter_executor`), not on the event loop.

Streamed bodies are compressed piece by piece with a flush after each piece (``Z_SYNC_FLUSH``,
zstd's ``FLUSH_BLOCK``), so every piece, such as each server-sent event, can be decoded by the
client as soon as it arrives; the price is a slightly lower ratio for many tiny pieces.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from pounce.asgi.types import Headers, Scope
    from pounce.config import ServerConfig

__all__ = [
    "ZSTD_AVAILABLE",
    "Compressor",
    "compression_factory",
    "is_compressible",
    "negotiate",
]

_zstd: Any
try:
    if sys.version_info >= (3, 14):
        from compression import zstd as _zstd
    else:
        from backports import zstd as _zstd
except ImportError:  # the optional extra is not installed: gzip only
    _zstd = None

#: Whether zstd can be offered (Python 3.14+, or ``pip install "pounce[zstd]"`` before).
ZSTD_AVAILABLE: Final = _zstd is not None

GZIP: Final = "gzip"
ZSTD: Final = "zstd"

#: Media types compressed besides ``text/*``, ``+json`` and ``+xml``: formats of text.
_COMPRESSIBLE: Final = frozenset({
    b"application/json",
    b"application/javascript",
    b"application/ecmascript",
    b"application/xml",
    b"application/wasm",
    b"application/manifest+json",
    b"application/x-ndjson",
    b"image/svg+xml",
})

#: How many distinct ``Accept-Encoding`` values a worker remembers the answer for.
_NEGOTIATION_CACHE_SIZE: Final = 256

_NO_BODY_STATUSES: Final = frozenset({204, 205, 304})


def _quality(params: list[str]) -> float:
    """The ``q`` parameter of one list member (RFC 9110 §12.4.2); 0 when it is malformed."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def negotiate(accept_encoding: str, zstd: bool = ZSTD_AVAILABLE) -> str | None:
    """The coding to use for a request's ``Accept-Encoding``, or None for identity.

    The client's preference (the q-value) comes first; on a tie zstd is chosen over gzip (it is
    faster and smaller). A coding not listed is acceptable only through ``*``
    (RFC 9110 §12.5.3). When the client ranks ``identity`` above every coding we offer, we
    leave the body alone.
    """
    qualities: dict[str, float] = {}
    for member in accept_encoding.split(","):
        coding, *params = member.split(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        if coding == "x-gzip":
            coding = GZIP
        qualities[coding] = _quality(params)
    star = qualities.get("*")
    best: str | None = None
    best_q = 0.0
    for coding in (ZSTD, GZIP) if zstd else (GZIP,):
        q = qualities.get(coding, star if star is not None else 0.0)
        if q > best_q:  # strict: the first offered (zstd) wins a tie
            best, best_q = coding, q
    identity_q = qualities.get("identity")
    if best is not None and identity_q is not None and identity_q > best_q:
        return None
    return best


def is_compressible(content_type: bytes, extra: frozenset[bytes] = frozenset()) -> bool:
    """Whether a response of this ``Content-Type`` is text-like enough to compress."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return (
        media.startswith(b"text/")
        or media in _COMPRESSIBLE
        or media in extra
        or media.endswith((b"+json", b"+xml"))
        or b"javascript" in media
    )


class Compressor:
    """One response's compression filter (a :class:`~pounce.pipeline.filters.ResponseFilter`).

    Created for a request whose client accepts a coding; :meth:`start` decides from the
    response head whether to compress at all, and if not, passes everything through.
    """

    __slots__ = ("_active", "_encoder", "_settings", "changes_body", "coding")

    def __init__(self, coding: str, settings: _Settings) -> None:
        self.coding = coding
        self._settings = settings
        self._active = False
        self._encoder: Any = None
        #: Set by :meth:`start`: False when this response passes through untouched, so the
        #: channel skips the filter for its body (and a file keeps its zero-copy path).
        self.changes_body = True

    def start(
        self, status: int, fields: list[tuple[bytes, bytes]], content_length: int | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        settings = self._settings
        self.changes_body = False
        if not self.wants(status, fields, content_length):
            return fields, content_length
        self._active = self.changes_body = True
        if self.coding == ZSTD:
            self._encoder = _zstd.ZstdCompressor(level=settings.zstd_level)
        else:
            # wbits 31: gzip framing (16) with the largest window (15).
            self._encoder = zlib.compressobj(settings.gzip_level, zlib.DEFLATED, 31)
        # Any Content-Length the app gave names the identity body.
        fields = [field for field in fields if field[0] != b"content-length"]
        vary_at = etag_at = -1
        for i, (name, _) in enumerate(fields):
            if name == b"vary":
                vary_at = i
            elif name == b"etag":
                etag_at = i
        if vary_at >= 0:
            name, value = fields[vary_at]
            tokens = [t.strip().lower() for t in value.split(b",")]
            if b"*" not in tokens and b"accept-encoding" not in tokens:
                fields[vary_at] = (name, value + b", Accept-Encoding")
        else:
            fields.append((b"vary", b"Accept-Encoding"))
        if etag_at >= 0:
            name, value = fields[etag_at]
            if not value.startswith(b"W/"):
                # The compressed bytes differ from the identity bytes the strong tag names.
                fields[etag_at] = (name, b"W/" + value)
        fields.append((b"content-encoding", self.coding.encode("ascii")))
        # The compressed length is not known yet; a body sent in one final piece still gets
        # an exact Content-Length from the protocol, a streamed one is chunked.
        return fields, None

    def wants(
        self, status: int, fields: list[tuple[bytes, bytes]], content_length: int | None
    ) -> bool:
        """Whether :meth:`start` could compress this response: asked before the channel is
        wrapped, so a response that stays as it is (too small, not text, already encoded)
        costs no wrapper at all."""
        if status < 200 or status == 206 or status in _NO_BODY_STATUSES:
            return False
        if content_length is not None and content_length < self._settings.min_size:
            return False
        compressible = False
        for name, value in fields:
            if name == b"content-type":
                compressible = is_compressible(value, self._settings.extra_types)
            elif name == b"content-encoding" or (
                # Already encoded by the app, or a cache told us not to transform it.
                name == b"cache-control" and b"no-transform" in value.lower()
            ):
                return False
        return compressible

    def body(self, data: bytes, more_body: bool) -> bytes:
        if not self._active:
            return data
        encoder = self._encoder
        out: bytes
        if self.coding == ZSTD:
            if more_body:
                out = encoder.compress(data, _zstd.ZstdCompressor.FLUSH_BLOCK) if data else b""
            else:
                out = encoder.compress(data, _zstd.ZstdCompressor.FLUSH_FRAME)
        elif more_body:
            # A sync flush per piece: a streamed event must reach the client when it is sent.
            out = encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH) if data else b""
        else:
            out = encoder.compress(data) + encoder.flush()
        return out

    def offload(self, size: int) -> bool:
        # Asked only for large pieces: zlib and zstd release the GIL while they work, so a
        # thread keeps the event loop serving other connections meanwhile.
        del size
        return self._active

    def trailers(self, headers: Headers) -> Headers:
        return headers


class _Settings:
    """The compression options of one worker, read from the config once."""

    __slots__ = ("extra_types", "gzip_level", "min_size", "zstd", "zstd_level")

    def __init__(self, config: ServerConfig) -> None:
        self.min_size: int = config.compression_min_size
        self.gzip_level: int = config.compression_level_gzip
        self.zstd_level: int = config.compression_level_zstd
        self.extra_types = frozenset(
            t.strip().lower().encode("latin-1") for t in config.compression_types
        )
        self.zstd = ZSTD_AVAILABLE


def compression_factory(config: ServerConfig) -> Callable[[Scope], Compressor | None] | None:
    """The per-request factory of a worker, or None when compression is off.

    Build one per worker: its negotiation cache is only used from that worker's loop thread.
    """
    if not config.compression:
        return None
    settings = _Settings(config)
    cache: dict[bytes, str | None] = {}

    # A FilterFactory of pounce.pipeline.filters (a higher layer: not imported here).
    def factory(scope: Scope) -> Compressor | None:
        accept: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                accept = value
                break
        if accept is None:
            return None
        if scope["method"] == "HEAD":
            return None
        try:
            coding = cache[accept]
        except KeyError:
            coding = negotiate(accept.decode("latin-1"), settings.zstd)
            if len(cache) >= _NEGOTIATION_CACHE_SIZE:
                cache.clear()
            cache[accept] = coding
        if coding is None:
            return None
        return Compressor(coding, settings)

    return factory
