"""HTTP/2 (RFC 9113) and WebSocket over HTTP/2 (RFC 8441), on the ``h2`` package.

``engine.py`` is the protocol engine (one per connection, streams on the shared pipeline);
``handoff.py`` turns a cleartext connection into HTTP/2 (prior knowledge, ``Upgrade: h2c``);
``websocket.py`` carries a WebSocket on one stream. This module decides, once per worker and
without importing ``h2``, whether HTTP/2 is on and says so in log lines and ``pounce check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pounce.errors import StartupError
from pounce.transport.tls import http2_installed

if TYPE_CHECKING:
    from pounce.config import ServerConfig

__all__ = [
    "HTTP2Options",
    "check_available",
    "describe_protocols",
    "how_to_enable",
    "http1_enabled",
    "http2_enabled",
]


def http2_enabled(config: ServerConfig) -> bool:
    """HTTP/2 is served: ``--http auto`` with the extra installed, or ``--http h2``."""
    return config.http in ("auto", "h2") and http2_installed()


def http1_enabled(config: ServerConfig) -> bool:
    return config.http != "h2"


def how_to_enable(config: ServerConfig) -> str:
    """What to do to turn HTTP/2 on, for log lines saying it is off."""
    if config.http in ("fast", "h11"):
        return f"use --http auto instead of --http {config.http}"
    return "pip install 'pounce[h2]'"


def check_available(config: ServerConfig) -> None:
    """``--http h2`` without the extra cannot serve anything: say so before start-up."""
    if config.http == "h2" and not http2_installed():
        raise StartupError("--http h2 needs the h2 package: pip install 'pounce[h2]'")


def describe_protocols(config: ServerConfig) -> str:
    """One line for the start-up log and ``pounce check``: which protocols are served."""
    if config.http == "h2":
        return "protocols: HTTP/2 only (--http h2; TLS by ALPN, cleartext by prior knowledge)"
    parser = "h11" if config.http == "h11" else "built-in parser"
    if http2_enabled(config):
        return (
            f"protocols: HTTP/1.1 ({parser}) and HTTP/2 (h2 {_h2_version()}; TLS by ALPN, "
            "cleartext h2c by prior knowledge or Upgrade)"
        )
    return f"protocols: HTTP/1.1 ({parser}); HTTP/2 off ({how_to_enable(config)})"


def _h2_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("h2")
    except PackageNotFoundError:
        return "?"


@dataclass(frozen=True, slots=True)
class HTTP2Options:
    """Per-worker HTTP/2 settings, from ``--h2-*`` and the timeouts."""

    max_concurrent_streams: int
    initial_window_size: int
    max_frame_size: int
    max_header_list_size: int
    max_requests: int | None
    keep_alive: float
    #: How long a new connection may take to open its first stream (--timeout-request-header,
    #: as an HTTP/1.1 connection's first request head): keep-alive is for connections that
    #: were already used, and with --timeout-keep-alive 0 it would close a new one before a
    #: client that sends its preface and its first HEADERS in two packets got to the second.
    first_request: float
    write_timeout: float
    body_timeout: float
    max_body: int | None
    max_target: int
    max_fields: int

    @classmethod
    def from_config(cls, config: ServerConfig) -> HTTP2Options:
        return cls(
            max_concurrent_streams=config.h2_max_concurrent_streams,
            initial_window_size=config.h2_initial_window_size,
            max_frame_size=config.h2_max_frame_size,
            max_header_list_size=config.h2_max_header_list_size,
            max_requests=config.h2_max_requests,
            keep_alive=config.timeout_keep_alive,
            first_request=config.timeout_request_header,
            write_timeout=config.timeout_write,
            body_timeout=config.timeout_request_body,
            max_body=config.limit_request_body,
            max_target=config.limit_request_line,
            max_fields=config.limit_request_fields,
        )
