"""``ServerConfig``: every setting of the server in one frozen, validated object.

Why one object: the CLI, the config file, the environment and
``pounce.run(**options)`` all end up here, so validation, defaults and help
text live in exactly one place and cannot drift apart.  Field names are the
long CLI flag names with ``-`` replaced by ``_`` -- the mapping is one to one.

Why frozen and slotted: the config is shared by every worker thread; an
immutable object can be read from any thread without locks, and slots catch
typos (``config.timeout_keepalive = 3`` raises instead of creating an
attribute nobody reads).  ``replace(**changes)`` builds a new, re-validated
copy.

Why normalise in ``__post_init__``: a value may arrive as text
(``port="8000"``, ``timeout_keep_alive="5m"``, ``workers="auto"``) or as a list
instead of a tuple.  Every field has a converter that accepts the typed value
*or* its textual form, so all entry points behave the same; after
construction every field holds exactly its annotated type.

Each field carries metadata (help text, topic group, CLI flag, environment
variable) in :data:`FIELD_DOCS`; ``pounce --help`` and ``pounce config show``
are generated from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib.util
import logging
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, Self

from pounce.config.errors import ConfigError
from pounce.config.values import (
    NONE_WORDS,
    BindSpec,
    parse_bind,
    parse_bool,
    parse_duration,
    parse_forwarded_ip,
    parse_header,
    parse_port,
    parse_rate_limit,
    parse_size,
    parse_str_tuple,
    split_headers,
    split_list,
    validate_header,
    validate_host,
)

__all__ = [
    "FIELD_DOCS",
    "GROUPS",
    "UNSUPPORTED_OPTIONS",
    "FieldDoc",
    "ServerConfig",
    "did_you_mean",
    "unsupported_options",
]

#: Help topics, in the order ``pounce --help`` shows them.
GROUPS: Final = (
    "Application",
    "Binding",
    "HTTP",
    "Limits",
    "Timeouts",
    "Proxy",
    "Logging",
    "Workers",
    "Reload",
    "TLS",
    "WebSocket",
)

#: ``log_level`` names -> :mod:`logging` levels.  ``trace`` sits below DEBUG
#: for protocol-level detail that would drown ordinary debug output.
LOG_LEVELS: Final = MappingProxyType(
    {
        "critical": logging.CRITICAL,
        "error": logging.ERROR,
        "warning": logging.WARNING,
        "info": logging.INFO,
        "debug": logging.DEBUG,
        "trace": 5,
    }
)

LOG_CONFIG_SUFFIXES: Final = frozenset({".json", ".yaml", ".yml", ".ini", ".cfg", ".conf"})

Converter = Callable[[Any], Any]
CliStyle = Literal["value", "switch", "negatable", "append", "positional"]


# --------------------------------------------------------------------------- converters
# Each converter takes the raw value (typed or text) and returns the normalised
# value, or raises ValueError/TypeError with a message saying what is allowed.


def _no_bool(value: object, expected: str) -> None:
    # bool is an int subclass; "port=True" is always a mistake worth reporting.
    if isinstance(value, bool):
        raise ValueError(expected)


def _int(minimum: int = 0, maximum: int | None = None) -> Converter:
    if maximum is None:
        expected = f"expected an integer >= {minimum}"
    else:
        expected = f"expected an integer from {minimum} to {maximum}"

    def convert(value: object) -> int:
        _no_bool(value, expected)
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(expected) from None
        if not isinstance(value, int):
            raise ValueError(expected)
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(expected)
        return value

    return convert


def _size(minimum: int = 0) -> Converter:
    def convert(value: object) -> int:
        if not isinstance(value, str | int):
            raise ValueError("expected a size in bytes such as 1024, 64k, 1m or 1g")
        size = parse_size(value)
        if size < minimum:
            raise ValueError(f"expected a size of at least {minimum} bytes")
        return size

    return convert


def _size_range(minimum: int, maximum: int) -> Converter:
    """A size with an upper bound too (HTTP/2 settings are protocol-bounded integers)."""
    inner = _size(minimum)

    def convert(value: object) -> int:
        size = int(inner(value))
        if size > maximum:
            raise ValueError(f"expected a size from {minimum} to {maximum} bytes")
        return size

    return convert


def _duration(*, allow_zero: bool = False) -> Converter:
    def convert(value: object) -> float:
        if not isinstance(value, str | int | float):
            raise ValueError("expected a duration such as 30, 30s, 250ms, 5m or 1h")
        seconds = parse_duration(value)
        if seconds == 0 and not allow_zero:
            raise ValueError("expected a duration greater than zero, such as 30s or 5m")
        return seconds

    return convert


def _optional(inner: Converter) -> Converter:
    """Allow ``None`` (or the words "none"/"off"/...) to switch the option off."""

    def convert(value: object) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lower() in NONE_WORDS:
            return None
        try:
            return inner(value)
        except ValueError as exc:
            raise ValueError(f"{exc}, or 'off'") from None

    return convert


def _bool(value: object) -> bool:
    if not isinstance(value, str | bool | int):
        raise ValueError("expected a boolean: true or false")
    return parse_bool(value)


def _auto_bool(value: object) -> bool | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        return _bool(value)
    except ValueError:
        raise ValueError("expected true, false or auto") from None


def _string(*, allow_empty: bool = True) -> Converter:
    def convert(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        if not allow_empty and not value:
            raise ValueError("expected a non-empty string")
        return value

    return convert


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string (or leave it unset)")
    return value


def _choice(*choices: str, hints: Mapping[str, str] | None = None) -> Converter:
    allowed = ", ".join(choices)

    def convert(value: object) -> str:
        word = value.strip().lower() if isinstance(value, str) else value
        if word in choices:
            assert isinstance(word, str)
            return word
        if hints and isinstance(word, str) and word in hints:
            raise ValueError(hints[word])
        raise ValueError(f"expected one of: {allowed}")

    return convert


def _str_tuple(item: Callable[[str], str] | None = None) -> Converter:
    def convert(value: object) -> tuple[str, ...]:
        if not isinstance(value, str | list | tuple):
            raise ValueError("expected a comma-separated string or a list of strings")
        items = parse_str_tuple(value)
        return tuple(item(x) for x in items) if item else items

    return convert


def _root_path(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a URL path such as /api, or an empty string")
    if value and not value.startswith("/"):
        raise ValueError("expected a URL path starting with /, such as /api")
    # "/api/" and "/api" mean the same mount point; a trailing slash would make
    # every path the app sees start with "//".
    return value.rstrip("/")


def _media_type(value: str) -> str:
    media = value.strip().lower()
    kind, slash, subtype = media.partition("/")
    if not slash or not kind or not subtype or ";" in media or " " in media:
        raise ValueError(f"expected a media type such as application/x-yaml, got {value!r}")
    return media


def _health_path(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "?" in value or "#" in value:
        raise ValueError("expected a URL path starting with /, such as /healthz (no query)")
    return value


def _metrics_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "?" in value or "#" in value:
        raise ValueError("expected a URL path starting with /, such as /metrics (no query)")
    return value


def _metrics_bind(value: object) -> str | None:
    if value is None:
        return None
    expected = "expected HOST:PORT, such as 127.0.0.1:9100 or [::1]:9100"
    if not isinstance(value, str):
        raise ValueError(expected)
    try:
        spec = parse_bind(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; {expected}") from None
    if spec.kind != "tcp":
        raise ValueError(f"the metrics listener takes a TCP address; {expected}")
    return value.strip()


def _rate_limit(value: object) -> str:
    """Normalised to ``COUNT/UNIT`` so the config shows (and compares) one spelling."""
    if not isinstance(value, str):
        raise ValueError("expected a rate such as 100/s, 600/m or 5000/h")
    count, period = parse_rate_limit(value)
    unit = {1.0: "s", 60.0: "m", 3600.0: "h"}[period]
    return f"{count}/{unit}"


def _exempt_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"expected path prefixes starting with /, such as /static/, not {value!r}")
    return value


def _header_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected an HTTP header name, such as x-request-id")
    # validate_header checks the name is an HTTP token (the value here is a placeholder).
    name, _ = validate_header(value.strip(), "x")
    return name.lower()


def _host(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected an IP address or host name, such as 127.0.0.1 or ::1")
    return validate_host(value.strip())


def _port(value: object) -> int:
    if not isinstance(value, str | int):
        raise ValueError("expected an integer from 0 to 65535")
    return parse_port(value)


def _bind(value: object) -> tuple[str, ...]:
    items = _str_tuple()(value)
    for spec in items:
        parse_bind(spec)  # validate now; derived bind_specs are built later
    return tuple(spec.strip() for spec in items)


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        value = split_headers(value)
    if not isinstance(value, list | tuple):
        raise ValueError("expected NAME:VALUE strings or (name, value) pairs")
    pairs: list[tuple[str, str]] = []
    for item in value:
        if isinstance(item, str):
            pairs.append(parse_header(item))
        elif (
            isinstance(item, list | tuple)
            and len(item) == 2
            and all(isinstance(part, str) for part in item)
        ):
            pairs.append(validate_header(item[0], item[1]))
        else:
            raise ValueError(f"expected NAME:VALUE or a (name, value) pair, got {item!r}")
    return tuple(pairs)


def _static_mounts(value: object) -> tuple[tuple[str, str], ...]:
    """``--static URL_PREFIX=DIRECTORY`` values: (prefix, directory) pairs, prefixes unique.

    Whether each directory exists is checked with the other options (``_check_combinations``).
    """
    expected = "expected URL_PREFIX=DIRECTORY, such as /static=./public"
    if isinstance(value, str):
        value = split_list(value)
    if not isinstance(value, list | tuple):
        raise ValueError(f"{expected} (or a list of them)")
    mounts: list[tuple[str, str]] = []
    for item in value:
        if isinstance(item, str):
            prefix, equals, directory = item.partition("=")
            if not equals:
                raise ValueError(f"{expected}; {item!r} has no '='")
        elif (
            isinstance(item, list | tuple)
            and len(item) == 2
            and all(isinstance(part, str) for part in item)
        ):
            prefix, directory = item
        else:
            raise ValueError(f"{expected}, got {item!r}")
        prefix, directory = prefix.strip(), directory.strip()
        if not prefix.startswith("/") or any(ch in prefix for ch in "?#%\\\0"):
            raise ValueError(
                f"{expected}; the prefix {prefix!r} must be a plain path starting with /"
            )
        if not directory:
            raise ValueError(f"{expected}; {item!r} names no directory")
        # "/static/" and "/static" are the same mount; "/" serves the whole URL space.
        prefix = prefix.rstrip("/") or "/"
        if any(prefix == seen for seen, _ in mounts):
            raise ValueError(
                f"the prefix {prefix!r} is given twice; give each prefix one directory"
            )
        mounts.append((prefix, directory))
    return tuple(mounts)


def _cache_control(value: object) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a Cache-Control value such as 'public, max-age=3600', or off")
    _, checked = validate_header("cache-control", value)
    return checked


def _workers(value: object) -> int:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return 0
    try:
        result: int = _int(0)(value)
    except ValueError:
        raise ValueError("expected a number of workers >= 1, or auto (0) for one per CPU") from None
    return result


def _ssl_enum(kind: type[enum.IntEnum], prefix: str) -> Converter:
    """Accept an ssl constant by number, full name or short name (``required``)."""
    members: dict[str, int] = {}
    for name, number in kind.__members__.items():
        members[name.lower()] = int(number)
        members[name.lower().removeprefix(prefix.lower())] = int(number)
    allowed = ", ".join(f"{n} ({int(v)})" for n, v in kind.__members__.items())

    def convert(value: object) -> int:
        _no_bool(value, f"expected one of {allowed}")
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                value = int(text)
            elif text.lower() in members:
                return members[text.lower()]
        if isinstance(value, int) and value in members.values():
            return int(value)
        raise ValueError(f"expected one of {allowed}")

    return convert


def _log_level(value: object) -> str:
    word = value.strip().lower() if isinstance(value, str) else value
    if word == "warn":
        return "warning"
    result: str = _choice(*LOG_LEVELS)(word)
    return result


# --------------------------------------------------------------------------- field metadata


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """Documentation and parsing metadata of one option.

    ``flag`` is the long command-line flag (``None`` for the positional
    ``APP``); ``style`` says how the CLI exposes it: ``value`` takes an
    argument, ``switch`` is a bare on-flag, ``negatable`` has a ``--no-``
    form, ``append`` may be repeated.  ``env`` is the ``POUNCE_*`` variable.
    """

    name: str
    help: str
    group: str
    flag: str | None
    style: CliStyle
    metavar: str | None
    env: str
    default: Any
    convert: Converter


_META_KEY: Final = "pounce"


def _opt(
    default: Any,
    help: str,
    group: str,
    convert: Converter,
    *,
    style: CliStyle = "value",
    flag: str | None = "",
    metavar: str | None = None,
) -> Any:
    assert group in GROUPS, group
    meta = {"help": help, "group": group, "style": style, "flag": flag, "metavar": metavar}
    return field(default=default, metadata={_META_KEY: meta, "convert": convert})


_CODE_ONLY = "code_only"


def _derived() -> Any:
    return field(init=False, repr=False, compare=False)


_DURATION = "DURATION"
_SIZE = "SIZE"


# --------------------------------------------------------------------------- the config


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """All server settings, validated and normalised on construction.

    Build it with keyword arguments, :meth:`from_mapping` (for dictionaries
    from files or ``**options``) or :func:`pounce.config.load_config` (which
    merges defaults, config file, environment and CLI).  An invalid value
    raises one :class:`ConfigError` naming the option and what is allowed.
    """

    # Application ----------------------------------------------------------------
    app: str | None = _opt(
        None, "the ASGI application as module:attribute", "Application", _opt_str,
        style="positional", flag=None, metavar="APP",
    )
    factory: bool = _opt(
        False, "APP names a factory: call it (without arguments) to get the application",
        "Application", _bool, style="switch",
    )
    app_dir: str = _opt(
        ".", "directory put first on sys.path before importing APP", "Application",
        _string(allow_empty=False), metavar="DIR",
    )
    interface: Literal["auto", "asgi3", "asgi2"] = _opt(
        "auto", "application interface; auto detects ASGI2 double-callables", "Application",
        _choice("auto", "asgi3", "asgi2", hints={
            "wsgi": "Pounce serves ASGI applications only; wrap a WSGI app in an "
                    "ASGI adapter (for example a2wsgi) and use asgi3",
        }),
        metavar="{auto,asgi3,asgi2}",
    )
    env_file: str | None = _opt(
        None, "load environment variables from this dotenv file before reading POUNCE_*",
        "Application", _opt_str, metavar="FILE",
    )
    lifespan: Literal["auto", "on", "off"] = _opt(
        "auto", "ASGI lifespan events: on requires them, auto tolerates apps without them",
        "Application", _choice("auto", "on", "off"), metavar="{auto,on,off}",
    )
    loop: Literal["auto", "asyncio", "uvloop"] = _opt(
        "auto", "event loop implementation", "Application",
        _choice("auto", "asyncio", "uvloop"), metavar="{auto,asyncio,uvloop}",
    )
    reset_contextvars: bool = _opt(
        False, "run every request in a fresh contextvars context", "Application", _bool,
        style="switch",
    )

    # Binding --------------------------------------------------------------------
    host: str = _opt(
        "127.0.0.1", "bind to this address; 0.0.0.0 or :: to listen on all interfaces",
        "Binding", _host, metavar="HOST",
    )
    port: int = _opt(8000, "bind to this TCP port (0 = any free port)", "Binding", _port,
                     metavar="PORT")
    uds: str | None = _opt(None, "bind to this UNIX domain socket path", "Binding", _opt_str,
                           metavar="PATH")
    fd: int | None = _opt(None, "serve on this already-open socket file descriptor", "Binding",
                          _optional(_int(0)), metavar="FD")
    bind: tuple[str, ...] = _opt(
        (), "listen address (repeatable): HOST:PORT, [IPV6]:PORT, :PORT, unix:PATH or fd://N; "
            "replaces --host/--port/--uds/--fd",
        "Binding", _bind, style="append", metavar="ADDRESS",
    )
    backlog: int = _opt(2048, "maximum number of pending connections per socket", "Binding",
                        _int(1), metavar="N")

    # HTTP -----------------------------------------------------------------------
    http: Literal["auto", "fast", "h11", "h2"] = _opt(
        "auto", "protocols: auto = HTTP/1.1 (built-in parser) and HTTP/2 (with the h2 extra); "
        "fast or h11 = HTTP/1.1 only with that parser; h2 = HTTP/2 only; httptools is "
        "accepted as fast",
        "HTTP",
        _choice("auto", "fast", "h11", "h2", hints={
            "httptools": "Pounce's built-in parser replaces httptools; use 'fast'",
        }),
        metavar="{auto,fast,h11,h2}",
    )
    h11_max_incomplete_event_size: int | None = _opt(
        None, "h11 only: maximum size of an incomplete HTTP event (request head)", "HTTP",
        _optional(_size(1)), metavar=_SIZE,
    )
    # HTTP/2 (the h2 extra) ---------------------------------------------------------
    h2_max_concurrent_streams: int = _opt(
        100, "HTTP/2: streams a client may have open at once on one connection", "HTTP",
        _int(1, 2**31 - 1), metavar="N",
    )
    h2_initial_window_size: int = _opt(
        256 * 1024, "HTTP/2: request body a stream may send before the app reads it (its "
        "flow-control window; bounds memory per stream)", "HTTP", _size_range(1, 2**31 - 1),
        metavar=_SIZE,
    )
    h2_max_frame_size: int = _opt(
        16384, "HTTP/2: largest frame payload the server accepts (16k to 16m)", "HTTP",
        _size_range(16384, 2**24 - 1), metavar=_SIZE,
    )
    h2_max_header_list_size: int = _opt(
        64 * 1024, "HTTP/2: largest request header list, counted decoded (HPACK bombs)",
        "HTTP", _size_range(1024, 2**31 - 1), metavar=_SIZE,
    )
    h2_max_requests: int | None = _opt(
        100_000, "HTTP/2: streams one connection may carry before the server asks the client "
        "to open a new one (GOAWAY); off = no cap", "HTTP", _optional(_int(1)), metavar="N",
    )
    allow_bare_lf: bool = _opt(
        False, "accept LF without CR as a line ending in request heads (unsafe behind "
               "proxies that disagree)", "HTTP", _bool, style="switch",
    )
    server_header: bool = _opt(True, "send a Server header", "HTTP", _bool, style="negatable")
    date_header: bool = _opt(True, "send a Date header", "HTTP", _bool, style="negatable")
    server_timing: bool = _opt(
        False, "add a Server-Timing header with the app's time to the response head", "HTTP",
        _bool, style="switch",
    )
    headers: tuple[tuple[str, str], ...] = _opt(
        (), "extra response header NAME:VALUE (repeatable)", "HTTP", _headers,
        style="append", flag="--header", metavar="NAME:VALUE",
    )
    compression: bool = _opt(
        True, "compress text-like responses with zstd or gzip when the client accepts it",
        "HTTP", _bool, style="negatable",
    )
    compression_min_size: int = _opt(
        500, "leave responses smaller than this uncompressed (when their size is known)",
        "HTTP", _size(0), metavar=_SIZE,
    )
    compression_level_gzip: int = _opt(
        6, "gzip level, 1 (fastest) to 9 (smallest)", "HTTP", _int(1, 9), metavar="LEVEL",
    )
    compression_level_zstd: int = _opt(
        3, "zstd level, 1 (fastest) to 19 (smallest)", "HTTP", _int(1, 19), metavar="LEVEL",
    )
    compression_types: tuple[str, ...] = _opt(
        (), "another media type to compress, besides text/*, JSON, XML, JavaScript, SVG and "
        "WebAssembly (repeatable)", "HTTP", _str_tuple(_media_type),
        style="append", flag="--compression-type", metavar="TYPE",
    )
    health_path: str | None = _opt(
        None, "answer liveness probes at this path (200 ok) before the app", "HTTP",
        _health_path, metavar="PATH",
    )
    ready_path: str | None = _opt(
        None, "answer readiness probes at this path: 200 while serving, 503 while draining "
        "or shedding load", "HTTP", _health_path, metavar="PATH",
    )
    request_id: bool = _opt(
        False, "give every request an id (scope extension pounce.request_id, response "
        "header); a trusted proxy's id is kept", "HTTP", _bool, style="switch",
    )
    request_id_header: str = _opt(
        "x-request-id", "header carrying the request id (--request-id)", "HTTP",
        _header_name, metavar="NAME",
    )
    # Metrics (docs/metrics.md).
    metrics: bool = _opt(
        False, "serve Prometheus metrics covering every worker at --metrics-path", "HTTP",
        _bool, style="switch",
    )
    metrics_path: str = _opt(
        "/metrics", "path of the metrics endpoint (--metrics)", "HTTP", _metrics_path,
        metavar="PATH",
    )
    metrics_bind: str | None = _opt(
        None, "serve the metrics on this address only, from the supervisor's process "
        "(the main port then passes the path to the app)", "HTTP", _metrics_bind,
        metavar="HOST:PORT",
    )

    # Static files (features/static.py) ----------------------------------------------
    static: tuple[tuple[str, str], ...] = _opt(
        (), "serve the files of DIRECTORY under URL_PREFIX (repeatable); a missing file goes "
        "to the app", "HTTP", _static_mounts, style="append", metavar="URL_PREFIX=DIRECTORY",
    )
    static_cache_control: str | None = _opt(
        "no-cache", "Cache-Control of static files (--static), or off", "HTTP", _cache_control,
        metavar="VALUE",
    )

    # Limits ---------------------------------------------------------------------
    limit_request_line: int = _opt(
        8190, "maximum size of the request line in bytes (414 beyond)", "Limits", _size(1),
        metavar=_SIZE,
    )
    limit_request_header_size: int = _opt(
        65536, "maximum total size of the request headers (431 beyond)", "Limits", _size(1),
        metavar=_SIZE,
    )
    limit_request_fields: int = _opt(
        100, "maximum number of request header fields (431 beyond)", "Limits", _int(1),
        metavar="N",
    )
    limit_request_body: int | None = _opt(
        None, "maximum request body size (413 beyond); off = unlimited", "Limits",
        _optional(_size(0)), metavar=_SIZE,
    )
    limit_concurrency: int | None = _opt(
        None, "maximum concurrent connections/tasks before answering 503", "Limits",
        _optional(_int(1)), metavar="N",
    )
    # Rate limiting (docs/rate-limiting.md) ---------------------------------------
    rate_limit: str | None = _opt(
        None, "per-client request rate, N/s, N/m or N/h: 429 beyond it (off by default)",
        "Limits", _optional(_rate_limit), metavar="N/UNIT",
    )
    rate_limit_burst: int | None = _opt(
        None, "requests a client may send at once before --rate-limit's pace applies "
        "(default: the limit's count)", "Limits", _optional(_int(1)), metavar="N",
    )
    rate_limit_ipv6_prefix: int = _opt(
        64, "IPv6 clients are limited per network of this prefix length", "Limits",
        _int(1, 128), metavar="BITS",
    )
    rate_limit_max_clients: int = _opt(
        65536, "clients the rate limiter remembers (least recently seen forgotten first; "
        "32 bytes each)", "Limits", _int(64, 1 << 26), metavar="N",
    )
    rate_limit_exempt: tuple[str, ...] = _opt(
        (), "path prefix never rate limited (repeatable)", "Limits", _str_tuple(_exempt_path),
        style="append", metavar="PATH",
    )

    # Request queue (docs/load-shedding.md) ----------------------------------------
    max_concurrency: int | None = _opt(
        None, "requests inside the app at once, server-wide; more wait in a FIFO queue "
        "(off = no queue)", "Limits", _optional(_int(1)), metavar="N",
    )
    max_queue: int = _opt(
        100, "requests that may wait for --max-concurrency; more are shed with 503",
        "Limits", _int(0), metavar="N",
    )
    queue_timeout: float = _opt(
        10.0, "longest wait in the request queue before a 503", "Limits", _duration(),
        metavar=_DURATION,
    )

    # Timeouts -------------------------------------------------------------------
    timeout_keep_alive: float = _opt(
        5.0, "close idle keep-alive connections after this long (0 = do not keep alive)",
        "Timeouts", _duration(allow_zero=True), metavar=_DURATION,
    )
    timeout_request_header: float = _opt(
        10.0, "time allowed to receive a complete request head (408 beyond)", "Timeouts",
        _duration(), metavar=_DURATION,
    )
    timeout_request_body: float = _opt(
        30.0, "time a request body may keep the app waiting (408 beyond); body bytes earn "
        "it back at --min-request-body-rate", "Timeouts", _duration(),
        metavar=_DURATION,
    )
    min_request_body_rate: int | None = _opt(
        500, "bytes per second a request body must keep up to earn more waiting time "
        "(off = every chunk restarts the body timeout)", "Timeouts",
        _optional(_size(1)), metavar=_SIZE,
    )
    timeout_write: float = _opt(
        30.0, "time allowed for a client to accept buffered response data", "Timeouts",
        _duration(), metavar=_DURATION,
    )
    timeout_graceful_shutdown: float = _opt(
        30.0, "on shutdown, wait this long for in-flight requests (0 = do not wait)",
        "Timeouts", _duration(allow_zero=True), metavar=_DURATION,
    )
    timeout_startup: float = _opt(
        60.0, "time allowed for start-up, including the lifespan startup event", "Timeouts",
        _duration(), metavar=_DURATION,
    )
    timeout_worker_healthcheck: float = _opt(
        30.0, "restart a worker that does not answer the supervisor for this long",
        "Timeouts", _duration(), metavar=_DURATION,
    )

    # Proxy ----------------------------------------------------------------------
    proxy_headers: bool = _opt(
        True, "trust X-Forwarded-For/-Proto/-Port and Forwarded from --forwarded-allow-ips",
        "Proxy", _bool, style="negatable",
    )
    forwarded_allow_ips: tuple[str, ...] = _opt(
        ("127.0.0.1",),
        "comma-separated proxy IPs/networks to trust, unix (Unix-socket peers), or *",
        "Proxy", _str_tuple(parse_forwarded_ip), metavar="IPS",
    )
    root_path: str = _opt(
        "", "ASGI root_path, for applications mounted below a URL prefix", "Proxy",
        _root_path, metavar="PATH",
    )

    # Logging --------------------------------------------------------------------
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = _opt(
        "info", "minimum level of server log messages", "Logging", _log_level,
        metavar="{critical,error,warning,info,debug,trace}",
    )
    log_config: str | None = _opt(
        None, "logging configuration file (.json, .yaml/.yml, or .ini/.cfg/.conf)", "Logging",
        _opt_str, metavar="FILE",
    )
    access_log: bool = _opt(True, "log every request", "Logging", _bool, style="negatable")
    access_log_format: str | None = _opt(
        None, "access log line format", "Logging", _opt_str, metavar="FORMAT",
    )
    access_log_health: bool = _opt(
        False, "also log requests to --health-path and --ready-path", "Logging", _bool,
        style="switch",
    )
    log_format: Literal["text", "json"] = _opt(
        "text", "log output format", "Logging", _choice("text", "json"), metavar="{text,json}",
    )
    use_colors: bool | None = _opt(
        None, "colour log output (default: only when writing to a terminal)", "Logging",
        _auto_bool, style="negatable",
    )

    # Workers --------------------------------------------------------------------
    workers: int = _opt(
        1, "number of workers; auto (or 0) = one per available CPU", "Workers", _workers,
        metavar="N|auto",
    )
    worker_type: Literal["auto", "thread", "process"] = _opt(
        "auto", "run workers as threads (free-threaded builds) or processes", "Workers",
        _choice("auto", "thread", "process"), metavar="{auto,thread,process}",
    )
    accept: Literal["auto", "distributor", "reuseport"] = _opt(
        "auto", "how connections reach workers", "Workers",
        _choice("auto", "distributor", "reuseport"), metavar="{auto,distributor,reuseport}",
    )
    pid_file: str | None = _opt(
        None, "write the server's process id to this file", "Workers", _opt_str,
        metavar="FILE",
    )

    limit_max_requests: int | None = _opt(
        None, "restart a worker after it served this many requests", "Workers",
        _optional(_int(1)), metavar="N",
    )
    limit_max_requests_jitter: int = _opt(
        0, "add up to this many requests, at random, to --limit-max-requests per worker",
        "Workers", _int(0), metavar="N",
    )
    limit_max_rss: int | None = _opt(
        None, "restart a worker whose resident memory exceeds this size", "Workers",
        _optional(_size(1)), metavar=_SIZE,
    )

    gc_freeze: bool = _opt(
        True, "after start-up, keep the app's long-lived objects out of full garbage "
              "collections (gc.freeze): shorter GC pauses, lower tail latency", "Workers",
        _bool, style="negatable",
    )

    # Reload ---------------------------------------------------------------------
    reload: bool = _opt(False, "restart when source files change (development only)", "Reload",
                        _bool, style="switch")
    reload_dirs: tuple[str, ...] = _opt(
        (), "directory to watch (repeatable; default: the current directory)", "Reload",
        _str_tuple(), style="append", flag="--reload-dir", metavar="DIR",
    )
    reload_includes: tuple[str, ...] = _opt(
        (), "glob of files to watch (repeatable; default: *.py)", "Reload", _str_tuple(),
        style="append", flag="--reload-include", metavar="GLOB",
    )
    reload_excludes: tuple[str, ...] = _opt(
        (), "glob of files to ignore (repeatable)", "Reload", _str_tuple(),
        style="append", flag="--reload-exclude", metavar="GLOB",
    )
    reload_delay: float = _opt(
        0.25, "wait this long for more changes before restarting", "Reload",
        _duration(allow_zero=True), metavar=_DURATION,
    )

    # TLS ------------------------------------------------------------------------
    ssl_keyfile: str | None = _opt(None, "TLS private key file", "TLS", _opt_str,
                                   metavar="FILE")
    ssl_certfile: str | None = _opt(None, "TLS certificate (chain) file; enables TLS", "TLS",
                                    _opt_str, metavar="FILE")
    ssl_keyfile_password: str | None = _opt(
        None, "password of an encrypted private key", "TLS", _opt_str, metavar="PASSWORD",
    )
    ssl_version: int = _opt(
        int(ssl.PROTOCOL_TLS_SERVER), "ssl module protocol constant (name or number)", "TLS",
        _ssl_enum(type(ssl.PROTOCOL_TLS_SERVER), "PROTOCOL_"), metavar="VERSION",
    )
    ssl_cert_reqs: int = _opt(
        int(ssl.CERT_NONE), "client certificates: CERT_NONE (0), CERT_OPTIONAL (1), "
                            "CERT_REQUIRED (2)", "TLS",
        _ssl_enum(ssl.VerifyMode, "CERT_"), metavar="MODE",
    )
    ssl_ca_certs: str | None = _opt(None, "CA certificates to verify clients against", "TLS",
                                    _opt_str, metavar="FILE")
    ssl_ciphers: str | None = _opt(
        None, "OpenSSL cipher list (default: the ssl module's secure selection)", "TLS",
        _optional(_string(allow_empty=False)), metavar="CIPHERS",
    )
    timeout_ssl_handshake: float = _opt(
        10.0, "close a connection whose TLS handshake takes longer", "TLS", _duration(),
        metavar=_DURATION,
    )

    # WebSocket ------------------------------------------------------------------
    ws: Literal["auto", "none", "websockets", "websockets-sansio", "wsproto"] = _opt(
        "auto", "WebSocket support: auto/websockets (on when the websockets package is "
        "installed) or none (upgrades served as plain HTTP); websockets-sansio and wsproto "
        "are accepted and use the same engine", "WebSocket",
        _choice("auto", "none", "websockets", "websockets-sansio", "wsproto"),
        metavar="{auto,none,websockets}",
    )
    ws_max_size: int = _opt(16777216, "maximum WebSocket message size", "WebSocket", _size(1),
                            metavar=_SIZE)
    ws_max_queue: int = _opt(32, "maximum queued incoming WebSocket messages", "WebSocket",
                             _int(1), metavar="N")
    ws_ping_interval: float | None = _opt(
        20.0, "send a WebSocket ping this often (off to disable)", "WebSocket",
        _optional(_duration()), metavar=_DURATION,
    )
    ws_ping_timeout: float | None = _opt(
        20.0, "close a WebSocket whose pong is this late (off to disable)", "WebSocket",
        _optional(_duration()), metavar=_DURATION,
    )
    ws_per_message_deflate: bool = _opt(
        True, "offer permessage-deflate compression (true/false)", "WebSocket", _bool,
        metavar="BOOL",
    )

    # Code only: no flag, environment variable or file key ------------------------
    #: Lifecycle event subscribers (see :mod:`pounce.events`), subscribed to every kind.
    #: Callables come only from Python, so this is the one field a command line, the
    #: environment or a TOML file cannot set. Not pickled: a spawned worker process gets none
    #: (the parent's subscribers receive its events anyway).
    event_handlers: tuple[Callable[[Any], None], ...] = field(
        default=(), repr=False, compare=False, metadata={_CODE_ONLY: True}
    )

    # Derived values (computed once in __post_init__) -----------------------------
    bind_specs: tuple[BindSpec, ...] = _derived()
    encoded_headers: tuple[tuple[bytes, bytes], ...] = _derived()
    effective_workers: int = _derived()
    log_level_number: int = _derived()

    def __post_init__(self) -> None:
        handlers = self.event_handlers
        if not isinstance(handlers, tuple):
            if isinstance(handlers, str | bytes) or not isinstance(handlers, Iterable):
                raise ConfigError(
                    "expected a list of callables", option="event_handlers", value=handlers
                )
            handlers = tuple(handlers)
            object.__setattr__(self, "event_handlers", handlers)
        for handler in handlers:
            if not callable(handler):
                raise ConfigError(
                    f"an event handler must be callable, not {handler!r}",
                    option="event_handlers",
                )
        for name, doc in FIELD_DOCS.items():
            raw = getattr(self, name)
            try:
                value = doc.convert(raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(str(exc), option=name, value=raw) from None
            if value is not raw:
                object.__setattr__(self, name, value)
        self._check_combinations()
        object.__setattr__(self, "bind_specs", self._compute_bind_specs())
        object.__setattr__(
            self,
            "encoded_headers",
            tuple((n.lower().encode("ascii"), v.encode("latin-1")) for n, v in self.headers),
        )
        object.__setattr__(self, "effective_workers", self.workers or _available_cpus())
        object.__setattr__(self, "log_level_number", LOG_LEVELS[self.log_level])

    # -- validation across fields ----------------------------------------------------

    def _check_combinations(self) -> None:
        if self.health_path is not None and self.health_path == self.ready_path:
            raise ConfigError(
                "health_path and ready_path are the same; liveness and readiness answer "
                "differently while draining -- give them different paths, or set only one",
                option="ready_path",
            )
        if not self.metrics:
            for name in ("metrics_path", "metrics_bind"):
                if getattr(self, name) != _DEFAULTS[name]:
                    raise ConfigError(
                        "has no effect without metrics; add --metrics or remove it",
                        option=name,
                        value=getattr(self, name),
                    )
        elif self.metrics_bind is None and self.metrics_path in (self.health_path, self.ready_path):
            raise ConfigError(
                "metrics_path is also a health probe path; give the metrics another path",
                option="metrics_path",
                value=self.metrics_path,
            )
        if self.uds is not None and self.fd is not None:
            raise ConfigError(
                "uds and fd both given; a server listens on one of them -- drop one, "
                "or use --bind unix:PATH --bind fd://N for both",
                option="uds",
            )
        if self.bind:
            if self.uds is not None or self.fd is not None:
                raise ConfigError(
                    "bind replaces uds and fd; list every address in --bind "
                    "(unix:PATH, fd://N) and drop --uds/--fd",
                    option="bind",
                )
            if self.host != _DEFAULTS["host"] or self.port != _DEFAULTS["port"]:
                raise ConfigError(
                    "bind replaces host and port; write the address as --bind HOST:PORT "
                    "and drop --host/--port",
                    option="bind",
                )
        if self.ssl_certfile is None:
            for name in ("ssl_keyfile", "ssl_keyfile_password", "ssl_ca_certs"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        "has no effect without ssl_certfile; add --ssl-certfile "
                        "(the certificate enables TLS) or remove this option",
                        option=name,
                    )
            for name in ("ssl_version", "ssl_cert_reqs", "ssl_ciphers", "timeout_ssl_handshake"):
                if getattr(self, name) != _DEFAULTS[name]:
                    raise ConfigError(
                        "has no effect without ssl_certfile; add --ssl-certfile or remove it",
                        option=name,
                        value=getattr(self, name),
                    )
        elif self.ssl_cert_reqs != ssl.CERT_NONE and self.ssl_ca_certs is None:
            raise ConfigError(
                "client certificates cannot be verified without CA certificates; add "
                "--ssl-ca-certs FILE (the CAs that issue client certificates)",
                option="ssl_cert_reqs",
                value=ssl.VerifyMode(self.ssl_cert_reqs).name,
            )
        if self.limit_max_requests_jitter and self.limit_max_requests is None:
            raise ConfigError(
                "has no effect without limit_max_requests; set --limit-max-requests too",
                option="limit_max_requests_jitter",
                value=self.limit_max_requests_jitter,
            )
        if self.log_config is not None:
            path = Path(self.log_config)
            if path.suffix.lower() not in LOG_CONFIG_SUFFIXES:
                raise ConfigError(
                    "unsupported file type; use a .json, .yaml/.yml or .ini/.cfg/.conf file",
                    option="log_config",
                    value=self.log_config,
                )
            if not path.is_file():
                raise ConfigError(
                    f"file not found (looked in {path.resolve().parent}); check the path",
                    option="log_config",
                    value=self.log_config,
                )
        for prefix, directory in self.static:
            if not os.path.isdir(directory):
                raise ConfigError(
                    f"directory {directory!r} for {prefix} not found (looked in "
                    f"{Path(directory).resolve()}); create it or fix the path",
                    option="static",
                    value=f"{prefix}={directory}",
                )
        if self.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ConfigError(
                "uvloop is not installed; run 'pip install uvloop' or use --loop auto",
                option="loop",
                value="uvloop",
            )

    def _compute_bind_specs(self) -> tuple[BindSpec, ...]:
        if self.bind:
            return tuple(parse_bind(spec) for spec in self.bind)
        if self.uds is not None:
            return (BindSpec(kind="unix", path=self.uds),)
        if self.fd is not None:
            return (BindSpec(kind="fd", fd=self.fd),)
        return (BindSpec(kind="tcp", host=self.host, port=self.port),)

    # -- construction helpers --------------------------------------------------------

    @property
    def ssl_enabled(self) -> bool:
        """Whether TLS is configured (a certificate file turns it on)."""
        return self.ssl_certfile is not None

    @classmethod
    def from_mapping(cls, options: Mapping[str, object]) -> Self:
        """Build a config from a mapping such as a parsed TOML table or ``**options``.

        Keys may use ``-`` or ``_``.  Unknown keys raise :class:`ConfigError`
        with the closest known option names, because a misspelt option that
        is silently ignored is the hardest configuration bug to find.
        """
        kwargs: dict[str, object] = {}
        for key, value in options.items():
            name = check_option_name(key)
            kwargs[name] = value
        return cls(**kwargs)  # type: ignore[arg-type]

    def __getstate__(self) -> dict[str, Any]:
        # Handlers are often closures or bound methods, which do not pickle.
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        state["event_handlers"] = ()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: object) -> Self:
        """Return a new, re-validated config with ``changes`` applied."""
        for key in changes:
            name = check_option_name(key)
            if name != key:
                raise ConfigError(f"unknown option {key!r}; did you mean {name!r}?")
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container pinning)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest candidates, or ``""``."""
    matches = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"


def check_option_name(key: str) -> str:
    """Normalise ``key`` (``-`` -> ``_``) and check that it names an option."""
    name = key.strip().replace("-", "_").lower()
    if name in FIELD_DOCS or name in CODE_ONLY_OPTIONS:
        return name
    if name in _DERIVED:
        raise ConfigError(
            f"{key!r} is computed from other options and cannot be set; "
            "set the options it is derived from instead"
        )
    hint = did_you_mean(name, FIELD_DOCS) or "; run 'pounce config show' to list every option"
    raise ConfigError(f"unknown option {key!r}{hint}")


def _build_docs() -> dict[str, FieldDoc]:
    docs: dict[str, FieldDoc] = {}
    for f in dataclasses.fields(ServerConfig):
        if not f.init or f.metadata.get(_CODE_ONLY):
            continue
        meta = f.metadata[_META_KEY]
        flag = meta["flag"]
        if flag == "":
            flag = "--" + f.name.replace("_", "-")
        docs[f.name] = FieldDoc(
            name=f.name,
            help=meta["help"],
            group=meta["group"],
            flag=flag,
            style=meta["style"],
            metavar=meta["metavar"],
            env="POUNCE_" + f.name.upper(),
            default=f.default,
            convert=f.metadata["convert"],
        )
    return docs


#: Per-option documentation, in declaration order (which groups related options).
FIELD_DOCS: Final[Mapping[str, FieldDoc]] = MappingProxyType(_build_docs())
_DEFAULTS: Final = MappingProxyType({name: doc.default for name, doc in FIELD_DOCS.items()})
_DERIVED: Final = frozenset(f.name for f in dataclasses.fields(ServerConfig) if not f.init)
#: Fields set from Python only (no flag, environment variable or file key).
CODE_ONLY_OPTIONS: Final = frozenset(
    f.name for f in dataclasses.fields(ServerConfig) if f.metadata.get(_CODE_ONLY)
)


# --------------------------------------------------------------------------- not yet supported

#: Options whose machinery is not built yet.  Using one makes the CLI exit with
#: "not yet supported: --flag" instead of silently ignoring it.  Remove a name
#: here when its feature lands.
UNSUPPORTED_OPTIONS: frozenset[str] = frozenset()

# When an option counts as "used".  Options not listed here count as used when
# their value differs from the default.
_USED_WHEN: Final[Mapping[str, Callable[[ServerConfig], bool]]] = MappingProxyType({})


RELOAD_ONLY_OPTIONS: Final = ("reload_dirs", "reload_includes", "reload_excludes", "reload_delay")


def ineffective_reload_options(config: ServerConfig) -> list[str]:
    """Flags of the ``--reload-*`` options ``config`` sets although ``reload`` is off.

    Not an error: command lines copied from Uvicorn (which only warns) must keep working, so
    the server warns and serves.
    """
    if config.reload:
        return []
    return [
        FIELD_DOCS[name].flag or name
        for name in RELOAD_ONLY_OPTIONS
        if getattr(config, name) != FIELD_DOCS[name].default
    ]


def unsupported_options(config: ServerConfig) -> list[str]:
    """Return the flags (``--reload`` ...) of not-yet-supported options ``config`` uses."""
    used: list[str] = []
    for name, doc in FIELD_DOCS.items():
        if name not in UNSUPPORTED_OPTIONS:
            continue
        predicate = _USED_WHEN.get(name)
        is_used = predicate(config) if predicate else getattr(config, name) != doc.default
        if is_used:
            used.append(doc.flag or name)
    return used
