"""The access log: one line per response on the ``pounce.access`` logger.

Cost model.  The request pipeline checks :attr:`AccessLogger.enabled` before
it builds an :class:`AccessInfo`, so a server with access logging off (or the
logger silenced by configuration) pays one attribute read per request.  When
it is on, a custom format is parsed and validated once, at construction, into
a tuple of per-atom getters; each request then costs one dict build, one
``%`` and one ``logger.info``.

Safety.  Every value that came from the network (path, query, method, header
values, client address) goes through :func:`escape_for_log` before it is
formatted, so a request can never forge a log line or emit terminal escapes.

Supported ``access_log_format`` atoms (Gunicorn-style ``%(name)s``):

=================  ==========================================================
``%(h)s``          client host (``-`` when unknown)
``%(r)s``          request line: ``GET /path?query HTTP/1.1``
``%(m)s``          request method
``%(U)s``          path (decoded, without query string)
``%(q)s``          query string (without ``?``)
``%(H)s``          protocol: ``HTTP/1.1``
``%(s)s``          response status code
``%(b)s``          response body bytes, ``-`` when zero (Apache convention)
``%(B)s``          response body bytes, always a number
``%(D)s``          request duration in whole microseconds
``%(M)s``          request duration in whole milliseconds
``%(L)s``          request duration in seconds, six decimals
``%(a)s``          ``User-Agent`` request header (``-`` when absent)
``%(f)s``          ``Referer`` request header (``-`` when absent)
``%(t)s``          completion time, ``[10/Oct/2000:13:55:36 +0000]`` (UTC)
``%({name}i)s``    any request header, e.g. ``%({x-request-id}i)s``
``%({name}o)s``    any response header (``-`` when none were recorded)
``%%``             a literal ``%``
=================  ==========================================================

Repeated header lines are joined with ``", "``.  Width/flag modifiers such as
``%(s)5s`` are allowed; the conversion must be ``s``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from pounce.logs import escape as _escape
from pounce.logs.setup import ACCESS_LOGGER_NAME

__all__ = ["AccessInfo", "AccessLogSettings", "AccessLogger", "compile_access_format"]

Headers = Sequence[tuple[bytes, bytes]]


class AccessInfo(NamedTuple):
    """Everything the access log needs about one finished request.

    A NamedTuple: immutable (safe to hand to another thread), cheap to build,
    and only built when :attr:`AccessLogger.enabled` is true.
    """

    client: tuple[str, int] | str | None
    """``(host, port)`` for TCP, a string for other transports, None if unknown."""
    method: str
    path: str
    """Decoded path, without the query string."""
    query_string: bytes
    http_version: str
    """``"1.0"``, ``"1.1"``, ``"2"`` or ``"3"``."""
    status: int
    bytes_sent: int
    """Response body bytes (not counting the head)."""
    duration: float
    """Seconds from request start to the end of the response."""
    request_headers: Headers = ()
    response_headers: Headers | None = None
    scheme: str = "http"


class AccessLogSettings(Protocol):
    """The ``ServerConfig`` fields :meth:`AccessLogger.from_config` reads.

    A structural type so this module does not import the config package (which
    may itself import logging) and so tests can pass a simple stand-in.
    """

    @property
    def access_log(self) -> bool: ...
    @property
    def access_log_format(self) -> str | None: ...
    @property
    def log_format(self) -> str: ...


_Getter = Callable[[AccessInfo], Any]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# One format atom: "%%", or "%(key)<flags><width><.precision><conversion>".
_ATOM_RE = re.compile(r"%(?:%|\((?P<key>[^()]*)\)[#0\- +]*\d*(?:\.\d+)?(?P<conversion>[a-zA-Z]))")
_HEADER_ATOM_RE = re.compile(r"\{(?P<name>[^{}]+)\}(?P<kind>[io])")


def _esc(value: str | bytes) -> str:
    # Looked up through the module on every call (not bound at import) so a
    # test can swap in a spy and prove that nothing is formatted when the
    # access log is disabled.
    return _escape.escape_for_log(value)


def _client_host(info: AccessInfo) -> str:
    client = info.client
    if client is None:
        return "-"
    if isinstance(client, str):
        return _esc(client) or "-"
    return _esc(client[0])


def _client_address(client: tuple[str, int] | str | None) -> str:
    if client is None:
        return "-"
    if isinstance(client, str):
        return _esc(client) or "-"
    host = _esc(client[0])
    if ":" in host:  # IPv6: bracket it so the port stays unambiguous
        return f"[{host}]:{client[1]}"
    return f"{host}:{client[1]}"


def _target(info: AccessInfo) -> str:
    if info.query_string:
        return f"{_esc(info.path)}?{_esc(info.query_string)}"
    return _esc(info.path)


def _request_line(info: AccessInfo) -> str:
    return f"{_esc(info.method)} {_target(info)} HTTP/{_esc(info.http_version)}"


def _header_value(headers: Headers | None, name: bytes) -> str:
    """Escaped value of header ``name`` (lower-case), repeated lines joined."""
    if not headers:
        return "-"
    values = [value for key, value in headers if key.lower() == name]
    if not values:
        return "-"
    if len(values) == 1:
        return _esc(values[0])
    return _esc(b", ".join(values))


def _apache_time(_info: AccessInfo) -> str:
    tm = time.gmtime()
    # Month names spelt out by hand: strftime("%b") follows the C locale.
    return (
        f"[{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year:04d}:"
        f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} +0000]"
    )


def _request_header_getter(name: bytes) -> _Getter:
    return lambda info: _header_value(info.request_headers, name)


def _response_header_getter(name: bytes) -> _Getter:
    return lambda info: _header_value(info.response_headers, name)


_ATOMS: dict[str, _Getter] = {
    "h": _client_host,
    "r": _request_line,
    "m": lambda info: _esc(info.method),
    "U": lambda info: _esc(info.path),
    "q": lambda info: _esc(info.query_string),
    "H": lambda info: f"HTTP/{_esc(info.http_version)}",
    "s": lambda info: str(info.status),
    "b": lambda info: str(info.bytes_sent) if info.bytes_sent else "-",
    "B": lambda info: str(info.bytes_sent),
    "D": lambda info: str(round(info.duration * 1_000_000)),
    "M": lambda info: str(round(info.duration * 1_000)),
    "L": lambda info: f"{info.duration:.6f}",
    "a": _request_header_getter(b"user-agent"),
    "f": _request_header_getter(b"referer"),
    "t": _apache_time,
}


def compile_access_format(fmt: str) -> tuple[tuple[str, _Getter], ...]:
    """Validate ``fmt`` and return the ``(atom, getter)`` pairs it uses.

    Raises :class:`ValueError` naming the offending atom for anything that
    would otherwise fail (or silently misbehave) on the first request: unknown
    atoms, non-``s`` conversions, positional ``%s`` and stray ``%`` signs.
    """
    getters: dict[str, _Getter] = {}
    for match in _ATOM_RE.finditer(fmt):
        key = match.group("key")
        if key is None:  # "%%"
            continue
        if match.group("conversion") != "s":
            raise ValueError(
                f"access log format atom {match.group()!r}: only the 's' conversion is supported"
            )
        if key in getters:
            continue
        getter = _ATOMS.get(key)
        if getter is None:
            header = _HEADER_ATOM_RE.fullmatch(key)
            if header is None:
                raise ValueError(f"unknown access log format atom {'%(' + key + ')s'!r}")
            try:
                name = header.group("name").strip().lower().encode("ascii")
            except UnicodeEncodeError:
                raise ValueError(
                    f"access log format atom {'%(' + key + ')s'!r}: header names are ASCII"
                ) from None
            if header.group("kind") == "i":
                getter = _request_header_getter(name)
            else:
                getter = _response_header_getter(name)
        getters[key] = getter
    leftover = _ATOM_RE.sub("", fmt)
    if "%" in leftover:
        raise ValueError(
            f"access log format {fmt!r} has a '%' that is not a %(name)s atom (use %% for '%')"
        )
    try:
        fmt % dict.fromkeys(getters, "")
    except (TypeError, ValueError, KeyError) as exc:  # pragma: no cover - regex is stricter
        raise ValueError(f"invalid access log format {fmt!r}: {exc}") from exc
    return tuple(getters.items())


def _default_line(info: AccessInfo) -> str:
    """``127.0.0.1:51234 - "GET /path?q HTTP/1.1" 200 13 0.4ms``."""
    return (
        f'{_client_address(info.client)} - "{_request_line(info)}" '
        f"{info.status} {info.bytes_sent} {info.duration * 1000:.1f}ms"
    )


def _formatter_wants_fields(logger: logging.Logger) -> bool:
    """True when a handler that would emit *logger*'s records formats access fields itself."""
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if getattr(handler.formatter, "wants_access_fields", False):
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


class AccessLogger:
    """Formats and emits one access-log line per finished request.

    Immutable after construction, so one instance is shared by every worker
    thread without locking.  ``enabled`` is decided once: if the
    ``pounce.access`` logger is reconfigured later, build a new AccessLogger.
    """

    __slots__ = ("_atoms", "_fields", "_format", "_logger", "enabled")

    enabled: bool
    """False when access logging is off or pounce.access would drop INFO lines."""

    def __init__(
        self,
        *,
        access_log: bool = True,
        access_log_format: str | None = None,
        log_format: str = "text",
        logger: logging.Logger | None = None,
    ) -> None:
        if log_format not in {"text", "json"}:
            raise ValueError(f"invalid log format {log_format!r}: expected 'text' or 'json'")
        self._logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER_NAME)
        # Structured fields ride on every record for JSON output, and for a formatter that
        # formats them itself (a Uvicorn-style --log-config); decided once, not per request.
        self._fields = log_format == "json" or _formatter_wants_fields(self._logger)
        # Validate the format even when disabled: a typo should fail at start-up,
        # not when someone later turns the access log on.
        self._format = access_log_format
        self._atoms = compile_access_format(access_log_format) if access_log_format else ()
        self.enabled = bool(access_log) and self._logger.isEnabledFor(logging.INFO)

    @classmethod
    def from_config(
        cls, config: AccessLogSettings, *, logger: logging.Logger | None = None
    ) -> AccessLogger:
        """Build from a ``ServerConfig`` (or anything with the same fields)."""
        return cls(
            access_log=config.access_log,
            access_log_format=config.access_log_format,
            log_format=config.log_format,
            logger=logger,
        )

    def format(self, info: AccessInfo) -> str:
        """Return the access line for ``info`` (escaped, without level prefix)."""
        if self._format is None:
            return _default_line(info)
        return self._format % {key: getter(info) for key, getter in self._atoms}

    def log(self, info: AccessInfo) -> None:
        """Emit the line for ``info``; a no-op when :attr:`enabled` is false."""
        if not self.enabled:
            return
        message = self.format(info)
        if not self._fields:
            self._logger.info(message)
            return
        self._logger.info(message, extra=self._structured(info))

    @staticmethod
    def _structured(info: AccessInfo) -> dict[str, Any]:
        """Fields for JSON output; key names avoid every LogRecord attribute."""
        return {
            "client_addr": _client_address(info.client),
            "method": _esc(info.method),
            "path": _esc(info.path),
            "query": _esc(info.query_string),
            "http_version": _esc(info.http_version),
            "scheme": _esc(info.scheme),
            "status": info.status,
            "bytes_sent": info.bytes_sent,
            "duration_ms": round(info.duration * 1000, 3),
            "user_agent": _header_value(info.request_headers, b"user-agent"),
            "referer": _header_value(info.request_headers, b"referer"),
        }
