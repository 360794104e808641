"""What is known about a connection once it is accepted, gathered in one frozen object.

Scope building, admission hooks, access logs and events all ask the same questions (who is the
peer, on which address, over TLS or not, which protocol did ALPN pick, may its proxy headers be
believed). Answering them once per connection instead of once per request keeps the request path
short, and a frozen object may be handed to any thread (an event subscriber, say) safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pounce.features.proxy_headers import ProxyTrust

__all__ = ["ConnectionInfo"]


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One connection's fixed facts, built by the transport when the connection is made."""

    #: ``(host, port)`` of the peer; None on a Unix socket.
    client: tuple[str, int] | None
    #: ``(host, port)`` the connection arrived on, ``(path, None)`` on a Unix socket.
    server: tuple[str, int | None] | None
    #: ``"https"`` over TLS, else ``"http"`` (WebSocket scopes map these to ``wss``/``ws``).
    scheme: str = "http"
    #: The worker's proxy trust when the peer is a trusted proxy; None otherwise. Decided once
    #: per connection so a request from an untrusted peer pays nothing for proxy headers.
    proxy_trust: ProxyTrust | None = None
    #: The ASGI ``tls`` scope extension, computed once per TLS connection; None in cleartext.
    tls: Mapping[str, Any] | None = None
    #: The protocol ALPN negotiated (``"http/1.1"``, ``"h2"``), None without TLS or ALPN.
    alpn: str | None = None

    @property
    def peer(self) -> str:
        """The peer as a log line shows it: ``host:port`` or ``unix socket``."""
        client = self.client
        return f"{client[0]}:{client[1]}" if client else "unix socket"
