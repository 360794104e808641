"""WebSocket (RFC 6455, permessage-deflate RFC 7692): handshake rules and the frame engine.

``handshake.py`` decides whether a request becomes a WebSocket and what the answer says (no
dependency); ``engine.py`` runs the connection afterwards on the ``websockets`` package's
sans-I/O frame codec (the ``ws`` extra). This module decides, once per worker and without
importing that codec, whether WebSocket is on.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pounce.config import ServerConfig

def how_to_enable(config: ServerConfig) -> str:
    """What to do to turn WebSocket on, for log lines saying it is off."""
    if config.ws == "none":
        return "drop --ws none (or set ws = 'auto')"
    return "pip install 'pounce[ws]'"

#: How long the server waits for the client's answer to its close frame, and then for the
#: connection to finish closing, when ``--ws-ping-timeout`` is off.
DEFAULT_CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Per-worker settings of every WebSocket, from ``--ws-*``."""

    max_size: int
    max_queue: int
    ping_interval: float | None
    ping_timeout: float | None
    #: ``--timeout-graceful-shutdown``: a close sent because the server stops waits for the
    #: client's answer at most half of it, so the app still gets its ``websocket.disconnect``
    #: (and time to act on it) before the server cancels what is left.
    graceful_shutdown: float = 30.0

    @property
    def close_timeout(self) -> float:
        # The same patience as for a pong: both wait for one round trip of a live client.
        return self.ping_timeout if self.ping_timeout is not None else DEFAULT_CLOSE_TIMEOUT


@dataclass(frozen=True, slots=True)
class WebSocketSupport:
    """WebSocket is on: what each connection needs to know."""

    options: EngineOptions
    per_message_deflate: bool


def library_missing() -> bool:
    try:
        return importlib.util.find_spec("websockets") is None
    except (ImportError, ValueError):
        return True


def websocket_support(config: ServerConfig) -> WebSocketSupport | None:
    """None when upgrade requests are to be served as plain HTTP (``--ws none``, no library)."""
    if config.ws == "none" or library_missing():
        return None
    return WebSocketSupport(
        options=EngineOptions(
            max_size=config.ws_max_size,
            max_queue=config.ws_max_queue,
            ping_interval=config.ws_ping_interval,
            ping_timeout=config.ws_ping_timeout,
            graceful_shutdown=config.timeout_graceful_shutdown,
        ),
        per_message_deflate=config.ws_per_message_deflate,
    )


def describe_support(config: ServerConfig) -> str:
    """One phrase for the start-up log and ``pounce check``: is WebSocket on, and why not."""
    if config.ws == "none":
        return "WebSocket off (--ws none)"
    if library_missing():
        return "WebSocket off (the 'websockets' package is not installed: pip install 'pounce[ws]')"
    from importlib.metadata import version

    mapped = " (--ws wsproto maps to it)" if config.ws == "wsproto" else ""
    return f"WebSocket on (websockets {version('websockets')} sans-I/O{mapped})"


_WS_OPTIONS = (
    "ws_max_size",
    "ws_max_queue",
    "ws_ping_interval",
    "ws_ping_timeout",
    "ws_per_message_deflate",
)


def ignored_options(config: ServerConfig) -> list[str]:
    """``--ws-*`` flags set away from their defaults while WebSocket is off."""
    if websocket_support(config) is not None:
        return []
    from pounce.config.model import FIELD_DOCS

    return [
        FIELD_DOCS[name].flag or name
        for name in _WS_OPTIONS
        if getattr(config, name) != FIELD_DOCS[name].default
    ]
