"""Parsers for the textual forms of configuration values.

Values reach Pounce as text from three places -- command-line flags,
environment variables and (sometimes) TOML strings -- so every option type has
exactly one parser here and all three places share it.  That is what makes
``--timeout-keep-alive 5m``, ``POUNCE_TIMEOUT_KEEP_ALIVE=5m`` and
``timeout_keep_alive = "5m"`` mean the same thing.

Parsers raise plain :class:`ValueError` whose message describes what *is*
accepted ("expected a duration such as 30, 30s, 250ms, 5m or 1h").  They do
not know which option they are parsing; :mod:`pounce.config.model` wraps the
error in a :class:`~pounce.config.errors.ConfigError` naming the option and the
source loader adds where the value came from.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "NONE_WORDS",
    "BindSpec",
    "parse_bind",
    "parse_bool",
    "parse_duration",
    "parse_forwarded_ip",
    "parse_header",
    "parse_port",
    "parse_rate_limit",
    "parse_size",
    "parse_str_tuple",
    "split_headers",
    "split_list",
    "validate_header",
    "validate_host",
]

#: Words accepted wherever an option can be switched off (its value is ``None``).
NONE_WORDS: Final = frozenset({"none", "off", "null", "unlimited", "disabled"})

_TRUE: Final = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE: Final = frozenset({"0", "false", "no", "off", "n", "f"})

_DURATION_RE: Final = re.compile(
    r"^\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s|m|h)?\s*$", re.IGNORECASE
)
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_RATE_LIMIT_RE: Final = re.compile(r"^\s*(?P<count>\d+)\s*/\s*(?P<unit>[smh])\s*$", re.IGNORECASE)
#: ``--rate-limit`` period units, in seconds.
RATE_LIMIT_PERIODS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0}

_SIZE_RE: Final = re.compile(
    r"^\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[kmg])?(?:i?b)?\s*$", re.IGNORECASE
)
_SIZE_UNITS: Final = {"k": 1024, "m": 1024**2, "g": 1024**3, None: 1}

# RFC 9110 token characters, the only ones allowed in a header field name.
_TOKEN_RE: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOSTNAME_RE: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)
# Splits "A: 1, B: 2" between pairs but not inside a value such as "max-age=1, public".
_HEADER_SPLIT_RE: Final = re.compile(r",\s*(?=[!#$%&'*+\-.^_`|~0-9A-Za-z]+\s*:)")

_DURATION_HINT: Final = "expected a duration such as 30, 30s, 250ms, 5m or 1h"
_SIZE_HINT: Final = "expected a size in bytes such as 1024, 64k, 1m or 1g (k = 1024)"


def parse_duration(value: str | float) -> float:
    """Parse a non-negative duration into seconds.

    Plain numbers are seconds; ``ms``, ``s``, ``m`` and ``h`` suffixes are
    accepted because timeouts are easier to read as ``5m`` than ``300``.
    """
    if isinstance(value, bool):
        raise ValueError(_DURATION_HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            raise ValueError(_DURATION_HINT)
        unit = match["unit"].lower() if match["unit"] else None
        seconds = float(match["num"]) * _DURATION_UNITS[unit]
    else:
        raise ValueError(_DURATION_HINT)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{_DURATION_HINT}; it must be finite and not negative")
    return seconds


def parse_size(value: str | int) -> int:
    """Parse a non-negative size into bytes; ``k``/``m``/``g`` are powers of 1024."""
    if isinstance(value, bool):
        raise ValueError(_SIZE_HINT)
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match is None:
            raise ValueError(_SIZE_HINT)
        unit = match["unit"].lower() if match["unit"] else None
        number = float(match["num"]) if "." in match["num"] else int(match["num"])
        scaled = number * _SIZE_UNITS[unit]
        if scaled != int(scaled):
            raise ValueError(f"{_SIZE_HINT}; it must come to a whole number of bytes")
        size = int(scaled)
    else:
        raise ValueError(_SIZE_HINT)
    if size < 0:
        raise ValueError(f"{_SIZE_HINT}; it must not be negative")
    return size


def parse_bool(value: str | int) -> bool:
    """Parse the usual spellings of a boolean (``1/true/yes/on``, ``0/false/no/off``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError("expected a boolean: 1, true, yes or on; 0, false, no or off")


def split_list(value: str) -> list[str]:
    """Split a comma-separated list, dropping blanks (``"a, b,"`` -> ``["a", "b"]``)."""
    return [item.strip() for item in value.split(",") if item.strip()]


def split_headers(value: str) -> list[str]:
    """Split ``"A: 1, B: x, y"`` into ``["A: 1", "B: x, y"]``.

    Header values may contain commas, so a comma only separates two headers
    when what follows it looks like ``NAME:``.
    """
    return [item.strip() for item in _HEADER_SPLIT_RE.split(value) if item.strip()]


def validate_header(name: str, value: str) -> tuple[str, str]:
    """Check a header that Pounce adds to every response.

    The name must be an HTTP token and the value must not contain CR, LF or
    NUL: otherwise a configuration value could split the response (or break
    it in a way the client reports far away from the cause).  The value must
    also be encodable as Latin-1, the encoding HTTP/1.1 puts on the wire.
    """
    if not _TOKEN_RE.match(name):
        raise ValueError(
            f"header name {name!r} is not a valid HTTP token; use letters, digits and - only"
        )
    value = value.strip(" \t")
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"the value of header {name!r} must not contain CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            f"the value of header {name!r} must be Latin-1 text; percent-encode other characters"
        ) from None
    return name, value


def parse_header(text: str) -> tuple[str, str]:
    """Parse ``NAME:VALUE`` (the form of ``--header``) into a validated pair."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError("expected NAME:VALUE, for example 'X-Frame-Options: DENY'")
    return validate_header(name.strip(), value)


def parse_forwarded_ip(item: str) -> str:
    """Validate one trusted proxy entry: ``*``, ``unix``, an IP address or a CIDR network.

    ``unix`` trusts peers connected through a Unix socket, which have no
    address to list (the proxy-headers feature understands the same words).
    """
    entry = item.strip()
    if entry == "*":
        return entry
    if entry.lower() == "unix":
        return "unix"
    try:
        if "/" in entry:
            ipaddress.ip_network(entry, strict=False)
        else:
            ipaddress.ip_address(entry)
    except ValueError:
        raise ValueError(
            f"{entry!r} is not an IP address or network; "
            "use addresses like 10.0.0.1, networks like 10.0.0.0/8, unix for Unix-socket "
            "peers, or * to trust everyone"
        ) from None
    return entry


@dataclass(frozen=True, slots=True, kw_only=True)
class BindSpec:
    """One address to listen on, resolved from ``--bind`` or ``--host/--port/--uds/--fd``.

    ``kind`` says which of the other fields is meaningful: ``host`` and
    ``port`` for ``"tcp"``, ``path`` for ``"unix"``, ``fd`` for ``"fd"``.
    """

    kind: Literal["tcp", "unix", "fd"]
    host: str | None = None
    port: int | None = None
    path: str | None = None
    fd: int | None = None

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"


def validate_host(host: str) -> str:
    """Return ``host`` (brackets removed) if it is an IP address or a host name."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if ":" in bare or not _HOSTNAME_RE.match(bare):
            raise ValueError(
                "not an IP address or a valid host name; "
                "use e.g. 127.0.0.1, 0.0.0.0, ::1 or localhost"
            ) from None
    return bare


def parse_port(value: str | int) -> int:
    """Parse a TCP port number; 0 asks the operating system for a free port."""
    if isinstance(value, bool):
        raise ValueError("expected an integer from 0 to 65535")
    try:
        port = int(value.strip()) if isinstance(value, str) else int(value)
    except ValueError:
        raise ValueError("expected an integer from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise ValueError("expected an integer from 0 to 65535 (0 picks a free port)")
    return port


def parse_bind(spec: str) -> BindSpec:
    """Parse one ``--bind`` value.

    Accepted forms: ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` (all IPv4
    interfaces, like ``0.0.0.0:PORT``), ``unix:PATH`` and ``fd://N``.
    """
    text = spec.strip()
    forms = "use HOST:PORT, [IPV6]:PORT, :PORT, unix:PATH or fd://N"
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ValueError(f"unix: needs a socket path; {forms}")
        return BindSpec(kind="unix", path=path)
    if text.startswith("fd://"):
        raw = text[len("fd://") :]
        if not raw.isdigit():
            raise ValueError(f"fd:// needs a file descriptor number; {forms}")
        return BindSpec(kind="fd", fd=int(raw))
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"an IPv6 address needs a port after the brackets; {forms}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address; {forms}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"missing port; {forms}")
        if ":" in host:
            raise ValueError(f"put IPv6 addresses in brackets, e.g. [::1]:8000; {forms}")
        host = validate_host(host) if host else "0.0.0.0"
    return BindSpec(kind="tcp", host=host, port=parse_port(port_text))


def parse_str_tuple(value: str | Iterable[object]) -> tuple[str, ...]:
    """Accept a comma-separated string or an iterable of strings."""
    if isinstance(value, str):
        return tuple(split_list(value))
    items: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"expected a list of strings, got an item {item!r}")
        items.append(item)
    return tuple(items)


def parse_rate_limit(value: str) -> tuple[int, float]:
    """``"100/s"``, ``"100/m"`` or ``"100/h"`` -> ``(count, period in seconds)``.

    Only these three units: a rate such as ``5/10s`` reads naturally but means something
    different to every tool that accepts it, so it is refused rather than guessed at.
    """
    match = _RATE_LIMIT_RE.match(value)
    count = int(match["count"]) if match else 0
    if match is None or count < 1:
        raise ValueError(
            "expected a rate such as 100/s, 600/m or 5000/h (a whole number of requests "
            "per second, minute or hour, at least 1)"
        )
    return count, RATE_LIMIT_PERIODS[match["unit"].lower()]
