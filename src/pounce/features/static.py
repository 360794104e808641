"""Static files: ``--static URL_PREFIX=DIRECTORY``, served by the server itself.

An ASGI app wrapped around the user's app (built once per worker in ``server.worker`` when the
option is set), not a protocol feature: its responses go out through ``http.response.start``
and ``http.response.pathsend`` / ``http.response.body`` like any app's, so the access log,
events, filters, admission hooks and every protocol (HTTP/2 included) treat them as any other
response, and a large file leaves through each protocol's own zero-copy path.

What it decides, and why:

- A path under a prefix that names a regular file (or a directory holding ``index.html``) is
  served here. Anything else, a missing file in particular, goes to the app: an app can then
  answer its own 404 page or a single-page-app fallback.
- A path that tries to leave the directory (``..`` segments, decoded or not, backslashes, NUL
  bytes, a symbolic link pointing outside) gets a plain 404 from here and never reaches the
  app: only an attacker sends one. The directory is resolved once (its real path); every
  file's real path must lie inside it.
- GET and HEAD only; other methods on a file served here get 405 with ``Allow``.
- Validators: a strong ``ETag`` from size and modification time, ``Last-Modified``;
  conditional requests in RFC 9110 §13.2.2 order (If-Match, If-Unmodified-Since,
  If-None-Match, If-Modified-Since, then Range with If-Range).
- Ranges: one range gets 206 with ``Content-Range``, several get ``multipart/byteranges``,
  none satisfiable 416 with ``Content-Range: bytes */SIZE``. Ranges are read with
  ``os.pread`` and sent as body pieces (``pathsend`` has no offset); pieces above
  :data:`LOOP_READ_MAX` are read on a small pool of threads so a cold disk never stalls the
  worker. A request for more bytes in its ranges than the file holds (overlapping
  ranges, an old denial-of-service trick) or for more than :data:`MAX_RANGES` ranges is
  answered with the whole file instead.
- Precompressed siblings: for text-like types (the ones the compression filter would
  compress), ``FILE.zst`` or ``FILE.gz`` next to ``FILE`` is sent instead when the client's
  ``Accept-Encoding`` prefers it (the same negotiation as the compression filter), with
  ``Content-Encoding`` set, so the filter leaves it alone, and ``Vary: Accept-Encoding``.
- Whole files above :data:`SMALL_FILE` (16 KiB) go out through ``http.response.pathsend``:
  each protocol sends them its own way (``sendfile`` on plain HTTP/1.1). Smaller ones are
  read at once and sent as one body, which leaves with the head in one write: for a 1 KiB
  file that measured 20 000 requests/s against 14 000 through ``pathsend``.
- The file is opened before the head is sent: a file listed but not readable gets 403, not a
  response cut off midway.

File system calls (``lstat`` of the few path components under the directory, ``open`` and a
read of a small file) run on the event loop: for local files they take microseconds, and
handing each to a thread would cost more.

An instance is immutable after construction, so all the workers of a process may share it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, Final

from pounce.features.compression import GZIP, ZSTD, is_compressible, negotiate

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pounce.asgi.types import ASGIApp, Receive, Scope, Send
    from pounce.config import ServerConfig

__all__ = ["LOOP_READ_MAX", "MAX_RANGES", "StaticFiles", "content_type", "static_files"]

#: Range pieces up to this size are read on the event loop; larger ones in a thread.
LOOP_READ_MAX: Final = 64 * 1024
#: Files up to this size are read on the loop and sent in the head's write, not by pathsend.
SMALL_FILE: Final = 16 * 1024
#: Size of one ``os.pread`` (and of one body piece) when a range is sent.
READ_SIZE: Final = 256 * 1024
#: More ranges than this in one request: the whole file is sent instead (RFC 9110 §14.2).
MAX_RANGES: Final = 64

_DEFAULT_TYPE: Final = b"application/octet-stream"
_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)

#: Types of the web that system tables get wrong or lack (RFC 9239 made JavaScript text/).
_WEB_TYPES: Final = {
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".jsonld": "application/ld+json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".xml": "application/xml",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".pdf": "application/pdf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".zst": "application/zstd",
}


_types: dict[str, bytes] | None = None
_types_lock = threading.Lock()


def _type_table() -> dict[str, bytes]:
    """Extension -> Content-Type, built on first use (reading the system's tables takes a few
    milliseconds: a server without ``--static`` should not pay them) and never changed after."""
    global _types  # built once under the lock: no thread reads mimetypes while another fills it
    with _types_lock:
        if _types is None:
            import mimetypes

            mimetypes.init()
            table = {ext.lower(): kind for ext, kind in mimetypes.types_map.items()}
            table.update(_WEB_TYPES)
            _types = {
                ext: (f"{kind}; charset=utf-8" if kind.startswith("text/") else kind).encode(
                    "latin-1"
                )
                for ext, kind in table.items()
            }
        return _types


def content_type(name: str, table: dict[str, bytes] | None = None) -> bytes:
    """The ``Content-Type`` of a file, from its extension; ``text/*`` says UTF-8."""
    if table is None:
        table = _type_table()
    return table.get(os.path.splitext(name)[1].lower(), _DEFAULT_TYPE)


_WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                  "Dec")


def _http_date(seconds: float) -> bytes:
    t = time.gmtime(seconds)
    return (
        f"{_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    ).encode("ascii")


def _parse_date(value: bytes) -> int | None:
    """An HTTP date as whole seconds since the epoch; None when it is not one."""
    # The three date formats RFC 9110 §5.6.7 requires recipients to accept; imported here, as
    # only conditional requests need it.
    from email.utils import parsedate_to_datetime

    try:
        return int(parsedate_to_datetime(value.decode("latin-1")).timestamp())
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def _etag_list(value: bytes) -> list[bytes]:
    """The entity tags of an If-Match / If-None-Match value (``*`` included as is)."""
    return [tag.strip() for tag in value.split(b",") if tag.strip()]


def _weak_match(tags: list[bytes], etag: bytes) -> bool:
    # Weak comparison (RFC 9110 §8.8.3.2): W/ is ignored on both sides. A compressed
    # response's weakened tag thus still revalidates.
    return any(tag == b"*" or tag.removeprefix(b"W/") == etag for tag in tags)


def _strong_match(tags: list[bytes], etag: bytes) -> bool:
    return any(tag in (b"*", etag) for tag in tags)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_ranges(value: bytes, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges of a ``Range`` value as (first, last) byte positions.

    None means "ignore the header" (not bytes, malformed, too many ranges, or more bytes than
    the file holds); an empty list means nothing in it is satisfiable (416).
    """
    unit, equals, spec = value.decode("latin-1").partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    ranges: list[tuple[int, int]] = []
    count = 0
    for member in spec.split(","):
        part = member.strip()
        if not part:
            continue
        count += 1
        if count > MAX_RANGES:
            return None
        first_text, dash, last_text = part.partition("-")
        first_text, last_text = first_text.strip(), last_text.strip()
        if not dash:
            return None
        if not first_text:
            if not _digits(last_text):
                return None
            suffix = int(last_text)
            if suffix and size:
                ranges.append((max(0, size - suffix), size - 1))
            continue
        if not _digits(first_text) or (last_text and not _digits(last_text)):
            return None
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
        if last_text and last < first:
            return None
        if first < size:
            ranges.append((first, min(last, size - 1)))
    if sum(last - first + 1 for first, last in ranges) > size:
        return None
    return ranges


class _Hostile(Exception):
    """The request path tries to leave the directory: answer 404, never the app."""


class _File:
    """The file a request names: its real path and stat, and the variant chosen for it."""

    __slots__ = ("coding", "path", "st")

    def __init__(self, path: str, st: os.stat_result, coding: str | None = None) -> None:
        self.path = path
        self.st = st
        self.coding = coding


#: Answers of the server's own, built once.
_NOT_FOUND: Final = (404, [(b"content-type", b"text/plain; charset=utf-8")], b"Not Found")
_FORBIDDEN: Final = (403, [(b"content-type", b"text/plain; charset=utf-8")], b"Forbidden")
_NOT_ALLOWED: Final = (
    405,
    [(b"content-type", b"text/plain; charset=utf-8"), (b"allow", b"GET, HEAD")],
    b"Method Not Allowed",
)


class StaticFiles:
    """An ASGI app serving the mounted directories and calling *app* for everything else."""

    __slots__ = ("_app", "_cache_control", "_extra_types", "_mounts", "_types")

    def __init__(
        self,
        app: ASGIApp,
        mounts: Iterable[tuple[str, str]],
        *,
        cache_control: str | None = "no-cache",
        compression_types: frozenset[bytes] = frozenset(),
    ) -> None:
        self._app = app
        resolved: list[tuple[str, str]] = []
        for prefix, directory in mounts:
            root = os.path.realpath(directory)
            if not os.path.isdir(root):
                raise NotADirectoryError(f"--static {prefix}={directory}: not a directory")
            # "/" mounts the whole URL space: every path then starts with the empty prefix.
            resolved.append((prefix.rstrip("/"), root))
        # Longest prefix first: /static/img wins over /static for its own paths.
        resolved.sort(key=lambda mount: len(mount[0]), reverse=True)
        self._mounts = tuple(resolved)
        self._cache_control = (
            None if cache_control is None else cache_control.encode("latin-1")
        )
        self._extra_types = compression_types
        self._types = _type_table()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root_path: str = scope.get("root_path", "")
            if root_path and path.startswith(root_path):
                path = path[len(root_path):]
            for prefix, root in self._mounts:
                if path.startswith(prefix) and (
                    len(path) == len(prefix) or path[len(prefix)] == "/"
                ):
                    if await self._serve(scope, send, root, path[len(prefix):]):
                        return
                    break
        await self._app(scope, receive, send)

    # -- finding the file ---------------------------------------------------------------------

    async def _serve(self, scope: Scope, send: Send, root: str, rest: str) -> bool:
        """Answer the request if *rest* names something to serve; False: the app's turn."""
        try:
            found = _lookup(root, rest)
        except _Hostile:
            await _plain(send, *_NOT_FOUND)
            return True
        if found is None:
            return False
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _plain(send, *_NOT_ALLOWED)
            return True
        if isinstance(found, str):
            # A directory named without its slash: send the client to the slash, relative to
            # where it is (works behind any proxy prefix); "./" keeps "a:b" from reading as a
            # scheme.
            raw = scope.get("raw_path") or scope["path"].encode("utf-8")
            location = b"./" + raw.rsplit(b"/", 1)[-1] + b"/"
            if scope.get("query_string"):
                location += b"?" + scope["query_string"]
            await _plain(send, 301, [(b"location", location)], b"")
            return True
        await self._send_file(scope, send, root, found, method == "HEAD")
        return True

    # -- answering ----------------------------------------------------------------------------

    async def _send_file(
        self, scope: Scope, send: Send, root: str, file: _File, head: bool
    ) -> None:
        accept = if_match = if_none_match = if_modified = if_unmodified = range_ = None
        if_range = None
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                accept = value if accept is None else accept + b"," + value
            elif name == b"range":
                range_ = value
            elif name == b"if-none-match":
                if_none_match = value if if_none_match is None else if_none_match + b"," + value
            elif name == b"if-modified-since":
                if_modified = value
            elif name == b"if-match":
                if_match = value if if_match is None else if_match + b"," + value
            elif name == b"if-unmodified-since":
                if_unmodified = value
            elif name == b"if-range":
                if_range = value
        kind = content_type(file.path, self._types)
        fields: list[tuple[bytes, bytes]] = []
        if is_compressible(kind, self._extra_types):
            # The body may differ by Accept-Encoding: a sibling here, or the compression filter.
            fields.append((b"vary", b"Accept-Encoding"))
            if accept is not None:
                file = _precompressed(root, file, accept.decode("latin-1"))
        st = file.st
        size = st.st_size
        suffix = b"" if file.coding is None else b"-" + file.coding.encode("ascii")
        etag = b'"%x-%x%b"' % (size, st.st_mtime_ns, suffix)
        mtime = int(st.st_mtime)  # HTTP dates have whole seconds
        fields.append((b"etag", etag))
        fields.append((b"last-modified", _http_date(st.st_mtime)))
        if self._cache_control is not None:
            fields.append((b"cache-control", self._cache_control))

        # RFC 9110 §13.2.2: the preconditions, in this order.
        if if_match is not None:
            if not _strong_match(_etag_list(if_match), etag):
                await _plain(send, 412, fields, b"")
                return
        elif if_unmodified is not None:
            date = _parse_date(if_unmodified)
            if date is not None and mtime > date:
                await _plain(send, 412, fields, b"")
                return
        if if_none_match is not None:
            if _weak_match(_etag_list(if_none_match), etag):
                await send({"type": "http.response.start", "status": 304, "headers": fields})
                await send({"type": "http.response.body", "body": b""})
                return
        elif if_modified is not None:
            date = _parse_date(if_modified)
            if date is not None and mtime <= date:
                await send({"type": "http.response.start", "status": 304, "headers": fields})
                await send({"type": "http.response.body", "body": b""})
                return

        fields.append((b"accept-ranges", b"bytes"))
        if file.coding is not None:
            fields.append((b"content-encoding", file.coding.encode("ascii")))
        try:
            fd = os.open(file.path, _OPEN_FLAGS)
        except OSError:
            # Listed but not readable (permissions): say so, not a response cut off midway.
            await _plain(send, *_FORBIDDEN)
            return
        reader = _Reader(fd, file.path)
        try:
            await self._send_body(scope, send, reader, fields, kind, size, head, range_, if_range)
        finally:
            reader.close()

    async def _send_body(  # noqa: PLR0917 - one request's state, passed down once
        self,
        scope: Scope,
        send: Send,
        reader: _Reader,
        fields: list[tuple[bytes, bytes]],
        kind: bytes,
        size: int,
        head: bool,
        range_: bytes | None,
        if_range: bytes | None,
    ) -> None:
        ranges = None
        if range_ is not None and not head and _if_range_holds(if_range, fields):
            ranges = parse_ranges(range_, size)
        if ranges is None:
            fields.append((b"content-type", kind))
            fields.append((b"content-length", b"%d" % size))
            await send({"type": "http.response.start", "status": 200, "headers": fields})
            if head or not size:
                await send({"type": "http.response.body", "body": b""})
            elif size <= SMALL_FILE:
                # One read, and the body leaves in the head's write: cheaper than sendfile's
                # extra round for a few kilobytes.
                await send({"type": "http.response.body", "body": await reader.read(size, 0)})
            elif "http.response.pathsend" in scope.get("extensions", ()):
                await send({"type": "http.response.pathsend", "path": reader.path})
            else:
                await _send_ranges(send, reader, [(0, size - 1)], [b""], b"")
            return
        if not ranges:
            fields.append((b"content-range", b"bytes */%d" % size))
            await _plain(send, 416, fields, b"")
            return
        if len(ranges) == 1:
            first, last = ranges[0]
            fields.append((b"content-type", kind))
            fields.append((b"content-range", b"bytes %d-%d/%d" % (first, last, size)))
            fields.append((b"content-length", b"%d" % (last - first + 1)))
            await send({"type": "http.response.start", "status": 206, "headers": fields})
            await _send_ranges(send, reader, ranges, [b""], b"")
            return
        boundary = os.urandom(16).hex().encode("ascii")
        heads = [
            b"--%b\r\ncontent-type: %b\r\ncontent-range: bytes %d-%d/%d\r\n\r\n"
            % (boundary, kind, first, last, size)
            for first, last in ranges
        ]
        # Each part's data ends with the CRLF that starts the next delimiter.
        heads[1:] = [b"\r\n" + part for part in heads[1:]]
        tail = b"\r\n--%b--\r\n" % boundary
        length = sum(map(len, heads)) + len(tail) + sum(last - first + 1 for first, last in ranges)
        fields.append((b"content-type", b"multipart/byteranges; boundary=" + boundary))
        fields.append((b"content-length", b"%d" % length))
        await send({"type": "http.response.start", "status": 206, "headers": fields})
        await _send_ranges(send, reader, ranges, heads, tail)


def _lookup(root: str, rest: str) -> _File | str | None:
    """The file *rest* names under *root*; a str for a directory to redirect to; None: absent.

    Raises :class:`_Hostile` for a path that tries to leave *root*.
    """
    if "\x00" in rest or "\\" in rest:
        raise _Hostile
    parts = [part for part in rest.split("/") if part]
    if any(part in {".", ".."} for part in parts):
        raise _Hostile
    found = _resolve(root, parts)
    if found is None:
        return None
    path, st = found
    if stat.S_ISDIR(st.st_mode):
        if not rest.endswith("/"):
            index = _resolve(root, [*parts, "index.html"])
            return path if index is not None and stat.S_ISREG(index[1].st_mode) else None
        found = _resolve(root, [*parts, "index.html"])
        if found is None:
            return None
        path, st = found
    elif rest.endswith("/"):
        return None  # "file.txt/" names a directory that does not exist
    if not stat.S_ISREG(st.st_mode):
        return None  # a FIFO or a device would block or never end: not ours to serve
    return _File(path, st)


def _resolve(
    root: str, parts: list[str], start: str | None = None
) -> tuple[str, os.stat_result] | None:
    """The real path and stat of ``start/parts``, None when absent; _Hostile when outside.

    *start* is *root* or a real directory inside it. Walks the components with ``lstat``:
    only when one is a symbolic link does ``realpath`` resolve the rest, and the result must
    lie inside *root*.
    """
    path = root if start is None else start
    st: os.stat_result | None = None
    for i, part in enumerate(parts):
        path = path + os.sep + part
        try:
            st = os.lstat(path)
        except (OSError, ValueError):
            return None
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(os.path.join(path, *parts[i + 1 :]))
            if not (real == root or real.startswith(root + os.sep)):
                raise _Hostile
            try:
                return real, os.stat(real)
            except (OSError, ValueError):
                return None
    if st is None:
        try:
            st = os.stat(path)
        except OSError:
            return None
    return path, st


def _precompressed(root: str, file: _File, accept: str) -> _File:
    """``FILE.zst`` or ``FILE.gz`` when the client prefers it and it exists, else *file*."""
    coding = negotiate(accept, True)  # we decode nothing: zstd is offered whatever is installed
    if coding == ZSTD:
        sibling = _sibling(root, file.path + ".zst")
        if sibling is not None:
            return _File(sibling[0], sibling[1], ZSTD)
        coding = negotiate(accept, False)
    if coding == GZIP:
        sibling = _sibling(root, file.path + ".gz")
        if sibling is not None:
            return _File(sibling[0], sibling[1], GZIP)
    return file


def _sibling(root: str, path: str) -> tuple[str, os.stat_result] | None:
    # The file's directory is inside the root; the sibling itself may be a link out of it.
    directory, name = os.path.split(path)
    try:
        found = _resolve(root, [name], directory)
    except _Hostile:
        return None
    if found is None or not stat.S_ISREG(found[1].st_mode):
        return None
    return found


def _if_range_holds(if_range: bytes | None, fields: list[tuple[bytes, bytes]]) -> bool:
    """Whether a Range may apply: no If-Range, or its validator still names this file.

    An entity tag is compared strongly (a weak one never matches); a date must be exactly the
    ``Last-Modified`` sent.
    """
    if if_range is None:
        return True
    validators = dict(fields)
    if if_range.startswith((b'"', b"W/")):
        return if_range == validators[b"etag"]
    date = _parse_date(if_range)
    return date is not None and date == _parse_date(validators[b"last-modified"])


async def _plain(send: Send, status: int, fields: list[tuple[bytes, bytes]], body: bytes) -> None:
    fields = [*fields, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})


class _Reader:
    """An open file of one response, read on the loop, or in a thread for large pieces.

    A read handed to a thread keeps the descriptor until it returns, even when the request is
    cancelled meanwhile: the number must not be reused by another open while a thread still
    reads from it.
    """

    __slots__ = ("_pending", "fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self._pending: concurrent.futures.Future[bytes] | None = None

    async def read(self, count: int, offset: int) -> bytes:
        if count <= LOOP_READ_MAX:
            data = os.pread(self.fd, count, offset)
        else:
            pending = _read_pool().submit(os.pread, self.fd, count, offset)
            self._pending = pending
            data = await asyncio.wrap_future(pending)
            self._pending = None
        if len(data) != count:
            # The file shrank under us: the promised length cannot be kept; the server closes
            # the connection so the client sees a cut-off response.
            raise OSError(f"{self.path} shrank while it was being sent")
        return data

    def close(self) -> None:
        pending = self._pending
        if pending is None:
            os.close(self.fd)
        else:
            # Runs at once when the read is over already.
            fd = self.fd
            pending.add_done_callback(lambda _: os.close(fd))


_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    # A forked child has none of its parent's threads: it makes a pool of its own.
    global _pool, _pool_lock  # reset in the child only, before it runs anything else
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _read_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads reading large ranges, shared by the process's workers, made on first use."""
    global _pool  # one per process, created lazily under the lock (after a fork, too)
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="pounce-static"
            )
        return _pool


async def _send_ranges(
    send: Send, reader: _Reader, ranges: list[tuple[int, int]], heads: list[bytes], tail: bytes
) -> None:
    """Send each range's bytes after its head (a multipart part head, or nothing), then *tail*."""
    for (first, last), head in zip(ranges, heads, strict=True):
        offset = first
        pending = head
        while offset <= last:
            count = min(READ_SIZE, last - offset + 1)
            data = await reader.read(count, offset)
            offset += count
            await send({"type": "http.response.body", "body": pending + data, "more_body": True})
            pending = b""
    await send({"type": "http.response.body", "body": tail})


def static_files(app: ASGIApp, config: ServerConfig) -> ASGIApp:
    """*app* wrapped by :class:`StaticFiles` when ``--static`` is set, else *app* itself."""
    if not config.static:
        return app
    return StaticFiles(
        app,
        config.static,
        cache_control=config.static_cache_control,
        compression_types=frozenset(
            t.strip().lower().encode("latin-1") for t in config.compression_types
        ),
    )
